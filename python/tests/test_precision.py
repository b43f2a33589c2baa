"""Expert precision through the package: a checkpoint written by safetensors, packed with
`--expert-variants q8_0,q4_0`, served at each precision. The GGML blocks are decoded here in
numpy from :class:`wstore.PartBlocks` alone and must equal the library's dequantization; an
MoE layer forward over Q8_0 experts stays within 1% (relative) of the exact forward."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import wstore

from conftest import FFN, HIDDEN, LAYERS, wstore_bin
from test_moe import moe_layer


@pytest.fixture(scope="module")
def variant_store(mixtral_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("variants") / "mixtral.wstore"
    r = subprocess.run([wstore_bin(), "pack", str(mixtral_dir), "-o", str(out), "--model", "mixtral",
                        "--expert-variants", "q8_0,q4_0", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, f"wstore pack failed: {r.stderr}"
    return out


def source(mixtral_dir: Path) -> dict[str, np.ndarray]:
    src: dict[str, np.ndarray] = {}
    for shard in sorted(mixtral_dir.glob("*.safetensors")):
        src.update(load_file(str(shard)))
    return src


def decode(raw: np.ndarray, b: wstore.PartBlocks) -> np.ndarray:
    """GGML blocks to f32, from the layout fields only."""
    blocks = raw.reshape(b.blocks, b.block_bytes)
    scale = blocks[:, b.scale_offset:b.scale_offset + 2].copy().view("<f2").astype(np.float32)
    q = blocks[:, b.quant_offset:]
    if b.quant_bits == 8:
        v = q.view(np.int8 if b.quant_signed else np.uint8).astype(np.int32)
    else:
        v = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.int32)
    return ((v - b.zero_point).astype(np.float32) * scale).reshape(-1)


@pytest.mark.parametrize("precision,steps", [("q8_0", 127.0), ("q4_0", 8.0)])
def test_low_bit_copies_decode_from_their_layout(variant_store: Path, mixtral_dir: Path, precision: str,
                                                 steps: float) -> None:
    src = source(mixtral_dir)
    with wstore.open(variant_store) as store, store.residency("mixtral", 1 << 20) as res:
        with res.acquire(1, 2, precision) as x:
            assert x.precision == precision and not x.hit
            gate = x.blocks("gate")
            assert (gate.precision, gate.dtype, gate.block_elements) == (precision, "ggml", 32)
            assert gate.block_bytes == (34 if precision == "q8_0" else 18) and gate.blocks == FFN * HIDDEN // 32
            raw = x["gate"]
            assert raw.dtype == np.uint8 and raw.size == gate.blocks * gate.block_bytes and not raw.flags.writeable
            mine = decode(raw, gate)
            got = x.dequantize("gate")
            assert got.shape == (FFN, HIDDEN) and got.dtype == np.float32
            assert np.array_equal(got.reshape(-1), mine)
            want = src["model.layers.1.block_sparse_moe.experts.2.w1.weight"]
            amax = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True)
            err = np.abs(got - want).reshape(-1, 32)
            assert (err <= amax / steps * 1.01 + 1e-6).all()
            assert np.array_equal(x.dequantize("gate", "f16"), got.astype(np.float16))
            assert x.dequantize("gate", "bf16").dtype.name == "bfloat16"
            # w2 (down) is [HIDDEN, FFN] = [32, 48]: 48 is not whole blocks, so it has no
            # variant and the low-bit copy holds it exact.
            down = x.blocks("down")
            assert (down.precision, down.blocks) == ("exact", 0)
            assert np.array_equal(x["down"], src["model.layers.1.block_sparse_moe.experts.2.w2.weight"])
            with pytest.raises(wstore.InvalidArgument):
                x.dequantize("gate", "i8")
            with pytest.raises(wstore.NotFound):
                x.blocks("nope")
        with res.acquire(1, 2, "any") as again:
            assert again.hit and again.precision == precision
        with pytest.raises(wstore.Released):
            _ = x.precision
        with pytest.raises(wstore.InvalidArgument):
            res.acquire(1, 2, "int3")


def test_sets_mix_precisions_and_upgrades_land_as_exact(variant_store: Path) -> None:
    with wstore.open(variant_store) as store, store.residency("mixtral", 1 << 20, "lru") as res:
        with res.acquire(0, 0):
            pass
        with res.acquire_many(0, [0, 1], "q4_0") as s:
            assert [s[0].precision, s[1].precision] == ["exact", "q4_0"] and s.hits == [True, False]
        # LRU upgrades on a second use while resident; the upgrade lands in the background.
        with res.acquire(0, 1, "int4", upgrade=True) as x:
            assert x.precision == "q4_0" and x.hit
        landed = False
        for _ in range(2000):
            with res.acquire(0, 1, "q4_0", upgrade=True) as y:
                landed = y.precision == "exact"
            if landed:
                break
            time.sleep(0.001)
        assert landed
        with res.acquire(0, 1, "any") as z:
            assert z.precision == "exact"


def test_moe_forward_over_q8_0_experts_stays_within_one_percent(variant_store: Path, mixtral_dir: Path) -> None:
    src = source(mixtral_dir)
    routers = [src[f"model.layers.{l}.block_sparse_moe.gate.weight"] for l in range(LAYERS)]
    x = np.random.default_rng(5).standard_normal((16, HIDDEN), np.float32)

    def experts(res: wstore.Residency, layer: int, precision: str):  # type: ignore[no-untyped-def]
        class Acquired:
            def __init__(self, es: list[int]) -> None:
                self.set = res.acquire_many(layer, es, precision)

            def __enter__(self):  # type: ignore[no-untyped-def]
                def parts(e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                    h = self.set[e]
                    return h.dequantize("gate"), h.dequantize("up"), h.dequantize("down")
                return parts

            def __exit__(self, *exc: object) -> None:
                self.set.release()
        return Acquired

    with wstore.open(variant_store) as store:
        outs = {}
        for precision in ("exact", "q8_0"):
            with store.residency("mixtral", 1 << 20) as res:
                outs[precision] = np.stack([moe_layer(x, routers[l], experts(res, l, precision), lambda es: None)
                                            for l in range(LAYERS)])
    exact, q8 = outs["exact"], outs["q8_0"]
    rel = np.linalg.norm(q8 - exact) / np.linalg.norm(exact)
    assert 0 < rel < 0.01, rel
