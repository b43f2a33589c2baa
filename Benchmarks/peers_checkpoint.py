#!/usr/bin/env python3
"""Writes a generated Mixtral-named bf16 checkpoint (6 layers x 8 experts of 8 MiB, ~436 MiB)
as safetensors, for Benchmarks/peers.py. Random normal weights (std 0.02), never committed."""
import json, struct, sys

import numpy as np

L, E, H, F = 6, 8, 1024, 1365
rng = np.random.default_rng(1)


def bf16(shape, std=0.02):
    a = (rng.standard_normal(shape, dtype=np.float32) * std).view(np.uint32)
    return ((a + 0x8000) >> 16).astype(np.uint16)  # round to nearest, bf16 bits


tensors = [("model.embed_tokens.weight", bf16((2048, H)))]
for l in range(L):
    for n in ["q_proj", "k_proj", "v_proj", "o_proj"]:
        tensors.append((f"model.layers.{l}.self_attn.{n}.weight", bf16((H, H))))
    tensors.append((f"model.layers.{l}.block_sparse_moe.gate.weight", bf16((E, H))))
    tensors.append((f"model.layers.{l}.input_layernorm.weight", bf16((H,), 1.0)))
    for e in range(E):
        for part, shape in [("w1", (F, H)), ("w3", (F, H)), ("w2", (H, F))]:
            tensors.append((f"model.layers.{l}.block_sparse_moe.experts.{e}.{part}.weight", bf16(shape)))
tensors.append(("model.norm.weight", bf16((H,), 1.0)))
header, offset = {}, 0
for name, a in tensors:
    header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for _, a in tensors:
        f.write(a.tobytes())
