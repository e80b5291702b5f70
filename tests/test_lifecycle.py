"""Leaks, dropped connections, closing the pool, fairness between waiters (real MariaDB)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

import pytest

from dbpool import PoolClosed, PoolError
from tests.faultkit import session_id, session_open, wait_until

pytestmark = pytest.mark.faults


def select_one(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()
    cur.close()


def acquire_somewhere_recognisable(pool: Any) -> Any:
    return pool.acquire()


def test_connection_never_returned_is_reported_with_its_stack(
    mysql_pool: Any,
    caplog: pytest.LogCaptureFixture,
    pool_mode: str,
    mysql_driver: str,
    mysql_params: dict[str, Any],
) -> None:
    # Long enough that a busy machine does not hold this thread past it before the first look.
    threshold = 2.0
    pool = mysql_pool(leak_threshold=threshold)
    caplog.set_level(logging.WARNING, logger="dbpool")
    held = acquire_somewhere_recognisable(pool)
    try:
        assert pool.get_stats()["leaks_reported"] == 0
        time.sleep(threshold + 0.1)
        stats = pool.get_stats()  # the check is lazy: get_stats() and acquire() run it
        pool.get_stats()  # reported once only
        warnings = [r for r in caplog.records if "not back yet" in r.getMessage()]
    finally:
        pool.release(held)
    late = [r for r in caplog.records if "was held for" in r.getMessage()]
    print(
        f"\nleak-report/{pool_mode}/{mysql_driver}: leaks_reported={stats['leaks_reported']} "
        f"warnings={len(warnings)} late_return_warnings={len(late)}"
    )
    assert stats["leaks_reported"] == 1
    assert len(warnings) == 1
    assert "acquire_somewhere_recognisable" in warnings[0].getMessage()
    assert late == []  # already reported: no second warning when it comes back
    assert mysql_params["password"] not in caplog.text


def test_dropped_connection_is_reclaimed(
    mysql_pool: Any,
    admin: Any,
    caplog: pytest.LogCaptureFixture,
    pool_mode: str,
    mysql_driver: str,
    mysql_params: dict[str, Any],
) -> None:
    gc.collect()  # what earlier tests left to the collector must not be reclaimed below
    pool = mysql_pool(size=2, max_overflow=0, timeout=2.0)
    caplog.set_level(logging.WARNING, logger="dbpool")
    caplog.clear()
    conn = acquire_somewhere_recognisable(pool)
    select_one(conn)
    conn_id = session_id(conn)
    assert session_open(admin, conn_id, expect=True)
    del conn  # never given back
    gc.collect()
    stats = pool.get_stats()
    still_open = session_open(admin, conn_id, expect=False)
    # The slot is free again: both connections can be had at once.
    first, second = pool.acquire(timeout=2.0), pool.acquire(timeout=2.0)
    pool.release(first)
    pool.release(second)
    warned = [r for r in caplog.records if "garbage-collected" in r.getMessage()]
    print(
        f"\nreclaim/{pool_mode}/{mysql_driver}: reclaimed={stats['reclaimed']} "
        f"in_use={stats['in_use']} conns={stats['total_connections']} "
        f"session_still_open={still_open} warnings={len(warned)}"
    )
    assert stats["reclaimed"] == 1
    assert stats["in_use"] == 0
    assert stats["total_connections"] == 0
    assert not still_open  # its driver connection was closed
    assert len(warned) == 1
    assert mysql_params["password"] not in caplog.text


def test_dropped_connections_never_exhaust_the_pool(
    mysql_pool: Any, pool_mode: str, mysql_driver: str
) -> None:
    pool = mysql_pool(size=2, max_overflow=1, timeout=2.0)
    for _ in range(20):
        select_one(pool.acquire())  # dropped at once, never released
    gc.collect()
    stats = pool.get_stats()
    print(
        f"\nreclaim-many/{pool_mode}/{mysql_driver}: acquired={stats['acquired']} "
        f"reclaimed={stats['reclaimed']} in_use={stats['in_use']} "
        f"conns={stats['total_connections']}"
    )
    assert stats["acquired"] == 20
    assert stats["reclaimed"] == 20
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= stats["max_size"]


@pytest.mark.timing
def test_waiters_get_pool_closed(mysql_pool: Any, pool_mode: str) -> None:
    pool = mysql_pool(size=1, max_overflow=0, timeout=10.0)
    held = pool.acquire()
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            pool.release(pool.acquire())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(4)]
    for thread in waiters:
        thread.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 4, timeout=5.0)
    started = time.monotonic()  # the time taken to wake them, not to start them
    pool.dispose()
    for thread in waiters:
        thread.join(5.0)
    took = time.monotonic() - started
    hung = sum(thread.is_alive() for thread in waiters)
    pool.release(held)
    print(
        f"\nclosed-waiters/{pool_mode}: waiters=4 pool_closed="
        f"{sum(isinstance(e, PoolClosed) for e in outcome)} hung={hung} took={took:.2f}s"
    )
    assert hung == 0
    assert len(outcome) == 4 and all(isinstance(e, PoolClosed) for e in outcome)
    assert "closed" in str(outcome[0])
    assert took < 5.0


def test_connection_returned_after_close_is_closed(
    mysql_pool: Any, admin: Any, pool_mode: str, mysql_driver: str
) -> None:
    pool = mysql_pool(size=2)
    lent = pool.acquire()
    lent_id = session_id(lent)
    with pool as idle:
        idle_id = session_id(idle)
    pool.dispose()
    # The idle one is closed at once (in persistent mode the thread's one connection is both).
    idle_open = idle_id != lent_id and session_open(admin, idle_id, expect=False)
    lent_open = session_open(admin, lent_id, expect=True)
    select_one(lent)  # a connection lent before the close still works until returned
    pool.release(lent)
    lent_left_open = session_open(admin, lent_id, expect=False)
    pool.dispose()  # twice is fine
    with pytest.raises(PoolClosed):
        pool.acquire()
    stats = pool.get_stats()
    print(
        f"\nclose/{pool_mode}/{mysql_driver}: idle_open_after_dispose={idle_open} "
        f"lent_open_after_dispose={lent_open} lent_open_after_return={lent_left_open} "
        f"conns={stats['total_connections']} "
        f"in_use={stats['in_use']}"
    )
    assert not idle_open
    assert lent_open
    assert not lent_left_open
    assert stats["total_connections"] == 0 and stats["in_use"] == 0
    pool.release(None)
    pool.release(lent)  # a second release after the close: still nothing
    with pytest.raises(PoolError):
        lent.cursor()


@pytest.mark.timing
@pytest.mark.parametrize("pool_mode", ["shared"])
def test_waiters_are_not_starved_by_newcomers(mysql_pool: Any, mysql_driver: str) -> None:
    """Eight busy threads on two connections must not keep a ninth waiting forever."""
    # A starved thread waits until the timeout; a served one far less. The bound between
    # the two leaves a busy machine seconds of slack.
    pool = mysql_pool(size=2, max_overflow=0, timeout=10.0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy() -> None:
        while not stop.is_set():
            try:
                with pool as conn:
                    select_one(conn)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=busy) for _ in range(8)]
    for thread in threads:
        thread.start()
    waits = []
    try:
        for _ in range(20):
            start = time.monotonic()
            with pool as conn:
                select_one(conn)
            waits.append(time.monotonic() - start)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10.0)
    print(
        f"\nfairness/{mysql_driver}: busy_threads=8 conns=2 late_acquires=20 "
        f"longest_wait={max(waits) * 1000:.0f}ms errors={len(errors)}"
    )
    assert errors == []
    assert max(waits) < 5.0
