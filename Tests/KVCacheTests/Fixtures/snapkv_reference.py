#!/usr/bin/env python3
"""A NumPy port of the SnapKV reference selection (FasterDecoding/SnapKV
snapkv/monkeypatch/snapkv_utils.py `update_kv`; kvpress snapkv_press.py for the
per-KV-head group mean), run on random and structured inputs. Writes one
safetensors file per case into OUT_DIR: the inputs, and for every pooling and head
mode the expected kept positions and pooled scores. Usage: snapkv_reference.py OUT_DIR
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import save_file


def pool1d(x, kernel, pooling):
    """F.max_pool1d / F.avg_pool1d with stride 1 and padding kernel // 2 over the last axis."""
    pad = kernel // 2
    fill = -np.inf if pooling == "max" else 0.0
    padded = np.concatenate([np.full(x.shape[:-1] + (pad,), fill), x, np.full(x.shape[:-1] + (pad,), fill)], axis=-1)
    windows = np.stack([padded[..., i:i + x.shape[-1]] for i in range(kernel)], axis=0)
    if pooling == "max":
        return windows.max(axis=0)
    return windows.sum(axis=0) / kernel  # count_include_pad=True


def snapkv(q, k, window, capacity, kernel, pooling, heads):
    """Returns (kept [heads, kept], pooled scores [heads, prefix] or None)."""
    n_heads, n_kv = q.shape[0], k.shape[0]
    group = n_heads // n_kv
    t, d = k.shape[1], k.shape[2]
    out_heads = n_heads if heads == "query" else n_kv
    if t <= capacity:  # the reference returns the cache unchanged (q_len < max_capacity_prompt; == keeps all too)
        return np.tile(np.arange(t, dtype=np.int32), (out_heads, 1)), None
    k_rep = np.repeat(k, group, axis=0)  # repeat_kv
    attn = q[:, -window:, :] @ k_rep.transpose(0, 2, 1) / math.sqrt(d)  # [H, window, t]
    mask = np.full((window, window), np.finfo(attn.dtype).min)
    cond = np.arange(window)
    mask[cond[None, :] < (cond + 1)[:, None]] = 0
    attn[:, :, -window:] += mask[None]
    attn = np.exp(attn - attn.max(axis=-1, keepdims=True))
    attn = attn / attn.sum(axis=-1, keepdims=True)
    summed = attn[:, :, :-window].sum(axis=-2)  # [H, prefix]
    pooled = pool1d(summed, kernel, pooling)
    if heads == "kv":  # kvpress: average the pooled scores over each query group
        pooled = pooled.reshape(n_kv, group, -1).mean(axis=1)
    keep = capacity - window
    kept = []
    for s in pooled:
        top = np.argsort(-s, kind="stable")[:keep]  # ties: the lower position first
        kept.append(np.concatenate([np.sort(top), np.arange(t - window, t)]))
    return np.array(kept, dtype=np.int32), pooled


def bf16_round(x):
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32)


def case(name, q, k, window, capacity, kernel, dtype, out):
    """Writes inputs (rounded to dtype) and expectations computed from the rounded values."""
    q = q.astype(dtype)
    k = k.astype(dtype)
    tensors = {"queries": q, "keys": k}
    qf, kf = q.astype(np.float64), k.astype(np.float64)
    for pooling in ("max", "avg"):
        for heads in ("query", "kv"):
            kept, scores = snapkv(qf, kf, window, capacity, kernel, pooling, heads)
            tensors[f"expected.{pooling}.{heads}.kept"] = kept
            if scores is not None:
                tensors[f"expected.{pooling}.{heads}.scores"] = scores.astype(np.float64)
    meta = {"window": str(window), "capacity": str(capacity), "kernel": str(kernel)}
    save_file(tensors, os.path.join(out, name + ".safetensors"), metadata=meta)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(5)
    # Random, GQA 4 query heads over 2 KV heads.
    case("random_f32", rng.normal(size=(4, 8, 32)), rng.normal(size=(2, 300, 32)), 8, 64, 7, np.float32, out)
    # Random f16 with a few strong positions, MHA.
    k = rng.normal(size=(3, 257, 16))
    q = rng.normal(size=(3, 16, 16))
    k[:, [3, 100, 200], :] = q[:, -1:, :] * 2  # attended strongly
    case("peaks_f16", q, k, 16, 48, 5, np.float16, out)
    # Ties: every prefix key identical, so every score ties; the lower positions win.
    k = np.tile(rng.normal(size=(1, 1, 8)), (2, 200, 1))
    k[:, -10:, :] = rng.normal(size=(2, 10, 8))
    case("ties_f32", rng.normal(size=(4, 10, 8)), k, 10, 40, 7, np.float32, out)
    # Kernel at the edges: the strongest positions are the first and last of the prefix.
    k = rng.normal(size=(2, 120, 16)) * 0.1
    q = rng.normal(size=(2, 8, 16))
    k[:, [0, 1, 110, 111], :] = q[:, -1:, :]
    case("edges_bf16", bf16_round(q), bf16_round(k), 8, 24, 9, np.float32, out)  # bf16 values, stored as f32
    # A prompt no longer than the capacity: nothing is evicted.
    case("short_f32", rng.normal(size=(4, 8, 16)), rng.normal(size=(2, 60, 16)), 8, 64, 7, np.float32, out)
    case("exact_f32", rng.normal(size=(2, 8, 16)), rng.normal(size=(1, 64, 16)), 8, 64, 7, np.float32, out)
    print(json.dumps({"written": sorted(os.listdir(out))}))


if __name__ == "__main__":
    main()
