"""abi_check.py: libwstore-c.so from Python through ctypes, as a Python engine would use it.

Run by CABITests:  python3 abi_check.py LIBRARY STORE
on the store abi_check.c describes. Prints one line per failed check and exits 1 if any.
"""
import ctypes as C
import sys

WSTORE_OK, WSTORE_E_NOT_FOUND, WSTORE_E_BUFFER_TOO_SMALL = 0, -2, -7


class TensorInfo(C.Structure):
    """struct wstore_tensor_info of include/wstore.h."""
    _fields_ = [("dtype", C.c_int32), ("ggml_type", C.c_uint32), ("codec", C.c_int32), ("rank", C.c_int32),
                ("shape", C.c_int64 * 16), ("raw_size", C.c_uint64), ("stored_size", C.c_uint64),
                ("checksum", C.c_uint64)]


TENSOR_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_size_t, C.POINTER(TensorInfo), C.c_void_p)

failures = 0
checks = 0


def check(ok, what):
    global failures, checks
    checks += 1
    if not ok:
        failures += 1
        print(f"FAIL {what} (last error: {lib.wstore_last_error().decode()})")


lib = C.CDLL(sys.argv[1])
lib.wstore_last_error.restype = C.c_char_p
lib.wstore_open.argtypes = [C.c_char_p, C.POINTER(C.c_void_p)]
lib.wstore_close.argtypes = [C.c_void_p]
lib.wstore_info.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.POINTER(TensorInfo)]
lib.wstore_with_tensor.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_uint32, TENSOR_FN, C.c_void_p]
lib.wstore_read.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_void_p, C.c_size_t, C.c_int]

store = C.c_void_p()
check(lib.wstore_open(sys.argv[2].encode(), C.byref(store)) == WSTORE_OK, "open")

info = TensorInfo()
check(lib.wstore_info(store, b"m", b"big", C.byref(info)) == WSTORE_OK, "info big")
check(info.rank == 2 and list(info.shape[:2]) == [256, 64] and info.raw_size == 256 * 64 * 2, "big shape and size")

# Decode straight into a Python-owned buffer.
buf = bytearray(info.raw_size)
cbuf = (C.c_char * len(buf)).from_buffer(buf)
check(lib.wstore_read(store, b"m", b"big", cbuf, len(buf), 0) == WSTORE_OK, "read big")
check(all(buf[i] == (i * 13 + i // 256) & 0xFF for i in range(len(buf))), "decoded bytes equal what was written")
check(lib.wstore_read(store, b"m", b"big", cbuf, 100, 0) == WSTORE_E_BUFFER_TOO_SMALL, "buffer too small")
check(b"too small" in lib.wstore_last_error(), "too-small message")

# Zero-copy: the callback sees the bytes in place; copy what must outlive it.
seen = []


@TENSOR_FN
def on_bytes(data, size, info_p, ctx):
    seen.append(C.string_at(data, size))
    return 0


check(lib.wstore_with_tensor(store, b"m", b"embed", 0, on_bytes, None) == WSTORE_OK, "with_tensor embed")
check(seen == [bytes((i * 7 + 3) & 0xFF for i in range(128))], "zero-copy bytes equal what was written")

check(lib.wstore_info(store, b"m", b"missing.weight", C.byref(info)) == WSTORE_E_NOT_FOUND, "missing tensor")
check(lib.wstore_last_error() == b"not found: tensor missing.weight in model m", "not-found message")

lib.wstore_close(store)
print(f"abi_check.py: {checks} checks, {failures} failed")
sys.exit(1 if failures else 0)
