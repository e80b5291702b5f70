"""The pool over host lists and replicas, on the fake driver: routing, deny list, retirement."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dbpool import (
    ConfigError,
    ConnectError,
    ConnectionPool,
    ObjDataThreadSafe,
    PoolTimeout,
    make_pool,
)
from tests.fakedb import FakeDriver, FakeOperationalError


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def new_pool(pools: list[ConnectionPool], driver: FakeDriver) -> Any:
    def new(**options: Any) -> ConnectionPool:
        options.setdefault("driver", driver)
        options.setdefault("user", "app")
        pool = make_pool(**options)
        pools.append(pool)
        return pool

    return new


def host_of(conn: Any) -> str:
    return str(conn.dbapi_connection.host)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def insert(conn: Any) -> None:
    cur = conn.cursor()
    try:
        cur.execute("INSERT INTO t VALUES (1)")
    finally:
        cur.close()


# -- host lists ----------------------------------------------------------------------


def test_first_usable_host_then_back_after_the_deny_window(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    driver.server("a:3306").down = True
    # A window a busy machine does not overrun before the stats are read.
    pool = new_pool(mode=pool_mode, host=["a", "b:3306"], host_deny_seconds=2.0)
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"
    hosts = pool.get_stats()["hosts"]
    assert list(hosts) == ["a:3306", "b:3306"]
    assert hosts["a:3306"]["connect_failures"] == 1
    assert hosts["a:3306"]["denied"] is True
    assert 0 < hosts["a:3306"]["denied_for"] <= 2.0
    assert hosts["b:3306"]["open"] == 1
    assert hosts["b:3306"]["role"] == "primary"
    driver.server("a:3306").down = False
    # Denied: a is not even tried, and b's connection stays in use.
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"
    wait_until(lambda: not pool.get_stats()["hosts"]["a:3306"]["denied"], "a's window to end", 15.0)
    # The open connection to b is kept; new ones go to a.
    first = pool.acquire()
    second = pool.acquire() if pool_mode == "shared" else None
    assert host_of(first) == "b:3306"
    if second is not None:
        assert host_of(second) == "a:3306"
        pool.release(second)
    pool.release(first)


@pytest.mark.timing
def test_every_host_down_names_each_host_and_one_back_is_served(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    for key in ("a:3306", "b:3307"):
        driver.server(key).down = True
    # A timeout far above the retries, so that they, not the deadline, end the acquire.
    pool = new_pool(mode=pool_mode, host="a,b:3307", timeout=30)
    started = time.monotonic()
    with pytest.raises(ConnectError) as failed:
        pool.acquire()
    assert time.monotonic() - started < 15  # raised after the retries, not at the timeout
    text = str(failed.value)
    assert "cannot connect to 'primary' (fake://) after 4 attempts" in text
    assert 'a:3306: (2003, "Can\'t connect to server on a:3306"); b:3307: (2003, ' in text
    assert isinstance(failed.value.__cause__, FakeOperationalError)
    assert pool.get_stats()["hosts"]["b:3307"]["connect_failures"] == 4
    # Both denied now; one comes back and is found at once.
    driver.server("b:3307").down = False
    with pool.connection() as conn:
        assert host_of(conn) == "b:3307"
    assert pool.get_stats()["hosts"]["b:3307"]["denied"] is False


def test_each_host_connect_gets_at_most_what_is_left(new_pool: Any, driver: FakeDriver) -> None:
    driver.server("a:3306").down = True
    # 60 s: a busy machine's pause before each connect takes little of what is left.
    pool = new_pool(host=["a", "b"], timeout=60)
    pool.acquire().close()
    first, second = driver.timeouts
    assert first is not None and second is not None
    assert 25 < first <= 30  # half of the 60 s for the first of two hosts
    assert 55 < second <= 60  # the last host gets all that is left


def test_random_order_spreads_new_connections(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(host=["a", "b", "c"], host_order="random", size=30, max_overflow=0)
    conns = [pool.acquire() for _ in range(30)]
    spread = {key: len(driver.on(key)) for key in ("a:3306", "b:3306", "c:3306")}
    assert all(count >= 3 for count in spread.values()), spread
    for conn in conns:
        conn.close()
    hosts = pool.get_stats()["hosts"]
    assert sum(h["open"] for h in hosts.values()) == 30
    assert sum(h["in_use"] for h in hosts.values()) == 0


def test_single_host_messages_are_unchanged(new_pool: Any, driver: FakeDriver) -> None:
    driver.server("a:3306").down = True
    pool = new_pool(host="a", timeout=30)  # the retries end the acquire, not the deadline
    with pytest.raises(ConnectError) as failed:
        pool.acquire()
    assert str(failed.value) == (
        "cannot connect to 'primary' (fake://) after 4 attempts: "
        '(2003, "Can\'t connect to server on a:3306")'
    )
    assert list(pool.get_stats()["hosts"]) == ["a:3306"]


# -- connections that can no longer do their job ------------------------------------------


def test_read_only_error_closes_the_connection_and_denies_its_host(
    new_pool: Any, driver: FakeDriver, pool_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = new_pool(mode=pool_mode, host=["a", "b"])
    with pool.connection() as conn:
        assert host_of(conn) == "a:3306"
    driver.server("a:3306").read_only = True
    with (
        caplog.at_level(logging.WARNING, logger="dbpool"),
        pool.connection() as conn,
        pytest.raises(FakeOperationalError, match="read-only"),
    ):
        insert(conn)
    stats = pool.get_stats()
    assert stats["closed_read_only"] == 1
    assert stats["hosts"]["a:3306"]["denied"] is True
    assert stats["hosts"]["a:3306"]["open"] == 0
    assert "primary host a:3306 of 'primary' (fake://) denied for 30.0s" in caplog.text
    assert "a statement failed with error 1290 (the server is read-only)" in caplog.text
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"
        insert(conn)
    assert [c.statements for c in driver.on("b:3306")] == [
        ["SELECT @@global.read_only", "INSERT INTO t VALUES (1)"]
    ]


def test_a_new_connection_skips_a_read_only_primary(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    driver.server("a:3306").read_only = True
    pool = new_pool(mode=pool_mode, host=["a", "b"], host_deny_seconds=0.05)
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"
        insert(conn)
    stats = pool.get_stats()
    assert stats["closed_read_only"] == 1
    assert stats["hosts"]["a:3306"]["last_error"] == "read_only is ON"
    # Its deny window over, the preferred host is asked again, and skipped again.
    wait_until(lambda: not pool.get_stats()["hosts"]["a:3306"]["denied"], "a's window to end")
    pool.close_all()
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"
    assert pool.get_stats()["closed_read_only"] == 2


def test_no_writable_primary_is_waited_for_then_named(new_pool: Any, driver: FakeDriver) -> None:
    driver.server("a:3306").read_only = True
    driver.server("b:3306").read_only = True
    pool = new_pool(host=["a", "b"], timeout=0.5)
    with pytest.raises(ConnectError) as failed:
        pool.acquire()
    text = str(failed.value)
    assert "a:3306: read_only is ON" in text
    assert "b:3306: read_only is ON" in text or "(last error: read_only is ON)" in text
    assert driver.open == set()
    # A switchover ends while acquire() waits: the new primary is used.
    threading.Timer(0.3, lambda: setattr(driver.server("b:3306"), "read_only", False)).start()
    with pool.connection(timeout=5) as conn:
        assert host_of(conn) == "b:3306"
    stats = pool.get_stats()
    assert stats["created"] == stats["total_connections"] + stats["closed"]


def test_a_single_host_is_not_asked_whether_it_is_read_only(
    new_pool: Any, driver: FakeDriver
) -> None:
    pool = new_pool(host="a")
    pool.acquire().close()
    assert driver.server("a:3306").checks == []


def test_one_read_only_error_retires_every_idle_connection_to_that_host(
    new_pool: Any, driver: FakeDriver
) -> None:
    pool = new_pool(host=["a", "b"], size=4)
    conns = [pool.acquire() for _ in range(4)]
    raws = [conn.dbapi_connection for conn in conns]
    for conn in conns[1:]:
        conn.close()
    driver.server("a:3306").read_only = True
    with pytest.raises(FakeOperationalError):
        insert(conns[0])
    conns[0].close()
    # At once, not when a checkout comes to them: a thread that keeps getting back the
    # connection it gave back never comes to the other idle ones.
    assert all(raw.closed for raw in raws)
    assert pool.get_stats()["hosts"]["a:3306"]["open"] == 0
    again = [pool.acquire() for _ in range(4)]
    assert {host_of(conn) for conn in again} == {"b:3306"}
    for conn in again:
        insert(conn)  # no borrower met the read-only server again
        conn.close()
    assert driver.on("a:3306") == []
    stats = pool.get_stats()
    assert stats["closed_read_only"] == 1
    assert stats["closed_stale"] == 3


def test_galera_not_ready_error_closes_and_denies(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    pool = new_pool(mode=pool_mode, host=["a", "b"])
    pool.acquire().close()
    driver.server("a:3306").not_ready = True
    with pool.connection() as conn, pytest.raises(FakeOperationalError, match="WSREP"):
        insert(conn)
    stats = pool.get_stats()
    assert stats["closed_not_ready"] == 1
    assert stats["hosts"]["a:3306"]["denied"] is True
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"


def test_lost_connection_is_closed_but_its_host_kept(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    pool = new_pool(mode=pool_mode, host=["a", "b"], pre_ping=False)
    with pool.connection() as conn:
        conn.dbapi_connection.fail_next = (2013, "Lost connection to server during query")
        with pytest.raises(FakeOperationalError):
            insert(conn)
    stats = pool.get_stats()
    assert stats["closed_broken"] == 1
    assert stats["hosts"]["a:3306"]["denied"] is False
    with pool.connection() as conn:
        assert host_of(conn) == "a:3306"
        insert(conn)


def test_an_ordinary_statement_error_keeps_the_connection(
    new_pool: Any, driver: FakeDriver
) -> None:
    pool = new_pool(host=["a", "b"])
    with pool.connection() as conn:
        raw = conn.dbapi_connection
        raw.fail_next = (1062, "Duplicate entry")
        with pytest.raises(FakeOperationalError):
            insert(conn)
    with pool.connection() as conn:
        assert conn.dbapi_connection is raw
    assert pool.get_stats()["closed"] == 0


def test_galera_check_catches_a_node_before_a_borrower_does(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    pool = new_pool(mode=pool_mode, host=["a", "b"], galera_check=True, ping_interval=0)
    with pool.connection() as conn:
        assert host_of(conn) == "a:3306"
    driver.server("a:3306").not_ready = True
    with pool.connection() as conn:
        assert host_of(conn) == "b:3306"
        insert(conn)
    stats = pool.get_stats()
    assert stats["closed_not_ready"] == 1
    assert stats["hosts"]["a:3306"]["denied"] is True
    assert driver.server("a:3306").checks  # the real ping asked the node


def test_galera_check_is_not_on_the_fast_path(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(host=["a", "b"], galera_check=True, ping_interval=60)
    for _ in range(5):
        pool.acquire().close()
    # Asked once, when the connection was opened; not at each checkout.
    assert driver.server("a:3306").checks == [
        "SHOW GLOBAL STATUS LIKE 'wsrep_ready'",
        "SELECT @@global.read_only",
    ]


# -- replicas ---------------------------------------------------------------------------------


def test_readonly_goes_to_a_replica_and_writes_to_the_primary(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    pool = new_pool(mode=pool_mode, host="p", replicas=["r1", "r2"])
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "r1:3306"
    with pool.connection() as conn:
        assert host_of(conn) == "p:3306"
    conn = pool.acquire(readonly=True)
    assert host_of(conn) == "r1:3306"
    pool.release(conn)
    stats = pool.get_stats()
    assert stats["hosts"]["r1:3306"]["role"] == "replica"
    assert stats["hosts"]["r1:3306"]["open"] == 1
    assert stats["hosts"]["r2:3306"]["open"] == 0
    assert stats["replicas"]["total_connections"] == 1
    assert stats["total_connections"] == 1  # the primaries' own


def test_no_usable_replica_falls_back_to_the_primary(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    driver.server("r1:3306").down = True
    pool = new_pool(mode=pool_mode, host="p", replicas=["r1"])
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "p:3306"
    # Denied now: the next readonly checkout goes straight to the primary.
    connects = driver.connects
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "p:3306"
    assert driver.connects == connects


def test_a_write_on_a_replica_fails_without_denying_it(new_pool: Any, driver: FakeDriver) -> None:
    driver.server("r1:3306").read_only = True
    pool = new_pool(host="p", replicas=["r1"])
    with pool.connection(readonly=True) as conn:
        raw = conn.dbapi_connection
        with pytest.raises(FakeOperationalError, match="read-only"):
            insert(conn)
    with pool.connection(readonly=True) as conn:
        assert conn.dbapi_connection is raw
    stats = pool.get_stats()
    assert stats["hosts"]["r1:3306"]["denied"] is False
    assert stats["replicas"]["closed_read_only"] == 0


def test_without_fallback_the_error_names_the_replicas(new_pool: Any, driver: FakeDriver) -> None:
    driver.server("r1:3306").down = True
    driver.server("r2:3306").down = True
    # The retries end the acquire, not the deadline.
    pool = new_pool(host="p", replicas=["r1", "r2"], replica_fallback=False, timeout=30)
    with pytest.raises(ConnectError) as failed:
        pool.acquire(readonly=True)
    text = str(failed.value)
    assert "cannot connect to replicas of 'primary' (r1:3306,r2:3306) after 4 attempts" in text
    assert "r1:3306: (2003, " in text
    assert "r2:3306: (2003, " in text
    assert pool.get_stats()["hosts"]["p:3306"]["open"] == 0


def test_a_lagging_replica_is_skipped(new_pool: Any, driver: FakeDriver, pool_mode: str) -> None:
    pool = new_pool(
        mode=pool_mode, host="p", replicas=["r1", "r2"], replica_max_lag=5, ping_interval=0
    )
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "r1:3306"
    driver.server("r1:3306").lag = 9
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "r2:3306"
    stats = pool.get_stats()
    assert stats["hosts"]["r1:3306"]["denied"] is True
    assert "lags 9s behind (replica_max_lag 5s)" in stats["hosts"]["r1:3306"]["last_error"]
    driver.server("r2:3306").lag = None  # replication stopped
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "p:3306"
    assert "replication is stopped" in pool.get_stats()["hosts"]["r2:3306"]["last_error"]


def test_a_new_connection_to_a_lagging_replica_is_not_lent(
    new_pool: Any, driver: FakeDriver
) -> None:
    driver.server("r1:3306").lag = 60
    pool = new_pool(host="p", replicas=["r1", "r2"], replica_max_lag=5)
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "r2:3306"
    assert pool.get_stats()["replicas"]["closed_lagging"] == 1


def test_replica_lag_is_checked_once_per_ping_interval_per_host(
    new_pool: Any, driver: FakeDriver
) -> None:
    pool = new_pool(host="p", replicas=["r1"], replica_max_lag=5, ping_interval=60, size=3)
    conns = [pool.acquire(readonly=True) for _ in range(3)]
    for conn in conns:
        conn.close()
    for _ in range(10):
        pool.acquire(readonly=True).close()
    assert len(driver.server("r1:3306").checks) == 1
    assert driver.server("p:3306").checks == []


def test_pool_timeout_names_the_hosts_in_use(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(host=["a", "b"], size=1, max_overflow=0, timeout=0.05)
    held = pool.acquire()
    with pytest.raises(PoolTimeout, match=r"\(1/1 connections in use, 0 waiting; a:3306: 1\)"):
        pool.acquire()
    held.close()


def test_replica_pool_has_its_own_bound(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(host="p", replicas=["r1"], size=1, max_overflow=1, timeout=0.05)
    reads = [pool.acquire(readonly=True) for _ in range(2)]
    with pytest.raises(PoolTimeout, match="replicas of 'primary'"):
        pool.acquire(readonly=True)
    writes = [pool.acquire() for _ in range(2)]
    assert {host_of(c) for c in writes} == {"p:3306"}
    for conn in reads + writes:
        pool.release(conn)
    assert pool.get_stats()["in_use"] == 0
    assert pool.get_stats()["replicas"]["in_use"] == 0


def test_persistent_thread_connection_closes_both(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(mode="persistent", host="p", replicas=["r1"])

    def work() -> None:
        pool.acquire().close()
        pool.acquire(readonly=True).close()
        pool.close_thread_connection()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert driver.open == set()


# -- causal reads -----------------------------------------------------------------------------


def test_causal_reads_wait_for_the_threads_last_write(
    new_pool: Any, driver: FakeDriver, pool_mode: str
) -> None:
    pool = new_pool(mode=pool_mode, host="p", replicas=["r1"], causal_reads=True, timeout=1)
    with pool.connection(readonly=True) as conn:  # no write yet: no wait
        assert host_of(conn) == "r1:3306"
    assert driver.server("r1:3306").checks == []
    with pool.connection() as conn:
        insert(conn)
        conn.commit()
    # The replica has not applied it: the read goes to the primary.
    with pool.connection(readonly=True) as conn:
        assert host_of(conn) == "p:3306"
    driver.server("r1:3306").gtid = 1  # applied now
    for _ in range(3):
        with pool.connection(readonly=True) as conn:
            assert host_of(conn) == "r1:3306"
    stats = pool.get_stats()
    assert (stats["causal_waits"], stats["causal_timeouts"]) == (2, 1)  # once per replica


def test_causal_reads_are_per_thread(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(host="p", replicas=["r1"], causal_reads=True, timeout=1)
    with pool.connection() as conn:
        insert(conn)

    def read() -> str:
        with pool.connection(readonly=True) as conn:
            return host_of(conn)

    other: list[str] = []
    thread = threading.Thread(target=lambda: other.append(read()))
    thread.start()
    thread.join(5)
    assert other == ["r1:3306"]  # another thread did not write: no wait
    assert read() == "p:3306"


def test_causal_reads_without_fallback_time_out(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(
        host="p", replicas=["r1"], causal_reads=True, replica_fallback=False, timeout=0.2
    )
    with pool.connection() as conn:
        insert(conn)
    with pytest.raises(PoolTimeout, match=r"applied this thread's last write \(0-1-1\)"):
        pool.acquire(readonly=True)
    assert pool.get_stats()["replicas"]["in_use"] == 0


# -- the facade -------------------------------------------------------------------------------


def test_facade_reads_from_replicas_outside_transactions(
    driver: FakeDriver, pool_mode: str
) -> None:
    try:
        db = ObjDataThreadSafe(
            config_name="hosts",
            driver=driver,
            mode=pool_mode,
            host="p",
            replicas=["r1"],
            user="app",
            read_from_replicas=True,
        )
        assert db.sql_get_value("SELECT @@server_id") == driver.server("r1:3306").server_id
        assert db.sql_get_values("SELECT 1") == [(1,)]
        assert db.sql_get_dicts("SELECT 1") == [{"1": 1}]
        db.sql_execute("INSERT INTO t VALUES (1)")
        with db.transaction():
            assert db.sql_get_value("SELECT @@server_id") == driver.server("p:3306").server_id
        replica_statements = [s for c in driver.on("r1:3306") for s in c.statements]
        primary_statements = [s for c in driver.on("p:3306") for s in c.statements]
        assert "INSERT INTO t VALUES (1)" in primary_statements
        assert "INSERT INTO t VALUES (1)" not in replica_statements
        assert replica_statements.count("SELECT 1") == 2
        # Without the option, everything goes to the primary.
        plain = ObjDataThreadSafe(config_name="hosts")
        assert plain.sql_get_value("SELECT @@server_id") == driver.server("p:3306").server_id
    finally:
        ObjDataThreadSafe.close_pool("hosts")


def test_forked_child_uses_host_lists_and_replicas(new_pool: Any, driver: FakeDriver) -> None:
    pool = new_pool(host=["a", "b"], replicas=["r1"])
    pool.acquire().close()
    pool.acquire(readonly=True).close()
    hosts = pool._hosts
    assert hosts is not None
    with hosts._lock:  # held by "another thread" at the fork
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if both pools work
            code = 1
            try:
                with pool.connection() as conn, pool.connection(readonly=True) as reader:
                    code = 0 if (host_of(conn), host_of(reader)) == ("a:3306", "r1:3306") else 2
            finally:
                os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_facade_instances_agree_on_host_lists_however_spelled(driver: FakeDriver) -> None:
    try:
        ObjDataThreadSafe(
            config_name="spelled", driver=driver, host=["a", "b:3307"], replicas="r1", user="app"
        )
        ObjDataThreadSafe(
            config_name="spelled",
            driver=driver,
            host="a:3306, b:3307",
            replicas=["r1:3306"],
            user="app",
        )
        with pytest.raises(ConfigError, match=r"replicas=\['r2'\] \(the pool has 'r1'\)"):
            ObjDataThreadSafe(config_name="spelled", replicas=["r2"])
    finally:
        ObjDataThreadSafe.close_pool("spelled")
