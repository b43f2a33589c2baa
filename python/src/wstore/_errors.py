"""Exceptions: one class per status code of include/wstore.h, plus the two misuses the
package itself catches (a handle used after close or release)."""
from __future__ import annotations


class WStoreError(Exception):
    """Base class of every wstore error.

    ``status`` is the C ABI's status code (a negative ``WSTORE_E_*`` value, or 0 for the
    errors this package raises itself) and ``str(error)`` is the C ABI's one-line message.
    """

    status: int = 0
    #: The C name of the status code this class stands for.
    c_name: str = ""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgument(WStoreError, ValueError):
    """A bad argument: a negative budget, an unknown policy or codec, a layer out of range."""

    c_name = "WSTORE_E_INVALID_ARGUMENT"


class NotFound(WStoreError, LookupError):
    """No such tensor, model or expert."""

    c_name = "WSTORE_E_NOT_FOUND"


class NotAStore(WStoreError, OSError):
    """The path is not a wstore store."""

    c_name = "WSTORE_E_NOT_A_STORE"


class NewerFormat(WStoreError):
    """A newer wstore wrote the store; this library cannot read it."""

    c_name = "WSTORE_E_NEWER_FORMAT"


class Corrupt(WStoreError):
    """A checksum mismatch or a damaged record: never wrong bytes."""

    c_name = "WSTORE_E_CORRUPT"


class NotRaw(WStoreError):
    """Zero-copy access to a compressed record."""

    c_name = "WSTORE_E_NOT_RAW"


class BufferTooSmall(WStoreError, ValueError):
    """The destination array is smaller than the tensor."""

    c_name = "WSTORE_E_BUFFER_TOO_SMALL"


class BudgetExhausted(WStoreError):
    """The residency budget cannot hold the expert (too large, or all of it pinned)."""

    c_name = "WSTORE_E_BUDGET"


class Aborted(WStoreError):
    """A callback stopped the call."""

    c_name = "WSTORE_E_ABORTED"


class StoreIOError(WStoreError, OSError):
    """An LMDB or file-system failure."""

    c_name = "WSTORE_E_IO"


class Internal(WStoreError):
    """Anything else the library reports."""

    c_name = "WSTORE_E_INTERNAL"


class InvalidHandle(WStoreError):
    """The library refused a handle that was closed or released (its handle tag check)."""

    c_name = "WSTORE_E_INVALID_HANDLE"


class Closed(WStoreError):
    """A store, residency manager or KV store used after ``close()``."""


class Released(WStoreError):
    """An expert handle used, or released again, after ``release()``."""


_BY_NAME: dict[str, type[WStoreError]] = {
    c.c_name: c
    for c in (InvalidArgument, NotFound, NotAStore, NewerFormat, Corrupt, NotRaw, BufferTooSmall,
              BudgetExhausted, Aborted, StoreIOError, Internal, InvalidHandle)
}


def error_for(status: int, status_name: str, message: str) -> WStoreError:
    """The exception for a C status code (matched by its ``wstore_status_name``), carrying
    the C message."""
    cls = _BY_NAME.get(status_name, WStoreError)
    return cls(message, status)
