"""Read-only numpy arrays over memory the library lends, each keeping its owner alive.

The array's ``base`` chain ends at the owner object passed here, so as long as any array
(or any view derived from one) exists, its owner — and what the owner holds: a pinned
expert, an open read snapshot — stays alive. Owners release what they hold in ``__del__``,
which CPython runs as soon as the last array goes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

_U8 = np.dtype(np.uint8)


class _Interface:
    """A one-shot ``__array_interface__`` exporter that references the owner."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, address: int, size: int, owner: Any) -> None:
        self.__array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (address, True), "version": 3}
        self.owner = owner


def borrowed(address: int, size: int, dtype: np.dtype, shape: tuple[int, ...], owner: Any) -> np.ndarray:
    """A read-only array of ``dtype`` and ``shape`` over ``size`` bytes at ``address``,
    whose base keeps ``owner`` alive. ``size`` must equal the array's byte size."""
    if size == 0 or not address:
        return _empty(dtype, shape)
    raw = np.asarray(_Interface(address, size, owner))  # read-only: data is (address, True)
    return raw.view(dtype).reshape(shape)


def _empty(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    a = np.empty(shape, dtype)
    a.flags.writeable = False
    return a
