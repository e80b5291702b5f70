"""The pool against a real MariaDB, in both modes, with both MySQL drivers."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
import yaml

from dbpool import ConnectError, ConnectionPool, PoolTimeout, make_pool
from tests.faultkit import kill, session_open

DRIVER_ERRORS = (pymysql.err.Error, mysql.connector.Error)
PYMYSQL_VERSION = tuple(int(part) for part in pymysql.VERSION[:2])


@pytest.fixture
def table(admin: pymysql.connections.Connection, mysql_params: dict[str, Any]) -> Iterator[str]:
    name = f"{mysql_params['database']}.t_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB")
        cur.execute(f"INSERT INTO {name} VALUES (1, 0)")
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE {name}")


def query(conn: Any, sql: str, params: Any = None) -> list[Any]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


def connection_id(conn: Any) -> int:
    return int(query(conn, "SELECT CONNECTION_ID()")[0][0])


def session_ids(admin: pymysql.connections.Connection, user: str) -> set[int]:
    """The ids of the server's sessions of ``user``."""
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        return {int(row[0]) for row in cur.fetchall()}


def server_connections(
    admin: pymysql.connections.Connection,
    user: str,
    expect: int | Callable[[], int] | None = None,
    before: set[int] | frozenset[int] = frozenset(),
) -> int:
    """The server's count of the user's sessions not in ``before``, polled a while for ``expect``.

    The server notices closed connections asynchronously. ``expect`` may be a
    callable, asked again at each look (a pool's figure that a background connect
    may still change).
    """
    count = -1
    for _ in range(200):
        count = len(session_ids(admin, user) - before)
        if expect is None or count == (expect if isinstance(expect, int) else expect()):
            break
        time.sleep(0.02)
    return count


def test_query_and_stats(mysql_pool: Any) -> None:
    pool = mysql_pool(size=2)
    with pool as conn:
        assert query(conn, "SELECT %s + 1", (41,))[0][0] == 42
    stats = pool.get_stats()
    assert (stats["created"], stats["acquired"], stats["released"]) == (1, 1, 1)
    assert (stats["total_connections"], stats["pool_size"], stats["in_use"]) == (1, 1, 0)


def test_killed_connection_replaced_transparently(mysql_pool: Any, admin: Any) -> None:
    pool = mysql_pool()
    with pool as conn:
        first = connection_id(conn)
    kill(admin, first)
    with pool as conn:
        second = connection_id(conn)
    assert second != first
    stats = pool.get_stats()
    assert stats["validation_failures"] == 1
    assert stats["total_connections"] == 1


def test_wait_timeout_expired_connection_replaced(mysql_pool: Any, admin: Any) -> None:
    pool = mysql_pool()
    with pool as conn:
        query(conn, "SET SESSION wait_timeout = 1")
        first = connection_id(conn)
    # The server closes the idle session after a second; a busy server takes longer.
    assert not session_open(admin, first, expect=False, timeout=30)
    with pool as conn:
        assert connection_id(conn) != first
    assert pool.get_stats()["validation_failures"] == 1


def test_statement_never_runs_twice(mysql_pool: Any, admin: Any, table: str) -> None:
    """A statement on a connection killed under it fails; it is not silently re-run."""
    pool = mysql_pool()
    conn = pool.acquire()
    try:
        kill(admin, connection_id(conn))
        with pytest.raises(DRIVER_ERRORS):
            query(conn, f"UPDATE {table} SET n = n + 1 WHERE id = 1")
    finally:
        pool.release(conn)
    with admin.cursor() as cur:
        cur.execute(f"SELECT n FROM {table}")
        assert cur.fetchone()[0] == 0
    with pool as conn:  # the pool replaced the dead connection
        query(conn, f"UPDATE {table} SET n = n + 1 WHERE id = 1")
        conn.commit()
    with admin.cursor() as cur:
        cur.execute(f"SELECT n FROM {table}")
        assert cur.fetchone()[0] == 1


def test_open_transaction_rolled_back_on_release(mysql_pool: Any, table: str) -> None:
    pool = mysql_pool(size=1, max_overflow=0)
    with pool as conn:
        query(conn, "START TRANSACTION")
        query(conn, f"UPDATE {table} SET n = 99 WHERE id = 1")
    with pool as conn:
        assert query(conn, f"SELECT n FROM {table}")[0][0] == 0
        query(conn, f"UPDATE {table} SET n = 7 WHERE id = 1")
        conn.commit()
    with pool as conn:
        assert query(conn, f"SELECT n FROM {table}")[0][0] == 7


def test_threads_share_one_pool_object(
    mysql_pool: Any, admin: Any, mysql_params: dict[str, Any]
) -> None:
    pool = mysql_pool(size=4, max_overflow=2, timeout=20)
    holders: dict[int, str] = {}
    lock = threading.Lock()
    problems: list[str] = []

    def work(i: int) -> int:
        with pool as conn:
            cid = connection_id(conn)
            me = threading.current_thread().name
            with lock:
                if cid in holders and holders[cid] != me:
                    problems.append(f"connection {cid} lent to {holders[cid]} and {me}")
                holders[cid] = me
            value = int(query(conn, "SELECT %s", (i,))[0][0])
            with lock:
                holders.pop(cid, None)
            return value

    before = session_ids(admin, mysql_params["user"])
    with ThreadPoolExecutor(max_workers=6) as executor:
        assert sorted(executor.map(work, range(300))) == list(range(300))
    stats = pool.get_stats()
    assert problems == []
    assert stats["acquired"] == stats["released"] == 300
    assert stats["total_connections"] <= 6

    def total() -> int:  # a background connect for a waiter may still be finishing
        return int(pool.get_stats()["total_connections"])

    assert server_connections(admin, mysql_params["user"], total, before) == total()


def test_bound_holds_on_the_server(
    mysql_pool: Any, admin: Any, mysql_params: dict[str, Any]
) -> None:
    # The holders' connects must not time out on a busy machine: only the fourth
    # acquire gets the short timeout.
    pool = mysql_pool(size=2, max_overflow=1, timeout=10)
    user = mysql_params["user"]
    before = session_ids(admin, user)
    holding = threading.Barrier(4)
    done = threading.Event()

    def hold() -> None:  # a thread each: persistent mode lends one connection per thread
        with pool:
            holding.wait(10)
            done.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(3)]
    for thread in holders:
        thread.start()
    holding.wait(10)
    try:
        with pytest.raises(PoolTimeout, match=r"after 0.3s \(3/3 connections in use"):
            pool.acquire(timeout=0.3)
        assert server_connections(admin, user, 3, before) == 3
    finally:
        done.set()
        for thread in holders:
            thread.join()
    pool.close_all()
    assert pool.get_stats()["total_connections"] == 0
    assert server_connections(admin, user, 0, before) == 0


def test_recycle_replaces_old_connections(mysql_pool: Any) -> None:
    pool = mysql_pool(recycle=1)
    with pool as conn:
        first = connection_id(conn)
    time.sleep(1.1)
    with pool as conn:
        assert connection_id(conn) != first
    assert pool.get_stats()["recycled"] == 1


@pytest.mark.timing
def test_bad_password_fails_fast_without_leaking_it(mysql_pool: Any) -> None:
    secret = "Wr0ng-Pa55-word"
    pool = mysql_pool(password=secret, timeout=10)
    start = time.monotonic()
    with pytest.raises(ConnectError, match="Access denied") as info:
        pool.acquire()
    assert time.monotonic() - start < 5
    shown = [
        str(info.value),
        repr(info.value),
        repr(pool),
        str(pool.get_stats()),
        repr(pool.settings),
    ]
    assert all(secret not in text for text in shown)


def test_unknown_database_fails_fast(mysql_pool: Any) -> None:
    pool = mysql_pool(database="no_such_db")
    with pytest.raises(ConnectError, match="no_such_db"):
        pool.acquire()
    assert pool.get_stats()["connect_failures"] == 1


def test_unreachable_server_names_the_cause(mysql_pool: Any) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = mysql_pool(port=port, timeout=5)
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}.*after 4 attempts"):
        pool.acquire()


def test_config_file_entry(
    mysql_params: dict[str, Any],
    mysql_driver: str,
    pool_mode: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = {
        "ip": mysql_params["host"],
        "port": mysql_params["port"],
        "user": mysql_params["user"],
        "password": mysql_params["password"],
        "db": mysql_params["database"],
        "driver": mysql_driver,
        "pool": {"size": 3, "max_overflow": 1, "timeout": 5, "mode": pool_mode},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"reporting": entry}}))
    monkeypatch.setenv("DBPOOL_CONFIG", str(path))
    pool = ConnectionPool(config_name="reporting")
    try:
        assert (pool.size, pool.max_size, pool.timeout, pool.mode) == (3, 4, 5, pool_mode)
        with pool as conn:
            assert query(conn, "SELECT DATABASE()")[0][0] == mysql_params["database"]
    finally:
        pool.dispose()


def test_pymysql_tls_context_built_once(
    mysql_params: dict[str, Any], pools: list[ConnectionPool]
) -> None:
    pool = make_pool(driver="pymysql", recycle=0, **mysql_params)
    pools.append(pool)
    a, b = pool.acquire(), pool.acquire()
    try:
        contexts = [getattr(conn.dbapi_connection, "ctx", None) for conn in (a, b)]
        if PYMYSQL_VERSION >= (1, 2):
            # PyMySQL's "preferred" TLS mode: a context exists even where the server has no TLS.
            assert contexts[0] is not None
        else:
            assert contexts == [None, None]  # before 1.2: no TLS unless asked for
        assert contexts[0] is contexts[1]
    finally:
        pool.release(a)
        pool.release(b)


def rollbacks(admin: pymysql.connections.Connection) -> int:
    with admin.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com_rollback'")
        return int(cur.fetchone()[1])


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "no-autocommit"])
def test_rollback_at_return_only_when_a_transaction_is_open(
    mysql_pool: Any, admin: pymysql.connections.Connection, table: str, autocommit: bool
) -> None:
    pool = mysql_pool(size=1, max_overflow=0, autocommit=autocommit)
    with pool as conn:
        query(conn, "SELECT 1")
    before = rollbacks(admin)
    with pool as conn:
        query(conn, "SELECT 1")  # touches no table: no transaction either way
    with pool as conn:
        query(conn, f"SELECT n FROM {table}")
        conn.commit()
    assert rollbacks(admin) == before
    with pool as conn:
        # Under autocommit=0 this read opens a transaction (a snapshot and a metadata
        # lock) that only the status of the result set's last packet reports.
        query(conn, f"SELECT n FROM {table}")
    assert rollbacks(admin) == before + (0 if autocommit else 1)


def test_a_failed_statement_leaves_no_lock_behind(
    mysql_pool: Any, admin: pymysql.connections.Connection, table: str
) -> None:
    pool = mysql_pool(size=1, max_overflow=0)
    with pool as conn, pytest.raises(DRIVER_ERRORS):
        # A duplicate key under autocommit=0: InnoDB keeps a lock on the existing row,
        # and the error reply says nothing about the transaction it belongs to.
        query(conn, f"INSERT INTO {table} VALUES (1, 5)")
    with admin.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 2")
        cur.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
        cur.execute(f"SELECT n FROM {table} WHERE id = 1")
        assert cur.fetchone()[0] == 1


# -- PyMySQL: every wait bounded by the kernel's socket timeouts ----------------------


def _kernel_timeout(sock: Any, option: int) -> float:
    """A socket's SO_RCVTIMEO or SO_SNDTIMEO, in seconds (0: none)."""
    sec, usec = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, _TIMEVAL))
    return float(sec + usec / 1_000_000)


_TIMEVAL = struct.calcsize("@ll")
# PyMySQL releases that leave a socket's timeout alone between packets (older ones set
# it before each read and write, which keeps the socket non-blocking).
KEEPS_SOCKET_MODE = (
    "_current_timeout" in pymysql.connections.Connection._read_packet.__code__.co_names
)


@pytest.mark.parametrize("mysql_driver", ["pymysql"])
def test_pymysql_reads_block_under_kernel_timeouts_and_still_time_out(
    mysql_pool: Any, mysql_driver: str
) -> None:
    pool = mysql_pool(size=1, max_overflow=0, read_timeout=1.5, write_timeout=1.5)
    with pool as conn:
        raw = conn.dbapi_connection
        assert query(conn, "SELECT 1") == [(1,)]
        sock = raw._sock
        if KEEPS_SOCKET_MODE:
            # A blocking socket: one recv() or send() per call, no poll() before it; the
            # kernel bounds each wait instead.
            assert sock.gettimeout() is None
            assert _kernel_timeout(sock, socket.SO_RCVTIMEO) == 1.5
            assert _kernel_timeout(sock, socket.SO_SNDTIMEO) == 1.5
        # A lower bound for a while (as the pool's pings use) holds, and goes away after.
        with pool._driver.bounded(raw, 0.5), pytest.raises(pymysql.err.OperationalError) as lower:
            query(conn, "SELECT SLEEP(3)")
        assert lower.value.args[0] == 2013
    with pool as conn:
        raw = conn.dbapi_connection
        with pool._driver.bounded(raw, 5.0):
            assert query(conn, "SELECT SLEEP(0.1)") == [(0,)]
        assert raw._sock.gettimeout() == (None if KEEPS_SOCKET_MODE else 1.5)
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as late:
            query(conn, "SELECT SLEEP(10)")
        assert time.monotonic() - started < 8.0  # the read timeout, not the statement, ended it
        assert late.value.args[0] == 2013 and "timed out" in str(late.value)
        assert raw._sock is None  # closed: the late reply can never be read
    assert query(pool.acquire(), "SELECT 2") == [(2,)]


class Interrupted(BaseException):
    """What a signal handler raises, like a KeyboardInterrupt."""


@pytest.mark.parametrize("mysql_driver", ["pymysql"])
def test_pymysql_packet_cut_between_its_header_and_body_closes_the_connection(
    mysql_pool: Any, mysql_driver: str
) -> None:
    pool = mysql_pool(size=1, max_overflow=0)
    with pool as conn:
        raw = conn.dbapi_connection
        reads = []
        real = raw._read_bytes

        def read(num_bytes: int) -> Any:
            reads.append(num_bytes)
            if len(reads) == 2:  # the body of the first packet of the reply
                raise Interrupted("a signal between a packet's header and its body")
            return real(num_bytes)

        raw._read_bytes = read
        with pytest.raises(Interrupted):
            query(conn, "SELECT 1")
        del raw._read_bytes
        assert raw._sock is None  # never read out of step by this borrower either
        with pytest.raises(pymysql.err.InterfaceError):
            query(conn, "SELECT 2")
    assert pool.get_stats()["closed_broken"] == 1
    with pool as conn:
        assert query(conn, "SELECT 3") == [(3,)]
