"""Lifetimes are enforced: an array over pinned or mapped memory keeps what holds that memory
alive, and every misuse of a handle raises instead of crashing."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import wstore

from conftest import FFN, HIDDEN

EXPERT_BYTES = 3 * FFN * HIDDEN * 4


@pytest.fixture
def src(mixtral_dir: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for shard in sorted(mixtral_dir.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def up_of(src: dict[str, np.ndarray], layer: int, expert: int) -> np.ndarray:
    return src[f"model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight"]


def owner_chain(a: np.ndarray) -> list[str]:
    names = []
    b = a.base
    while b is not None:
        names.append(type(b).__name__)
        b = getattr(b, "base", None) if isinstance(b, np.ndarray) else getattr(b, "owner", None)
    return names


def test_an_array_kept_past_release_keeps_its_expert_pinned(mixtral_stores: dict[str, Path],
                                                           src: dict[str, np.ndarray]) -> None:
    with wstore.open(mixtral_stores["zstd"]) as store, store.residency("mixtral", 2 * EXPERT_BYTES, wait=0) as res:
        with res.acquire(0, 1) as e:
            up = e["up"]
            tail = up[1:]  # a view of a view holds it too
        assert "_Pins" in owner_chain(up)
        # The handle is released: using it, or releasing it again, raises.
        with pytest.raises(wstore.Released):
            e["up"]
        with pytest.raises(wstore.Released):
            e.release()
        del up
        # ... but the array still pins the expert: only one of the two slots is free.
        with res.acquire(0, 2):
            with pytest.raises(wstore.BudgetExhausted):
                res.acquire(0, 3)
        assert tail.tobytes() == up_of(src, 0, 1)[1:].tobytes()  # still the expert's bytes
        del tail  # the last array goes: so does the pin
        with res.acquire_many(0, [2, 3]) as both:
            assert both[3]["up"].tobytes() == up_of(src, 0, 3).tobytes()
        assert res.stats().evictions > 0  # expert 1 was evicted once unpinned


def test_a_dropped_handle_unpins(mixtral_stores: dict[str, Path]) -> None:
    with wstore.open(mixtral_stores["raw"]) as store, store.residency("mixtral", 2 * EXPERT_BYTES, wait=0) as res:
        res.acquire(0, 0)  # never released by the caller: its handle goes at once
        res.acquire(0, 1).release()
        with res.acquire_many(0, [2, 3]):
            pass


def test_acquire_many_pins_none_on_failure(mixtral_stores: dict[str, Path]) -> None:
    with wstore.open(mixtral_stores["raw"]) as store, store.residency("mixtral", 2 * EXPERT_BYTES, wait=0) as res:
        with pytest.raises(wstore.BudgetExhausted, match="budget"):
            res.acquire_many(1, [0, 1, 2])
        with pytest.raises(wstore.NotFound):
            res.acquire_many(1, [0, 99])
        with res.acquire_many(1, [2, 3, 2]) as s:  # nothing left pinned by the failures
            assert len(s) == 2


def test_use_after_close(mixtral_stores: dict[str, Path], src: dict[str, np.ndarray]) -> None:
    store = wstore.open(mixtral_stores["zstd"])
    res = store.residency("mixtral", 4 * EXPERT_BYTES)
    e = res.acquire(1, 2)
    store.close()  # the manager keeps the store open, as in C
    with pytest.raises(wstore.Closed):
        store.info("model.norm.weight")
    with res.acquire(1, 3) as f:
        assert f["gate"].shape == (FFN, HIDDEN)
    res.close()
    res.close()  # closing twice does nothing
    with pytest.raises(wstore.Closed):
        res.acquire(0, 0)
    with pytest.raises(wstore.Closed):
        res.prefetch(0, [1])
    with pytest.raises(wstore.Closed):
        res.stats()
    # An expert held across the close stays valid until released, and its arrays after that.
    up = e["up"]
    e.release()
    del e, res
    gc.collect()
    assert up.tobytes() == up_of(src, 1, 2).tobytes()


def test_snapshot_views(mixtral_stores: dict[str, Path], src: dict[str, np.ndarray]) -> None:
    name = "model.layers.0.block_sparse_moe.gate.weight"
    store = wstore.open(mixtral_stores["raw"])
    with store.snapshot() as snap:
        v = snap.tensor(name)
        w = snap.tensor("model.norm.weight")
        assert "_ViewPin" in owner_chain(v)
        with pytest.raises(wstore.NotFound):
            snap.tensor("nope")
    # Leaving the scope with a view alive: the view stays valid, the scope lends no more.
    with pytest.raises(wstore.Closed):
        snap.tensor(name)
    thread = snap._thread
    assert thread is not None and thread.is_alive()
    store.close()  # deferred too: the view still reads the map
    assert v.tobytes() == src[name].tobytes() and w.tobytes() == src["model.norm.weight"].tobytes()
    del v, w
    thread.join(timeout=10)
    assert not thread.is_alive()  # the last view went: the scope ended
    with pytest.raises(wstore.Closed):
        store.snapshot()


def test_compressed_records_in_a_snapshot_are_copies(mixtral_stores: dict[str, Path]) -> None:
    with wstore.open(mixtral_stores["zstd"]) as store, store.snapshot() as snap:
        a = snap.tensor("model.layers.0.block_sparse_moe.experts.0.w1.weight")
        assert a.flags.owndata and a.flags.writeable
        assert snap._thread is None  # nothing lent


def test_bad_arguments_raise(mixtral_stores: dict[str, Path]) -> None:
    with wstore.open(mixtral_stores["raw"]) as store:
        with pytest.raises(wstore.InvalidArgument):
            store.residency("mixtral", 1 << 20, policy="nonsense")
        with pytest.raises(wstore.InvalidArgument):
            store.residency("mixtral", -1)
        with pytest.raises(wstore.NotFound):
            store.residency("no-such-model", 1 << 20)
        with store.residency("mixtral", 1 << 20) as res:
            with pytest.raises(wstore.NotFound):
                res.acquire(0, 99)
            with pytest.raises(wstore.InvalidArgument):
                res.stats(layer=7)


def test_hits_and_set_acquires(mixtral_stores: dict[str, Path]) -> None:
    with wstore.open(mixtral_stores["raw"]) as store, store.residency("mixtral", 4 * EXPERT_BYTES) as res:
        with res.acquire(0, 1) as e:
            assert e.hit is False
        with res.acquire(0, 1) as e:
            assert e.hit is True
        with pytest.raises(wstore.Released):
            e.hit
        with res.acquire_many(0, [1, 2]) as s:
            assert s.hits == [True, False] and [x.hit for x in s] == [True, False]
        with pytest.raises(wstore.NotFound, match="9"):
            res.prefetch(0, [1, 9])


def test_library_refusals_map_to_exceptions(mixtral_stores: dict[str, Path]) -> None:
    from wstore import _lib
    with wstore.open(mixtral_stores["raw"]) as store:
        with pytest.raises(wstore.BudgetExhausted):
            store.residency("mixtral", EXPERT_BYTES // 2)  # below the largest expert: refused at open
        with store.residency("mixtral", 4 * EXPERT_BYTES) as res:
            e = res.acquire(1, 1)
            pin = e._pin
            e.release()
            # The package never passes a released handle on; the library refuses one.
            with pytest.raises(wstore.InvalidHandle):
                _lib.check(_lib.lib.wstore_expert_release(pin))


def test_a_snapshot_lends_up_to_its_limit(mixtral_stores: dict[str, Path], src: dict[str, np.ndarray]) -> None:
    from wstore._store import MAX_VIEWS
    name = "model.norm.weight"
    with wstore.open(mixtral_stores["raw"]) as store, store.snapshot() as snap:
        views = [snap.tensor(name) for _ in range(MAX_VIEWS)]  # each a nested read scope
        with pytest.raises(wstore.InvalidArgument, match="at most"):
            snap.tensor(name)
        assert all(v.tobytes() == src[name].tobytes() for v in views)
        views.pop()
        assert snap.tensor(name).tobytes() == src[name].tobytes()  # one given back: one more lent
        del views


def test_a_parts_dict_kept_past_release_keeps_the_pin(mixtral_stores: dict[str, Path],
                                                      src: dict[str, np.ndarray]) -> None:
    with wstore.open(mixtral_stores["raw"]) as store, store.residency("mixtral", 2 * EXPERT_BYTES, wait=0) as res:
        with res.acquire(1, 0) as e:
            parts = e.parts
        with res.acquire(1, 2):
            with pytest.raises(wstore.BudgetExhausted):
                res.acquire(1, 3)
        assert parts["up"].tobytes() == up_of(src, 1, 0).tobytes()
        del parts
        with res.acquire_many(1, [2, 3]):
            pass


def test_a_released_expert_s_arrays_are_reused_by_the_next_hit(mixtral_stores: dict[str, Path]) -> None:
    """The hit path reuses the arrays of a resident expert when nobody kept them."""
    with wstore.open(mixtral_stores["raw"]) as store, store.residency("mixtral", 4 * EXPERT_BYTES) as res:
        with res.acquire(0, 1) as e:
            first = e._resident
            e["up"].sum()
        with res.acquire(0, 1) as e:
            assert e.hit and e._resident is first
            kept = e["down"]
        with res.acquire(0, 1) as e:
            assert e._resident is not first  # `kept` outlived its release: those arrays left the cache
        del kept
