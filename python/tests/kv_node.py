"""One engine node, as its own OS process: stores a prompt's KV, or looks it up, through a
KV store with a remote tier on Redis. Run by test_kv_remote.py, twice, as two nodes.

    python kv_node.py store  STORE URL CODEC DTYPE SEED OUT.json
    python kv_node.py lookup STORE URL CODEC DTYPE SEED OUT.npz

Both nodes make the same prompt from SEED; `store` writes it and waits until the remote tier
has it; `lookup` starts from an empty local store and saves what its lookup delivered.
Each writes the node's tier counters (JSON) to OUT.json / beside OUT.npz.
"""
from __future__ import annotations

import dataclasses
import json
import sys

import ml_dtypes
import numpy as np

import wstore.kv

L, H, D, CHUNK, TOKENS = 3, 4, 64, 64, 320  # 5 whole chunks
NAMESPACE = "wstore:kv-node-test:"


def prompt(dtype: np.dtype, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The prompt's token ids, and per layer its keys and values [tokens, kv_heads, head_dim]."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 32000, TOKENS, dtype=np.uint32)
    keys = [(rng.standard_normal((TOKENS, H, D)) * 2).astype(dtype) for _ in range(L)]
    values = [rng.standard_normal((TOKENS, H, D)).astype(dtype) for _ in range(L)]
    return tokens, keys, values


def dtype_named(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def tier(kv: wstore.kv.KVStore) -> dict[str, object]:
    s = kv.tier_stats()
    assert s is not None, "the store was opened with a remote tier"
    return dataclasses.asdict(s)


def bits(a: np.ndarray) -> np.ndarray:
    """2-byte floats as their bits (numpy's .npz does not know bfloat16)."""
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a


def main(role: str, store: str, url: str, codec: str, dtype_name: str, seed: int, out: str) -> int:
    dtype = dtype_named(dtype_name)
    tokens, keys, values = prompt(dtype, seed)
    with wstore.kv.open(store, chunk_tokens=CHUNK, codec=codec, kivi_group=32, remote=url, namespace=NAMESPACE,
                        remote_timeout=5.0) as kv:
        if role == "store":
            cached = kv.store(tokens, keys, values)
            drained = kv.flush_remote(timeout=30)
            stats = tier(kv)
            with open(out, "w") as f:
                json.dump({"cached": cached, "drained": drained, "tier": stats}, f)
        else:
            local_before = kv.probe(tokens)
            hit = kv.lookup(tokens, layers=L, kv_heads=H, head_dim=D, dtype=dtype)
            local_after = kv.probe(tokens)
            np.savez(out, **{f"k{i}": bits(k) for i, k in enumerate(hit.keys)},
                     **{f"v{i}": bits(v) for i, v in enumerate(hit.values)})
            stats = tier(kv)
            with open(out + ".json", "w") as f:
                json.dump({"local_before": local_before, "local_after": local_after, "tokens": hit.tokens,
                           "damaged": hit.damaged, "message": hit.message, "tier": stats}, f)
    return 0


if __name__ == "__main__":
    role, store, url, codec, dtype_name, seed, out = sys.argv[1:8]
    sys.exit(main(role, store, url, codec, dtype_name, int(seed), out))
