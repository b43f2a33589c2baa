"""The one place that calls libwstore-c.so: loading, ctypes signatures, structs, and the
funnel from a status code to an exception. Nothing else in the package touches ctypes'
function objects directly.

Where the library comes from: the path in the ``WSTORE_LIB`` environment variable when it
is set, else ``libwstore-c.so`` inside this package (``make python`` puts it there).
"""
from __future__ import annotations

import ctypes as C
import os
from pathlib import Path
from typing import Any, NoReturn

from ._errors import error_for

MAX_RANK = 16  # WSTORE_MAX_RANK


class TensorInfo(C.Structure):
    """``struct wstore_tensor_info``."""

    _fields_ = [("dtype", C.c_int32), ("ggml_type", C.c_uint32), ("codec", C.c_int32), ("rank", C.c_int32),
                ("shape", C.c_int64 * MAX_RANK), ("raw_size", C.c_uint64), ("stored_size", C.c_uint64),
                ("checksum", C.c_uint64)]


class ResidencyStats(C.Structure):
    """``struct wstore_residency_stats``."""

    _fields_ = [(n, C.c_uint64) for n in (
        "demand_hits", "demand_misses", "prefetch_hits", "wasted_prefetches", "demand_loads", "prefetch_loads",
        "bytes_loaded", "wait_ns", "coalesced_waits", "dropped_prefetches", "evictions", "resident_bytes",
        "peak_resident_bytes", "budget", "expert_bytes")] + [("layers", C.c_int64), ("experts_per_layer", C.c_int64)] + [
        (n, C.c_uint64) for n in ("layer_resident_experts", "layer_resident_bytes")]


class ExpertPart(C.Structure):
    """``struct wstore_expert_part``."""

    _fields_ = [("name", C.c_char_p), ("data", C.c_void_p), ("size", C.c_size_t), ("dtype", C.c_int32),
                ("rank", C.c_int32), ("shape", C.POINTER(C.c_int64))]


class PartBlocks(C.Structure):
    """``struct wstore_part_blocks``."""

    _fields_ = [(n, C.c_int32) for n in ("precision", "dtype")] + [("ggml_type", C.c_uint32)] + [
        (n, C.c_int32) for n in ("block_elements", "block_bytes", "scale_offset", "scale_dtype", "quant_offset",
                                 "quant_bits", "quant_signed", "zero_point")] + [
        ("elements", C.c_int64), ("blocks", C.c_int64)]


MODEL_FN = C.CFUNCTYPE(C.c_int, C.c_char_p, C.c_void_p)
TENSOR_LIST_FN = C.CFUNCTYPE(C.c_int, C.c_char_p, C.POINTER(TensorInfo), C.c_void_p)
TENSOR_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_size_t, C.POINTER(TensorInfo), C.c_void_p)
EXPERT_LIST_FN = C.CFUNCTYPE(C.c_int, C.c_int64, C.c_int64, C.c_char_p, C.c_char_p, C.c_void_p)

_vp, _cp, _i64, _i32, _sz = C.c_void_p, C.c_char_p, C.c_int64, C.c_int, C.c_size_t
_P = C.POINTER

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "wstore_abi_version": (C.c_int, []),
    "wstore_version": (C.c_char_p, []),
    "wstore_last_error": (C.c_char_p, []),
    "wstore_status_name": (C.c_char_p, [C.c_int]),
    "wstore_open": (C.c_int, [_cp, _P(_vp)]),
    "wstore_close": (C.c_int, [_vp]),
    "wstore_format_version": (C.c_int, [_vp, _P(C.c_int)]),
    "wstore_model_info": (C.c_int, [_vp, _cp, _P(_i64), _P(_i64), _P(_i64)]),
    "wstore_list_models": (C.c_int, [_vp, MODEL_FN, _vp]),
    "wstore_info": (C.c_int, [_vp, _cp, _cp, _P(TensorInfo)]),
    "wstore_list_tensors": (C.c_int, [_vp, _cp, TENSOR_LIST_FN, _vp]),
    "wstore_with_tensor": (C.c_int, [_vp, _cp, _cp, C.c_uint32, TENSOR_FN, _vp]),
    "wstore_read": (C.c_int, [_vp, _cp, _cp, _vp, _sz, C.c_int]),
    "wstore_list_experts": (C.c_int, [_vp, _cp, _i64, EXPERT_LIST_FN, _vp]),
    "wstore_residency_open": (C.c_int, [_vp, _cp, _i64, _cp, C.c_int, _i64, _P(_vp)]),
    "wstore_residency_close": (C.c_int, [_vp]),
    "wstore_expert_acquire": (C.c_int, [_vp, _i64, _i64, _P(_vp)]),
    "wstore_expert_acquire_many": (C.c_int, [_vp, _i64, _P(_i64), _sz, _P(_vp), _P(C.c_int)]),
    "wstore_expert_hit": (C.c_int, [_vp, _P(C.c_int)]),
    "wstore_expert_acquire_precision": (C.c_int, [_vp, _i64, _i64, C.c_int32, C.c_uint32, _P(_vp)]),
    "wstore_expert_acquire_many_precision": (C.c_int, [_vp, _i64, _P(_i64), _sz, C.c_int32, C.c_uint32, _P(_vp),
                                                       _P(C.c_int)]),
    "wstore_expert_precision": (C.c_int, [_vp, _P(C.c_int32)]),
    "wstore_expert_part_blocks": (C.c_int, [_vp, _cp, _P(PartBlocks)]),
    "wstore_expert_dequantize": (C.c_int, [_vp, _cp, C.c_int32, _vp, _sz]),
    "wstore_expert_parts": (C.c_int, [_vp, _P(_P(_vp)), _P(_sz)]),
    "wstore_expert_part_by_name": (C.c_int, [_vp, _cp, _P(_vp), _P(_sz)]),
    "wstore_expert_release": (C.c_int, [_vp]),
    "wstore_residency_prefetch": (C.c_int, [_vp, _i64, _P(_i64), _sz]),
    "wstore_residency_get_stats": (C.c_int, [_vp, _i64, _P(ResidencyStats)]),
    "wstore_residency_mask": (C.c_int, [_vp, _i64, _P(C.c_uint64), C.c_size_t, _P(C.c_size_t)]),
    "wstore_residency_observe": (C.c_int, [_vp, _i64, _P(C.c_int32), _P(C.c_float), C.c_size_t]),
    "wstore_residency_route": (C.c_int, [_vp, _i64, _P(C.c_int32), _P(C.c_float), C.c_size_t, C.c_int32, C.c_double,
                                         _P(C.c_int32), _P(C.c_int32), _P(C.c_double)]),
}


def _library_path() -> str:
    env = os.environ.get("WSTORE_LIB")
    if env:
        return env
    here = Path(__file__).resolve().parent / "libwstore-c.so"
    if here.exists():
        return str(here)
    raise ImportError("libwstore-c.so not found: set WSTORE_LIB to its path, or run `make python` "
                      "(which places it inside the package) before `pip install ./python`")


path = _library_path()
lib = C.CDLL(path)
for _name, (_res, _args) in _SIGNATURES.items():
    _f = getattr(lib, _name)  # AttributeError: a library older than this package
    _f.restype = _res
    _f.argtypes = _args

#: The hit path's three functions again, without ``argtypes``: ctypes then passes ctypes
#: instances as they are instead of converting every argument, which halves the cost of
#: a call. Callers pass ONLY ctypes instances of the declared C types (c_void_p handles,
#: c_int64 numbers, byref() out-parameters); anything else is undefined behaviour.
fast = C.CDLL(path)
for _name in ("wstore_expert_acquire", "wstore_expert_parts", "wstore_expert_release"):
    getattr(fast, _name).restype = C.c_int

#: The library's ABI version (``wstore_abi_version``).
abi_version: int = lib.wstore_abi_version()
if abi_version < 2:
    raise ImportError(f"{path} has C ABI version {abi_version}; this package needs 2 or later (rebuild it)")
#: The library's wstore version string.
version: str = lib.wstore_version().decode()


def has(symbol: str) -> bool:
    """Whether the loaded library exports ``symbol`` (an ABI extension)."""
    return hasattr(lib, symbol)


def raise_status(rc: int) -> NoReturn:
    """Raises the exception for status ``rc`` with the calling thread's C message."""
    message = (lib.wstore_last_error() or b"").decode("utf-8", "replace")
    name = (lib.wstore_status_name(rc) or b"").decode()
    raise error_for(rc, name, message or name)


def check(rc: int) -> None:
    """Raises for a non-zero status code."""
    if rc:
        raise_status(rc)


def cstr(s: str | None) -> bytes | None:
    """A Python string as a NUL-terminated UTF-8 argument (None stays NULL)."""
    return None if s is None else s.encode()
