"""The lifecycle controls on every backend: the fake driver, SQLite, MariaDB by each driver.

Each test runs in both modes (the ``backend`` fixture of tests/fix_backend.py).
Persistent mode lends a thread its own connection, so a test that needs several
connections at once holds them from several threads.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dbpool import PoolError, TooManyRequests
from tests.faultkit import wait_until
from tests.fix_backend import Backend


def in_thread(fn: Any) -> Any:
    """Run ``fn`` in a thread of its own and return what it returned."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(fn()))
    worker.start()
    worker.join(10)
    assert box, "the thread did not finish"
    return box[0]


def test_max_usage_and_discard(backend: Backend) -> None:
    pool = backend.pool(size=1, max_usage=2)
    for _ in range(3):
        with pool.connection() as conn:
            backend.select(conn)
    conn = pool.acquire()
    conn.invalidate()
    stats = pool.get_stats()
    assert (stats["closed_usage"], stats["closed_broken"], stats["created"]) == (1, 1, 2)
    assert stats["created"] == stats["total_connections"] + stats["closed"]
    backend.assert_open(0)


def test_min_idle_wait_and_drain(backend: Backend) -> None:
    pool = backend.pool(size=3, min_idle=2, wait=True)
    assert pool.get_stats()["pool_size"] == 2
    backend.assert_open(2)
    pool.drain()
    pool.wait(10)
    assert wait_until(lambda: pool.get_stats()["pool_size"] == 2)
    stats = pool.get_stats()
    assert stats["created"] == 4 and stats["closed"] == 2
    backend.assert_open(2)


def test_max_waiting_sheds_load(backend: Backend) -> None:
    pool = backend.pool(size=1, max_overflow=0, max_waiting=1, timeout=10)
    held = pool.acquire()
    waiter = threading.Thread(target=lambda: pool.release(pool.acquire()))
    waiter.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1)

    def late() -> Any:
        try:
            pool.acquire()
        except TooManyRequests as exc:
            return exc
        return None

    rejected = in_thread(late)
    assert isinstance(rejected, PoolError)
    pool.release(held)
    pool.close_thread_connection()  # persistent mode: free this thread's slot for the waiter
    waiter.join(10)
    assert pool.get_stats()["requests_rejected"] == 1


def test_max_idle_closes_idle_connections(backend: Backend) -> None:
    pool = backend.pool(size=3, max_idle=0.2)
    done = threading.Event()
    holding = threading.Barrier(3)

    def borrow() -> None:
        with pool.connection() as conn:
            backend.select(conn)
            holding.wait(10)
        done.wait(10)  # alive: in persistent mode its connection stays with it

    workers = [threading.Thread(target=borrow) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        holding.wait(10)
        assert wait_until(lambda: pool.get_stats()["total_connections"] == 0)
    finally:
        done.set()
        for w in workers:
            w.join(10)
    assert pool.get_stats()["closed_idle"] == 2
    backend.assert_open(0)


def test_hooks_run_outside_the_lock(backend: Backend) -> None:
    # Each hook calls get_stats(), which takes the pool's lock: under it, the thread
    # would deadlock (the lock is not reentrant).
    seen: list[str] = []
    pools: list[Any] = []

    def hook(name: str) -> Any:
        def call(raw: Any) -> None:
            pools[0].get_stats()
            seen.append(name)

        return call

    pool = backend.pool(size=1, max_usage=2, configure=hook("configure"))
    pools.append(pool)
    for event in ("connect", "checkout", "checkin", "close"):
        pool.add_listener(event, hook(event))

    def work() -> bool:
        for _ in range(2):
            with pool.connection() as conn:
                backend.select(conn)
        return True

    assert in_thread(work)
    assert seen == ["configure", "connect", "checkout", "checkin", "checkout", "close"]


@pytest.mark.parametrize("order", ["fifo", "lifo"])
def test_order(backend: Backend, order: str) -> None:
    if backend.mode == "persistent":
        pytest.skip("persistent mode keeps each connection with its thread: no order")
    pool = backend.pool(size=2, order=order)
    a, b = pool.acquire(), pool.acquire()
    first, second = a.dbapi_connection, b.dbapi_connection
    pool.release(a)
    pool.release(b)
    with pool.connection() as conn:
        assert conn.dbapi_connection is (first if order == "fifo" else second)
