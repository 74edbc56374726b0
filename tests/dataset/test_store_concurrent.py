"""Two processes writing one dataset at once never lose, duplicate or mix rows; the lock that makes it so."""

from __future__ import annotations

import hashlib
import os
import random
import time
import traceback

import pytest

from dga_engine.dataset.store import Dataset, StoreConfig
from dga_engine.layout import Layout
from dga_engine.lock import FileLock, LockHeld, LockLost
from tests.helpers import make_grasps


def _content(key: str):
    """What the unit ``key`` writes (deterministic, as the filter is on the same input)."""
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    obj = f"o{seed % 5}"
    return make_grasps({obj: 2 + seed % 4}, source=key.split(".")[1], seed=seed)


def _writer(root: str, keys: list[str], seed: int, compact_after: int) -> None:
    rng = random.Random(seed)
    ds = Dataset(Layout.at(root), config=StoreConfig(compact_after_keys=compact_after))
    done: list[str] = []
    for key in keys:
        ds.write_shard(_content(key), key)
        done.append(key)
        if rng.random() < 0.25:  # a rerun of an earlier unit (e.g. after a crash): same key, same rows
            again = rng.choice(done)
            ds.write_shard(_content(again), again)
        if rng.random() < 0.1:
            ds.compact()
        time.sleep(rng.random() * 0.003)


def _fork(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            os._exit(1)
    return pid


@pytest.mark.slow
def test_two_writer_processes_lose_and_duplicate_nothing_over_20_randomized_runs(tmp_path):
    for run in range(20):
        rng = random.Random(run)
        root = str(tmp_path / f"run{run}")
        same_source = run % 2 == 1  # both filter the same source (same units), or each its own
        pool_a = [f"filter.A.c{j:02d}.u{j}" for j in range(rng.randint(5, 9))]
        pool_b = pool_a if same_source else [f"filter.B.c{j:02d}.u{j}" for j in range(rng.randint(5, 9))]
        a, b = pool_a[:], pool_b[:]
        rng.shuffle(a)
        rng.shuffle(b)
        pids = [
            _fork(_writer, root, a, 2 * run, rng.randint(2, 6)),
            _fork(_writer, root, b, 2 * run + 1, rng.randint(2, 6)),
        ]
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        assert codes == [0, 0], f"run {run}: a writer failed"

        expected = sorted(g for k in sorted(set(pool_a) | set(pool_b)) for g in _content(k)["grasp_id"].to_pylist())
        ds = Dataset(Layout.at(root))
        got = sorted(ds.read()["grasp_id"].to_pylist())
        assert got == expected, f"run {run} ({'same' if same_source else 'different'} sources): lost or duplicated rows"
        assert sorted(m.key for m in ds.shards()) == sorted(set(pool_a) | set(pool_b))
        for key in (pool_a[0], pool_b[-1]):
            assert sorted(ds.read_shard(key)["grasp_id"].to_pylist()) == sorted(_content(key)["grasp_id"].to_pylist())
        report = ds.verify()
        assert report.ok and all(b["level"] == "warning" for b in report.bad), (run, report.bad)
        ds.compact()
        assert sorted(Dataset(Layout.at(root)).read()["grasp_id"].to_pylist()) == expected


def test_lock_excludes_names_its_holder_and_is_taken_over_when_its_process_died(tmp_path):
    path = str(tmp_path / "x.lock")
    first = FileLock(path, purpose="test").acquire(timeout=1)
    holder = FileLock(path).holder()
    assert holder["pid"] == os.getpid() and holder["purpose"] == "test" and not holder["stale"]
    with pytest.raises(LockHeld, match=f"pid {os.getpid()} on .* \\(test\\) since 20"):
        FileLock(path).acquire(timeout=0.2)
    first.check()
    first.release()
    assert FileLock(path).holder() is None

    pid = os.fork()
    if pid == 0:  # a holder that dies without releasing (like kill -9)
        FileLock(path, purpose="doomed").try_acquire()
        os._exit(0)
    os.waitpid(pid, 0)
    assert FileLock(path).holder()["stale"]
    second = FileLock(path).acquire(timeout=1)  # taken over at once: its process is gone
    assert FileLock(path).holder()["pid"] == os.getpid()
    second.release()


def test_an_expired_lock_is_taken_over_and_its_old_holder_cannot_commit(tmp_path):
    path = str(tmp_path / "y.lock")
    slow = FileLock(path, ttl_s=0.3).acquire(timeout=1)
    from dga_engine.lock import _unregister

    _unregister(slow)  # its heartbeat stalls (a frozen process)
    time.sleep(0.5)
    other = FileLock(path, ttl_s=0.3).acquire(timeout=2)
    with pytest.raises(LockLost, match="was not committed"):
        slow.check()
    other.check()
    other.release()
