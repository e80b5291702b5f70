"""What every pool does, on every backend: the ConnectionPool reference cases.

Each test runs on the fake driver, on SQLite and on MariaDB through both MySQL
drivers, in both modes (the ``backend`` fixture of tests/fix_backend.py).
Persistent mode lends a thread its own connection, so a test that needs several
connections at once holds them from several threads.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbpool import ConnectionPool, PoolError, PoolTimeout
from tests.faultkit import wait_until
from tests.fix_backend import Backend

STATS_KEYS = (
    "created",
    "recycled",
    "acquired",
    "released",
    "timeouts",
    "total_connections",
    "pool_size",
    "max_size",
    "in_use",
    "waiting",
    "validation_failures",
    "wait_ms_mean",
    "wait_ms_p99",
)


def spread(pool: ConnectionPool, count: int, body: Callable[[int, Any], Any]) -> list[Any]:
    """Run body(i, conn) on ``count`` threads at once, each holding its own connection."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        with pool as conn:
            start.wait(10)
            results[i] = body(i, conn)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@contextlib.contextmanager
def holding(pool: ConnectionPool, count: int) -> Iterator[None]:
    """Keep ``count`` connections lent to other threads for the duration of the block."""
    ready = threading.Barrier(count + 1)
    done = threading.Event()

    def hold() -> None:
        with pool:
            ready.wait(10)
            done.wait(30)

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(30)


def counts(pool: ConnectionPool, *keys: str) -> tuple[Any, ...]:
    stats = pool.get_stats()
    return tuple(stats[key] for key in keys)


def test_release_connection(backend: Backend) -> None:
    pool = backend.pool(size=2)
    conn = pool.acquire()
    assert backend.select(conn, 7) == 7
    pool.release(conn)
    assert counts(pool, "acquired", "released", "in_use", "pool_size") == (1, 1, 0, 1)


def test_acquire_release_multiple_reuses_one_connection(backend: Backend) -> None:
    pool = backend.pool(size=2)
    for i in range(25):
        conn = pool.acquire()
        assert backend.select(conn, i) == i
        pool.release(conn)
    assert counts(pool, "acquired", "released", "created") == (25, 25, 1)
    backend.assert_open(1)


def test_pool_size_limit_keeps_only_size_idle(backend: Backend) -> None:
    pool = backend.pool(size=2, max_overflow=3)
    during = spread(pool, 5, lambda i, conn: (backend.select(conn, i), pool.get_stats()))
    assert [value for value, _ in during] == [0, 1, 2, 3, 4]
    assert max(stats["total_connections"] for _, stats in during) == 5
    stats = pool.get_stats()
    if backend.mode == "shared":
        assert stats["pool_size"] == 2  # the overflow was closed at its return
        assert stats["closed_overflow"] == 3
    # Persistent mode: the threads ended, and their connections went with them.
    assert stats["total_connections"] <= 2
    backend.assert_open(pool)


def test_overflow_connections(backend: Backend) -> None:
    pool = backend.pool(size=1, max_overflow=2)
    assert spread(pool, 3, lambda i, conn: backend.select(conn, i)) == [0, 1, 2]
    assert pool.get_stats()["created"] == 3


def test_overflow_limit_reached_times_out(backend: Backend) -> None:
    # The holders connect with the pool's timeout; only the third acquire has 0.2 s.
    pool = backend.pool(size=1, max_overflow=1, timeout=10)
    with holding(pool, 2), pytest.raises(PoolTimeout) as info:
        pool.acquire(timeout=0.2)
    assert isinstance(info.value, queue.Empty)
    assert isinstance(info.value, PoolError)
    assert "Connection pool timeout after 0.2s (2/2 connections in use" in str(info.value)
    assert pool.get_stats()["timeouts"] == 1


def test_acquire_succeeds_after_release(backend: Backend) -> None:
    pool = backend.pool(size=1, max_overflow=0, timeout=10)
    held = threading.Event()
    giving_back = threading.Event()

    def holder() -> None:
        with pool:
            held.set()
            # Give it back only once the other thread waits for it.
            wait_until(lambda: pool.get_stats()["waiting"] == 1, timeout=10)
            giving_back.set()
        pool.close_thread_connection()  # persistent mode: free the thread's slot

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    with pool as conn:
        assert giving_back.is_set()
        assert backend.select(conn) == 1
    thread.join(10)
    assert pool.get_stats()["timeouts"] == 0


def test_recycling_disabled(backend: Backend) -> None:
    pool = backend.pool(recycle=0)
    for _ in range(3):
        with pool as conn:
            backend.select(conn)
    assert counts(pool, "recycled", "created") == (0, 1)


def test_young_connection_not_recycled(backend: Backend) -> None:
    pool = backend.pool(recycle=3600)
    with pool as conn:
        first = conn.dbapi_connection
    with pool as conn:
        assert conn.dbapi_connection is first
    assert pool.get_stats()["recycled"] == 0


def test_old_connection_recycled(backend: Backend) -> None:
    # Long enough that a busy machine gets the connection back before it is due
    # (the release and the next acquire each wait on the server).
    recycle = 2.0
    pool = backend.pool(recycle=recycle)
    with pool as conn:
        first = conn.dbapi_connection
    with pool as conn:
        assert conn.dbapi_connection is first  # young: reused
    time.sleep(recycle + 0.05)  # the connection's age is the state waited for
    with pool as conn:
        assert conn.dbapi_connection is not first
        backend.select(conn)
    assert pool.get_stats()["recycled"] == 1
    if backend.fake is not None:
        assert first.closed
    backend.assert_open(1)


def test_concurrent_context_manager_never_shares_a_connection(backend: Backend) -> None:
    pool = backend.pool(size=4, max_overflow=2)
    holders: dict[int, str] = {}
    lock = threading.Lock()
    errors: list[str] = []

    def work(i: int) -> int:
        with pool as conn:
            raw, me = id(conn.dbapi_connection), threading.current_thread().name
            with lock:
                if raw in holders:
                    errors.append(f"connection {raw} lent to {holders[raw]} and {me}")
                holders[raw] = me
            value = backend.select(conn, i)
            with lock:
                holders.pop(raw, None)
            with pool as inner:  # nested blocks on the same pool object
                assert backend.select(inner, i) == i
            return value

    # Nested blocks hold two connections each: 3 threads x 2 fit in max_size 6.
    with ThreadPoolExecutor(max_workers=3) as executor:
        assert sorted(executor.map(work, range(100))) == list(range(100))
    stats = pool.get_stats()
    assert errors == []
    assert stats["acquired"] == stats["released"] == 200
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= stats["max_size"]


def test_concurrent_acquire_release(backend: Backend) -> None:
    pool = backend.pool(size=5, max_overflow=5)

    def worker(i: int) -> int:
        conn = pool.acquire()
        try:
            return backend.select(conn, i)
        finally:
            pool.release(conn)

    with ThreadPoolExecutor(max_workers=10) as executor:
        assert sorted(executor.map(worker, range(50))) == list(range(50))
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["acquired"] == stats["released"] == 50


def test_no_connection_leaks(backend: Backend) -> None:
    pool = backend.pool(size=3, max_overflow=7)

    def spin() -> None:
        for _ in range(20):
            pool.release(pool.acquire())

    threads = [threading.Thread(target=spin) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["acquired"] - stats["released"] == stats["in_use"]
    assert stats["total_connections"] <= stats["max_size"]
    backend.assert_open(pool)  # a background connect for a waiter may still be finishing
    pool.close_all()
    backend.assert_open(0)


def test_threadpool_executor(backend: Backend) -> None:
    pool = backend.pool(size=4, max_overflow=4)

    def task(i: int) -> int:
        with pool as conn:
            return backend.select(conn, i) * 2

    with ThreadPoolExecutor(max_workers=8) as executor:
        assert sum(executor.map(task, range(100))) == 2 * sum(range(100))
    assert pool.get_stats()["in_use"] == 0


def test_stats_keys_and_creation_tracking(backend: Backend) -> None:
    pool = backend.pool(size=2, max_overflow=1)
    with holding(pool, 2):
        stats = pool.get_stats()
        assert set(STATS_KEYS) <= set(stats)
        assert counts(pool, "created", "in_use", "pool_size", "max_size") == (2, 2, 0, 3)
    assert pool.get_stats()["created"] == 2


def test_stats_acquire_release_tracking(backend: Backend) -> None:
    pool = backend.pool()
    held = pool.acquire()
    assert counts(pool, "acquired", "released", "in_use") == (1, 0, 1)
    pool.release(held)
    assert counts(pool, "acquired", "released", "in_use") == (1, 1, 0)


def test_stats_timeout_tracking(backend: Backend) -> None:
    pool = backend.pool(size=1, max_overflow=0, timeout=10)
    with holding(pool, 1):
        for _ in range(2):
            with pytest.raises(PoolTimeout):
                pool.acquire(timeout=0.1)
    assert pool.get_stats()["timeouts"] == 2


def test_stats_pool_size(backend: Backend) -> None:
    pool = backend.pool(size=3, max_overflow=2)
    assert counts(pool, "max_size", "pool_size") == (5, 0)
    with pool:
        assert pool.get_stats()["pool_size"] == 0
    assert pool.get_stats()["pool_size"] == 1


def test_release_none_and_double_release(backend: Backend) -> None:
    pool = backend.pool()
    pool.release(None)
    assert pool.get_stats()["released"] == 0
    conn = pool.acquire()
    pool.release(conn)
    pool.release(conn)
    conn.close()
    assert counts(pool, "acquired", "released", "in_use") == (1, 1, 0)
    with pytest.raises(PoolError, match="already given back"):
        conn.cursor()


def test_release_foreign_object(backend: Backend) -> None:
    pool = backend.pool()
    with pytest.raises(PoolError, match="not a connection of pool"):
        pool.release(object())


def test_close_all_then_acquire(backend: Backend) -> None:
    pool = backend.pool(size=3)
    with holding(pool, 1):  # lent to another thread while close_all() runs
        with pool as conn:
            backend.select(conn)
        assert pool.get_stats()["total_connections"] == 2
        pool.close_all()
        # The idle one is closed at once; the lent one when it comes back.
        assert pool.get_stats()["total_connections"] == 1
        backend.assert_open(1)
    assert pool.get_stats()["total_connections"] == 0
    backend.assert_open(0)
    with pool as conn:
        assert backend.select(conn, 5) == 5
    assert counts(pool, "created", "total_connections") == (3, 1)
    backend.assert_open(1)


def test_rapid_acquire_release(backend: Backend) -> None:
    pool = backend.pool(size=2, max_overflow=2)

    def spin() -> None:
        for _ in range(150):
            pool.release(pool.acquire())

    threads = [threading.Thread(target=spin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stats = pool.get_stats()
    assert stats["acquired"] == stats["released"] == 600
    # An overflow connection given back while `size` are idle and nobody waits is closed,
    # and a thread may need a new one a moment later: that is the only reason to connect
    # again, and nothing is ever closed as broken.
    assert stats["closed_broken"] == 0
    assert stats["created"] <= 4 + stats["closed_overflow"]
    assert stats["total_connections"] <= 4
    # Every connection opened is either still open or counted as closed.
    assert stats["created"] == stats["total_connections"] + stats["closed"]


_GLOBAL_POOL_SCRIPT = """
import json
from concurrent.futures import ThreadPoolExecutor
from dbpool import get_global_pool

with ThreadPoolExecutor(max_workers=8) as executor:
    found = list(executor.map(lambda _: get_global_pool(size=4), range(16)))
pool = found[0]
with pool as conn:
    cur = conn.cursor()
    cur.execute("SELECT 1")
    (value,) = cur.fetchone()
print(json.dumps({
    "distinct": len({id(p) for p in found}),
    "again": get_global_pool(size=50) is pool,
    "size": pool.size,
    "driver": pool.settings.driver,
    "value": value,
    "created": pool.get_stats()["created"],
}))
pool.dispose()
"""


def test_get_global_pool_creates_once_and_thread_safe(backend: Backend, tmp_path: Path) -> None:
    entry = backend.config_entry()
    if entry is None:
        pytest.skip("get_global_pool() takes drivers by name: the fake driver has none")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"database": {"primary": {**entry, "pool": {"mode": backend.mode}}}})
    )
    # A process of its own: one that has never made the global pool.
    done = subprocess.run(
        [sys.executable, "-c", _GLOBAL_POOL_SCRIPT],
        env={"DBPOOL_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == {
        "distinct": 1,
        "again": True,
        "size": 4,
        "driver": backend.kind,
        "value": 1,
        "created": 1,
    }
