"""The KV cache: the keys and values of token prefixes, stored in chunks and looked up by
the longest cached prefix, decoded straight into the caller's numpy arrays.

    import wstore.kv
    with wstore.kv.open("prompts.kvstore", chunk_tokens=256, codec="int4", budget=8 << 30) as kv:
        kv.store(tokens, keys, values)           # per layer, arrays [tokens, kv_heads, head_dim]
        hit = kv.lookup(tokens, out=(keys2, values2))
        hit.tokens                               # leading tokens written into keys2/values2

With ``remote="redis://host:port"`` (or a list of Redis Cluster seeds) the store gains a shared
remote tier: lookups continue the local prefix from Redis, stores are sent there in the
background (format-spec/KV.md §8); :meth:`KVStore.tier_stats` and :meth:`KVStore.flush_remote`.

A layer's array may have any strides whose last axis is contiguous: a ``[kv_heads, tokens,
head_dim]`` cache passes ``a.transpose(1, 0, 2)``. Nothing is lent: the library reads (store)
or writes (lookup) the arrays during the call only.
"""
from __future__ import annotations

import ctypes as C
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import _dtypes
from ._errors import Closed, InvalidArgument
from ._lib import check, cstr, lib
from ._store import Owned

#: Codec names and their enum wstore_kv_codec codes.
CODECS = {"lossless": 0, "raw": 1, "int2": 2, "int4": 4, "int8": 8}
_CODEC_NAMES = {v: k for k, v in CODECS.items()}
#: How a handle's writes reach the disk (KVStore.set_durability): enum wstore_kv_durability.
DURABILITIES = {"synced": 0, "deferred": 1}


def _durability_code(durability: str) -> int:
    """The enum wstore_kv_durability code of ``durability``; InvalidArgument for another name."""
    if durability not in DURABILITIES:
        raise InvalidArgument(f"unknown durability {durability!r}: one of {', '.join(DURABILITIES)}")
    return DURABILITIES[durability]


class _Options(C.Structure):
    """``struct wstore_kv_options``."""

    _fields_ = [("chunk_tokens", C.c_int64), ("budget_bytes", C.c_int64), ("max_chunks", C.c_int64),
                ("codec", C.c_int32), ("threads", C.c_int32), ("kivi_group", C.c_int32),
                ("kivi_residual", C.c_int32)]


class _Layer(C.Structure):
    """``struct wstore_kv_layer``."""

    _fields_ = [("k", C.c_void_p), ("v", C.c_void_p), ("dtype", C.c_int32), ("kv_heads", C.c_int32),
                ("head_dim", C.c_int32), ("reserved", C.c_int32), ("token_stride", C.c_int64),
                ("head_stride", C.c_int64)]


class _Result(C.Structure):
    """``struct wstore_kv_lookup_result``."""

    _fields_ = [("tokens", C.c_uint64), ("chunks", C.c_uint64), ("damaged", C.c_int32), ("reserved", C.c_int32)]


class _Stats(C.Structure):
    """``struct wstore_kv_stats``."""

    _fields_ = [("chunks", C.c_uint64), ("leaves", C.c_uint64), ("stored_bytes", C.c_uint64),
                ("raw_bytes", C.c_uint64), ("chunk_tokens", C.c_int64), ("codec", C.c_int32),
                ("read_only", C.c_int32), ("lookups", C.c_uint64), ("lookup_tokens", C.c_uint64),
                ("hit_tokens", C.c_uint64), ("damaged_chunks", C.c_uint64), ("reserved", C.c_uint64 * 4)]


class _Remote(C.Structure):
    """``struct wstore_kv_remote``."""

    _fields_ = [("urls", C.c_char_p), ("key_namespace", C.c_char_p), ("timeout_ms", C.c_int64),
                ("queue_chunks", C.c_int64)]


class _TierStats(C.Structure):
    """``struct wstore_kv_tier_stats``."""

    _fields_ = [("has_remote", C.c_int32), ("connected", C.c_int32)] + [(n, C.c_uint64) for n in (
        "lookups", "local_hit_chunks", "remote_hit_chunks", "bytes_fetched", "bytes_sent", "sent_chunks",
        "already_remote", "remote_errors", "damaged_remote", "queue_drops", "unsent_chunks", "reconnects",
        "queued")] + [("reserved", C.c_uint64 * 4)]


_vp, _cp, _sz = C.c_void_p, C.c_char_p, C.c_size_t
_U32P = C.POINTER(C.c_uint32)
for _name, _res, _args in [
    ("wstore_kv_create", C.c_int, [_cp, C.POINTER(_Options), C.POINTER(_vp)]),
    ("wstore_kv_open", C.c_int, [_cp, C.c_int, C.c_int, C.POINTER(_vp)]),
    ("wstore_kv_close", C.c_int, [_vp]),
    ("wstore_kv_store", C.c_int, [_vp, _cp, _cp, _U32P, _sz, C.POINTER(_Layer), _sz, C.POINTER(_sz)]),
    ("wstore_kv_probe", C.c_int, [_vp, _cp, _cp, _U32P, _sz, C.POINTER(_sz)]),
    ("wstore_kv_lookup", C.c_int, [_vp, _cp, _cp, _U32P, _sz, C.POINTER(_Layer), _sz, C.POINTER(_Result)]),
    ("wstore_kv_get_stats", C.c_int, [_vp, C.POINTER(_Stats)]),
    ("wstore_kv_create_remote", C.c_int, [_cp, C.POINTER(_Options), C.POINTER(_Remote), C.POINTER(_vp)]),
    ("wstore_kv_open_remote", C.c_int, [_cp, C.c_int, C.c_int, C.POINTER(_Remote), C.POINTER(_vp)]),
    ("wstore_kv_get_tier_stats", C.c_int, [_vp, C.POINTER(_TierStats)]),
    ("wstore_kv_flush_remote", C.c_int, [_vp, C.c_int64, C.POINTER(C.c_int)]),
    ("wstore_kv_set_durability", C.c_int, [_vp, C.c_int]),
    ("wstore_kv_sync", C.c_int, [_vp]),
]:
    _f = getattr(lib, _name)
    _f.restype, _f.argtypes = _res, _args


@dataclass(frozen=True)
class Stats:
    """A KV store's totals and this handle's counters (``struct wstore_kv_stats``)."""

    chunks: int
    leaves: int
    stored_bytes: int
    raw_bytes: int
    chunk_tokens: int
    codec: str
    read_only: bool
    lookups: int
    lookup_tokens: int
    hit_tokens: int
    damaged_chunks: int

    @property
    def hit_rate(self) -> float:
        """Tokens delivered over tokens asked for by lookups (0 when none)."""
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0


@dataclass(frozen=True)
class TierStats:
    """Counters of a KV handle's tiers since it was opened (``struct wstore_kv_tier_stats``)."""

    #: Whether the last remote operation succeeded.
    connected: bool
    #: Lookups made.
    lookups: int
    #: Chunks lookups found in the local tier, and (after the local prefix ended) in Redis.
    local_hit_chunks: int
    remote_hit_chunks: int
    #: Value bytes received from and sent to Redis.
    bytes_fetched: int
    bytes_sent: int
    #: Chunks Redis accepted, and chunks not sent because Redis held them already.
    sent_chunks: int
    already_remote: int
    #: Failed connects and command batches (refused, timeouts, lost connections, server errors).
    remote_errors: int
    #: Remote values that failed their checks (damaged, foreign, wrong size): misses, never returned.
    damaged_remote: int
    #: Chunks dropped because the send queue was full, or because Redis was down when their turn came.
    queue_drops: int
    unsent_chunks: int
    #: Successful connects after the tier was down.
    reconnects: int
    #: Chunks waiting in the send queue now.
    queued: int


@dataclass
class Hit:
    """What a lookup delivered: ``tokens`` leading tokens (whole chunks) in ``keys`` and
    ``values``; ``damaged`` when the prefix ended at a damaged chunk (``message`` says which)."""

    tokens: int
    chunks: int
    damaged: bool
    message: str
    #: Per layer, the arrays written (the caller's ``out``, or new ones cut to ``tokens``).
    keys: list[np.ndarray]
    values: list[np.ndarray]


def _tokens(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    t = np.ascontiguousarray(tokens, dtype=np.uint32)
    if t.ndim != 1:
        raise InvalidArgument(f"tokens must be one-dimensional, got shape {t.shape}")
    return t


def _layers(keys: Sequence[np.ndarray], values: Sequence[np.ndarray], n_tokens: int,
            writable: bool) -> C.Array[_Layer]:
    """The C descriptions of per-layer [tokens, kv_heads, head_dim] arrays, any strides
    with a contiguous last axis."""
    if len(keys) != len(values) or not keys:
        raise InvalidArgument(f"keys and values must be lists of the same non-zero length "
                              f"(got {len(keys)} and {len(values)})")
    out = (_Layer * len(keys))()
    for i, (k, v) in enumerate(zip(keys, values)):
        for what, a in (("keys", k), ("values", v)):
            if not isinstance(a, np.ndarray) or a.ndim != 3:
                raise InvalidArgument(f"layer {i} {what}: an array [tokens, kv_heads, head_dim] is needed")
            if a.shape[0] < n_tokens:
                raise InvalidArgument(f"layer {i} {what}: {a.shape[0]} tokens, {n_tokens} needed")
            if a.strides[2] != a.itemsize:
                raise InvalidArgument(f"layer {i} {what}: the head_dim axis must be contiguous")
            if writable and not a.flags.writeable:
                raise InvalidArgument(f"layer {i} {what}: the array is read-only")
            if a.dtype not in (np.float16, np.float32) and a.dtype != _dtypes.BY_CODE[10]:
                raise InvalidArgument(f"layer {i} {what}: dtype {a.dtype} (float16, bfloat16 or float32 needed)")
        if k.shape[1:] != v.shape[1:] or k.dtype != v.dtype or k.strides != v.strides:
            raise InvalidArgument(f"layer {i}: keys and values differ in shape, dtype or strides")
        out[i] = _Layer(k.ctypes.data, v.ctypes.data, _dtypes.CODE_OF[k.dtype], k.shape[1], k.shape[2], 0,
                        k.strides[0], k.strides[1])
    return out


class KVStore:
    """An open KV store (:func:`open`). A context manager. Lookups and probes may run on
    any number of threads at once, in parallel with a store. ``close()`` is immediate for
    this object (later calls raise :class:`wstore.Closed`); the C close waits for calls
    still running on other threads."""

    def __init__(self, path: str, handle: int) -> None:
        self.path = path
        self._h: Owned | None = Owned(handle, lib.wstore_kv_close)
        #: How this handle's writes reach the disk: "synced" or "deferred" (:meth:`set_durability`).
        self.durability = "synced"

    def _live(self) -> Owned:
        h = self._h
        if h is None:
            raise Closed(f"KV store {self.path} is closed")
        return h

    def close(self) -> None:
        """Closes the store (a writable one writes its lookups' last-use stamps first, and a
        deferred one syncs). The corresponding C function is ``wstore_kv_close``."""
        self._h = None

    def set_durability(self, durability: str) -> None:
        """How this handle's writes reach the disk from now on. ``"synced"`` (every handle
        starts so): each write commits with a sync and survives a system crash once it
        returns. ``"deferred"``: writes commit without a sync, so a store costs its encode
        and a copy into the page cache, not the disk's write rate; a crash of the process
        loses nothing, and after a system crash or power loss the next writable open empties
        the store (format-spec/KV.md §9). Going back to ``"synced"`` syncs what was written.
        The corresponding C function is ``wstore_kv_set_durability``."""
        h = self._live()
        check(lib.wstore_kv_set_durability(h.ptr, _durability_code(durability)))
        self.durability = durability

    def sync(self) -> None:
        """Makes every write so far durable (needed only after deferred writes).
        The corresponding C function is ``wstore_kv_sync``."""
        check(lib.wstore_kv_sync(self._live().ptr))

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(self, tokens: Sequence[int] | np.ndarray, keys: Sequence[np.ndarray], values: Sequence[np.ndarray],
              *, model: str | None = None, salt: str | None = None) -> int:
        """Stores the KV of ``tokens`` (per layer, arrays [tokens, kv_heads, head_dim] of
        float16, bfloat16 or float32): writes the whole chunks that are missing. Returns
        how many leading tokens are cached now.
        The corresponding C function is ``wstore_kv_store``."""
        h = self._live()
        t = _tokens(tokens)
        layers = _layers(keys, values, len(t), writable=False)
        cached = C.c_size_t()
        check(lib.wstore_kv_store(h.ptr, cstr(model), cstr(salt), t.ctypes.data_as(_U32P), len(t), layers,
                                  len(layers), C.byref(cached)))
        return cached.value

    def probe(self, tokens: Sequence[int] | np.ndarray, *, model: str | None = None, salt: str | None = None) -> int:
        """The longest cached prefix of ``tokens``, in tokens; decodes nothing.
        The corresponding C function is ``wstore_kv_probe``."""
        h = self._live()
        t = _tokens(tokens)
        cached = C.c_size_t()
        check(lib.wstore_kv_probe(h.ptr, cstr(model), cstr(salt), t.ctypes.data_as(_U32P), len(t),
                                  C.byref(cached)))
        return cached.value

    def lookup(self, tokens: Sequence[int] | np.ndarray,
               out: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None, *,
               layers: int | None = None, kv_heads: int | None = None, head_dim: int | None = None,
               dtype: np.dtype | type | str | None = None, model: str | None = None,
               salt: str | None = None) -> Hit:
        """Decodes the longest cached prefix of ``tokens`` straight into ``out`` = (keys,
        values), per-layer arrays that can hold ``len(tokens)`` tokens; or, without
        ``out``, into new arrays of ``layers`` x [tokens, kv_heads, head_dim] of ``dtype``,
        returned cut to the tokens delivered. Every checksum is checked; a damaged chunk
        ends the prefix (``Hit.damaged``). With a remote tier the local prefix continues
        from Redis, each chunk decoded in place as it arrives (after a remote chunk that
        failed its checks, rows past ``Hit.tokens`` may hold unspecified values).
        The corresponding C function is ``wstore_kv_lookup``."""
        h = self._live()
        t = _tokens(tokens)
        if out is None:
            if layers is None or kv_heads is None or head_dim is None or dtype is None:
                raise InvalidArgument("without out=, give layers, kv_heads, head_dim and dtype")
            dt = np.dtype(dtype)
            shape = (len(t), int(kv_heads), int(head_dim))
            keys = [np.empty(shape, dt) for _ in range(layers)]
            values = [np.empty(shape, dt) for _ in range(layers)]
        else:
            keys, values = list(out[0]), list(out[1])
        descs = _layers(keys, values, len(t), writable=True)
        r = _Result()
        check(lib.wstore_kv_lookup(h.ptr, cstr(model), cstr(salt), t.ctypes.data_as(_U32P), len(t), descs,
                                   len(descs), C.byref(r)))
        message = (lib.wstore_last_error() or b"").decode("utf-8", "replace") if r.damaged else ""
        n = int(r.tokens)
        if out is None:
            keys, values = [k[:n] for k in keys], [v[:n] for v in values]
        return Hit(tokens=n, chunks=int(r.chunks), damaged=bool(r.damaged), message=message, keys=keys,
                   values=values)

    def stats(self) -> Stats:
        """The store's totals and this handle's counters.
        The corresponding C function is ``wstore_kv_get_stats``."""
        h = self._live()
        s = _Stats()
        check(lib.wstore_kv_get_stats(h.ptr, C.byref(s)))
        return Stats(chunks=int(s.chunks), leaves=int(s.leaves), stored_bytes=int(s.stored_bytes),
                     raw_bytes=int(s.raw_bytes), chunk_tokens=int(s.chunk_tokens),
                     codec=_CODEC_NAMES.get(s.codec, f"codec{s.codec}"), read_only=bool(s.read_only),
                     lookups=int(s.lookups), lookup_tokens=int(s.lookup_tokens), hit_tokens=int(s.hit_tokens),
                     damaged_chunks=int(s.damaged_chunks))

    def tier_stats(self) -> TierStats | None:
        """The remote tier's counters since this handle was opened; ``None`` without a remote tier.
        The corresponding C function is ``wstore_kv_get_tier_stats``."""
        h = self._live()
        s = _TierStats()
        check(lib.wstore_kv_get_tier_stats(h.ptr, C.byref(s)))
        if not s.has_remote:
            return None
        return TierStats(connected=bool(s.connected), **{n: int(getattr(s, n)) for n in (
            "lookups", "local_hit_chunks", "remote_hit_chunks", "bytes_fetched", "bytes_sent", "sent_chunks",
            "already_remote", "remote_errors", "damaged_remote", "queue_drops", "unsent_chunks", "reconnects",
            "queued")})

    def flush_remote(self, timeout: float = 10.0) -> bool:
        """Waits until every chunk queued for the remote tier has been sent (or dropped), at
        most ``timeout`` seconds; returns whether the queue emptied (``True`` without a remote
        tier). The corresponding C function is ``wstore_kv_flush_remote``."""
        h = self._live()
        if timeout < 0:
            raise InvalidArgument(f"timeout must be >= 0 seconds, got {timeout}")
        drained = C.c_int()
        check(lib.wstore_kv_flush_remote(h.ptr, int(timeout * 1000), C.byref(drained)))
        return bool(drained.value)


def open(path: str | os.PathLike[str], *, chunk_tokens: int = 256, codec: str = "lossless", budget: int = 0,
         max_chunks: int = 0, threads: int = 1, read_only: bool = False, kivi_group: int = 0,
         kivi_residual: int = 0, remote: str | Sequence[str] | None = None, namespace: str | None = None,
         remote_timeout: float = 0.5, queue_chunks: int = 0, durability: str = "synced") -> KVStore:  # noqa: A001
    """Opens the KV store in directory ``path``, creating it with these settings when the
    directory is missing or empty (``chunk_tokens``, ``codec`` — "lossless", "raw",
    "int8", "int4" or "int2" — and ``budget``, the most stored bytes kept, 0 for no limit,
    are fixed at creation; an existing store keeps its own). ``kivi_group`` (0: 64) and
    ``kivi_residual`` tune the int codecs: keys are quantized per channel over runs of
    ``kivi_group`` tokens of a chunk, values per token over runs of ``kivi_group`` channels,
    and the newest ``kivi_residual`` tokens of each chunk stay unquantized.

    ``remote`` adds a shared remote tier on Redis: ``"redis://[user:password@]host:port"``
    for one server, or a list of URLs, the seed nodes of one Redis Cluster. ``namespace``
    prefixes every Redis key (default ``"wstore:kv:"``) so deployments can share one Redis;
    ``remote_timeout`` (seconds) bounds a connect or one pipelined batch; ``queue_chunks``
    (0: 512) bounds the background send queue (a store that finds it full drops and counts).
    A server that does not answer is not an error: the store works from its local tier, warns
    once on stderr and reconnects with backoff (see :meth:`KVStore.tier_stats`).

    ``durability`` is ``"synced"`` or ``"deferred"`` (:meth:`KVStore.set_durability`).

    Raises :class:`wstore.InvalidArgument` for bad settings, :class:`wstore.NotAStore`
    for a directory that holds something else. The corresponding C functions are
    ``wstore_kv_open`` and ``wstore_kv_create`` (``wstore_kv_open_remote`` and
    ``wstore_kv_create_remote`` with ``remote``).
    """
    p = os.fspath(path)
    if codec not in CODECS:
        raise InvalidArgument(f"unknown KV codec {codec!r}: one of {', '.join(CODECS)}")
    if chunk_tokens < 1 or budget < 0 or max_chunks < 0:
        raise InvalidArgument(f"chunk_tokens must be >= 1 and budget, max_chunks >= 0 "
                              f"(got {chunk_tokens}, {budget}, {max_chunks})")
    _durability_code(durability)  # a bad name is refused before anything is made
    tier = None if remote is None else _remote(remote, namespace, remote_timeout, queue_chunks)
    out = C.c_void_p()
    fresh = not os.path.exists(p) or (os.path.isdir(p) and not os.listdir(p))
    if fresh and not read_only:
        opts = _Options(chunk_tokens=chunk_tokens, budget_bytes=budget, max_chunks=max_chunks,
                        codec=CODECS[codec], threads=threads, kivi_group=kivi_group, kivi_residual=kivi_residual)
        if tier is None:
            check(lib.wstore_kv_create(p.encode(), C.byref(opts), C.byref(out)))
        else:
            check(lib.wstore_kv_create_remote(p.encode(), C.byref(opts), C.byref(tier), C.byref(out)))
    elif tier is None:
        check(lib.wstore_kv_open(p.encode(), 1 if read_only else 0, threads, C.byref(out)))
    else:
        check(lib.wstore_kv_open_remote(p.encode(), 1 if read_only else 0, threads, C.byref(tier), C.byref(out)))
    store = KVStore(p, out.value or 0)
    if durability != "synced":
        store.set_durability(durability)
    return store


def _remote(urls: str | Sequence[str], namespace: str | None, timeout: float, queue_chunks: int) -> _Remote:
    """``struct wstore_kv_remote`` for :func:`open`'s remote settings (checked here as far as
    Python can; the library checks each URL)."""
    listed = [urls] if isinstance(urls, str) else list(urls)
    if not listed or not all(isinstance(u, str) and u and "," not in u for u in listed):
        raise InvalidArgument(f"remote must be a redis:// URL or a non-empty list of them, got {urls!r}")
    if timeout <= 0 or queue_chunks < 0:
        raise InvalidArgument(f"remote_timeout must be > 0 seconds and queue_chunks >= 0 "
                              f"(got {timeout}, {queue_chunks})")
    return _Remote(urls=",".join(listed).encode(), key_namespace=None if namespace is None else namespace.encode(),
                   timeout_ms=max(1, round(timeout * 1000)), queue_chunks=queue_chunks)
