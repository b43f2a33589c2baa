"""An MoE layer forward (router softmax, top-2, SwiGLU experts) over experts acquired through
the package equals the same numpy code over the source arrays, bit for bit in fp32, from 4
Python threads at once under a budget that forces evictions, with prefetch hints."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file

import wstore

from conftest import EXPERTS, FFN, HIDDEN, LAYERS

Parts = Callable[[int, list[int]], dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1) + np.exp(-x))


def route(x: np.ndarray, router: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over the router's logits; the top-2 experts per token and their weights."""
    logits = x @ router.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :2]
    w = np.take_along_axis(p, top, axis=1)
    return top, w / w.sum(axis=1, keepdims=True)


def moe_layer(x: np.ndarray, router: np.ndarray, top2: Callable[[list[int]], dict], prefetch: Callable) -> np.ndarray:
    top, weights = route(x, router)
    prefetch(sorted(set(top.ravel().tolist())))
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        with top2([int(e) for e in top[t]]) as experts:
            for k, e in enumerate(top[t]):
                out[t] += weights[t, k] * expert_forward(experts(int(e)), x[t])
    return out


def expert_forward(parts: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """SwiGLU of one expert. Its arrays are referenced only by this call, so none outlives
    the token's set: an array still referenced keeps its expert pinned (the package's
    lifetimes), and four threads each keeping one while waiting for room for two more
    would fill this test's five-expert budget with pins no one gives back."""
    gate, up, down = parts
    return down @ (silu(gate @ x) * (up @ x))


class _Source:
    """The reference: the same calls over the source arrays."""

    def __init__(self, tensors: dict[str, np.ndarray], layer: int) -> None:
        self.t, self.l = tensors, layer

    def __call__(self, experts: list[int]) -> "_Source":
        return self

    def __enter__(self) -> Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        p = f"model.layers.{self.l}.block_sparse_moe.experts"
        return lambda e: (self.t[f"{p}.{e}.w1.weight"], self.t[f"{p}.{e}.w3.weight"], self.t[f"{p}.{e}.w2.weight"])

    def __exit__(self, *exc: object) -> None:
        pass


class _Acquired:
    """The package: acquire_many of a token's experts, parts as arrays."""

    def __init__(self, res: wstore.Residency, layer: int, experts: list[int]) -> None:
        self.set = res.acquire_many(layer, experts)

    def __enter__(self) -> Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        def parts(e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            x = self.set[e]
            assert not x["up"].flags.writeable
            return x["gate"], x["up"], x["down"]
        return parts

    def __exit__(self, *exc: object) -> None:
        self.set.release()


def forward(x: np.ndarray, routers: list[np.ndarray], layer_experts: Callable, prefetch: Callable) -> np.ndarray:
    for l in range(LAYERS):
        x = x + moe_layer(x, routers[l], layer_experts(l), lambda es, l=l: prefetch(l, es))
    return x


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_moe_forward_bit_exact_from_four_threads(mixtral_dir: Path, mixtral_stores: dict[str, Path],
                                                 codec: str) -> None:
    src: dict[str, np.ndarray] = {}
    for shard in sorted(mixtral_dir.glob("*.safetensors")):
        src.update(load_file(str(shard)))
    routers = [src[f"model.layers.{l}.block_sparse_moe.gate.weight"] for l in range(LAYERS)]
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((12, HIDDEN), np.float32) for _ in range(4)]
    want = [forward(x, routers, lambda l: _Source(src, l), lambda l, es: None) for x in inputs]

    expert_bytes = 3 * FFN * HIDDEN * 4
    with wstore.open(mixtral_stores[codec]) as store, \
            store.residency("mixtral", 5 * expert_bytes, loaders=2) as res:
        assert [store.tensor(f"model.layers.{l}.block_sparse_moe.gate.weight").tobytes() for l in range(LAYERS)] \
            == [r.tobytes() for r in routers]
        got: list[np.ndarray | None] = [None] * 4
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def run(i: int) -> None:
            try:
                start.wait()
                got[i] = forward(inputs[i], routers, lambda l: lambda es: _Acquired(res, l, es),
                                 lambda l, es: res.prefetch(l, es))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for g, w in zip(got, want):
            assert g is not None and g.dtype == np.float32 and g.tobytes() == w.tobytes()
        s = res.stats()
        assert s.demand_hits + s.demand_misses == 4 * LAYERS * 12 * 2
        assert s.evictions > 0 and s.peak_resident_bytes <= s.budget == 5 * expert_bytes
        assert s.prefetch_loads + s.dropped_prefetches > 0
        assert (s.layers, s.experts_per_layer, s.expert_bytes) == (LAYERS, EXPERTS, expert_bytes)
        assert 0 < s.hit_rate < 1


def test_residency_mask_and_cache_aware_routing(mixtral_stores: dict[str, Path]) -> None:
    """The mask follows what is resident; routing swaps a non-resident pick for a resident
    candidate within the tolerance and never touches the top-1."""
    expert_bytes = 3 * FFN * HIDDEN * 4
    with wstore.open(mixtral_stores["raw"]) as store, store.residency("mixtral", 4 * expert_bytes) as res:
        n = res.stats().experts_per_layer
        assert not res.residency_mask(0).any()
        with res.acquire(0, 2):
            pass
        mask = res.residency_mask(0)
        assert mask.shape == (n,) and mask[2] and mask.sum() == 1
        assert res.stats(0).layer_resident_experts == 1 and res.stats(1).layer_resident_experts == 0
        # Candidates 0 (top-1, not resident), 1 (not resident), 2 (resident, close to 1).
        experts, swapped, given_up = res.route(0, [0, 1, 2], [0.5, 0.26, 0.24], k=2, tolerance=0.1)
        assert experts[0] == 0 and set(experts) == {0, 2} and swapped == 1
        assert abs(given_up - 0.02) < 1e-6
        # Too far apart for the tolerance: nothing swapped.
        experts, swapped, _ = res.route(0, [0, 1, 2], [0.5, 0.4, 0.1], k=2, tolerance=0.1)
        assert experts == [0, 1] and swapped == 0
        with pytest.raises(wstore.InvalidArgument):
            res.route(0, [0, 1], [0.5, 0.5], k=3)
        with pytest.raises(wstore.InvalidArgument):
            res.residency_mask(10_000)
        # Router candidates reach the policy and load nothing; bad ones are refused.
        before = res.stats()
        res.observe(0, [0, 1, 2], [0.5, 0.26, 0.24])
        after = res.stats()
        assert (after.demand_loads, after.prefetch_loads, after.resident_bytes) == \
            (before.demand_loads, before.prefetch_loads, before.resident_bytes)
        with pytest.raises(wstore.NotFound):
            res.observe(0, [0, 10_000], [0.5, 0.1])
        with pytest.raises(wstore.InvalidArgument):
            res.observe(0, [0, 1], [0.5, -0.1])
        with pytest.raises(ValueError):
            res.observe(0, [0, 1], [0.5])
