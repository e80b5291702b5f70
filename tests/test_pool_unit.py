"""The pool's own logic over a fake driver: bounds, waits, validation, stats, both modes."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

from dbpool import (
    ConnectError,
    ConnectionPool,
    PoolClosed,
    PoolTimeout,
    ValidationError,
    make_pool,
)
from tests.fakedb import FakeDriver
from tests.faultkit import wait_until


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


def test_dead_connection_replaced_transparently(new_pool: Any, pool_mode: str) -> None:
    pool = new_pool(mode=pool_mode)
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


@pytest.mark.timing
def test_permanent_connect_error_fails_at_once(new_pool: Any) -> None:
    bad = FakeDriver(fail_connects=10, permanent=True)
    pool = new_pool(driver=bad, timeout=30)
    start = time.monotonic()
    with pytest.raises(ConnectError, match="Access denied") as info:
        pool.acquire()
    assert time.monotonic() - start < 15  # not retried until the timeout
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


@pytest.mark.timing
def test_slow_connects_do_not_serialize(new_pool: Any) -> None:
    # One second a connect: in parallel about 1 s, serialized 10 s for the last
    # thread; a bound between the two leaves a busy machine seconds to spare.
    slow = FakeDriver(connect_delay=1.0)
    pool = new_pool(driver=slow, size=10, max_overflow=0)
    barrier = threading.Barrier(10)
    holding = threading.Barrier(10)

    def first_query(_: int) -> float:
        barrier.wait()
        start = time.monotonic()
        with pool as conn:
            conn.cursor().execute("SELECT 1")
            elapsed = time.monotonic() - start
            holding.wait(10)  # every thread needs a connection of its own at the same time
        return elapsed

    with ThreadPoolExecutor(max_workers=10) as executor:
        times = list(executor.map(first_query, range(10)))
    assert max(times) < 5.0
    assert slow.connects == 10


def test_a_burst_takes_returned_connections_rather_than_opening_new_ones(
    new_pool: Any,
) -> None:
    # HikariCP's spike test: 5 warm connections, then 50 threads at once, each with a
    # short query, while every new connect is slow. The returning connections serve the
    # line long before a connect would; at most the background connect started for the
    # line is opened (HikariCP ends with 5 or 6).
    slow = FakeDriver()
    pool = new_pool(driver=slow, size=5, max_overflow=45)
    warm = threading.Barrier(5)

    def hold_once(_: int) -> None:
        with pool:
            warm.wait(10)

    with ThreadPoolExecutor(max_workers=5) as executor:
        list(executor.map(hold_once, range(5)))
    assert slow.connects == 5
    slow.connect_delay = 0.5
    start = threading.Barrier(50)

    def burst(_: int) -> None:
        start.wait(10)
        with pool as conn:
            conn.cursor().execute("SELECT 1")
            time.sleep(0.002)

    with ThreadPoolExecutor(max_workers=50) as executor:
        list(executor.map(burst, range(50)))
    assert slow.connects <= 5 + 2
    assert pool.get_stats()["acquired"] == 55


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
    assert wait_until(lambda: pool.get_stats()["total_connections"] == 2, timeout=5)
    with pytest.raises(PoolTimeout, match="close_thread_connection"):
        pool.acquire()
    done.set()
    for thread in holders:
        thread.join()
    # The threads ended: their connections are closed and their slots free.
    with pool as conn:
        conn.cursor()
    assert pool.get_stats()["total_connections"] == 1


def test_persistent_close_thread_connection_frees_the_slot(
    new_pool: Any, driver: FakeDriver
) -> None:
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
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1, timeout=5)
    pool.dispose()
    waiter.join(10)
    assert not waiter.is_alive()
    assert isinstance(errors[0], PoolClosed)
    raw = held.dbapi_connection
    pool.release(held)
    assert raw.closed
    pool.dispose()


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
    new_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A quick return stays quiet even when a busy machine pauses this thread a while.
    threshold = 2.0
    pool = new_pool(leak_threshold=threshold)
    with pool:
        pass
    assert "leak_threshold" not in caplog.text

    def slow_user() -> None:
        with pool:
            time.sleep(threshold + 0.1)

    slow_user()
    assert "was held for" in caplog.text
    assert "in slow_user" in caplog.text  # the stack names the code that acquired it


def test_every_connection_opened_is_open_or_counted_closed(new_pool: Any, pool_mode: str) -> None:
    pool = new_pool(mode=pool_mode, size=1, max_overflow=3, recycle=0.01)

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


def wait_slice_module() -> ModuleType:
    """The dbpool module whose ``_WAIT_SLICE`` bounds each sleep of a waiting thread."""
    import dbpool

    names = ["dbpool.pool", "dbpool._handles"] + [
        f"dbpool.{info.name}"
        for info in pkgutil.iter_modules(dbpool.__path__)
        if not info.name.startswith("__")
    ]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "_WAIT_SLICE"):
            return module
    pytest.fail("no dbpool module defines _WAIT_SLICE: find what bounds a waiter's sleep now")


def test_dispose_wakes_waiting_threads_at_once(
    new_pool: Any, pool_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiters also wake every _WAIT_SLICE to notice slots freed by threads that ended.
    # Stretched to ten minutes, only dispose() itself can wake them in time.
    monkeypatch.setattr(wait_slice_module(), "_WAIT_SLICE", 600.0)
    pool = new_pool(mode=pool_mode, size=1, max_overflow=0, timeout=300)
    held = pool.acquire()
    outcomes: list[BaseException | None] = []

    def wait() -> None:
        try:
            pool.release(pool.acquire())
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    # Daemons: should dispose() not wake them, they must not keep the run from ending.
    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(3)]
    for thread in waiters:
        thread.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 3, timeout=5)
    pool.dispose()
    deadline = time.monotonic() + 5
    for thread in waiters:
        thread.join(max(0.0, deadline - time.monotonic()))
    pool.release(held)
    assert not any(thread.is_alive() for thread in waiters), "waiters still asleep"
    assert len(outcomes) == 3
    assert all(isinstance(outcome, PoolClosed) for outcome in outcomes)


def test_a_waiting_thread_goes_before_a_newcomer(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=0, timeout=10)
    held = pool.acquire()
    raw = held.dbapi_connection
    got: list[Any] = []

    def wait() -> None:
        conn = pool.acquire()
        got.append(conn.dbapi_connection)
        pool.release(conn)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1, timeout=5)
    # The woken waiter needs the GIL, which this thread keeps (it does not block) until
    # the switch interval ends: the newcomer below comes first to the freed connection.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        pool.release(held)
        try:
            pool.acquire(timeout=0)  # a newcomer that does not wait
        except PoolTimeout:
            took = False
        else:
            took = True
    finally:
        sys.setswitchinterval(interval)
    waiter.join(10)
    assert not took, "a newcomer took the connection a waiting thread was promised"
    assert got == [raw]
    assert pool.get_stats()["timeouts"] == 1


def test_a_release_from_another_thread_wakes_the_waiter(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=0, timeout=5)
    conn = pool.acquire()
    raw = conn.dbapi_connection

    def release_once_waited_for() -> None:
        wait_until(lambda: pool.get_stats()["waiting"] == 1, timeout=5)
        pool.release(conn)

    releaser = threading.Thread(target=release_once_waited_for)
    releaser.start()
    again = pool.acquire()
    releaser.join(5)
    assert again.dbapi_connection is raw
    pool.release(again)
    assert pool.get_stats()["timeouts"] == 0
