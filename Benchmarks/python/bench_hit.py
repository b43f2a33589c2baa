"""The Python package's hit path beside bare ctypes, in the same run.

    WSTORE_BIN=.build/release/wstore python Benchmarks/python/bench_hit.py [--runs 7] [--iterations 20000]

Packs a small Mixtral-named checkpoint (written with safetensors) and, with every expert
resident, times per operation:
  package   with residency.acquire(l, e) as x: x.parts  (three read-only numpy arrays)  -> release
  ctypes    wstore_expert_acquire + wstore_expert_parts + wstore_expert_release, bare ctypes calls
            with argtypes declared (as docs/C-ABI.md's example does)
  raw       the same three calls without argtypes, ctypes values passed as they are (the floor)
  call      wstore_abi_version(), the cheapest ctypes call, for scale
and prints each run's figures and the range of package / ctypes over the runs.
"""
from __future__ import annotations

import argparse
import ctypes as C
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import wstore
from wstore import _lib

LAYERS, EXPERTS, HIDDEN, FFN = 2, 8, 64, 128


def make_store(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    t = {}
    for l in range(LAYERS):
        for e in range(EXPERTS):
            p = f"model.layers.{l}.block_sparse_moe.experts.{e}"
            t[f"{p}.w1.weight"] = rng.standard_normal((FFN, HIDDEN), np.float32)
            t[f"{p}.w3.weight"] = rng.standard_normal((FFN, HIDDEN), np.float32)
            t[f"{p}.w2.weight"] = rng.standard_normal((HIDDEN, FFN), np.float32)
    save_file(t, str(tmp / "moe.safetensors"))
    wbin = os.environ.get("WSTORE_BIN", ".build/release/wstore")
    subprocess.run([wbin, "pack", str(tmp / "moe.safetensors"), "-o", str(tmp / "moe.wstore"), "--model", "moe",
                    "--codec", "raw", "--quiet"], check=True)
    return tmp / "moe.wstore"


def per_op(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t0) / n / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = make_store(Path(d))
        store = wstore.open(path)
        res = store.residency("moe", 1 << 30)
        keys = [(l, e) for l in range(LAYERS) for e in range(EXPERTS)]
        for l, e in keys:  # everything resident
            res.acquire(l, e).release()
        lib, h = _lib.lib, res._h.ptr
        acquire, parts, release = lib.wstore_expert_acquire, lib.wstore_expert_parts, lib.wstore_expert_release
        raw_lib = C.CDLL(_lib.path)
        racquire, rparts, rrelease = raw_lib.wstore_expert_acquire, raw_lib.wstore_expert_parts, raw_lib.wstore_expert_release
        hv = C.c_void_p(h)
        c64 = [C.c_int64(i) for i in range(max(LAYERS, EXPERTS))]
        abi = lib.wstore_abi_version
        nk = len(keys)

        def package(n: int) -> None:
            for i in range(n):
                l, e = keys[i % nk]
                with res.acquire(l, e) as x:
                    x.parts

        def bare(n: int) -> None:
            out, arr, cnt = C.c_void_p(), C.POINTER(C.c_void_p)(), C.c_size_t()
            for i in range(n):
                l, e = keys[i % nk]
                acquire(h, l, e, C.byref(out))
                parts(out, C.byref(arr), C.byref(cnt))
                release(out)

        def raw(n: int) -> None:
            out, arr, cnt = C.c_void_p(), C.POINTER(C.c_void_p)(), C.c_size_t()
            bout, barr, bcnt = C.byref(out), C.byref(arr), C.byref(cnt)
            for i in range(n):
                l, e = keys[i % nk]
                racquire(hv, c64[l], c64[e], bout)
                rparts(out, barr, bcnt)
                rrelease(out)

        def call(n: int) -> None:
            for _ in range(n):
                abi()

        # The arrays really are the parts, of their dtype and shape.
        with res.acquire(0, 0) as x:
            assert x["up"].shape == (FFN, HIDDEN) and x["up"].dtype == np.float32
            first = x._resident
        with res.acquire(0, 0) as x:
            assert x._resident is first, "a hit rebuilt the arrays: the benchmark would time the miss path"
        ratios, raw_ratios, pkg = [], [], []
        print(f"{'run':>4} {'package µs':>11} {'ctypes µs':>10} {'raw µs':>7} {'call µs':>8} "
              f"{'package/ctypes':>15} {'package/raw':>12}")
        for r in range(args.runs):
            p = per_op(package, args.iterations)
            b = per_op(bare, args.iterations)
            w = per_op(raw, args.iterations)
            c = per_op(call, args.iterations)
            ratios.append(p / b)
            raw_ratios.append(p / w)
            pkg.append(p)
            print(f"{r:>4} {p:>11.2f} {b:>10.2f} {w:>7.2f} {c:>8.3f} {p / b:>15.2f} {p / w:>12.2f}")
        s = res.stats()
        print(f"package {min(pkg):.2f}-{max(pkg):.2f} µs; package/ctypes {min(ratios):.2f}-{max(ratios):.2f}x "
              f"(median {statistics.median(ratios):.2f}x); package/raw {min(raw_ratios):.2f}-{max(raw_ratios):.2f}x "
              f"(median {statistics.median(raw_ratios):.2f}x) over {args.runs} runs of {args.iterations}; "
              f"hit rate {s.hit_rate:.4f}; "
              f"python {sys.version.split()[0]}, numpy {np.__version__}, library {wstore.library_path}")
        res.close()
        store.close()


if __name__ == "__main__":
    main()
