"""Every tensor of checkpoints written by the safetensors package reads back through the
package as what safetensors itself reads: same dtype, shape and bytes, raw and compressed."""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors
from safetensors.numpy import load_file, save_file

import wstore

from conftest import pack

CODECS = ["raw", "zstd"]


def same(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def check_store(store_path: Path, model: str, want: dict[str, np.ndarray], codec: str) -> None:
    with wstore.open(store_path) as store:
        assert store.models() == [model]
        infos = store.tensors(model)
        assert set(infos) == set(want)
        for name, ref in want.items():
            info = store.info(name, model)
            assert info == infos[name]
            assert (info.dtype, info.shape, info.raw_size) == (ref.dtype, ref.shape, ref.nbytes), name
            got = store.tensor(name, model)
            assert got.flags.writeable and got.flags.owndata
            assert same(got, ref), name
        # Inside a snapshot: raw records are zero-copy read-only views, compressed ones copies.
        with store.snapshot() as snap:
            for name, ref in want.items():
                view = snap.tensor(name, model, verify=True)
                assert same(view, ref), name
                if ref.nbytes and store.info(name, model).codec == "raw":
                    assert not view.flags.writeable and not view.flags.owndata
                    with pytest.raises(ValueError):
                        view.flat[0] = view.flat[0]


@pytest.mark.parametrize("codec", CODECS)
def test_fp32_and_friends_from_safetensors_numpy(tmp_path: Path, codec: str) -> None:
    rng = np.random.default_rng(1)
    tensors = {
        "w.f32": rng.standard_normal((64, 48), np.float32),
        "w.f32.3d": rng.standard_normal((4, 8, 16), np.float32),
        "b.f32": rng.standard_normal(48, np.float32),
        "w.f16": rng.standard_normal((32, 32)).astype(np.float16),
        "w.f64": rng.standard_normal(40),
        "ids.i64": rng.integers(-1000, 1000, 30, np.int64),
        "mask.bool": rng.integers(0, 2, 17).astype(bool),
        "bytes.u8": rng.integers(0, 256, 1000, np.uint8),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    want = load_file(str(tmp_path / "model.safetensors"))
    check_store(pack(tmp_path / "model.safetensors", tmp_path / "s.wstore", codec, "m"), "m", want, codec)


@pytest.mark.parametrize("codec", CODECS)
def test_bf16_and_fp8_via_ml_dtypes(tmp_path: Path, codec: str) -> None:
    # safetensors.numpy has no bf16/fp8 dtype: the file is written with safetensors'
    # own serializer from ml_dtypes arrays, and read back with safetensors.deserialize.
    rng = np.random.default_rng(2)
    arrays = {
        "w.bf16": rng.standard_normal((128, 64)).astype(ml_dtypes.bfloat16),
        "v.bf16": rng.standard_normal(300).astype(ml_dtypes.bfloat16),
        "w.f8e4m3": rng.standard_normal((16, 16)).astype(ml_dtypes.float8_e4m3fn),
        "w.f8e5m2": rng.standard_normal(64).astype(ml_dtypes.float8_e5m2),
    }
    path = tmp_path / "bf16.safetensors"
    # The ml_dtypes names are safetensors' own; the arrays stay alive during the call.
    safetensors.serialize_file({n: safetensors.TensorSpec(dtype=a.dtype.name, shape=list(a.shape),
                                                          data_ptr=a.ctypes.data, data_len=a.nbytes)
                                for n, a in arrays.items()}, str(path))
    want = {}
    for name, t in safetensors.deserialize(path.read_bytes()):
        assert t["dtype"] == {"bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
                              "float8_e5m2": "F8_E5M2"}[arrays[name].dtype.name]
        want[name] = np.frombuffer(bytes(t["data"]), arrays[name].dtype).reshape(t["shape"])
    assert all(same(want[n], arrays[n]) for n in arrays)
    check_store(pack(path, tmp_path / "s.wstore", codec, "m"), "m", want, codec)


@pytest.mark.parametrize("codec", CODECS)
def test_sharded_mixtral(mixtral_dir: Path, mixtral_stores: dict[str, Path], codec: str) -> None:
    want: dict[str, np.ndarray] = {}
    for shard in sorted(mixtral_dir.glob("*.safetensors")):
        want.update(load_file(str(shard)))
    check_store(mixtral_stores[codec], "mixtral", want, codec)
    with wstore.open(mixtral_stores[codec]) as store:
        experts = store.experts(layer=1)
        assert [(x.layer, x.expert) for x in experts] == [(1, e) for e in range(4)]
        assert experts[2].parts == {p: f"model.layers.1.block_sparse_moe.experts.2.{w}.weight"
                                    for p, w in (("down", "w2"), ("gate", "w1"), ("up", "w3"))}
        assert len(store.experts()) == 8


def test_errors_carry_the_c_message(mixtral_stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(wstore.NotAStore):
        wstore.open(tmp_path)
    with wstore.open(mixtral_stores["zstd"]) as store:
        with pytest.raises(wstore.NotFound, match="missing.weight") as e:
            store.info("missing.weight")
        assert e.value.status < 0 and isinstance(e.value, LookupError)
        small = np.empty(3, np.float32)
        with pytest.raises(wstore.BufferTooSmall, match="too small"):
            store.tensor("model.norm.weight", out=small)
    assert store.closed
    with pytest.raises(wstore.Closed):
        store.models()


def test_a_damaged_record_is_corrupt_never_wrong_bytes(tmp_path: Path) -> None:
    payload = (np.arange(8192, dtype=np.uint32) * 2654435761 % 251).astype(np.uint8)
    save_file({"w": payload}, str(tmp_path / "w.safetensors"))
    store_path = pack(tmp_path / "w.safetensors", tmp_path / "s.wstore", "raw", "m")
    data = bytearray((store_path / "data.mdb").read_bytes())
    at = data.find(payload[1000:1064].tobytes())
    assert at > 0
    data[at] ^= 0xFF  # one payload byte, flipped in place
    (store_path / "data.mdb").write_bytes(bytes(data))
    with wstore.open(store_path) as store:
        with pytest.raises(wstore.Corrupt, match="checksum"):
            store.tensor("w")
        with store.snapshot() as snap:
            with pytest.raises(wstore.Corrupt):
                snap.tensor("w", verify=True)
