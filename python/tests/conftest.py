"""Fixtures: checkpoints written by the safetensors package, packed into stores by the
built `wstore` binary (WSTORE_BIN, else .build/release or .build/debug of the repository)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[2]

# Mixtral-shaped MoE, small: 2 layers of 4 experts, top-2.
LAYERS, EXPERTS, HIDDEN, FFN = 2, 4, 32, 48


def wstore_bin() -> str:
    """The wstore command to pack with."""
    env = os.environ.get("WSTORE_BIN")
    if env:
        return env
    for config in ("release", "debug"):
        p = REPO / ".build" / config / "wstore"
        if p.exists():
            return str(p)
    pytest.fail("the wstore binary was not found: set WSTORE_BIN or run `make build`")


def pack(source: Path, out: Path, codec: str, model: str) -> Path:
    """Packs a checkpoint with the wstore binary; fails the test with its stderr."""
    r = subprocess.run([wstore_bin(), "pack", str(source), "-o", str(out), "--codec", codec, "--model", model,
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, f"wstore pack failed: {r.stderr}"
    return out


def mixtral_tensors(seed: int = 7) -> dict[str, np.ndarray]:
    """fp32 Mixtral-named tensors: per layer a router and experts w1 (gate), w3 (up), w2 (down)."""
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((16, HIDDEN), np.float32)}
    for l in range(LAYERS):
        p = f"model.layers.{l}.block_sparse_moe"
        t[f"{p}.gate.weight"] = rng.standard_normal((EXPERTS, HIDDEN), np.float32)
        for e in range(EXPERTS):
            t[f"{p}.experts.{e}.w1.weight"] = rng.standard_normal((FFN, HIDDEN), np.float32) / 4
            t[f"{p}.experts.{e}.w3.weight"] = rng.standard_normal((FFN, HIDDEN), np.float32) / 4
            t[f"{p}.experts.{e}.w2.weight"] = rng.standard_normal((HIDDEN, FFN), np.float32) / 4
    t["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    return t


@pytest.fixture(scope="session")
def mixtral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharded Mixtral-named checkpoint: two safetensors shards and their index."""
    d = tmp_path_factory.mktemp("mixtral")
    tensors = mixtral_tensors()
    names = list(tensors)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(d / fname))
        weight_map.update({n: fname for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": LAYERS, "num_local_experts": EXPERTS,
                                               "num_experts_per_tok": 2}))
    return d


@pytest.fixture(scope="session")
def mixtral_stores(mixtral_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Mixtral checkpoint packed raw and zstd, as model "mixtral"."""
    d = tmp_path_factory.mktemp("stores")
    return {c: pack(mixtral_dir, d / f"mixtral-{c}.wstore", c, "mixtral") for c in ("raw", "zstd")}
