"""The KV cache's shared remote tier through the package, against a real redis-server each
test starts on a free loopback port (and stops by its pid): two OS processes as two engine
nodes (one stores a prompt, the other, with an empty local store, finds it), tier counters,
flush, and a server that is not there."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import ml_dtypes
import numpy as np
import pytest

import wstore
import wstore.kv
from kv_node import CHUNK, D, H, L, NAMESPACE, TOKENS, dtype_named, prompt
from test_kv import int4_bound

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server not found on PATH (`make deps` installs it)")
NODE = Path(__file__).with_name("kv_node.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own, without persistence; SIGKILLed by its pid afterwards."""
    assert REDIS is not None
    port = free_port()
    (tmp_path / "redis").mkdir()
    p = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(tmp_path / "redis"), "--logfile", str(tmp_path / "redis" / "redis.log")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not answers_ping(port):
            assert p.poll() is None and time.monotonic() < deadline, "redis-server did not come up"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()


def node(role: str, store: Path, url: str, codec: str, dtype: str, seed: int, out: Path) -> None:
    """Runs kv_node.py as its own process; fails the test with its stderr."""
    r = subprocess.run([sys.executable, str(NODE), role, str(store), url, codec, dtype, str(seed), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"the {role} node failed: {r.stderr}"


def two_nodes(tmp_path: Path, url: str, codec: str, dtype: str, seed: int) -> tuple[dict, dict, list[np.ndarray]]:
    """Node A stores the prompt, then node B (another process, an empty local store) looks
    it up: A's report, B's report and the arrays B delivered (keys of every layer, then values)."""
    node("store", tmp_path / "a", url, codec, dtype, seed, tmp_path / "a.json")
    node("lookup", tmp_path / "b", url, codec, dtype, seed, tmp_path / "b.npz")
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.npz.json").read_text())
    with np.load(tmp_path / "b.npz") as z:
        got = [z[f"k{i}"] for i in range(L)] + [z[f"v{i}"] for i in range(L)]
    dt = dtype_named(dtype)
    return a, b, [g.view(dt) if dt.itemsize == 2 else g for g in got]


def test_two_processes_share_a_prompt_bit_exact(tmp_path: Path, redis_url: str) -> None:
    a, b, got = two_nodes(tmp_path, redis_url, "lossless", "bfloat16", seed=3)
    chunks = TOKENS // CHUNK
    assert a["cached"] == TOKENS and a["drained"]
    assert a["tier"]["sent_chunks"] == chunks and a["tier"]["queue_drops"] == 0 and a["tier"]["connected"]
    # B held nothing locally, found every chunk in Redis, and kept them locally.
    assert b["local_before"] == 0 and b["tokens"] == TOKENS and not b["damaged"]
    assert b["local_after"] == TOKENS
    assert b["tier"]["remote_hit_chunks"] == chunks and b["tier"]["local_hit_chunks"] == 0
    assert b["tier"]["damaged_remote"] == 0 and b["tier"]["bytes_fetched"] > 0
    _, keys, values = prompt(np.dtype(ml_dtypes.bfloat16), seed=3)
    for g, w in zip(got, keys + values):
        assert g.shape == w.shape and g.tobytes() == w.tobytes()


def test_two_processes_share_an_int4_prompt_within_its_bound(tmp_path: Path, redis_url: str) -> None:
    a, b, got = two_nodes(tmp_path, redis_url, "int4", "float16", seed=4)
    assert a["tier"]["sent_chunks"] == TOKENS // CHUNK
    assert b["local_before"] == 0 and b["tokens"] == TOKENS and b["tier"]["remote_hit_chunks"] == TOKENS // CHUNK
    _, keys, values = prompt(np.dtype(np.float16), seed=4)
    exact = 0
    for g, w, is_key in zip(got, keys + values, [True] * L + [False] * L):
        x, y = w.astype(np.float64), g.astype(np.float64)
        err = np.abs(x - y)
        # KIVI groups lie within a chunk: the bound of each chunk of the prompt.
        bound = np.concatenate([int4_bound(x[c:c + CHUNK], is_key, 32) for c in range(0, TOKENS, CHUNK)])
        assert (err <= bound).all(), f"worst error {err.max()}"
        exact += int((err == 0).sum())
    assert exact < 2 * L * TOKENS * H * D  # lossy: something was quantized


def test_a_second_store_of_the_same_prompt_sends_nothing(tmp_path: Path, redis_url: str) -> None:
    _, keys, values = prompt(np.dtype(np.float32), seed=6)
    tokens = np.arange(TOKENS, dtype=np.uint32)
    for name, expect_sent in (("a", TOKENS // CHUNK), ("b", 0)):
        with wstore.kv.open(tmp_path / name, chunk_tokens=CHUNK, remote=redis_url, namespace=NAMESPACE) as kv:
            assert kv.store(tokens, keys, values) == TOKENS
            assert kv.flush_remote(timeout=30)
            s = kv.tier_stats()
            assert s is not None and s.connected and s.queued == 0
            assert s.sent_chunks == expect_sent and s.already_remote == TOKENS // CHUNK - expect_sent
            assert (s.bytes_sent > 0) == (expect_sent > 0)
    # Another namespace is another deployment: it finds nothing.
    with wstore.kv.open(tmp_path / "c", chunk_tokens=CHUNK, remote=[redis_url], namespace="other:") as kv:
        hit = kv.lookup(tokens, layers=L, kv_heads=H, head_dim=D, dtype=np.float32)
        s = kv.tier_stats()
        assert hit.tokens == 0 and s is not None and s.remote_hit_chunks == 0 and s.lookups == 1


def test_an_unreachable_server_leaves_the_local_tier_working(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    _, keys, values = prompt(np.dtype(np.float32), seed=7)
    tokens = np.arange(TOKENS, dtype=np.uint32)
    with wstore.kv.open(tmp_path / "kv", chunk_tokens=CHUNK, remote=url, remote_timeout=0.2) as kv:
        assert kv.store(tokens, keys, values) == TOKENS
        hit = kv.lookup(tokens, layers=L, kv_heads=H, head_dim=D, dtype=np.float32)
        assert hit.tokens == TOKENS
        assert all(g.tobytes() == w.tobytes() for g, w in zip(hit.keys + hit.values, keys + values))
        kv.flush_remote(timeout=10)
        s = kv.tier_stats()
        assert s is not None and not s.connected and s.remote_errors >= 1 and s.remote_hit_chunks == 0
        assert s.sent_chunks == 0 and s.local_hit_chunks == TOKENS // CHUNK


def test_remote_settings_are_checked(tmp_path: Path) -> None:
    for bad in ("http://127.0.0.1:6379", "", "redis://host:notaport", []):
        with pytest.raises(wstore.InvalidArgument):
            wstore.kv.open(tmp_path / "kv", remote=bad)
    with pytest.raises(wstore.InvalidArgument):
        wstore.kv.open(tmp_path / "kv", remote="redis://127.0.0.1:1", remote_timeout=0)
    assert not (tmp_path / "kv").exists() or not any((tmp_path / "kv").iterdir())  # nothing left behind
    with wstore.kv.open(tmp_path / "plain") as kv:
        assert kv.tier_stats() is None and kv.flush_remote() is True
