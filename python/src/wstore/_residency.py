"""The residency manager: resident experts as read-only numpy arrays, pinned while in use."""
from __future__ import annotations

import ctypes as C
import sys
import threading
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from . import _dtypes
from ._arrays import borrowed
from ._errors import Closed, InvalidArgument, NotFound, Released
from ._lib import ExpertPart as _ExpertPart, PartBlocks as _CBlocks, ResidencyStats as _CStats, check, cstr, fast, lib
from ._lib import raise_status
from ._store import Owned

if TYPE_CHECKING:
    from ._store import Store


# Without argtypes (see _lib.fast): every argument below is a ctypes instance.
_acquire = fast.wstore_expert_acquire
_release = fast.wstore_expert_release
_parts = fast.wstore_expert_parts
_I64: dict[int, C.c_int64] = {}  # shared, never written: small layer and expert numbers as C values


def _i64(v: int) -> C.c_int64:
    """``v`` as a C value: shared for 0 ... 65535, new above (the table stays small)."""
    try:
        return _I64[v]
    except KeyError:
        c = C.c_int64(v)
        if 0 <= v < 65536:
            _I64[v] = c
        return c
_PART_WORDS = C.sizeof(_ExpertPart) // C.sizeof(C.c_void_p)
_DATA_WORD = _ExpertPart.data.offset // C.sizeof(C.c_void_p)
_getrefcount = sys.getrefcount
_tls = threading.local()


def _out_args() -> tuple[C._Pointer[C.c_void_p], Any, C.c_size_t, Any]:
    """Per-thread out-parameters of the hit path, with their byref()s made once."""
    arr, n = C.POINTER(C.c_void_p)(), C.c_size_t()
    return arr, C.byref(arr), n, C.byref(n)


#: enum wstore_precision: name -> code. "any" (-1) is a minimum only, never a copy's precision.
PRECISIONS: dict[str, int] = {"exact": 0, "q8_0": 1, "q4_0": 2}
_PRECISION_NAMES = {v: k for k, v in PRECISIONS.items()}
_ALIASES = {"int8": "q8_0", "int4": "q4_0", "fastest": "any", "lossless": "exact"}
_UPGRADE = 1  # WSTORE_ACQUIRE_UPGRADE
_DEQUANT_DTYPES: dict[str, tuple[int, np.dtype[Any]]] = {"f32": (11, np.dtype("<f4")), "f16": (9, np.dtype("<f2")), "bf16": (10, _dtypes.BY_CODE[10])}


def _candidates(experts: Iterable[int], probs: Iterable[float]) -> tuple[Any, Any]:
    """A router's candidates and their probabilities as the C arrays the ABI takes."""
    xs = [int(e) for e in experts]
    ps = [float(p) for p in probs]
    if len(xs) != len(ps):
        raise ValueError("experts and probs must have the same length")
    return (C.c_int32 * len(xs))(*xs), (C.c_float * len(ps))(*ps)


def _precision_code(precision: str) -> int:
    """The C code of a minimum precision ("exact", "q8_0", "q4_0", "any"; aliases "int8", "int4",
    "fastest"); :class:`wstore.InvalidArgument` for anything else."""
    name = _ALIASES.get(precision, precision)
    if name == "any":
        return -1
    if name not in PRECISIONS:
        raise InvalidArgument(f"unknown precision {precision!r}: use exact, q8_0, q4_0 or any")
    return PRECISIONS[name]


@dataclass(frozen=True)
class PartBlocks:
    """How one part of a pinned expert is laid out (``struct wstore_part_blocks``): its
    precision and, for GGML blocks, where each block's f16 scale and quants sit.
    value = (q - zero_point) * scale; the block fields are 0 for an exact part."""

    precision: str
    dtype: str
    ggml_type: int
    block_elements: int
    block_bytes: int
    scale_offset: int
    scale_dtype: str
    quant_offset: int
    quant_bits: int
    quant_signed: bool
    zero_point: int
    elements: int
    blocks: int


@dataclass(frozen=True)
class Stats:
    """A residency manager's counters (``struct wstore_residency_stats``): over every layer,
    or one layer's for the per-layer fields when asked with ``layer``."""

    demand_hits: int
    demand_misses: int
    prefetch_hits: int
    wasted_prefetches: int
    demand_loads: int
    prefetch_loads: int
    bytes_loaded: int
    wait_ns: int
    coalesced_waits: int
    dropped_prefetches: int
    evictions: int
    resident_bytes: int
    peak_resident_bytes: int
    budget: int
    expert_bytes: int
    layers: int
    experts_per_layer: int
    #: Of the layer asked for (every layer when none was): experts resident now, and their bytes.
    layer_resident_experts: int = 0
    layer_resident_bytes: int = 0

    @property
    def hit_rate(self) -> float:
        """Demand hits over demand acquires (0 when none)."""
        n = self.demand_hits + self.demand_misses
        return self.demand_hits / n if n else 0.0


class _Pins:
    """The owner of a resident expert's arrays: the C expert handles pinning its buffer.

    Every array of the expert has this object at the end of its ``base`` chain. The pins
    are given back when it goes, i.e. when the last array over the buffer does.
    """

    __slots__ = ("handles", "__weakref__")

    def __init__(self) -> None:
        self.handles: list[C.c_void_p] = []

    def __del__(self) -> None:
        hs, self.handles = self.handles, []
        for h in hs:
            try:
                _release(h)
            except Exception:  # interpreter shutdown
                pass


class _Resident:
    """One expert's buffer as arrays: the part data pointers it was made for, the arrays
    by part name, and their owner. Cached per (layer, expert) and reused while a fresh pin
    finds the same pointers; the arrays are handed out only under a pin, and never in a
    container of this object's (a caller holding one would hide its arrays from
    ``_held_outside``)."""

    __slots__ = ("ptrs", "parts", "arrays", "owner")

    def __init__(self, ptrs: tuple[int, ...], parts: dict[str, np.ndarray], owner: _Pins) -> None:
        self.ptrs = ptrs
        self.arrays = tuple(parts.values())
        self.parts = parts
        self.owner = owner


def _held_outside(arrays: tuple[np.ndarray, ...], base: int) -> bool:
    """Whether any of a _Resident's arrays is referenced by more than ``base`` holders."""
    for a in arrays:
        if _getrefcount(a) > base:
            return True
    return False


def _probe(arrays: tuple[np.ndarray, ...]) -> int:
    seen = 0
    for a in arrays:  # the same loop as _held_outside's
        seen = max(seen, _getrefcount(a))
    return seen


#: The references _held_outside sees for an array only its _Resident holds (the parts
#: dict, the arrays tuple, the loop variable, getrefcount's argument).
def _baseline() -> int:
    r = _Resident((), {"x": np.zeros(1)}, _Pins())  # alive during the probe, as in _unpin
    return _probe(r.arrays)


_UNSHARED = _baseline()


class Expert:
    """A resident expert, pinned: never evicted while this handle (or any of its arrays)
    exists. A context manager: leaving the ``with`` block releases it.

    ``parts`` maps part names ("down", "gate", "up", ...) to read-only numpy arrays of the
    part's dtype and shape, over the manager's decoded buffer (no copy).

    Lifetimes: ``release()`` unpins now if no array of the expert is referenced any more;
    otherwise the pin passes to the arrays and goes with the last of them — so an array is
    never left over freed memory. Any use of the handle after ``release()`` raises
    :class:`wstore.Released`, and so does a second ``release()``.
    """

    __slots__ = ("layer", "expert", "_res", "_resident", "_pin", "__weakref__")

    def __init__(self, layer: int, expert: int, res: Residency, resident: _Resident, pin: C.c_void_p) -> None:
        self.layer = layer
        self.expert = expert
        self._res = res
        self._resident: _Resident | None = resident
        self._pin = pin

    @property
    def parts(self) -> dict[str, np.ndarray]:
        """Part name -> read-only array (a new dict: holding it holds the arrays, and so
        the pin). Raises :class:`wstore.Released` after release."""
        r = self._resident
        if r is None:
            raise Released(f"expert ({self.layer}, {self.expert}) was released")
        return dict(r.parts)

    def __getitem__(self, part: str) -> np.ndarray:
        """The array of part ``part``. Raises :class:`wstore.Released` after release,
        ``KeyError`` for a part the expert does not have."""
        r = self._resident
        if r is None:
            raise Released(f"expert ({self.layer}, {self.expert}) was released")
        return r.parts[part]

    @property
    def hit(self) -> bool:
        """Whether the acquire found the expert resident. Raises :class:`wstore.Released`
        after release. The corresponding C function is ``wstore_expert_hit``."""
        if self._resident is None:
            raise Released(f"expert ({self.layer}, {self.expert}) was released")
        v = C.c_int()
        check(lib.wstore_expert_hit(self._pin, C.byref(v)))  # argtypes: c_void_p takes the instance
        return bool(v.value)

    def _live_pin(self) -> C.c_void_p:
        if self._resident is None:
            raise Released(f"expert ({self.layer}, {self.expert}) was released")
        return self._pin

    @property
    def precision(self) -> str:
        """The precision of the copy this handle holds: "exact", "q8_0" or "q4_0". A part of
        a low-bit copy that has a variant holds its GGML blocks (``expert[part]`` is then
        their raw bytes as uint8; see :meth:`blocks` and :meth:`dequantize`). Raises
        :class:`wstore.Released` after release. The corresponding C function is
        ``wstore_expert_precision``."""
        v = C.c_int32()
        check(lib.wstore_expert_precision(self._live_pin(), C.byref(v)))
        return _PRECISION_NAMES[int(v.value)]

    def blocks(self, part: str) -> PartBlocks:
        """The layout of part ``part``'s bytes (:class:`PartBlocks`). Raises
        :class:`wstore.NotFound` for a part the expert does not have, :class:`wstore.Released`
        after release. The corresponding C function is ``wstore_expert_part_blocks``."""
        b = _CBlocks()
        check(lib.wstore_expert_part_blocks(self._live_pin(), part.encode(), C.byref(b)))
        return PartBlocks(
            precision=_PRECISION_NAMES[int(b.precision)], dtype=_dtypes.name(int(b.dtype)), ggml_type=int(b.ggml_type),
            block_elements=int(b.block_elements), block_bytes=int(b.block_bytes), scale_offset=int(b.scale_offset),
            scale_dtype=_dtypes.name(int(b.scale_dtype)) if b.blocks else "", quant_offset=int(b.quant_offset),
            quant_bits=int(b.quant_bits), quant_signed=bool(b.quant_signed), zero_point=int(b.zero_point),
            elements=int(b.elements), blocks=int(b.blocks))

    def dequantize(self, part: str, dtype: str = "f32") -> np.ndarray:
        """Part ``part``'s values as a new array of ``dtype`` ("f32", "f16" or "bf16") in the
        part's logical shape: GGML blocks dequantized by the library's vectorized kernel
        (bit-identical to ggml's reference), exact values converted. Raises
        :class:`wstore.InvalidArgument` for another dtype, :class:`wstore.NotFound` for an
        unknown part, :class:`wstore.Released` after release.
        The corresponding C function is ``wstore_expert_dequantize``."""
        pin = self._live_pin()
        if dtype not in _DEQUANT_DTYPES:
            raise InvalidArgument(f"dequantize to {dtype!r}: use f32, f16 or bf16")
        code, dt = _DEQUANT_DTYPES[dtype]
        shape = self._res._part_shape(pin, part)
        out: np.ndarray = np.empty(shape, dtype=dt)
        check(lib.wstore_expert_dequantize(pin, part.encode(), code, out.ctypes.data, out.nbytes))
        return out

    @property
    def released(self) -> bool:
        """Whether ``release()`` was called."""
        return self._resident is None

    def release(self) -> None:
        """Unpins the expert (see the class's lifetimes). Raises :class:`wstore.Released`
        when called twice. The corresponding C function is ``wstore_expert_release``."""
        r = self._resident
        if r is None:
            raise Released(f"expert ({self.layer}, {self.expert}) released twice")
        self._resident = None
        self._res._unpin(self.layer, self.expert, r, self._pin)

    def __enter__(self) -> Expert:
        return self

    def __exit__(self, *exc: object) -> None:
        r = self._resident
        if r is not None:
            self._resident = None
            self._res._unpin(self.layer, self.expert, r, self._pin)

    def __del__(self) -> None:
        if self._resident is not None:
            try:
                self.release()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "released" if self._resident is None else ", ".join(self._resident.parts)
        return f"<wstore.Expert layer={self.layer} expert={self.expert} {state}>"


class ExpertSet:
    """Experts of one layer pinned together (:meth:`Residency.acquire_many`); a context
    manager that releases them all. Indexed by expert number."""

    def __init__(self, layer: int, experts: dict[int, Expert], hits: list[bool]) -> None:
        self.layer = layer
        self._experts = experts
        #: Per expert of the set, in the order asked: whether it was resident.
        self.hits = hits

    def __getitem__(self, expert: int) -> Expert:
        return self._experts[expert]

    def __iter__(self) -> Iterator[Expert]:
        return iter(self._experts.values())

    def __len__(self) -> int:
        return len(self._experts)

    def release(self) -> None:
        """Releases every expert of the set (each once)."""
        for e in self._experts.values():
            if not e.released:
                e.release()

    def __enter__(self) -> ExpertSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Residency:
    """A byte-budgeted cache of one model's experts (``store.residency(model, budget)``).

    Safe to share across threads: acquires of resident experts pin without waiting for
    each other. ``close()`` is immediate for this object (later calls raise
    :class:`wstore.Closed`); experts still held, and their arrays, stay valid until each
    goes, as the C ABI promises for handles that outlive their manager.
    """

    def __init__(self, store: Store, model: str | None, budget: int, policy: str | None = None, *,
                 loaders: int = 0, wait: float | None = 30.0) -> None:
        if budget < 0:
            raise InvalidArgument(f"budget must be >= 0, got {budget}")
        self._store = store._sharing(store)  # the manager keeps the store open, as in C
        self._model_arg = store._model(model)
        self.model = (self._model_arg or b"default").decode()
        sh = store._live()
        out = C.c_void_p()
        wait_ms = -1 if wait is None else int(wait * 1000)
        check(lib.wstore_residency_open(sh.ptr, self._model_arg, int(budget), cstr(policy), loaders, wait_ms,
                                        C.byref(out)))
        self._h: Owned | None = Owned(out.value or 0, lib.wstore_residency_close)
        self._cache: dict[tuple[int, int], _Resident] = {}

    # -- lifetime

    def close(self) -> None:
        """Closes the manager (see the class). Closing twice does nothing.
        The corresponding C function is ``wstore_residency_close``."""
        self._h = None
        self._cache = {}  # arrays over buffers no handle pins any more; held experts keep their own

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._h is None

    def __enter__(self) -> Residency:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Owned:
        h = self._h
        if h is None:
            raise Closed(f"residency manager over model {self.model} is closed")
        return h

    # -- acquiring

    def acquire(self, layer: int, expert: int, precision: str = "exact", *, upgrade: bool = False) -> Expert:
        """Expert ``expert`` of layer ``layer``, pinned: loads it first if needed, blocking
        the calling thread (without holding the GIL). Use it in a ``with`` block, or call
        ``release()`` as soon as the layer is computed.

        ``precision`` is the least precise copy accepted: "exact" (the default), "q8_0",
        "q4_0", or "any" (whatever is fastest now). The most precise resident copy accepted
        is a hit; on a miss the smallest accepted copy stored loads. With ``upgrade``, a
        low-bit copy may be upgraded to exact in the background (when the policy calls the
        expert hot); a handle's bytes never change. :attr:`Expert.precision` says which copy
        the handle holds.

        Raises :class:`wstore.NotFound`, :class:`wstore.BudgetExhausted`,
        :class:`wstore.Corrupt`, :class:`wstore.Closed`, :class:`wstore.InvalidArgument`
        for an unknown precision. The corresponding C functions are
        ``wstore_expert_acquire`` and ``wstore_expert_acquire_precision``.
        """
        if precision != "exact" or upgrade:
            return self._acquire_precision(layer, expert, _precision_code(precision), _UPGRADE if upgrade else 0)
        h = self._h
        if h is None:
            raise Closed(f"residency manager over model {self.model} is closed")
        try:
            arr, barr, n, bn = _tls.args
        except AttributeError:
            arr, barr, n, bn = _tls.args = _out_args()
        pin = C.c_void_p()  # the handle, kept as a C value for the calls that take it
        try:
            l64, e64 = _I64[layer], _I64[expert]
        except KeyError:
            l64, e64 = _i64(int(layer)), _i64(int(expert))
        rc = _acquire(h.cp, l64, e64, C.byref(pin))
        if rc:
            raise_status(rc)
        # The hit path, inline: the same part pointers as the cached arrays -> reuse them.
        if not _parts(pin, barr, bn):
            r = self._cache.get((layer, expert))
            if r is not None and r.ptrs == tuple(arr[_DATA_WORD:_PART_WORDS * n.value:_PART_WORDS]):
                r.owner.handles.append(pin)  # atomic under the GIL; _unpin tolerates any interleaving
                return Expert(layer, expert, self, r, pin)
        return self._wrap(layer, expert, pin, arr, barr, n, bn)

    def _acquire_precision(self, layer: int, expert: int, code: int, flags: int) -> Expert:
        h = self._live()
        pin = C.c_void_p()
        check(lib.wstore_expert_acquire_precision(h.ptr, layer, expert, code, flags, C.byref(pin)))
        try:
            arr, barr, n, bn = _tls.args
        except AttributeError:
            arr, barr, n, bn = _tls.args = _out_args()
        return self._wrap(layer, expert, pin, arr, barr, n, bn)

    def _part_shape(self, pin: C.c_void_p, part: str) -> tuple[int, ...]:
        """The logical shape of part ``part`` of the pinned handle ``pin``."""
        raw, n = C.POINTER(C.c_void_p)(), C.c_size_t()
        check(lib.wstore_expert_parts(pin, C.byref(raw), C.byref(n)))
        arr = C.cast(raw, C.POINTER(_ExpertPart))
        for i in range(n.value):
            p = arr[i]
            if p.name.decode() == part:
                return tuple(int(p.shape[d]) for d in range(p.rank))
        raise NotFound(f"part {part} of the expert")

    def _wrap(self, layer: int, expert: int, pin: C.c_void_p, arr: C._Pointer[C.c_void_p], barr: object, n: C.c_size_t,
              bn: object) -> Expert:
        """An Expert over the pinned handle ``pin``: the cached arrays of its buffer when
        the pin finds the same part pointers, else new ones. Releases ``pin`` on failure."""
        try:
            rc = _parts(pin, barr, bn)
            if rc:
                raise_status(rc)
            count = n.value
            ptrs = tuple(arr[_DATA_WORD:_PART_WORDS * count:_PART_WORDS])
            key = (layer, expert)
            r = self._cache.get(key)
            if r is None or r.ptrs != ptrs:
                r = self._resident(C.cast(arr, C.POINTER(_ExpertPart)), count, ptrs)
                self._cache[key] = r
            # A list append is atomic under the GIL; _unpin tolerates any interleaving.
            r.owner.handles.append(pin)
        except BaseException:
            _release(pin)
            raise
        return Expert(layer, expert, self, r, pin)

    def acquire_many(self, layer: int, experts: Iterable[int], precision: str = "exact", *,
                     upgrade: bool = False) -> ExpertSet:
        """Experts ``experts`` of layer ``layer`` pinned all at once, or none, as an
        :class:`ExpertSet` (a context manager). Room for the whole set is reserved
        together and nothing of it is held while waiting, so threads that each need a set
        (a token's top-k) cannot starve each other. Duplicates are pinned once.

        ``precision`` and ``upgrade`` as in :meth:`acquire`, per expert: the set may mix precisions.

        Raises as :meth:`acquire`; :class:`wstore.BudgetExhausted` when the set alone
        exceeds the budget. The corresponding C functions are ``wstore_expert_acquire_many``
        and ``wstore_expert_acquire_many_precision``.
        """
        code = _precision_code(precision)
        h = self._live()
        xs = list(dict.fromkeys(int(x) for x in experts))
        k = len(xs)
        outs = (C.c_void_p * k)()
        hits = (C.c_int * k)()
        if code == 0 and not upgrade:
            check(lib.wstore_expert_acquire_many(h.ptr, layer, (C.c_int64 * k)(*xs), k, outs, hits))
        else:
            check(lib.wstore_expert_acquire_many_precision(h.ptr, layer, (C.c_int64 * k)(*xs), k, code,
                                                           _UPGRADE if upgrade else 0, outs, hits))
        try:
            arr, barr, n, bn = _tls.args
        except AttributeError:
            arr, barr, n, bn = _tls.args = _out_args()
        got: dict[int, Expert] = {}
        try:
            for i, e in enumerate(xs):
                pin, outs[i] = C.c_void_p(outs[i]), None
                got[e] = self._wrap(layer, e, pin, arr, barr, n, bn)
        except BaseException:
            for x in got.values():
                x.release()
            for p in outs:
                if p:
                    _release(C.c_void_p(p))
            raise
        return ExpertSet(layer, got, [bool(v) for v in hits])

    def _resident(self, parts: C._Pointer[_ExpertPart], count: int, ptrs: tuple[int, ...]) -> _Resident:
        """The arrays over a freshly pinned buffer (the miss path), of each part's dtype
        and shape (``uint8`` bytes for the dtypes numpy has none for)."""
        owner = _Pins()
        arrays: dict[str, np.ndarray] = {}
        for i in range(count):
            p = parts[i]
            shape = tuple(int(p.shape[d]) for d in range(p.rank))
            dt, shape = _dtypes.array_layout(p.dtype, shape, p.size)
            if dt.itemsize * int(np.prod(shape, dtype=np.int64)) != p.size:
                dt, shape = np.dtype(np.uint8), (p.size,)
            arrays[p.name.decode()] = borrowed(p.data or 0, p.size, dt, shape, owner)
        return _Resident(ptrs, arrays, owner)

    def _unpin(self, layer: int, expert: int, r: _Resident, pin: C.c_void_p) -> None:
        """Gives back one pin of ``r``; the last pin stays with the arrays while any is
        referenced outside ``r`` (then ``r`` leaves the cache, so it is never reused).

        No lock: each step is atomic under the GIL, and an interleaving with another
        thread's acquire or release at worst keeps a pin until the arrays go (never
        releases one that an array still needs: a thread that hands out arrays holds its
        own pin in ``r.owner``)."""
        handles = r.owner.handles
        handles.remove(pin)
        if not handles and _held_outside(r.arrays, _UNSHARED):  # (a function: _UNSHARED counts its frame)
            handles.append(pin)  # the arrays' owner releases it with the last array
            if self._cache.get((layer, expert)) is r:
                self._cache.pop((layer, expert), None)
            return
        _release(pin)

    # -- hints and counters

    def prefetch(self, layer: int, experts: Iterable[int]) -> None:
        """Hints that layer ``layer`` will need ``experts`` soon: those not resident load
        in the background. Returns at once.
        The corresponding C function is ``wstore_residency_prefetch``."""
        h = self._live()
        xs = [int(e) for e in experts]
        arr = (C.c_int64 * len(xs))(*xs)
        check(lib.wstore_residency_prefetch(h.ptr, layer, arr, len(xs)))

    def residency_mask(self, layer: int) -> np.ndarray:
        """Which experts of ``layer`` are resident now, as a bool array indexed by expert: a
        lock-free snapshot that may be stale when read (acquire what you run).
        The corresponding C function is ``wstore_residency_mask``."""
        h = self._live()
        s = _CStats()
        check(lib.wstore_residency_get_stats(h.ptr, -1, C.byref(s)))
        experts = int(s.experts_per_layer)
        n = (experts + 63) // 64
        words = (C.c_uint64 * max(1, n))()
        written = C.c_size_t()
        check(lib.wstore_residency_mask(h.ptr, layer, words, n, C.byref(written)))
        bits = np.unpackbits(np.frombuffer(bytes(words), dtype=np.uint8)[: 8 * written.value], bitorder="little")
        return bits[:experts].astype(bool)

    def observe(self, layer: int, experts: Iterable[int], probs: Iterable[float]) -> None:
        """Reports the router's candidates for the token layer ``layer`` just routed, with
        their probabilities (e.g. its top 2k, the picks among them), after acquiring the
        picks: the residency policy counts a runner-up the router nearly chose as part of a
        pick. Nothing is loaded or pinned.
        The corresponding C function is ``wstore_residency_observe``."""
        h = self._live()
        xs, ps = _candidates(experts, probs)
        check(lib.wstore_residency_observe(h.ptr, layer, xs, ps, len(xs)))

    def route(self, layer: int, experts: Iterable[int], probs: Iterable[float], *, k: int | None = None,
              tolerance: float = 0.1) -> tuple[list[int], int, float]:
        """Cache-aware routing: the ``k`` experts to run (the model's top-k when ``None``) from
        the router's candidates and probabilities, after swapping each non-resident pick
        (never the top-1) for a resident candidate whose probability is within ``tolerance``
        (relative) of it. Returns (experts, picks swapped, probability given up).
        The corresponding C function is ``wstore_residency_route``."""
        h = self._live()
        xs, ps = _candidates(experts, probs)
        want = 0 if k is None else int(k)
        out = (C.c_int32 * max(1, want if want > 0 else len(xs)))()
        swapped = C.c_int32()
        given_up = C.c_double()
        check(lib.wstore_residency_route(h.ptr, layer, xs, ps, len(xs),
                                         want, tolerance, out, C.byref(swapped), C.byref(given_up)))
        if want > 0:
            count = want
        else:
            try:
                count = self._store.model_info(self.model).top_k or 1
            except NotFound:
                count = 1
        return [int(out[i]) for i in range(count)], int(swapped.value), float(given_up.value)

    def stats(self, layer: int | None = None) -> Stats:
        """The manager's counters so far, over every layer or of ``layer``.
        The corresponding C function is ``wstore_residency_get_stats``."""
        h = self._live()
        s = _CStats()
        check(lib.wstore_residency_get_stats(h.ptr, -1 if layer is None else layer, C.byref(s)))
        return Stats(**{f.name: int(getattr(s, f.name)) for f in fields(Stats)})
