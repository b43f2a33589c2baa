"""Stores: tensors as numpy arrays, decoded copies or zero-copy views inside a snapshot."""
from __future__ import annotations

import ctypes as C
import os
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import _dtypes
from ._arrays import borrowed
from ._errors import Closed, InvalidArgument, WStoreError
if TYPE_CHECKING:
    from ._residency import Residency
from ._lib import (EXPERT_LIST_FN, MODEL_FN, TENSOR_FN, TENSOR_LIST_FN, TensorInfo as _CInfo, check, cstr, lib,
                   raise_status)


class Owned:
    """A C handle and the function that gives it back, called once when this object goes.

    Every Python object that may still use the handle holds a reference to its ``Owned``:
    the Python wrapper while it is open, a call in progress (a local variable), the arrays
    over memory the handle lends. So an explicit ``close()`` only drops the wrapper's
    reference, and the C close runs when the last user is done — never under a call or an
    array.
    """

    __slots__ = ("ptr", "cp", "_free", "__weakref__")

    def __init__(self, ptr: int, free: Callable[[int], None]) -> None:
        self.ptr = ptr
        #: The handle as a C value, for functions called without argtypes (_lib.fast).
        self.cp = C.c_void_p(ptr)
        self._free = free

    def __del__(self) -> None:
        p, self.ptr = self.ptr, 0
        if p:
            try:
                self._free(p)
            except Exception:  # interpreter shutdown: the library may be gone already
                pass


@dataclass(frozen=True)
class TensorInfo:
    """What the store knows of one tensor (``struct wstore_tensor_info``)."""

    name: str
    #: The numpy dtype of its array: ``uint8`` bytes for packed f4/f6 and GGML blocks.
    dtype: np.dtype
    #: The store's dtype name ("bf16", "f8_e4m3", "ggml", ...).
    dtype_name: str
    #: Its enum wstore_dtype code.
    dtype_code: int
    shape: tuple[int, ...]
    #: "raw" (readable in place) or "zstd".
    codec: str
    raw_size: int
    stored_size: int
    checksum: int
    ggml_type: int

    @property
    def array_shape(self) -> tuple[int, ...]:
        """The shape of the array that holds it (``(raw_size,)`` for uint8 byte arrays)."""
        return _dtypes.array_layout(self.dtype_code, self.shape, self.raw_size)[1]


def _info(name: str, c: _CInfo) -> TensorInfo:
    shape = tuple(int(c.shape[i]) for i in range(c.rank))
    dt, _ = _dtypes.array_layout(c.dtype, shape, c.raw_size)
    return TensorInfo(name=name, dtype=dt, dtype_name=_dtypes.name(c.dtype), dtype_code=int(c.dtype), shape=shape,
                      codec="raw" if c.codec == 0 else "zstd" if c.codec == 1 else f"codec{c.codec}",
                      raw_size=int(c.raw_size), stored_size=int(c.stored_size), checksum=int(c.checksum),
                      ggml_type=int(c.ggml_type))


@dataclass(frozen=True)
class ModelInfo:
    """The model facts recorded in a store; each is None when not recorded."""

    name: str
    layers: int | None
    experts_per_layer: int | None
    top_k: int | None


@dataclass(frozen=True)
class ExpertInfo:
    """One indexed expert: its layer, number and parts (part name -> tensor name)."""

    layer: int
    expert: int
    parts: dict[str, str]


class Store:
    """An open store, read-only. Use :func:`wstore.open`.

    Safe to share across threads. A context manager: leaving the ``with`` block closes it.
    ``close()`` is immediate for this object (any later call raises :class:`wstore.Closed`);
    the C handle itself goes when nothing uses it any more: residency managers opened on
    the store, snapshots and the arrays they lent keep it open.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        out = C.c_void_p()
        check(lib.wstore_open(self.path.encode(), C.byref(out)))
        self._h: Owned | None = Owned(out.value or 0, lib.wstore_close)
        self._models = self.models()

    @classmethod
    def _sharing(cls, other: Store) -> Store:
        """Another wrapper over ``other``'s C handle, for a residency manager: it keeps the
        handle open after ``other.close()``, as the C ABI's manager keeps its store."""
        s = cls.__new__(cls)
        s.path, s._h, s._models = other.path, other._live(), other._models
        return s

    # -- lifetime

    def _live(self) -> Owned:
        h = self._h
        if h is None:
            raise Closed(f"store {self.path} is closed")
        return h

    def close(self) -> None:
        """Closes the store. Later calls on it raise :class:`wstore.Closed`; closing twice
        does nothing. The corresponding C function is ``wstore_close``."""
        self._h = None

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._h is None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<wstore.Store {self.path!r}{' closed' if self.closed else ''}>"

    def _model(self, model: str | None) -> bytes | None:
        """A model argument: the store's only model when None and it has exactly one."""
        if model is None and len(self._models) == 1:
            return self._models[0].encode()
        return cstr(model)

    # -- models and tensors

    @property
    def format_version(self) -> int:
        """The store's format version (format-spec/FORMAT.md)."""
        h = self._live()
        v = C.c_int()
        check(lib.wstore_format_version(h.ptr, C.byref(v)))
        return v.value

    def models(self) -> list[str]:
        """The model namespaces of the store, sorted. The corresponding C function is
        ``wstore_list_models``."""
        h = self._live()
        names: list[str] = []

        def each(name: bytes, ctx: Any) -> int:
            names.append(name.decode())
            return 0

        check(lib.wstore_list_models(h.ptr, MODEL_FN(each), None))
        return names

    def model_info(self, model: str | None = None) -> ModelInfo:
        """Layers, experts per layer and top-k recorded for ``model``.

        Raises :class:`wstore.NotFound` when the model has no model record.
        """
        h = self._live()
        vals = [C.c_int64() for _ in range(3)]
        m = self._model(model)
        check(lib.wstore_model_info(h.ptr, m, *(C.byref(v) for v in vals)))
        layers, experts, top_k = (v.value if v.value >= 0 else None for v in vals)
        return ModelInfo(name=(m or b"default").decode(), layers=layers, experts_per_layer=experts, top_k=top_k)

    def info(self, name: str, model: str | None = None) -> TensorInfo:
        """What the store knows of tensor ``name``. Raises :class:`wstore.NotFound`.
        The corresponding C function is ``wstore_info``."""
        h = self._live()
        c = _CInfo()
        check(lib.wstore_info(h.ptr, self._model(model), name.encode(), C.byref(c)))
        return _info(name, c)

    def tensors(self, model: str | None = None) -> dict[str, TensorInfo]:
        """Every tensor of ``model`` in name order, from one consistent snapshot.
        The corresponding C function is ``wstore_list_tensors``."""
        h = self._live()
        out: dict[str, TensorInfo] = {}

        def each(name: bytes, info: Any, ctx: Any) -> int:
            n = name.decode()
            out[n] = _info(n, info.contents)
            return 0

        check(lib.wstore_list_tensors(h.ptr, self._model(model), TENSOR_LIST_FN(each), None))
        return out

    def tensor(self, name: str, model: str | None = None, *, out: np.ndarray | None = None,
               threads: int = 0) -> np.ndarray:
        """Tensor ``name`` decoded into a new array (or into ``out``, which must be a
        C-contiguous writable array of at least its byte size): the array owns its memory
        and outlives the store. The checksum is always checked.

        Raises :class:`wstore.NotFound`, :class:`wstore.Corrupt`, :class:`wstore.BufferTooSmall`.
        The corresponding C function is ``wstore_read``.
        """
        h = self._live()
        info = self.info(name, model)
        if out is None:
            dt, shape = _dtypes.array_layout(info.dtype_code, info.shape, info.raw_size)
            out = np.empty(shape, dt)
        elif not (out.flags.c_contiguous and out.flags.writeable):
            raise InvalidArgument("out must be a C-contiguous writable array")
        check(lib.wstore_read(h.ptr, self._model(model), name.encode(), out.ctypes.data, out.nbytes, threads))
        return out

    def experts(self, layer: int | None = None, model: str | None = None) -> list[ExpertInfo]:
        """The indexed experts of ``model`` (of layer ``layer`` only, when given), ordered
        by (layer, expert). The corresponding C function is ``wstore_list_experts``."""
        h = self._live()
        found: dict[tuple[int, int], dict[str, str]] = {}

        def each(l: int, e: int, part: bytes, tensor: bytes, ctx: Any) -> int:
            found.setdefault((l, e), {})[part.decode()] = tensor.decode()
            return 0

        check(lib.wstore_list_experts(h.ptr, self._model(model), -1 if layer is None else layer,
                                      EXPERT_LIST_FN(each), None))
        return [ExpertInfo(layer=l, expert=e, parts=p) for (l, e), p in found.items()]

    def snapshot(self) -> Snapshot:
        """A read scope whose :meth:`Snapshot.tensor` gives zero-copy views of raw records."""
        return Snapshot(self)

    def residency(self, model: str | None, budget: int, policy: str | None = None, *, loaders: int = 0,
                  wait: float | None = 30.0) -> Residency:
        """A residency manager over the experts of ``model`` holding at most ``budget``
        bytes of them; see :class:`wstore.Residency`."""
        from ._residency import Residency
        return Residency(self, model, budget, policy, loaders=loaders, wait=wait)


_END = object()
#: The most zero-copy views one snapshot lends at once (each is a nested callback frame).
MAX_VIEWS = 200


class _ViewPin:
    """Held by every array a snapshot lent: the snapshot's read scope stays open until the
    last one goes."""

    __slots__ = ("snapshot",)

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def __del__(self) -> None:
        self.snapshot._view_gone()


class Snapshot:
    """A read scope over a store (a context manager).

    :meth:`tensor` gives a raw record as a read-only numpy array over the bytes in the
    memory map — no copy — and a compressed one as a decoded array. The C ABI lends
    in-map bytes only inside a callback (``wstore_with_tensor``); a snapshot runs those
    callbacks, nested, on a helper thread that waits inside them while the scope is open.

    Lifetimes: a view keeps its read scope open (its ``base`` holds it). Leaving the
    ``with`` block ends the scope as soon as the last view is gone: views still referenced
    then stay valid, and the scope ends when they go. :meth:`tensor` after the block
    raises :class:`wstore.Closed`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store._sharing(store)  # the scope keeps the store open
        self._h = self._store._live()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._open = True
        self._views = 0
        self._ended = False

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the scope: now when no view is alive, else when the last one goes."""
        with self._lock:
            self._open = False
            end = self._views == 0
        if end:
            self._end()
            if self._thread is not None:
                self._thread.join()

    def _view_gone(self) -> None:
        with self._lock:
            self._views -= 1
            end = not self._open and self._views == 0
        if end:
            self._end()

    def _end(self) -> None:
        if not self._ended and self._thread is not None:
            self._ended = True
            self._requests.put(_END)

    def tensor(self, name: str, model: str | None = None, *, verify: bool = False) -> np.ndarray:
        """Tensor ``name``: a read-only zero-copy view for a raw record, a new decoded
        array for a compressed one. ``verify`` checks a raw record's checksum first
        (reading every byte; decoding always checks).

        Raises :class:`wstore.Closed` after the scope, :class:`wstore.NotFound`,
        :class:`wstore.Corrupt`. The corresponding C function is ``wstore_with_tensor``.
        """
        if not self._open:
            raise Closed("snapshot scope has ended: views are lent only inside it")
        info = self._store.info(name, model)
        if info.codec != "raw":
            return self._store.tensor(name, model)
        with self._lock:
            if self._views >= MAX_VIEWS:
                raise InvalidArgument(f"a snapshot lends at most {MAX_VIEWS} views at once")
            self._views += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="wstore-snapshot", daemon=True)
                self._thread.start()
        pin = _ViewPin(self)  # from here on, its __del__ gives the count back
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put((name.encode(), self._store._model(model), 1 if verify else 0, reply))
        got = reply.get()
        if isinstance(got, BaseException):
            raise got
        address, size = got
        dt, shape = _dtypes.array_layout(info.dtype_code, info.shape, info.raw_size)
        return borrowed(address, size, dt, shape, pin)

    def _serve(self) -> bool:
        """Serves requests on the helper thread; a lent tensor's callback serves the next
        ones from inside itself, so every view's bytes stay lent until the end."""
        while True:
            req = self._requests.get()
            if req is _END:
                return True
            name, model, flags, reply = req
            lent = []

            def lend(data: int, size: int, info: Any, ctx: Any) -> int:
                lent.append(True)
                reply.put((data or 0, size))
                self._serve()
                return 0

            rc = lib.wstore_with_tensor(self._h.ptr, model, name, flags, TENSOR_FN(lend), None)
            if lent:
                return True  # the end came through the callback: unwind every level
            try:
                raise_status(rc or -11)
            except WStoreError as e:
                reply.put(e)

