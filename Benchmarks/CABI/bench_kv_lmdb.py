"""python-lmdb `get` of every chunk value of a wstore KV store: the baseline for a raw-codec
KV lookup (`wstore bench kv-lookup --codec raw --store DIR`), measured on the same bytes.
python-lmdb is for this measurement only (pip install lmdb); nothing in wstore needs it.

    python3 Benchmarks/CABI/bench_kv_lmdb.py DIR [REPEATS]
"""
import sys
import time

import lmdb

path, repeats = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 7
env = lmdb.open(path, readonly=True, lock=False, max_dbs=8, subdir=True)
db = env.open_db(b"kv.chunks", create=False)
with env.begin(db=db) as txn:
    keys = [k for k, _ in txn.cursor()]
best, total = float("inf"), 0
for _ in range(repeats + 1):
    with env.begin(db=db) as txn:
        t0 = time.perf_counter()
        total = sum(len(txn.get(k)) for k in keys)
        best = min(best, time.perf_counter() - t0)
print(f"python-lmdb get: {len(keys)} values, {total} bytes, {total / best / 1e9:.2f} GB/s (best of {repeats})")
