"""Element types: the C ABI's dtype codes (enum wstore_dtype) as numpy dtypes, bf16 and the
fp8 formats through ml_dtypes."""
from __future__ import annotations

import ml_dtypes
import numpy as np

#: enum wstore_dtype code -> numpy dtype, for every type with one element per byte group.
#: Packed sub-byte types (F4 = 19, F6_E2M3 = 20, F6_E3M2 = 21) and GGML blocks (255) have
#: none: their arrays are the raw bytes as uint8.
BY_CODE: dict[int, np.dtype] = {
    0: np.dtype(np.bool_),
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype("<i2"),
    4: np.dtype("<u2"),
    5: np.dtype("<i4"),
    6: np.dtype("<u4"),
    7: np.dtype("<i8"),
    8: np.dtype("<u8"),
    9: np.dtype("<f2"),
    10: np.dtype(ml_dtypes.bfloat16),
    11: np.dtype("<f4"),
    12: np.dtype("<f8"),
    13: np.dtype(ml_dtypes.float8_e4m3fn),
    14: np.dtype(ml_dtypes.float8_e5m2),
    16: np.dtype("<c8"),
    17: np.dtype(ml_dtypes.float8_e4m3fnuz),
    18: np.dtype(ml_dtypes.float8_e5m2fnuz),
}
if hasattr(ml_dtypes, "float8_e8m0fnu"):
    BY_CODE[15] = np.dtype(ml_dtypes.float8_e8m0fnu)

#: numpy dtype -> code, for arrays handed to the library (the KV cache).
CODE_OF: dict[np.dtype, int] = {dt: code for code, dt in BY_CODE.items()}

_NAMES = {0: "bool", 1: "u8", 2: "i8", 3: "i16", 4: "u16", 5: "i32", 6: "u32", 7: "i64", 8: "u64", 9: "f16",
          10: "bf16", 11: "f32", 12: "f64", 13: "f8_e4m3", 14: "f8_e5m2", 15: "f8_e8m0", 16: "c64",
          17: "f8_e4m3fnuz", 18: "f8_e5m2fnuz", 19: "f4", 20: "f6_e2m3", 21: "f6_e3m2", 255: "ggml"}


def name(code: int) -> str:
    """The store's short name of a dtype code ("bf16", "f8_e4m3", "ggml", ...)."""
    return _NAMES.get(code, f"dtype{code}")


def array_layout(code: int, shape: tuple[int, ...], raw_size: int) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape of the array that holds a tensor: its own, or ``uint8`` over its
    ``raw_size`` bytes for the types numpy has no dtype for (packed f4/f6, GGML blocks)."""
    dt = BY_CODE.get(code)
    if dt is None:
        return np.dtype(np.uint8), (raw_size,)
    return dt, shape
