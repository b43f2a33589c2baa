#!/usr/bin/env python3
"""Python peers of wstore's load paths, measured in the same run as wstore itself.

    python Benchmarks/peers.py --wstore .build/release/wstore --checkpoint model.safetensors \
        --store model.wstore [--repeats 3] [--parts pack,load,kv] [--kv-puts 32]

- safetensors `safe_open(...).get_tensor` of the store's expert tensors, warm and cold
  (the file's pages dropped with posix_fadvise before each expert), beside
  `wstore bench load STORE --experts [--cold] --source CHECKPOINT --json`;
- python-lmdb put of KV-chunk-sized values (distinct ones, and one value again and again;
  one durable commit per put, as a KV store commits, and with sync off) and get, beside `wstore bench kv
  --model-shape ... --durability synced|deferred` with the raw codec (the same bytes, each
  request's new chunks in one commit, synced beside sync per commit and deferred beside sync
  off) and the lossless one (beside its own encode of the same chunks);
- `cp` + `sync` of the checkpoint beside `wstore pack --codec raw` and `wstore pack` (the
  default codec) of it, the checkpoint's pages in memory for both.

Each timed KV write starts after os.sync(), in memory made cold or warm for every run
alike (--memory; see prepare()).

Every figure is a ratio against a peer measured in the same run; the machine may be
shared, so repeat (--repeats) and report ranges. Needs numpy, safetensors and lmdb
(`make bench-peers` installs lmdb into a venv).
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time

import numpy as np
from safetensors import safe_open

EXPERT = re.compile(r"\.experts\.(\d+)\.")


def experts_of(path):
    """Expert tensors of a Mixtral/Qwen-style checkpoint, grouped by (layer, expert)."""
    groups = {}
    with safe_open(path, "np") as f:
        for name in f.keys():
            m, l = EXPERT.search(name), re.search(r"layers\.(\d+)\.", name)
            if m and l:
                groups.setdefault((int(l.group(1)), int(m.group(1))), []).append(name)
    return [sorted(v) for _, v in sorted(groups.items())]


def numpy_view(path):
    """numpy has no bfloat16: a copy of the checkpoint whose header says F16 for BF16
    (the same bytes and header length: `"BF16"` becomes `"F16" `), so get_tensor returns
    the same bytes as float16 arrays. Made once, next to the checkpoint."""
    view = path + ".f16-view"
    if not os.path.exists(view) or os.path.getmtime(view) < os.path.getmtime(path):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(n).replace(b'"BF16"', b'"F16" ')
            with open(view + ".tmp", "wb") as out:
                out.write(n.to_bytes(8, "little"))
                out.write(header)
                shutil.copyfileobj(f, out, 16 << 20)
        os.replace(view + ".tmp", view)
    return view


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def get_tensor_gbps(path, groups, cold):
    total, seconds = 0, 0.0
    with safe_open(path, "np") as f:
        for names in groups:
            if cold:
                drop(path)
            t0 = time.perf_counter()
            arrays = [f.get_tensor(n) for n in names]
            seconds += time.perf_counter() - t0
            total += sum(a.nbytes for a in arrays)
    return total / seconds / 1e9


def wstore_json(args, *cmd):
    out = subprocess.run([args.wstore, *cmd, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def load_rows(args):
    groups = experts_of(args.checkpoint)[: args.limit]
    view = numpy_view(args.checkpoint)
    rows = []
    for cold in (False, True):
        st = get_tensor_gbps(view, groups, cold)
        cmd = ["bench", "load", args.store, "--experts", "--source", args.checkpoint, "--limit", str(args.limit)]
        report = wstore_json(args, *(cmd + (["--cold"] if cold else [])))
        for p in report["paths"]:
            if p.get("bytes", 0) > 0 and p["path"].startswith("materialize"):
                rows.append(("cold" if cold else "warm", p["path"], p["gbps"], st))
    return rows


def lmdb_rows(args, memory):
    """python-lmdb put and get of `--kv-puts` values one KV chunk long: distinct values (as a
    KV store's chunks are; 512 MiB made before timing), and one value put again and again
    (its bytes stay in the CPU caches), with a sync per commit and with sync off."""
    import lmdb

    size = kv_chunk_bytes(args.kv_shape)
    rng = np.random.default_rng(1)
    distinct = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(args.kv_puts)]
    rows = []
    for sync in (True, False):
        for label, values in (("", distinct), (", one value repeated", [distinct[0]] * args.kv_puts)):
            d = tempfile.mkdtemp(prefix="peers-lmdb-")
            try:
                env = lmdb.open(d, map_size=(args.kv_puts + 4) * size * 2, sync=sync, writemap=True, metasync=sync)
                prepare(args, memory)
                t0 = time.perf_counter()
                for i, value in enumerate(values):
                    with env.begin(write=True) as txn:
                        txn.put(b"chunk%08d" % i, value)
                put = args.kv_puts * size / (time.perf_counter() - t0) / 1e9
                t0 = time.perf_counter()
                with env.begin() as txn:
                    for i in range(args.kv_puts):
                        b = bytes(txn.get(b"chunk%08d" % i))
                get = args.kv_puts * size / (time.perf_counter() - t0) / 1e9
                env.close()
            finally:
                shutil.rmtree(d, ignore_errors=True)
            rows.append(("sync per commit" + label if sync else "sync off" + label, put, get))
    return rows


def prepare(args, memory):
    """Before a timed write: os.sync(), so no dirty pages of an earlier run are left for the
    kernel to throttle this one on; then the memory the write's new page-cache pages will
    come from is made `cold` or `warm`, the same for every run.

    On a VM whose balloon reports free memory to the host (virtio-balloon free page
    reporting), new page-cache pages made from memory freed a moment ago fill several times
    faster than ones made from memory freed seconds earlier, which the host has taken back
    (measured here, a 1 GiB file written with pwrite: 4.6-4.8 GB/s right after another was
    deleted, 0.42-0.60 GB/s 2-8 s after). Left to chance, a run that follows a large free
    (python-lmdb's runs follow one another's deleted stores) writes at the first rate, one
    that starts after seconds of setup (a bench kv process) at the second, and the ratio
    measures that, not the stores. `cold`: `--settle` seconds idle, so nothing freed is
    hot. `warm`: a scratch file of `--warm-bytes` written and deleted just before, the
    state of a long-running host whose page cache reuses the memory it reclaims. Warm does
    not last: memory left free gets reported within a second or two, so python-lmdb's loop
    (512 MiB in about 0.2 s) runs all warm and a bench kv replay (about 2.5 s, its own
    generated KV made between puts) only in part; cold holds for both."""
    os.sync()
    if memory == "cold":
        time.sleep(args.settle)
        return
    fd, path = tempfile.mkstemp(prefix="peers-warm-")
    try:
        block = b"\1" * (16 << 20)
        for _ in range(max(1, args.warm_bytes // len(block))):
            os.write(fd, block)
    finally:
        os.close(fd)
        os.unlink(path)


def timed(*cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def pack_rows(args):
    """Seconds of cp + sync, pack --codec raw and pack (default codec) of the checkpoint,
    each writing a new file or store in a fresh folder beside the peers' store; the
    checkpoint is read once first so every one of them finds it in memory."""
    with open(args.checkpoint, "rb") as f:
        while f.read(64 << 20):
            pass
    base = tempfile.mkdtemp(prefix="peers-pack-", dir=os.path.dirname(os.path.abspath(args.store)))
    try:
        out = os.path.join(base, "copy.safetensors")
        cp = timed("sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", args.checkpoint, out)
        os.unlink(out)
        rows = {"cp + sync": cp}
        for label, extra in (("pack --codec raw", ["--codec", "raw"]), ("pack (default codec)", [])):
            store = os.path.join(base, "packed.wstore")
            rows[label] = timed(args.wstore, "pack", args.checkpoint, "-o", store, "--quiet", *extra)
            shutil.rmtree(store)
        return rows
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wstore", required=True)
    ap.add_argument("--checkpoint", required=True, help="the safetensors file STORE was packed from")
    ap.add_argument("--store", required=True)
    ap.add_argument("--limit", type=int, default=48, help="experts per pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-puts", type=int, default=32)
    ap.add_argument("--memory", default="cold,warm",
                    help="comma-separated: cold, warm; the memory each timed KV write starts in (see prepare())")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before a cold KV write")
    ap.add_argument("--warm-bytes", type=int, default=2 << 30, help="scratch bytes written before a warm KV write")
    ap.add_argument("--kv-shape", default="layers=8,kv_heads=8,head_dim=128,dtype=bf16")
    ap.add_argument("--parts", default="load,kv,pack", help="comma-separated: load, kv, pack")
    args = ap.parse_args()
    if not set(args.memory.split(",")) <= {"cold", "warm"}:
        ap.error(f"--memory takes cold and warm, not {args.memory}")
    parts = set(args.parts.split(","))
    if "pack" in parts:
        pack_report(args)
    if "load" in parts:
        load_report(args)
    if "kv" in parts:
        kv_report(args)


def pack_report(args):
    size = os.path.getsize(args.checkpoint)
    runs = {}
    for _ in range(args.repeats):
        for label, seconds in pack_rows(args).items():
            runs.setdefault(label, []).append(seconds)
    print(f"pack beside cp + sync of {size / 2**20:.0f} MiB (same run, {args.repeats} repeats; ranges min-max)")
    print(f"  {'':22} {'MB/s':>13} {'x cp + sync':>13}")
    cp = runs["cp + sync"]
    for label, v in runs.items():
        mbps = [size / s / 1e6 for s in v]
        ratio = [c / s for c, s in zip(cp, v)]
        print(f"  {label:22} {min(mbps):6.0f}-{max(mbps):<6.0f} {min(ratio):6.2f}-{max(ratio):<6.2f}")
    print()


def load_report(args):
    load = {}
    for _ in range(args.repeats):
        for warmth, path, gbps, st in load_rows(args):
            load.setdefault((warmth, path), []).append((gbps, st, gbps / st))
    print(f"wstore bench load beside safetensors get_tensor (same run, {args.repeats} repeats; ranges min-max)")
    print(f"{'':5} {'wstore path':38} {'wstore GB/s':>13} {'get_tensor GB/s':>16} {'ratio':>11}")
    for (warmth, path), v in load.items():
        g, s, r = zip(*v)
        print(f"{warmth:5} {path:38} {min(g):5.2f}-{max(g):<6.2f} {min(s):7.2f}-{max(s):<7.2f} {min(r):5.2f}-{max(r):<5.2f}")
    print()


def kv_chunk_bytes(shape, block_tokens=512):
    """Bytes of one KV chunk of `layers=..,kv_heads=..,head_dim=..,dtype=..` (keys and values)."""
    f = dict(kv.split("=") for kv in shape.split(","))
    size = {"bf16": 2, "f16": 2, "f32": 4}[f.get("dtype", "bf16")]
    return int(f["layers"]) * 2 * int(f["kv_heads"]) * block_tokens * int(f["head_dim"]) * size


def kv_report(args):
    """python-lmdb put of values the size of one wstore KV chunk, beside `wstore bench kv`
    with the raw codec (the same bytes, at the same durability: synced commits beside
    python-lmdb's sync mode, deferred ones beside sync off; one commit per request's new
    chunks) and the lossless codec, at the store's default of one thread a chunk and on
    every core (beside its own encode of the very chunks the puts wrote, and of one block
    again and again, measured by bench kv in the same process). Every run starts after
    os.sync() in memory made cold or warm (prepare()); each condition is reported apart."""
    for memory in args.memory.split(","):
        kv_report_in(args, memory)


def kv_report_in(args, memory):
    chunk = kv_chunk_bytes(args.kv_shape)
    print(f"KV put in {memory} memory: python-lmdb and wstore bench kv ({args.kv_shape}, "
          f"{chunk / 2**20:.0f} MiB chunks; same run, {args.repeats} repeats; ranges min-max)")
    kv, ratios, work = {}, {}, {}
    for _ in range(args.repeats):
        peers = {mode: (put, get) for mode, put, get in lmdb_rows(args, memory)}
        for mode, v in peers.items():
            kv.setdefault("python-lmdb " + mode, []).append(v)
        # The lossless codec at the store's default (one thread a chunk) and on every core.
        for codec, threads in (("raw", None), ("lossless", 1), ("lossless", None)):
            name = codec if threads is None else f"{codec} threads={threads}"
            for durability, peer in (("synced", "sync per commit"), ("deferred", "sync off")):
                prepare(args, memory)
                report = wstore_json(args, "bench", "kv", "--model-shape", args.kv_shape, "--requests", "16",
                                     "--capacity-blocks", "0", "--codec", codec, "--durability", durability,
                                     *(["--threads", str(threads)] if threads else []))
                s = report.get("store") or report.get("storeReport") or {}
                put = s["putBytes"] / s["putSeconds"] / 1e9
                kv.setdefault(f"wstore kv {name} {durability}", []).append(
                    (put, s["getBytes"] / max(s["getSeconds"], 1e-12) / 1e9))
                work.setdefault(f"wstore kv {name} {durability}", []).append(
                    (s["putCPUSeconds"] / s["putSeconds"], s["putCPUSeconds"] / (s["putBytes"] / 1e9),
                     s["encodeCPUSeconds"] / (s["encodeGBps"] * s["encodeSeconds"])))
                if codec == "raw":
                    ratios.setdefault(f"raw put {durability} / python-lmdb put ({peer})", []).append(
                        put / peers[peer][0])
                else:
                    ratios.setdefault(f"{name} put {durability} / its encode of the same chunks", []).append(
                        put / s["encodeGBps"])
                    ratios.setdefault(f"{name} put {durability} / its encode of one block repeated", []).append(
                        put / s["encodeOneBlockGBps"])
    for mode, v in kv.items():
        p, g = zip(*v)
        print(f"  {mode:38} put {min(p):5.2f}-{max(p):<5.2f} GB/s   get {min(g):5.2f}-{max(g):<5.2f} GB/s")
    for label, r in ratios.items():
        print(f"  {label:62} {min(r):5.2f}-{max(r):<5.2f} (median {sorted(r)[len(r) // 2]:.2f})")
    print(f"  CPU during the puts (every thread; {os.cpu_count()} cores):")
    for mode, v in work.items():
        c, w, e = zip(*v)
        print(f"  {mode:38} cores busy {min(c):4.2f}-{max(c):<4.2f}  CPU s/GB put {min(w):4.2f}-{max(w):<4.2f}"
              f"  encode alone {min(e):4.2f}-{max(e):<4.2f}")
    print()


if __name__ == "__main__":
    sys.exit(main())
