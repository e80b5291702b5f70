"""The 22 cases of the ConnectionPool reference, against MariaDB, both drivers, both modes."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import dbpool.pool as pool_module
from dbpool import ConnectionPool, PoolTimeout


def select(conn: Any, value: int = 1) -> int:
    cur = conn.cursor()
    cur.execute("SELECT %s", (value,))
    (result,) = cur.fetchone()
    cur.close()
    return int(result)


def spread(pool: ConnectionPool, count: int, body: Any) -> list[Any]:
    """Run body(i) on `count` threads at once, each holding its own connection."""
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
    """Keep `count` connections lent to other threads for the duration of the block."""
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


def test_release_connection(mysql_pool: Any) -> None:
    pool = mysql_pool()
    conn = pool.acquire()
    assert select(conn) == 1
    pool.release(conn)
    assert pool.get_stats()["released"] == 1
    assert pool.get_stats()["pool_size"] == 1


def test_acquire_release_multiple(mysql_pool: Any) -> None:
    pool = mysql_pool()
    for i in range(25):
        conn = pool.acquire()
        assert select(conn, i) == i
        pool.release(conn)
    stats = pool.get_stats()
    assert (stats["acquired"], stats["released"], stats["created"]) == (25, 25, 1)


def test_pool_size_limit(mysql_pool: Any) -> None:
    pool = mysql_pool(size=2, max_overflow=2)
    spread(pool, 4, lambda i, conn: select(conn, i))
    if pool.mode == "shared":
        assert pool.get_stats()["pool_size"] == 2  # overflow closed at return
    assert pool.get_stats()["total_connections"] <= 2


def test_overflow_connections(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_overflow=2)
    results = spread(pool, 3, lambda i, conn: select(conn, i))
    assert results == [0, 1, 2]
    assert pool.get_stats()["created"] == 3


def test_overflow_limit_reached(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_overflow=1, timeout=0.2)
    with holding(pool, 2), pytest.raises(PoolTimeout) as info:
        pool.acquire()
    assert isinstance(info.value, queue.Empty)
    assert pool.get_stats()["timeouts"] == 1


def test_acquire_succeeds_after_release(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_overflow=0, timeout=10)
    given_back = threading.Event()

    def holder() -> None:
        with pool:
            time.sleep(0.2)
        pool.close_thread_connection()  # persistent mode: free the thread's slot
        given_back.set()

    thread = threading.Thread(target=holder)
    thread.start()
    time.sleep(0.05)
    with pool as conn:
        assert given_back.is_set()
        assert select(conn) == 1
    thread.join()
    assert pool.get_stats()["timeouts"] == 0


def test_connection_recycling_disabled(mysql_pool: Any) -> None:
    pool = mysql_pool(recycle=0)
    for _ in range(3):
        with pool as conn:
            select(conn)
    assert pool.get_stats()["recycled"] == 0
    assert pool.get_stats()["created"] == 1


def test_young_connection_not_recycled(mysql_pool: Any) -> None:
    pool = mysql_pool(recycle=3600)
    with pool as conn:
        first = conn.dbapi_connection
    with pool as conn:
        assert conn.dbapi_connection is first
    assert pool.get_stats()["recycled"] == 0


def test_concurrent_acquire_release(mysql_pool: Any) -> None:
    pool = mysql_pool(size=5, max_overflow=5)

    def worker(i: int) -> int:
        conn = pool.acquire()
        try:
            return select(conn, i)
        finally:
            pool.release(conn)

    with ThreadPoolExecutor(max_workers=10) as executor:
        assert sorted(executor.map(worker, range(50))) == list(range(50))
    assert pool.get_stats()["in_use"] == 0


def test_concurrent_context_manager(mysql_pool: Any) -> None:
    pool = mysql_pool(size=5, max_overflow=5)

    def worker(i: int) -> int:
        with pool as conn:
            return select(conn, i)

    with ThreadPoolExecutor(max_workers=10) as executor:
        assert sorted(executor.map(worker, range(50))) == list(range(50))
    stats = pool.get_stats()
    assert stats["acquired"] == stats["released"] == 50


def test_no_connection_leaks(mysql_pool: Any, admin: Any, mysql_params: dict[str, Any]) -> None:
    pool = mysql_pool(size=3, max_overflow=7)
    threads = [threading.Thread(target=lambda: [pool.release(pool.acquire()) for _ in range(20)])
               for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= stats["max_size"]
    pool.close_all()
    for _ in range(200):
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                        (mysql_params["user"],))
            if cur.fetchone()[0] == 0:
                break
        time.sleep(0.02)
    else:
        pytest.fail("connections left open on the server after close_all()")


def test_threadpool_executor(mysql_pool: Any) -> None:
    pool = mysql_pool(size=4, max_overflow=4)

    def task(i: int) -> int:
        with pool as conn:
            return select(conn, i) * 2

    with ThreadPoolExecutor(max_workers=8) as executor:
        assert sum(executor.map(task, range(100))) == 2 * sum(range(100))


def test_stats_creation_tracking(mysql_pool: Any) -> None:
    pool = mysql_pool(size=3, max_overflow=0)
    spread(pool, 3, lambda i, conn: select(conn))
    assert pool.get_stats()["created"] == 3


def test_stats_acquire_release_tracking(mysql_pool: Any) -> None:
    pool = mysql_pool()
    held = pool.acquire()
    stats = pool.get_stats()
    assert (stats["acquired"], stats["released"], stats["in_use"]) == (1, 0, 1)
    pool.release(held)
    stats = pool.get_stats()
    assert (stats["acquired"], stats["released"], stats["in_use"]) == (1, 1, 0)


def test_stats_timeout_tracking(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_overflow=0, timeout=0.1)
    with holding(pool, 1):
        for _ in range(2):
            with pytest.raises(PoolTimeout):
                pool.acquire()
    assert pool.get_stats()["timeouts"] == 2


def test_stats_pool_size(mysql_pool: Any) -> None:
    pool = mysql_pool(size=3, max_overflow=2)
    assert pool.get_stats()["max_size"] == 5
    assert pool.get_stats()["pool_size"] == 0
    with pool:
        assert pool.get_stats()["pool_size"] == 0
    assert pool.get_stats()["pool_size"] == 1


def test_release_none_connection(mysql_pool: Any) -> None:
    pool = mysql_pool()
    pool.release(None)
    assert pool.get_stats()["released"] == 0


def test_close_all_connections(mysql_pool: Any) -> None:
    pool = mysql_pool()
    with pool as conn:
        select(conn)
    pool.close_all()
    assert pool.get_stats()["total_connections"] == 0


def test_acquire_after_close_all(mysql_pool: Any) -> None:
    pool = mysql_pool()
    with pool as conn:
        select(conn)
    pool.close_all()
    with pool as conn:
        assert select(conn, 5) == 5
    assert pool.get_stats()["created"] == 2


def test_get_global_pool_creates_once_and_thread_safe(
        mysql_params: dict[str, Any], mysql_driver: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "database:\n  primary:\n"
        f"    host: {mysql_params['host']}\n    port: {mysql_params['port']}\n"
        f"    user: {mysql_params['user']}\n    password: {mysql_params['password']}\n"
        f"    database: {mysql_params['database']}\n")
    monkeypatch.setenv("DBPOOL_CONFIG", str(config))
    monkeypatch.setattr(pool_module, "_global_pool", None)
    with ThreadPoolExecutor(max_workers=8) as executor:
        found = list(executor.map(
            lambda _: pool_module.get_global_pool(size=4, driver=mysql_driver), range(16)))
    pool = found[0]
    try:
        assert all(other is pool for other in found)
        assert pool_module.get_global_pool(size=50) is pool
        assert pool.size == 4
        with pool as conn:
            assert select(conn) == 1
    finally:
        pool.dispose()


def test_rapid_acquire_release(mysql_pool: Any) -> None:
    pool = mysql_pool(size=2, max_overflow=2)

    def spin() -> None:
        for _ in range(100):
            with pool as conn:
                select(conn)

    threads = [threading.Thread(target=spin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stats = pool.get_stats()
    assert stats["acquired"] == stats["released"] == 400
    assert stats["total_connections"] <= 4
    # Every connection opened is either still open or counted as closed.
    assert stats["created"] == stats["total_connections"] + stats["closed"]
