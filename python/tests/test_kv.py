"""The KV cache through the package: a prompt's per-layer KV stored and looked up straight
into numpy arrays; lossless is bit-exact, int4 within half a quantization step."""
from __future__ import annotations

import threading
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import wstore
import wstore.kv

L, H, D, CHUNK = 3, 4, 64, 64


def prompt_kv(tokens: int, dtype: np.dtype, seed: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    keys = [(rng.standard_normal((tokens, H, D)) * 2).astype(dtype) for _ in range(L)]
    values = [rng.standard_normal((tokens, H, D)).astype(dtype) for _ in range(L)]
    return keys, values


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
@pytest.mark.parametrize("codec", ["lossless", "raw"])
def test_exact_codecs_are_bit_exact(tmp_path: Path, dtype: type, codec: str) -> None:
    tokens = np.arange(1000, 1300, dtype=np.uint32)  # 300 tokens: 4 whole chunks of 64
    keys, values = prompt_kv(len(tokens), np.dtype(dtype))
    with wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK, codec=codec) as kv:
        assert kv.store(tokens, keys, values, model="m") == 256
        assert kv.probe(tokens, model="m") == 256
        assert kv.probe(tokens, model="other") == 0
        sentinel = np.dtype(dtype).type(7)
        out = ([np.full((300, H, D), sentinel, dtype) for _ in range(L)],
               [np.full((300, H, D), sentinel, dtype) for _ in range(L)])
        hit = kv.lookup(tokens, out=out, model="m")
        assert (hit.tokens, hit.chunks, hit.damaged) == (256, 4, False)
        for got, want in zip(out[0] + out[1], keys + values):
            assert got[:256].tobytes() == want[:256].tobytes()
            assert (got[256:] == sentinel).all()  # past the prefix: not written
        # Without out=: new arrays, cut to the tokens delivered.
        fresh = kv.lookup(tokens, model="m", layers=L, kv_heads=H, head_dim=D, dtype=dtype)
        assert [k.shape for k in fresh.keys] == [(256, H, D)] * L
        assert all(a.tobytes() == b[:256].tobytes() for a, b in zip(fresh.values, values))
        # A prompt that shares the first two chunks only.
        other = tokens.copy()
        other[150] += 1
        assert kv.lookup(other, model="m", layers=L, kv_heads=H, head_dim=D, dtype=dtype).tokens == 128
        s = kv.stats()
        assert (s.chunks, s.chunk_tokens, s.codec, s.read_only) == (4, CHUNK, codec, False)
        assert (s.lookups, s.lookup_tokens, s.hit_tokens) == (3, 900, 640)
        assert s.raw_bytes == 4 * CHUNK * L * 2 * H * D * np.dtype(dtype).itemsize


def test_head_major_buffers(tmp_path: Path) -> None:
    """An engine's [kv_heads, tokens, head_dim] cache goes in and out as transposed views."""
    tokens = list(range(128))
    keys, values = prompt_kv(128, np.dtype(np.float16))
    hk = [np.ascontiguousarray(k.transpose(1, 0, 2)) for k in keys]  # [H, T, D]
    hv = [np.ascontiguousarray(v.transpose(1, 0, 2)) for v in values]
    with wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK) as kv:
        assert kv.store(tokens, [k.transpose(1, 0, 2) for k in hk], [v.transpose(1, 0, 2) for v in hv]) == 128
        ok = [np.zeros_like(k) for k in hk]
        ov = [np.zeros_like(v) for v in hv]
        hit = kv.lookup(tokens, out=([k.transpose(1, 0, 2) for k in ok], [v.transpose(1, 0, 2) for v in ov]))
        assert hit.tokens == 128
        assert all(a.tobytes() == b.tobytes() for a, b in zip(ok + ov, hk + hv))


def int4_bound(x: np.ndarray, keys: bool, group: int) -> np.ndarray:
    """Half a quantization step of each element's KIVI group (keys: per channel over runs
    of `group` tokens of a chunk; values: per token over runs of `group` channels), plus
    f16 rounding of the element, the group minimum and the scale."""
    t = x.shape[0]
    if keys:
        g = x.reshape(t // group, group, H, D)
        lo = np.repeat(g.min(axis=1), group, axis=0)
        hi = np.repeat(g.max(axis=1), group, axis=0)
    else:
        g = x.reshape(t, H, D // group, group)
        lo = np.repeat(g.min(axis=3), group, axis=2)
        hi = np.repeat(g.max(axis=3), group, axis=2)
    step = (hi - lo) / 15.0
    return 0.5 * step * 1.01 + (np.abs(x) + np.abs(lo) + np.abs(hi - lo)) * 2.0 ** -10 + 1e-7


def test_int4_within_half_a_step(tmp_path: Path) -> None:
    group = 32
    tokens = np.arange(256, dtype=np.uint32)
    keys, values = prompt_kv(256, np.dtype(np.float16), seed=9)
    with wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK, codec="int4", kivi_group=group) as kv:
        assert kv.stats().codec == "int4"
        assert kv.store(tokens, keys, values) == 256
        hit = kv.lookup(tokens, layers=L, kv_heads=H, head_dim=D, dtype=np.float16)
        assert hit.tokens == 256
        exact = 0
        for got, want, is_key in zip(hit.keys + hit.values, keys + values, [True] * L + [False] * L):
            x, y = want.astype(np.float64), got.astype(np.float64)
            err = np.abs(x - y)
            bound = int4_bound(x, is_key, group)
            assert (err <= bound).all(), f"worst error {err.max()} over a bound of {bound[err > bound].min()}"
            exact += int((err == 0).sum())
        assert exact < 2 * L * 256 * H * D  # lossy: something was quantized
        s = kv.stats()
        assert s.stored_bytes < s.raw_bytes / 2


def test_lookups_from_four_threads_while_a_writer_extends(tmp_path: Path) -> None:
    tokens = np.arange(512, dtype=np.uint32)
    keys, values = prompt_kv(512, np.dtype(ml_dtypes.bfloat16), seed=3)
    with wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK) as kv:
        kv.store(tokens[:128], [k[:128] for k in keys], [v[:128] for v in values])
        errors: list[BaseException] = []
        start = threading.Barrier(5)

        def reader() -> None:
            try:
                start.wait()
                for _ in range(20):
                    hit = kv.lookup(tokens, layers=L, kv_heads=H, head_dim=D, dtype=ml_dtypes.bfloat16)
                    assert hit.tokens >= 128 and hit.tokens % CHUNK == 0
                    for a, b in zip(hit.keys + hit.values, keys + values):
                        assert a.tobytes() == b[: hit.tokens].tobytes()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def writer() -> None:
            start.wait()
            for n in range(192, 513, 64):
                kv.store(tokens[:n], [k[:n] for k in keys], [v[:n] for v in values])

        threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert kv.probe(tokens) == 512


def test_kv_misuse_raises(tmp_path: Path) -> None:
    keys, values = prompt_kv(64, np.dtype(np.float32))
    with pytest.raises(wstore.InvalidArgument, match="codec"):
        wstore.kv.open(tmp_path / "a", codec="int3")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("not a store")
    with pytest.raises(wstore.NotAStore):
        wstore.kv.open(tmp_path / "junk")
    kv = wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK)
    with pytest.raises(wstore.InvalidArgument, match="contiguous"):
        kv.store(range(64), [k[:, :, ::2] for k in keys], [v[:, :, ::2] for v in values])
    with pytest.raises(wstore.InvalidArgument, match="tokens"):
        kv.store(range(65), keys, values)
    with pytest.raises(wstore.InvalidArgument, match="dtype"):
        kv.store(range(64), [k.astype(np.float64) for k in keys], [v.astype(np.float64) for v in values])
    assert kv.store(range(64), keys, values) == 64
    ro = [np.zeros((64, H, D), np.float32) for _ in range(L)]
    for a in ro:
        a.flags.writeable = False
    with pytest.raises(wstore.InvalidArgument, match="read-only"):
        kv.lookup(range(64), out=(ro, ro))
    kv.close()
    with pytest.raises(wstore.Closed):
        kv.probe(range(64))
    with wstore.kv.open(tmp_path / "kv", read_only=True) as reader:
        assert reader.probe(range(64)) == 64 and reader.stats().read_only
        with pytest.raises(wstore.InvalidArgument):
            reader.store(range(64), keys, values)


def test_deferred_commits(tmp_path: Path) -> None:
    """A deferred handle writes without syncing; its marker lives while it defers, close
    syncs and removes it, and the KV comes back exact (format-spec/KV.md §9)."""
    tokens = np.arange(500, 692, dtype=np.uint32)  # 3 chunks of 64
    keys, values = prompt_kv(len(tokens), np.dtype(ml_dtypes.bfloat16), seed=9)
    marker = tmp_path / "kv" / "deferred-commits"
    with pytest.raises(wstore.InvalidArgument, match="durability"):
        wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK, durability="lazy")
    with wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK, durability="deferred") as kv:
        assert kv.durability == "deferred" and marker.exists()
        assert kv.store(tokens, keys, values, model="m") == 192
        kv.sync()
        assert marker.exists()
        with pytest.raises(wstore.InvalidArgument, match="durability"):
            kv.set_durability("sometimes")
    assert not marker.exists()
    with wstore.kv.open(tmp_path / "kv", read_only=True) as kv:
        assert kv.durability == "synced"
        with pytest.raises(wstore.InvalidArgument, match="read-only"):
            kv.set_durability("deferred")
        hit = kv.lookup(tokens, model="m", layers=L, kv_heads=H, head_dim=D, dtype=ml_dtypes.bfloat16)
        assert hit.tokens == 192
        assert all(a.tobytes() == b.tobytes() for a, b in zip(hit.keys + hit.values, keys + values))
    with wstore.kv.open(tmp_path / "kv") as kv:
        kv.set_durability("deferred")
        assert marker.exists()
        kv.set_durability("synced")
        assert kv.durability == "synced" and not marker.exists()
