"""The pool's own logic over a fake driver: bounds, waits, validation, stats, both modes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dbpool import (
    ConnectError,
    ConnectionPool,
    PoolClosed,
    PoolError,
    PoolTimeout,
    ValidationError,
    make_pool,
)
from tests.fakedb import FakeDriver

MODES = ["shared", "persistent"]


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def new_pool(pools: list[ConnectionPool], driver: FakeDriver) -> Any:
    def new(**options: Any) -> ConnectionPool:
        options.setdefault("driver", driver)
        pool = make_pool(**options)
        pools.append(pool)
        return pool

    return new


def in_thread(fn: Any) -> Any:
    """Run fn in a new thread and return its result (or raise its exception)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    ok, value = box[0]
    if not ok:
        raise value
    return value


# -- the seed's cases, shared mode ------------------------------------------


def test_release_connection(new_pool: Any) -> None:
    pool = new_pool(size=2)
    conn = pool.acquire()
    pool.release(conn)
    stats = pool.get_stats()
    counts = (stats["acquired"], stats["released"], stats["in_use"], stats["pool_size"])
    assert counts == (1, 1, 0, 1)


def test_acquire_release_multiple_reuses_one_connection(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(size=2)
    for _ in range(20):
        with pool as conn:
            conn.cursor().execute("SELECT 1")
    assert driver.connects == 1
    assert pool.get_stats()["created"] == 1


def test_pool_size_limit_keeps_only_size_idle(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(size=2, max_overflow=3)
    conns = [pool.acquire() for _ in range(5)]
    assert pool.get_stats()["total_connections"] == 5
    for conn in conns:
        pool.release(conn)
    stats = pool.get_stats()
    assert stats["pool_size"] == 2
    assert stats["total_connections"] == 2
    assert stats["closed_overflow"] == 3
    assert len(driver.open) == 2


def test_overflow_limit_reached_times_out(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=1, timeout=0.2)
    held = [pool.acquire(), pool.acquire()]
    with pytest.raises(PoolTimeout) as info:
        pool.acquire()
    assert isinstance(info.value, queue.Empty)
    assert isinstance(info.value, PoolError)
    assert "Connection pool timeout after 0.2s (2/2 connections in use" in str(info.value)
    assert pool.get_stats()["timeouts"] == 1
    for conn in held:
        pool.release(conn)


def test_acquire_succeeds_after_release(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=0, timeout=5)
    conn = pool.acquire()
    timer = threading.Timer(0.1, pool.release, args=(conn,))
    timer.start()
    again = pool.acquire()
    timer.join()
    pool.release(again)
    assert pool.get_stats()["timeouts"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_recycling_disabled(new_pool: Any, driver: FakeDriver, mode: str) -> None:
    pool = new_pool(mode=mode, recycle=0)
    for _ in range(3):
        with pool as conn:
            conn.cursor()
    assert pool.get_stats()["recycled"] == 0
    assert driver.connects == 1


@pytest.mark.parametrize("mode", MODES)
def test_old_connection_recycled_young_not(new_pool: Any, driver: FakeDriver, mode: str) -> None:
    pool = new_pool(mode=mode, recycle=0.2)
    with pool as conn:
        first = conn.dbapi_connection
    with pool as conn:
        assert conn.dbapi_connection is first  # young: reused
    time.sleep(0.25)
    with pool as conn:
        assert conn.dbapi_connection is not first
    assert first.closed
    assert pool.get_stats()["recycled"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_context_manager_never_shares_a_connection(new_pool: Any, mode: str) -> None:
    pool = new_pool(mode=mode, size=4, max_overflow=2)
    errors: list[str] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        with pool as conn:
            raw = conn.dbapi_connection
            with lock:
                if raw.user is not None:
                    errors.append(f"connection {raw.id} handed to two threads")
                raw.user = threading.current_thread()
            time.sleep(0.001)
            with lock:
                raw.user = None
            with pool as inner:  # nested blocks on the same pool object
                inner.cursor().execute("SELECT 1")

    # Nested blocks hold two connections each: 3 threads x 2 fit in max_size 6.
    with ThreadPoolExecutor(max_workers=3) as executor:
        list(executor.map(work, range(200)))
    stats = pool.get_stats()
    assert errors == []
    assert stats["acquired"] == stats["released"] == 400
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= stats["max_size"]


def test_no_connection_leaks_and_threadpool(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(size=3, max_overflow=2)

    def task(i: int) -> int:
        conn = pool.acquire()
        try:
            conn.cursor().execute("SELECT %s", (i,))
            return i
        finally:
            pool.release(conn)

    with ThreadPoolExecutor(max_workers=10) as executor:
        assert sorted(executor.map(task, range(100))) == list(range(100))
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["total_connections"] == len(driver.open) <= 5
    assert stats["acquired"] - stats["released"] == stats["in_use"]


def test_stats_keys_and_counts(new_pool: Any) -> None:
    pool = new_pool(size=2, max_overflow=1)
    a, b = pool.acquire(), pool.acquire()
    stats = pool.get_stats()
    for key in ("created", "recycled", "acquired", "released", "timeouts",
                "total_connections", "pool_size", "max_size", "in_use", "waiting",
                "validation_failures", "wait_ms_mean", "wait_ms_p99"):
        assert key in stats
    counts = (stats["created"], stats["in_use"], stats["pool_size"], stats["max_size"])
    assert counts == (2, 2, 0, 3)
    pool.release(a)
    pool.release(b)
    assert pool.get_stats()["pool_size"] == 2


@pytest.mark.parametrize("mode", MODES)
def test_release_none_and_double_release(new_pool: Any, mode: str) -> None:
    pool = new_pool(mode=mode)
    pool.release(None)
    conn = pool.acquire()
    pool.release(conn)
    pool.release(conn)
    conn.close()
    stats = pool.get_stats()
    assert (stats["acquired"], stats["released"], stats["in_use"]) == (1, 1, 0)
    with pytest.raises(PoolError, match="already given back"):
        conn.cursor()


def test_release_foreign_object(new_pool: Any) -> None:
    pool = new_pool()
    with pytest.raises(PoolError, match="not a connection of pool"):
        pool.release(object())


@pytest.mark.parametrize("mode", MODES)
def test_close_all_then_acquire(new_pool: Any, driver: FakeDriver, mode: str) -> None:
    pool = new_pool(mode=mode, size=3)
    held = pool.acquire()
    with pool as conn:
        idle_raw = conn.dbapi_connection
    if mode == "persistent":
        idle_raw = held.dbapi_connection  # the thread has one connection, lent twice
    pool.close_all()
    if mode == "shared":
        assert idle_raw.closed
    lent_raw = held.dbapi_connection
    pool.release(held)
    assert lent_raw.closed  # closed when it came back
    with pool as conn:
        conn.cursor().execute("SELECT 1")
    assert pool.get_stats()["total_connections"] == 1
    assert len(driver.open) == 1


def test_global_pool_created_once_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbpool.pool as pool_module

    monkeypatch.setattr(pool_module, "_global_pool", None)
    made: list[Any] = []
    real = pool_module.ConnectionPool

    def counting(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.01)
        pool = real(*args, **kwargs)
        made.append(pool)
        return pool

    monkeypatch.setattr(pool_module, "ConnectionPool", counting)
    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(lambda _: pool_module.get_global_pool(size=3), range(16)))
    assert len(made) == 1
    assert all(result is made[0] for result in results)
    assert pool_module.get_global_pool(size=99) is made[0]
    assert made[0].size == 3
    made[0].dispose()


def test_rapid_acquire_release(new_pool: Any) -> None:
    pool = new_pool(size=2, max_overflow=0)

    def spin() -> None:
        for _ in range(500):
            pool.release(pool.acquire())

    threads = [threading.Thread(target=spin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = pool.get_stats()
    assert stats["acquired"] == stats["released"] == 2000
    assert stats["created"] <= 2


# -- beyond the seed --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_dead_connection_replaced_transparently(new_pool: Any, driver: FakeDriver,
                                                mode: str) -> None:
    pool = new_pool(mode=mode)
    with pool as conn:
        first = conn.dbapi_connection
    first.killed = True
    with pool as conn:
        assert conn.dbapi_connection is not first
        conn.cursor().execute("SELECT 1")
    stats = pool.get_stats()
    assert stats["validation_failures"] == 1
    assert stats["created"] == 2


def test_recently_used_connection_skips_the_round_trip(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(ping_interval=60)
    with pool as conn:
        raw = conn.dbapi_connection
    for _ in range(5):
        with pool as conn:
            pass
    assert raw.pings == 0
    assert driver.probes == 5


def test_idle_connection_pinged(new_pool: Any) -> None:
    pool = new_pool(ping_interval=0)
    with pool as conn:
        raw = conn.dbapi_connection
    with pool as conn:
        pass
    assert raw.pings == 1


def test_permanent_connect_error_fails_at_once(new_pool: Any) -> None:
    bad = FakeDriver(fail_connects=10, permanent=True)
    pool = new_pool(driver=bad, timeout=5)
    start = time.monotonic()
    with pytest.raises(ConnectError, match="Access denied") as info:
        pool.acquire()
    assert time.monotonic() - start < 2.5  # not retried until the timeout
    assert bad.connects == 1
    assert info.value.__cause__ is not None
    assert pool.get_stats()["total_connections"] == 0


def test_transient_connect_error_retried(new_pool: Any) -> None:
    flaky = FakeDriver(fail_connects=2)
    pool = new_pool(driver=flaky)
    with pool as conn:
        conn.cursor()
    assert flaky.connects == 3


def test_connect_retries_are_bounded(new_pool: Any) -> None:
    down = FakeDriver(fail_connects=100)
    pool = new_pool(driver=down)
    with pytest.raises(ConnectError, match="after 2 attempts"):
        pool.acquire(max_retries=1)
    assert down.connects == 2
    assert pool.get_stats()["in_use"] == 0


def test_validation_retries_exhausted(new_pool: Any, driver: FakeDriver) -> None:
    class DeadOnArrival(FakeDriver):
        def probe(self, raw: Any) -> bool | None:
            return False

    pool = new_pool(driver=DeadOnArrival())
    with pool:
        pass
    with pytest.raises(ValidationError):
        pool.acquire(max_retries=0)
    assert pool.get_stats()["in_use"] == 0


def test_open_transaction_rolled_back_on_release(new_pool: Any) -> None:
    pool = new_pool()
    with pool as conn:
        conn.cursor().execute("UPDATE t SET x = 1")
        raw = conn.dbapi_connection
    assert raw.rollbacks == 1
    with pool as conn:
        conn.cursor().execute("SELECT 1")
    assert raw.rollbacks == 1  # nothing open: no round trip


def test_slow_connects_do_not_serialize(new_pool: Any) -> None:
    slow = FakeDriver(connect_delay=0.3)
    pool = new_pool(driver=slow, size=10, max_overflow=0)
    barrier = threading.Barrier(10)

    def first_query(_: int) -> float:
        barrier.wait()
        start = time.monotonic()
        with pool as conn:
            conn.cursor().execute("SELECT 1")
        return time.monotonic() - start

    with ThreadPoolExecutor(max_workers=10) as executor:
        times = list(executor.map(first_query, range(10)))
    # Serialized connects would take 10 x 0.3 s for the last thread.
    assert max(times) < 1.5
    assert slow.connects == 10


def test_persistent_same_connection_per_thread(new_pool: Any) -> None:
    pool = new_pool(mode="persistent")
    with pool as conn:
        mine = conn.dbapi_connection
    with pool as conn:
        assert conn.dbapi_connection is mine
    other = in_thread(lambda: pool.acquire())
    assert other.dbapi_connection is not mine
    pool.release(other)


def test_persistent_bound_waits_then_times_out(new_pool: Any) -> None:
    pool = new_pool(mode="persistent", size=1, max_overflow=1, timeout=0.2)
    ready = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with pool:
            pass
        ready.set()
        done.wait(5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    ready.wait(5)
    time.sleep(0.05)
    with pytest.raises(PoolTimeout, match="close_thread_connection"):
        pool.acquire()
    done.set()
    for thread in holders:
        thread.join()
    # The threads ended: their connections are closed and their slots free.
    with pool as conn:
        conn.cursor()
    assert pool.get_stats()["total_connections"] == 1


def test_persistent_close_thread_connection_frees_the_slot(new_pool: Any,
                                                          driver: FakeDriver) -> None:
    pool = new_pool(mode="persistent", size=1, max_overflow=0, timeout=0.5)
    with pool as conn:
        mine = conn.dbapi_connection
    with pytest.raises(PoolTimeout):
        in_thread(pool.acquire)
    pool.close_thread_connection()
    assert mine.closed
    other = in_thread(lambda: pool.acquire())
    raw = other.dbapi_connection
    pool.release(other)
    # That thread has ended, and its connection went with it.
    assert pool.get_stats()["total_connections"] == 0
    assert raw.closed


def test_persistent_close_thread_connection_while_lent(new_pool: Any) -> None:
    pool = new_pool(mode="persistent")
    with pool as conn:
        raw = conn.dbapi_connection
        pool.close_thread_connection()
        assert not raw.closed
        conn.cursor().execute("SELECT 1")
    assert raw.closed


def test_dispose_rejects_waiters_and_later_calls(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=0, timeout=5)
    held = pool.acquire()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.acquire()
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    pool.dispose()
    waiter.join(2)
    assert not waiter.is_alive()
    assert isinstance(errors[0], PoolClosed)
    raw = held.dbapi_connection
    pool.release(held)
    assert raw.closed
    pool.dispose()


def test_bad_mode_and_retries(new_pool: Any) -> None:
    with pytest.raises(ValueError, match="'shared', 'persistent'"):
        make_pool(mode="fast")
    pool = new_pool()
    with pytest.raises(ValueError, match="max_retries cannot be negative"):
        pool.acquire(max_retries=-1)


def test_debug_log_lines(new_pool: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dbpool")
    pool = new_pool(recycle=0)
    with pool:
        pass
    text = caplog.text
    assert "opened a connection" in text
    assert "acquired a connection" in text
    assert "released a connection" in text


def test_persistent_nested_acquire_leaves_the_outer_connection_alone(new_pool: Any) -> None:
    pool = new_pool(mode="persistent", recycle=0.05, ping_interval=0)
    with pool as outer:
        raw = outer.dbapi_connection
        time.sleep(0.1)  # old enough to recycle, and due for a ping
        with pool as inner:
            assert inner.dbapi_connection is raw
        assert not raw.closed
        assert raw.pings == 0
        outer.cursor().execute("SELECT 1")
    assert raw.closed  # recycled once the outer block gave it back


def test_connection_held_past_leak_threshold_is_reported(
        new_pool: Any, caplog: pytest.LogCaptureFixture) -> None:
    pool = new_pool(leak_threshold=0.05)
    with pool:
        pass
    assert "leak_threshold" not in caplog.text

    def slow_user() -> None:
        with pool:
            time.sleep(0.1)

    slow_user()
    assert "was held for" in caplog.text
    assert "in slow_user" in caplog.text  # the stack names the code that acquired it


@pytest.mark.parametrize("mode", MODES)
def test_every_connection_opened_is_open_or_counted_closed(new_pool: Any, mode: str) -> None:
    pool = new_pool(mode=mode, size=1, max_overflow=3, recycle=0.01)

    def work(_: int) -> None:
        for _ in range(20):
            with pool as conn:
                conn.cursor().execute("SELECT 1")
                time.sleep(0.005)  # older than `recycle` by the time it comes back

    with ThreadPoolExecutor(max_workers=4) as executor:
        list(executor.map(work, range(4)))
    pool.close_all()
    stats = pool.get_stats()
    assert stats["created"] > 4  # recycling and overflow made it open more than it kept
    assert stats["created"] == stats["total_connections"] + stats["closed"]
