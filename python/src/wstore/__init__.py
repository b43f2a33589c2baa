"""wstore: numpy arrays over a wstore store, its expert residency manager and its KV cache.

    import wstore
    with wstore.open("moe.wstore") as store:
        w = store.tensor("model.norm.weight")              # a decoded copy
        with store.residency("mixtral", 8 << 30) as experts:
            with experts.acquire(0, 3) as e:               # pinned until the block ends
                up = e["up"]                                # read-only, the part's dtype and shape

    with wstore.kv.open("prompts.kvstore", chunk_tokens=256, codec="int4") as cache:
        cache.store(tokens, keys, values)                  # per layer [tokens, kv_heads, head_dim]
        hit = cache.lookup(tokens, out=(keys, values))     # decoded straight into the arrays

Everything goes through libwstore-c.so (include/wstore.h), loaded with ctypes from
``WSTORE_LIB`` or from inside this package.
"""
from __future__ import annotations

import os

from . import _lib, kv
from ._errors import (Aborted, BudgetExhausted, BufferTooSmall, Closed, Corrupt, Internal, InvalidArgument,
                      InvalidHandle, NewerFormat, NotAStore, NotFound, NotRaw, Released, StoreIOError,
                      WStoreError)
from ._residency import Expert, ExpertSet, PartBlocks, Residency, Stats
from ._store import ExpertInfo, ModelInfo, Snapshot, Store, TensorInfo

__version__ = _lib.version
#: The C ABI version of the loaded library.
abi_version = _lib.abi_version
#: The path of the loaded libwstore-c.so.
library_path = _lib.path


def open(path: str | os.PathLike[str]) -> Store:  # noqa: A001 - the package's entry point
    """Opens the store in directory ``path`` read-only.

    Raises :class:`NotAStore`, :class:`NewerFormat`, :class:`StoreIOError`.
    The corresponding C function is ``wstore_open``.
    """
    return Store(path)


__all__ = [
    "open", "Store", "Snapshot", "TensorInfo", "ModelInfo", "ExpertInfo", "Residency", "Expert", "ExpertSet", "PartBlocks",
    "Stats", "WStoreError", "InvalidArgument", "NotFound", "NotAStore", "NewerFormat", "Corrupt", "NotRaw",
    "BufferTooSmall", "BudgetExhausted", "Aborted", "StoreIOError", "Internal", "InvalidHandle", "Closed",
    "Released", "abi_version", "library_path", "kv",
]
