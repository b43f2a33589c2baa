#!/usr/bin/env python3
"""Corruption sweep: damage copies of a weight store and a KV store in random and
targeted ways, run the `wstore` readers on each in a child process, and check that
every run either fails with a clean one-line error or gives exactly the right output.

Counted as failures: a signal (the reader crashed), a hang (timeout), an error message
of more than one line, a reader that exits 0 with output different from the undamaged
store's (silent wrong bytes), and `verify` passing a store another reader then finds
damaged.

    python3 scripts/corruption_sweep.py --wstore .build/debug/wstore --trials 1000

The LMDB page layout read here (to aim at meta, branch, leaf and overflow pages, keys
and record headers) is LMDB 0.9's for 64-bit builds; format-spec/FORMAT.md §7.
"""
import argparse
import collections
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
F_BIGDATA, F_SUBDATA = 0x01, 0x02


class Layout:
    """Pages, nodes and records of an LMDB data file, found by walking it."""

    def __init__(self, data):
        self.data = data
        psize = struct.unpack_from("<I", data, 16 + 24)[0]
        self.psize = psize
        metas = []
        for i in range(2):
            o = i * psize
            txnid = struct.unpack_from("<Q", data, o + 16 + 24 + 96 + 8)[0]
            last = struct.unpack_from("<Q", data, o + 16 + 24 + 96)[0]
            metas.append((txnid, i, last, o))
        _, _, self.last_pg, mo = max(metas)
        self.used_bytes = (self.last_pg + 1) * psize
        self.kind = {}  # page number -> 'branch' | 'leaf' | 'overflow'
        self.leaf_nodes = collections.defaultdict(list)  # db name -> [(key offset, ksize, node offset, flags)]
        self.records = collections.defaultdict(list)  # db name -> [(value offset, size)]
        self.big_nodes = collections.defaultdict(list)  # db name -> [node offset] of F_BIGDATA nodes
        main_root = struct.unpack_from("<Q", data, mo + 16 + 24 + 48 + 40)[0]
        free_root = struct.unpack_from("<Q", data, mo + 16 + 24 + 40)[0]
        subs = []
        self.walk(main_root, "main", subs)
        for name, root in subs:
            self.walk(root, name, None)
        self.walk(free_root, "free", None)

    def walk(self, pg, db, subs):
        if pg == 0xFFFFFFFFFFFFFFFF:
            return
        d, ps = self.data, self.psize
        o = pg * ps
        flags = struct.unpack_from("<H", d, o + 10)[0]
        lower, upper = struct.unpack_from("<HH", d, o + 12)
        n = (lower - 16) // 2
        ptrs = [struct.unpack_from("<H", d, o + 16 + 2 * i)[0] for i in range(n)]
        if flags & P_BRANCH:
            self.kind[pg] = "branch"
            for p in ptrs:
                lo, hi, fl = struct.unpack_from("<HHH", d, o + p)
                self.walk(lo | hi << 16 | fl << 32, db, subs)
            return
        self.kind[pg] = "leaf"
        for p in ptrs:
            lo, hi, fl, ks = struct.unpack_from("<HHHH", d, o + p)
            dsize = lo | hi << 16
            key = d[o + p + 8:o + p + 8 + ks]
            self.leaf_nodes[db].append((o + p + 8, ks, o + p, fl))
            if fl & F_SUBDATA and subs is not None:
                root = struct.unpack_from("<Q", d, o + p + 8 + ks + 40)[0]
                subs.append((key.decode("utf-8", "replace"), root))
            elif fl & F_BIGDATA:
                ov = struct.unpack_from("<Q", d, o + p + 8 + ks)[0]
                pages = struct.unpack_from("<I", d, ov * ps + 12)[0]
                for q in range(ov, ov + pages):
                    self.kind[q] = "overflow"
                self.records[db].append((ov * ps + 16, dsize))
                self.big_nodes[db].append(o + p)
            else:
                self.records[db].append((o + p + 8 + ks, dsize))

    def pages(self, kind):
        return [p for p, k in self.kind.items() if k == kind]


def flip(buf, off, rng, bits=1):
    for _ in range(bits):
        buf[off] ^= 1 << rng.randrange(8)


def corrupt(kind, buf, lay, rng, is_kv):
    """Applies one corruption of `kind` to `buf` (a bytearray of data.mdb); returns a
    description, or None when the store has nothing of that kind."""
    ps = lay.psize
    recdb = "kv.chunks" if is_kv else "tensors"
    if kind == "random-bytes":
        n = rng.randint(1, 8)
        for _ in range(n):
            flip(buf, rng.randrange(lay.used_bytes), rng)
        return f"{n} random bit flips"
    if kind == "meta":
        i = rng.randrange(2)
        off = i * ps + rng.randrange(16, 16 + 136)
        flip(buf, off, rng)
        return f"meta page {i} byte {off - i * ps}"
    if kind in ("branch", "leaf", "overflow-page"):
        pages = lay.pages({"overflow-page": "overflow"}.get(kind, kind))
        if not pages:
            return None
        pg = rng.choice(pages)
        if kind == "overflow-page" and rng.random() < 0.5:
            off = pg * ps + rng.randrange(16)  # the page header
        else:
            off = pg * ps + rng.randrange(ps)
        flip(buf, off, rng, rng.randint(1, 3))
        return f"{kind} page {pg} byte {off - pg * ps}"
    if kind == "zero-page":
        pg = rng.randrange(2, lay.last_pg + 1)
        buf[pg * ps:(pg + 1) * ps] = bytes(ps)
        return f"page {pg} zeroed"
    if kind == "overflow-pgno":
        nodes = lay.big_nodes[recdb]
        if not nodes:
            return None
        no = rng.choice(nodes)
        ks = struct.unpack_from("<H", buf, no + 6)[0]
        off = no + 8 + ks + rng.randrange(3)
        flip(buf, off, rng)
        return "overflow page number bit flip"
    if kind == "swap-values":
        nodes = lay.big_nodes[recdb]
        if len(nodes) < 2:
            return None
        a, b = rng.sample(nodes, 2)
        ka = struct.unpack_from("<H", buf, a + 6)[0]
        kb = struct.unpack_from("<H", buf, b + 6)[0]
        # Swap the data size (mn_lo, mn_hi) and the overflow page number.
        sa, sb = bytes(buf[a:a + 4]), bytes(buf[b:b + 4])
        pa, pb = bytes(buf[a + 8 + ka:a + 16 + ka]), bytes(buf[b + 8 + kb:b + 16 + kb])
        buf[a:a + 4], buf[b:b + 4] = sb, sa
        buf[a + 8 + ka:a + 16 + ka], buf[b + 8 + kb:b + 16 + kb] = pb, pa
        return "two record values swapped"
    if kind in ("record-header", "frame-table", "payload"):
        recs = [r for r in lay.records[recdb] if r[1] >= 64]
        if not recs:
            return None
        off, size = rng.choice(recs)
        if is_kv:
            # A chunk: its own header and table, then records; aim anywhere in the first KiB.
            at = rng.randrange(min(size, 1024)) if kind != "payload" else rng.randrange(size)
        else:
            hl = struct.unpack_from("<I", buf, off + 8)[0]
            hl = min(max(hl, 64), size)
            rank = buf[off + 15]
            if kind == "record-header":
                at = rng.randrange(64 + 8 * min(rank, 16)) if rng.random() < 0.8 else rng.randrange(hl)
            elif kind == "frame-table":
                start = min(64 + 8 * min(rank, 16), hl - 1)
                at = rng.randrange(start, hl)
            else:
                stored = struct.unpack_from("<Q", buf, off + 32)[0]
                stored = min(stored, size - hl)
                if stored <= 0:
                    return None
                at = hl + rng.randrange(stored)
        flip(buf, off + at, rng, rng.randint(1, 2))
        return f"{kind} byte {at}"
    if kind == "key":
        nodes = [n for n in lay.leaf_nodes[recdb if not is_kv else rng.choice(["kv.chunks", "kv.nodes"])] if n[1] > 0]
        if not nodes:
            return None
        ko, ks, _, _ = rng.choice(nodes)
        flip(buf, ko + rng.randrange(ks), rng)
        return "key bit flip"
    if kind == "key-equal":
        nodes = [n for n in lay.leaf_nodes[recdb] if n[1] > 0]
        pairs = [(a, b) for a in nodes for b in nodes if a != b and a[1] == b[1]]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        buf[a[0]:a[0] + a[1]] = bytes(buf[b[0]:b[0] + b[1]])
        return "a key made equal to another"
    if kind in ("index", "meta-record"):
        if kind == "index":
            db = "kv.nodes" if is_kv else "experts"
        else:
            db = "kv.meta" if is_kv else "meta"
        recs = lay.records[db]
        if not recs:
            return None
        off, size = rng.choice(recs)
        flip(buf, off + rng.randrange(max(1, size)), rng)
        return f"{db} value bit flip"
    if kind == "free-list":
        recs = lay.records["free"]
        if not recs:
            return None
        off, size = rng.choice(recs)
        at = rng.randrange(max(1, size))
        flip(buf, off + at, rng, rng.randint(1, 3))
        return f"free list value byte {at}"
    if kind == "truncate":
        return "truncate"
    raise ValueError(kind)


KINDS = ["random-bytes", "meta", "branch", "leaf", "overflow-page", "zero-page", "overflow-pgno", "swap-values",
         "record-header", "frame-table", "payload", "key", "key-equal", "index", "meta-record", "free-list", "truncate"]


def run(cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return "hang", b"", b""


def readers(wstore, store, out, is_kv):
    if is_kv:
        return {
            "kv-verify": [wstore, "kv", "inspect", store, "--verify", "--json"],
            "kv-inspect": [wstore, "kv", "inspect", store, "--json"],
        }
    return {
        "verify": [wstore, "verify", store],
        "inspect": [wstore, "inspect", store, "--json", "--experts", "--tensors"],
        "export": [wstore, "export", store, "-o", out, "--quiet"],
    }


def normalize(name, stdout, store):
    """The output to compare with the undamaged store's (paths removed)."""
    if name == "verify":
        return b"ok"
    try:
        j = json.loads(stdout)
    except ValueError:
        return stdout
    j.pop("store", None)
    return json.dumps(j, sort_keys=True).encode()


def permission_checks(wstore, store, work, failures):
    """As an unprivileged user: a store readable but not writable is read (LMDB opened
    without its lock file); a folder that cannot be listed says "permission denied"."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        print("permission checks skipped: they need root (to run as nobody) and runuser")
        return
    base = tempfile.mkdtemp(prefix="wstore-perm-")
    try:
        os.chmod(base, 0o755)
        binary = os.path.join(base, "wstore")
        shutil.copy(wstore, binary)
        copy = os.path.join(base, "store")
        shutil.copytree(store, copy)
        for root, dirs, files in os.walk(copy):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        as_nobody = ["runuser", "-u", "nobody", "--", binary]
        p = subprocess.run(as_nobody + ["verify", copy], capture_output=True, timeout=120)
        if p.returncode != 0:
            failures.append(f"read-only store as nobody: verify exit {p.returncode}: {p.stderr!r}")
        os.chmod(copy, 0o700)
        p = subprocess.run(as_nobody + ["inspect", copy], capture_output=True, timeout=120)
        lines = p.stderr.decode(errors="replace").strip().splitlines()
        if p.returncode == 0 or len(lines) != 1 or "permission denied" not in lines[0]:
            failures.append(f"unlistable store as nobody: exit {p.returncode}: {p.stderr!r}")
        print("permission checks: done as nobody")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stores_variants(wstore, work, timeout, expected):
    """A store with q8_0 and q4_0 expert variants (sample, export, pack), and its readers' outputs."""
    sample, src, path = (os.path.join(work, n) for n in ("vsample", "vsrc.safetensors", "variants"))
    subprocess.run([wstore, "sample", sample, "--layers", "2", "--experts", "4", "--quiet"], check=True)
    subprocess.run([wstore, "export", sample, "-o", src, "--quiet"], check=True)
    subprocess.run([wstore, "pack", src, "-o", path, "--expert-variants", "q8_0,q4_0", "--quiet"], check=True)
    out = os.path.join(work, "variants.ref.safetensors")
    for r, cmd in readers(wstore, path, out, False).items():
        rc, so, se = run(cmd, timeout)
        if rc != 0:
            sys.exit(f"undamaged variants store: {r} failed: {se.decode(errors='replace')}")
        expected[("variants", r)] = normalize(r, so, path)
    expected[("variants", "export-bytes")] = open(out, "rb").read()
    return path


def corrupt_variant(buf, lay, rng):
    """One bit flip (or two) in a variant record's header or blocks, or in a variants key."""
    recs = lay.records["variants"]
    if not recs:
        sys.exit("the variants store has no variants sub-database records")
    off, size = rng.choice(recs)
    where = rng.random()
    if where < 0.15:
        ko, ks, _, _ = rng.choice([n for n in lay.leaf_nodes["variants"] if n[1] > 0])
        flip(buf, ko + rng.randrange(ks), rng)
        return "variants key bit flip"
    hl = min(max(struct.unpack_from("<I", buf, off + 8)[0], 64), size)
    if where < 0.5:
        at = rng.randrange(hl)
        flip(buf, off + at, rng)
        return f"variant record header byte {at}"
    stored = min(struct.unpack_from("<Q", buf, off + 32)[0], size - hl)
    at = hl + rng.randrange(max(1, stored))
    flip(buf, off + at, rng, rng.randint(1, 2))
    return f"variant blocks byte {at - hl}"


def check_trial(wstore, args, t, name, kind, what, trial, is_kv, expected, counts, failures, work):
    """Runs every reader on the damaged copy at `trial` and records what each did."""
    out = os.path.join(work, "out.safetensors")
    if os.path.exists(out):
        os.remove(out)
    results = {}
    for r, cmd in readers(wstore, trial, out, is_kv).items():
        rc, so, se = run(cmd, args.timeout)
        results[r] = rc
        problem = None
        if rc == "hang":
            problem = "hang"
        elif rc < 0 or rc >= 128:
            problem = f"signal (exit {rc})"
        elif rc == 1 and r in ("verify", "kv-verify") and so:
            counts["damage reported"] += 1  # a report on stdout, each damaged entry named
        elif rc != 0:
            lines = [l for l in se.decode(errors="replace").splitlines() if l.strip()]
            if len(lines) != 1:
                problem = f"error of {len(lines)} lines: {se[:300]!r}"
            else:
                counts["clean error"] += 1
        else:
            if normalize(r, so, trial) != expected[(name, r)]:
                problem = "silent wrong output"
            elif r == "export" and open(out, "rb").read() != expected[(name, "export-bytes")]:
                problem = "silent wrong bytes"
            else:
                counts["right output"] += 1
        if problem:
            failures.append(f"trial {t} ({name}, {kind}: {what}): {r}: {problem}")
            if args.keep:
                shutil.copytree(trial, os.path.join(os.getcwd(), f"sweep-fail-{t}"), dirs_exist_ok=True)
    if not is_kv and results.get("verify") == 0 and any(v != 0 for v in results.values()):
        failures.append(f"trial {t} ({name}, {kind}: {what}): verify passed, another reader failed: {results}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wstore", required=True)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--keep", action="store_true", help="keep the failing stores")
    ap.add_argument("--variant-trials", type=int, default=None,
                    help="trials on a store with expert variants (default: a tenth of --trials, at least 20)")
    args = ap.parse_args()
    wstore = os.path.abspath(args.wstore)
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="wstore-sweep-")
    try:
        # The stores: zstd records, raw records (several 256 KiB blocks), a KV store with
        # free pages (many write transactions).
        stores = {}
        for name, extra in (("zstd", ["--codec", "zstd"]), ("raw", ["--codec", "raw", "--ffn", "640"])):
            path = os.path.join(work, name)
            subprocess.run([wstore, "sample", path, "--layers", "2", "--experts", "4", "--quiet"] + extra, check=True)
            stores[name] = (path, False)
        kv = os.path.join(work, "kv")
        subprocess.run([wstore, "bench", "kv", "--generate", "30", "--model-shape",
                        "layers=2,kv_heads=2,head_dim=16,dtype=bf16", "--requests", "30", "--block-tokens", "32",
                        "--capacity-blocks", "0", "--store", kv], check=True, capture_output=True)
        stores["kv"] = (kv, True)
        expected = {}
        for name, (path, is_kv) in stores.items():
            out = os.path.join(work, name + ".ref.safetensors")
            for r, cmd in readers(wstore, path, out, is_kv).items():
                rc, so, se = run(cmd, args.timeout)
                if rc != 0:
                    sys.exit(f"undamaged {name} store: {r} failed: {se.decode(errors='replace')}")
                expected[(name, r)] = normalize(r, so, path)
            if not is_kv:
                expected[(name, "export-bytes")] = open(out, "rb").read()
        counts = collections.Counter()
        failures = []
        permission_checks(wstore, stores["zstd"][0], work, failures)
        by_kind = collections.Counter()
        for t in range(args.trials):
            name = rng.choice(list(stores))
            path, is_kv = stores[name]
            kind = KINDS[t % len(KINDS)] if t < len(KINDS) * 3 else rng.choice(KINDS)
            trial = os.path.join(work, "trial")
            shutil.rmtree(trial, ignore_errors=True)
            os.mkdir(trial)
            data = bytearray(open(os.path.join(path, "data.mdb"), "rb").read())
            lay = Layout(bytes(data))
            what = corrupt(kind, data, lay, rng, is_kv)
            if what is None:
                kind, what = "random-bytes", corrupt("random-bytes", data, lay, rng, is_kv)
            if kind == "truncate":
                cut = rng.randrange(8192, lay.used_bytes)
                data = data[:cut]
                what = f"truncated to {cut} of {lay.used_bytes} bytes"
            with open(os.path.join(trial, "data.mdb"), "wb") as f:
                f.write(data)
            by_kind[kind] += 1
            check_trial(wstore, args, t, name, kind, what, trial, is_kv, expected, counts, failures, work)
        # Damage to quantized expert variants (FORMAT.md §8), on a store of their own with a
        # generator of its own, so the trials above stay the same seed for seed.
        vrng = random.Random(args.seed * 7919 + 1)
        vpath = stores_variants(wstore, work, args.timeout, expected)
        vtrials = args.variant_trials if args.variant_trials is not None else max(20, args.trials // 10)
        for t in range(vtrials):
            trial = os.path.join(work, "trial")
            shutil.rmtree(trial, ignore_errors=True)
            os.mkdir(trial)
            data = bytearray(open(os.path.join(vpath, "data.mdb"), "rb").read())
            what = corrupt_variant(data, Layout(bytes(data)), vrng)
            with open(os.path.join(trial, "data.mdb"), "wb") as f:
                f.write(data)
            by_kind["variant"] += 1
            check_trial(wstore, args, f"v{t}", "variants", "variant", what, trial, False, expected, counts, failures,
                        work)
        print(f"{args.trials} + {vtrials} variant trials ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))})")
        print(f"reader runs: {counts['clean error']} clean one-line errors, {counts['damage reported']} verify reports "
              f"of damage, {counts['right output']} right outputs, "
              f"{len(failures)} failures")
        for f in failures[:50]:
            print("FAIL " + f)
        sys.exit(1 if failures else 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
