"""Lifecycle controls against a real MariaDB, in both modes, with both MySQL drivers.

Session set-up, warm-up, shrinking, load shedding, retirement by use, rotating
credentials, listeners, explicit discard, resizing and draining.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from dbpool import ConfigError, ConnectError, PoolError, TooManyRequests, make_pool
from tests.faultkit import kill, session_count, wait_until

DRIVER_ERRORS = (pymysql.err.Error, mysql.connector.Error)
ROOT = Path(__file__).resolve().parent.parent


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()[0][0]
    finally:
        cur.close()


def connection_id(conn: Any) -> int:
    return int(scalar(conn, "SELECT CONNECTION_ID()"))


@pytest.fixture
def user(admin: Any, mysql_params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A throwaway server account of its own, so session counts see only this test."""
    name = f"u_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT ALL ON `{mysql_params['database']}`.* TO '{name}'@'%'")
    yield {**mysql_params, "user": name, "password": password}
    with admin.cursor() as cur:
        cur.execute(f"DROP USER '{name}'@'%'")


# -- check-in retires what the driver reports closed ---------------------------


def test_connection_closed_by_hand_is_retired_at_return(mysql_pool: Any) -> None:
    pool = mysql_pool(size=2, pre_ping=False)
    conn = pool.acquire()
    conn.dbapi_connection.close()
    pool.release(conn)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
    stats = pool.get_stats()
    assert stats["closed_broken"] == 1
    assert stats["created"] == 2


def test_connection_closed_by_failed_ping_is_retired_at_return(mysql_pool: Any, admin: Any) -> None:
    pool = mysql_pool(size=2, pre_ping=False)
    conn = pool.acquire()
    kill(admin, connection_id(conn))
    with pytest.raises(DRIVER_ERRORS):
        conn.dbapi_connection.ping(reconnect=False)
    pool.release(conn)
    for _ in range(3):
        with pool.connection() as conn:
            assert scalar(conn, "SELECT 1") == 1
    assert pool.get_stats()["closed_broken"] == 1


# -- PyMySQL's errors after MySQLdb emulation ----------------------------------


def test_driver_errors_caught_after_mysqldb_emulation(mysql_params: dict[str, Any]) -> None:
    # A process of its own: the emulation rebinds module attributes for good.
    script = textwrap.dedent(
        f"""
        import pymysql
        pymysql.install_as_MySQLdb()
        import MySQLdb.converters  # loads a second copy of pymysql.err, as Django does
        from dbpool import ConnectError, make_pool
        pool = make_pool(host="127.0.0.1", port={mysql_params["port"]}, user="nobody",
                         password="wrong", database="x", driver="pymysql", timeout=2,
                         config=None)
        try:
            pool.acquire()
        except ConnectError as exc:
            print("ConnectError", type(exc.__cause__).__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.stdout.strip() == "ConnectError OperationalError", done.stderr


# -- session set-up -------------------------------------------------------------


def session_state(conn: Any) -> tuple[Any, ...]:
    cur = conn.cursor()
    try:
        cur.execute("SELECT @tenant, @@session.time_zone, @@session.sql_mode")
        return tuple(cur.fetchall()[0])
    finally:
        cur.close()


def test_init_sql_and_configure_run_after_connect_and_after_session_reset(
    mysql_pool: Any,
) -> None:
    configured: list[Any] = []

    def configure(raw: Any) -> None:
        configured.append(raw)
        cur = raw.cursor()
        cur.execute("SET SESSION time_zone = '+02:00'")
        cur.close()

    pool = mysql_pool(
        size=1,
        reset="session",
        configure=configure,
        init_sql=["SET SESSION sql_mode = 'ANSI_QUOTES'", "SET @tenant = 7"],
    )
    with pool.connection() as conn:
        first = connection_id(conn)
        assert session_state(conn) == (7, "+02:00", "ANSI_QUOTES")
        cur = conn.cursor()
        cur.execute("SET @tenant = 9, SESSION time_zone = '+05:00', SESSION sql_mode = ''")
        cur.close()
    with pool.connection() as conn:
        assert connection_id(conn) == first  # the same session, reset and set up again
        assert session_state(conn) == (7, "+02:00", "ANSI_QUOTES")
    assert len(configured) == 3  # at connect, and after each of the two resets
    assert pool.get_stats()["created"] == 1


def test_init_sql_syntax_error_is_permanent(mysql_pool: Any, mysql_params: dict[str, Any]) -> None:
    pool = mysql_pool(init_sql=["SELEC 1"], timeout=5)
    start = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        pool.acquire()
    took = time.monotonic() - start
    stats = pool.get_stats()
    print(f"\ninit_sql syntax error: {caught.value} ({took * 1000:.0f} ms)")
    assert stats["connect_failures"] == 1  # no retry
    assert "session set-up" in str(caught.value)
    assert stats["total_connections"] == 0 and stats["in_use"] == 0
    assert mysql_params["password"] not in str(caught.value)


def test_configure_error_counts_as_connect_failure(mysql_pool: Any, admin: Any) -> None:
    def configure(raw: Any) -> None:
        raise RuntimeError("tenant lookup failed")

    pool = mysql_pool(configure=configure)
    with pytest.raises(ConnectError, match=r"configure .* failed: RuntimeError: tenant lookup"):
        pool.acquire()
    stats = pool.get_stats()
    assert stats["connect_failures"] == 1
    assert stats["total_connections"] == 0


# -- warm-up ---------------------------------------------------------------------


def test_min_idle_opens_connections_at_start_and_keeps_them_up(
    pools: list[Any],
    user: dict[str, Any],
    admin: Any,
    mysql_driver: str,
    pool_mode: str,
) -> None:
    start = time.monotonic()
    pool = make_pool(**user, driver=mysql_driver, mode=pool_mode, size=4, min_idle=3, config=False)
    pools.append(pool)
    pool.wait(10)
    warm = time.monotonic() - start
    stats = pool.get_stats()
    print(f"\nmin_idle=3 warm-up/{pool_mode}/{mysql_driver}: {warm * 1000:.1f} ms")
    assert (stats["total_connections"], stats["pool_size"], stats["min_idle"]) == (3, 3, 3)
    assert session_count(admin, user["user"], expect=3) == 3
    conns = [pool.acquire() for _ in range(2)] if pool_mode == "shared" else []
    if pool_mode == "persistent":
        # Connections stay with their threads: two threads take one each.
        box: list[Any] = []
        threads = [threading.Thread(target=lambda: box.append(pool.acquire())) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        conns = box
    # Both lent without a connect; the pool opens two more to keep three idle.
    assert wait_until(lambda: pool.get_stats()["pool_size"] == 3)
    stats = pool.get_stats()
    assert (stats["total_connections"], stats["created"]) == (5, 5)
    for conn in conns:
        pool.release(conn)


@pytest.mark.timing
def test_wait_in_constructor_fails_fast_on_refused_login(
    mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        make_pool(
            **{**mysql_params, "password": "wrong"},
            driver=mysql_driver,
            mode=pool_mode,
            min_idle=2,
            wait=True,
            timeout=20,
            config=False,
        )
    took = time.monotonic() - start
    print(
        f"\nwait=True with a refused login/{pool_mode}/{mysql_driver}: {took * 1000:.0f} ms: "
        f"{caught.value}"
    )
    assert "Access denied" in str(caught.value)
    assert took < 10  # raised on the refusal, not at the timeout
    assert "wrong" not in str(caught.value)


def test_wait_in_constructor_returns_with_min_idle_open(mysql_pool: Any) -> None:
    pool = mysql_pool(min_idle=2, wait=True)
    assert pool.get_stats()["total_connections"] == 2


# -- shrinking and order ----------------------------------------------------------


def test_max_idle_closes_idle_connections_above_min_idle(
    pools: list[Any],
    user: dict[str, Any],
    admin: Any,
    mysql_driver: str,
    pool_mode: str,
) -> None:
    pool = make_pool(
        **user, driver=mysql_driver, mode=pool_mode, size=4, min_idle=1, max_idle=0.3, config=False
    )
    pools.append(pool)
    barrier = threading.Barrier(4)  # three borrowers and this thread
    checked = threading.Event()

    def borrow() -> None:
        with pool.connection() as conn:
            scalar(conn, "SELECT 1")
            barrier.wait(10)
        checked.wait(20)  # alive: in persistent mode its connection stays with it

    threads = [threading.Thread(target=borrow) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        barrier.wait(10)  # all three hold a connection at once
        assert wait_until(lambda: pool.get_stats()["total_connections"] == 1, timeout=10)
        stats = pool.get_stats()
    finally:
        checked.set()
        for t in threads:
            t.join()
    print(
        f"\nmax_idle/{pool_mode}/{mysql_driver}: {stats['closed_idle']} closed idle, "
        f"{stats['total_connections']} left"
    )
    assert stats["closed_idle"] >= 2
    assert stats["created"] == stats["total_connections"] + stats["closed"]
    assert session_count(admin, user["user"], expect=1) == 1
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1


@pytest.mark.parametrize("order", ["fifo", "lifo"])
def test_order_of_idle_connections(mysql_pool: Any, order: str, pool_mode: str) -> None:
    if pool_mode == "persistent":
        pytest.skip("persistent mode keeps each connection with its thread: no order")
    pool = mysql_pool(size=2, order=order)
    a, b = pool.acquire(), pool.acquire()
    first, second = connection_id(a), connection_id(b)
    pool.release(a)
    pool.release(b)
    with pool.connection() as conn:
        got = connection_id(conn)
    assert got == (first if order == "fifo" else second)


# -- load shedding and retirement ------------------------------------------------


def test_max_waiting_rejects_at_once(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_overflow=0, max_waiting=1, timeout=10)
    held = threading.Event()
    done = threading.Event()
    results: list[Any] = []

    def holder() -> None:
        with pool.connection():
            held.set()
            done.wait(10)

    def waiter() -> None:
        with pool.connection() as conn:
            results.append(scalar(conn, "SELECT 1"))

    def late() -> None:
        start = time.monotonic()
        try:
            pool.acquire()
        except TooManyRequests as exc:
            results.append((exc, time.monotonic() - start))

    t1 = threading.Thread(target=holder)
    t1.start()
    assert held.wait(10)
    t2 = threading.Thread(target=waiter)
    t2.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1)
    t3 = threading.Thread(target=late)
    t3.start()
    t3.join(10)
    rejected, took = results.pop()
    print(f"\nmax_waiting: {rejected} ({took * 1000:.2f} ms)")
    assert isinstance(rejected, PoolError)
    assert "max_waiting 1" in str(rejected)
    done.set()
    t1.join(10)
    t2.join(10)
    assert results == [1]  # the waiter got its connection
    assert pool.get_stats()["requests_rejected"] == 1


def test_max_usage_retires_a_connection_after_that_many_borrows(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_usage=2)
    ids = []
    for _ in range(5):
        with pool.connection() as conn:
            ids.append(connection_id(conn))
    assert ids[0] == ids[1] != ids[2] == ids[3] != ids[4]
    stats = pool.get_stats()
    assert stats["closed_usage"] == 2
    assert stats["created"] == 3


# -- rotating credentials ----------------------------------------------------------


def test_password_provider_picks_up_a_password_changed_on_the_server(
    pools: list[Any],
    user: dict[str, Any],
    admin: Any,
    mysql_driver: str,
    pool_mode: str,
) -> None:
    current = {"password": user["password"]}
    calls: list[float] = []

    def provider() -> str:
        calls.append(time.monotonic())
        return current["password"]

    pool = make_pool(
        **{**user, "password": provider}, driver=mysql_driver, mode=pool_mode, size=2, config=False
    )
    pools.append(pool)
    old = pool.acquire()
    old_id = connection_id(old)
    new_password = uuid.uuid4().hex
    with admin.cursor() as cur:
        cur.execute(f"ALTER USER '{user['user']}'@'%%' IDENTIFIED BY %s", (new_password,))
    current["password"] = new_password
    # An open connection keeps working; a new one logs in with the new password.
    assert scalar(old, "SELECT 1") == 1
    box: list[int] = []

    def fresh() -> None:
        with pool.connection() as conn:
            box.append(connection_id(conn))

    t = threading.Thread(target=fresh)
    t.start()
    t.join(10)
    assert box and box[0] != old_id
    assert len(calls) == 2  # once per physical connect
    pool.release(old)
    # A pool with the old password fixed is refused now.
    stale = make_pool(**user, driver=mysql_driver, mode=pool_mode, config=False)
    pools.append(stale)
    with pytest.raises(ConnectError, match="Access denied"):
        stale.acquire()


def test_password_provider_in_yaml(
    pools: list[Any],
    user: dict[str, Any],
    mysql_driver: str,
    pool_mode: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = f"secrets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        f"calls = []\ndef token():\n    calls.append(1)\n    return {user['password']!r}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text(
        "database:\n  primary:\n"
        f"    url: 'mysql://{user['user']}@127.0.0.1:{user['port']}/{user['database']}'\n"
        f"    password_provider: '{module}:token'\n    driver: {mysql_driver}\n"
        f"    pool: {{mode: {pool_mode}}}\n"
    )
    pool = make_pool(config=str(config))
    pools.append(pool)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT CURRENT_USER()").startswith(user["user"] + "@")
    assert sys.modules[module].calls == [1]
    assert user["password"] not in repr(pool.settings)


# -- listeners and discard -------------------------------------------------------


def test_listeners_see_connect_checkout_checkin_close(
    mysql_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = mysql_pool(size=1, max_usage=2)
    seen: list[tuple[str, int]] = []
    for event in ("connect", "checkout", "checkin", "close"):
        pool.add_listener(event, lambda raw, event=event: seen.append((event, id(raw))))
    with pool.connection() as conn:
        raw = id(conn.dbapi_connection)
    with pool.connection():
        pass
    assert seen == [
        ("connect", raw),
        ("checkout", raw),
        ("checkin", raw),
        ("checkout", raw),
        ("close", raw),
    ]
    with pytest.raises(ValueError, match="unknown pool event 'open'"):
        pool.add_listener("open", print)


def test_listener_errors_are_handled_as_documented(
    mysql_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = mysql_pool(size=1)

    def broken(raw: Any) -> None:
        raise RuntimeError("listener bug")

    pool.add_listener("checkin", broken)
    with pool.connection() as conn:
        scalar(conn, "SELECT 1")
    assert "a 'checkin' listener" in caplog.text  # logged, the release went through
    pool.remove_listener("checkin", broken)
    pool.add_listener("checkout", broken)
    with pytest.raises(RuntimeError, match="listener bug"):
        pool.acquire()
    stats = pool.get_stats()
    assert stats["in_use"] == 0 and stats["total_connections"] == 1  # given back, kept
    pool.remove_listener("checkout", broken)
    pool.add_listener("connect", broken)
    pool.close_all()
    with pytest.raises(RuntimeError, match="listener bug"):
        pool.acquire()
    stats = pool.get_stats()
    assert stats["in_use"] == 0 and stats["total_connections"] == 0
    assert stats["connect_failures"] == 1


def test_discard_and_invalidate_close_the_connection(mysql_pool: Any) -> None:
    pool = mysql_pool(size=2)
    conn = pool.acquire()
    first = connection_id(conn)
    pool.release(conn, discard=True)
    conn = pool.acquire()
    second = connection_id(conn)
    conn.invalidate()
    with pool.connection() as conn:
        assert connection_id(conn) not in (first, second)
    stats = pool.get_stats()
    assert (stats["closed_broken"], stats["created"], stats["total_connections"]) == (2, 3, 1)


# -- resize and drain ----------------------------------------------------------------


@pytest.mark.timing
def test_resize_lets_waiters_in_and_keeps_their_deadlines(mysql_pool: Any) -> None:
    pool = mysql_pool(size=1, max_overflow=0, timeout=10)
    held = threading.Event()
    release = threading.Event()
    outcomes: list[Any] = []

    def holder() -> None:
        with pool.connection():
            held.set()
            release.wait(10)

    def waiter(timeout: float) -> None:
        start = time.monotonic()
        try:
            with pool.connection(timeout=timeout) as conn:
                outcomes.append(("got", scalar(conn, "SELECT 1"), time.monotonic() - start))
        except PoolError as exc:
            outcomes.append((type(exc).__name__, 0, time.monotonic() - start))

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert held.wait(10)
    short = threading.Thread(target=waiter, args=(0.5,))
    short.start()
    short.join(10)  # a resize that frees nothing leaves the deadline as it was
    long = threading.Thread(target=waiter, args=(10.0,))
    long.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1)
    pool.resize(size=2)
    long.join(10)
    release.set()
    threads[0].join(10)
    print(f"\nresize: {outcomes}")
    assert outcomes[0][0] == "PoolTimeout" and 0.4 < outcomes[0][2] < 5
    assert outcomes[1][:2] == ("got", 1)
    assert pool.get_stats()["max_size"] == 2
    pool.resize(size=1, max_overflow=0)
    stats = pool.get_stats()
    assert (stats["size"], stats["max_size"]) == (1, 1)
    assert stats["total_connections"] <= (2 if stats["mode"] == "persistent" else 1)
    with pytest.raises(ConfigError, match=r"resize\(\): size cannot be negative"):
        pool.resize(size=-1)


def test_drain_replaces_every_connection(mysql_pool: Any) -> None:
    pool = mysql_pool(size=3, min_idle=2, wait=True)
    held = pool.acquire()
    held_id = connection_id(held)
    before = pool.get_stats()
    pool.drain()
    pool.wait(10)  # min_idle connections made after the drain
    after = pool.get_stats()
    assert scalar(held, "SELECT 1") == 1  # a lent one keeps working until given back
    pool.release(held)
    last = pool.get_stats()
    print(
        f"\ndrain: created {before['created']} -> {after['created']}, "
        f"closed {before['closed']} -> {after['closed']} -> {last['closed']}"
    )
    assert after["created"] > before["created"]
    assert after["closed"] > before["closed"]  # the idle ones, at once
    assert last["closed"] == after["closed"] + 1  # the lent one, when given back
    assert last["created"] == last["total_connections"] + last["closed"]
    with pool.connection() as conn:
        assert connection_id(conn) != held_id


# -- URLs ---------------------------------------------------------------------------


def test_url_names_driver_and_server(
    pools: list[Any], user: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    scheme = "mysql+pymysql" if mysql_driver == "pymysql" else "mysql+mysqlconnector"
    url = (
        f"{scheme}://{user['user']}:{user['password']}@127.0.0.1:{user['port']}/{user['database']}"
    )
    pool = make_pool(pool_mode, url=url, config=False)
    pools.append(pool)
    assert (pool.settings.driver, pool.mode) == (mysql_driver, pool_mode)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT DATABASE()") == user["database"]
    assert user["password"] not in repr(pool) + repr(pool.settings) + pool.name


@pytest.mark.timing
def test_session_set_up_stays_within_the_acquire_deadline(
    pools: list[Any], user: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    # An account of its own: the server may run the abandoned SLEEP a while longer.
    pool = make_pool(
        **user,
        driver=mysql_driver,
        mode=pool_mode,
        init_sql=["DO SLEEP(30)"],
        timeout=1.5,
        config=False,
    )
    pools.append(pool)
    start = time.monotonic()
    with pytest.raises(PoolError) as caught:
        pool.acquire()
    took = time.monotonic() - start
    print(f"\nslow init_sql with timeout 1.5 s: {type(caught.value).__name__} after {took:.2f} s")
    assert took < 5
    assert pool.get_stats()["in_use"] == 0


def test_host_list_with_password_provider_and_init_sql(
    pools: list[Any], user: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return str(user["password"])

    # The first host refuses (nothing listens there); the second is the server.
    hosts = ["127.0.0.1:1", f"127.0.0.1:{user['port']}"]
    pool = make_pool(
        **{**user, "host": hosts, "password": provider},
        driver=mysql_driver,
        mode=pool_mode,
        init_sql=["SET @tenant = 3"],
        min_idle=1,
        wait=True,
        config=False,
    )
    pools.append(pool)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT @tenant") == 3
    # Once per physical connect, whichever host answers (the last may still be opening).
    assert wait_until(lambda: len(calls) == pool.get_stats()["created"])
    stats = pool.get_stats()
    assert stats["hosts"][hosts[1]]["open"] == stats["total_connections"] >= 1
    assert stats["hosts"][hosts[0]]["open"] == 0
