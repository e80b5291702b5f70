"""What a connection carries from one borrower to the next, driver by driver.

The pool's own session settings (``init_command``, ``sql_mode``, autocommit) hold for
every borrower; a result set left unread, or an autocommit switched by SQL, does not
outlive the borrow; a mistake in ``init_command`` fails at once instead of being retried
as if the server were down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.cursors
import pytest

from dbpool import ConnectError
from tests.faultkit import wait_until
from tests.queries import run, value

INIT_COMMAND = "SET time_zone = '+05:00', SESSION wait_timeout = 1234"
SQL_MODE = "ANSI_QUOTES,NO_ENGINE_SUBSTITUTION"


@pytest.fixture
def table(admin: Any, mysql_params: dict[str, Any]) -> Iterator[str]:
    name = f"`{mysql_params['database']}`.`sessions_{time.monotonic_ns()}`"
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY) ENGINE=InnoDB")
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE {name}")


def row_locked(admin: Any, table: str) -> bool:
    """Whether another session holds a lock on row 1 (asked without waiting)."""
    with admin.cursor() as cur:
        cur.execute(f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE SKIP LOCKED")
        return cur.fetchall() == ()


# -- item: reset="session" keeps the pool's session settings --------------------------


def test_session_reset_replays_init_command_and_sql_mode(
    mysql_pool: Any, mysql_driver: str, pool_mode: str
) -> None:
    pool = mysql_pool(
        size=1, max_overflow=0, reset="session", init_command=INIT_COMMAND, sql_mode=SQL_MODE
    )
    seen = []
    for _ in range(3):
        with pool as conn:
            run(conn, "SET SESSION sql_mode = '', time_zone = '+00:00', wait_timeout = 99")
            run(conn, "SET @borrower_left = 1")
        with pool as conn:
            seen.append(
                (
                    value(conn, "SELECT CONNECTION_ID()"),
                    value(conn, "SELECT @@SESSION.time_zone"),
                    value(conn, "SELECT @@SESSION.wait_timeout"),
                    value(conn, "SELECT @@SESSION.sql_mode"),
                    value(conn, "SELECT @borrower_left"),
                )
            )
    print(f"\nsession-reset/{mysql_driver}/{pool_mode}: {seen}")
    assert len({row[0] for row in seen}) == 1  # one server session throughout
    for _, zone, wait, mode, variable in seen:
        assert (zone, wait, variable) == ("+05:00", 1234, None)
        assert set(mode.split(",")) == set(SQL_MODE.split(","))


# -- item: a result set left unread does not skip the reset ---------------------------


def unbuffered_cursor(conn: Any) -> Any:
    raw = conn.dbapi_connection
    if isinstance(raw, pymysql.connections.Connection):
        return raw.cursor(pymysql.cursors.SSCursor)
    return raw.cursor(buffered=False)


def session_id(conn: Any) -> int:
    """The server's id of the connection's session, known without a round trip."""
    raw = conn.dbapi_connection
    if isinstance(raw, pymysql.connections.Connection):
        return int(raw.thread_id())
    return int(raw.connection_id)


@pytest.mark.parametrize("autocommit", [False, True])
@pytest.mark.parametrize("rows", [2000, 1])
def test_unread_result_is_finished_and_rolled_back_at_return(
    mysql_pool: Any,
    admin: Any,
    table: str,
    rows: int,
    autocommit: bool,
    mysql_driver: str,
    pool_mode: str,
    mysql_params: dict[str, Any],
) -> None:
    with admin.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} SELECT seq FROM `{mysql_params['database']}`.seq_1_to_{rows}"
        )
    pool = mysql_pool(size=1, max_overflow=0, autocommit=autocommit)
    conn = pool.acquire()
    session = session_id(conn)
    cur = unbuffered_cursor(conn)  # the borrow's first statement: no status seen yet
    cur.execute(f"SELECT id FROM {table} ORDER BY id FOR UPDATE")
    assert cur.fetchone() == (1,)
    if not autocommit:  # the locks are held until the transaction ends
        assert row_locked(admin, table)
    pool.release(conn)  # the cursor still has rows to read
    locked = row_locked(admin, table)
    with pool as conn:
        assert value(conn, "SELECT CONNECTION_ID()") == session
        in_trx = value(conn, "SELECT @@in_transaction")
        count = value(conn, f"SELECT COUNT(*) FROM {table}")
    del cur
    stats = pool.get_stats()
    print(
        f"\nunread-result/{mysql_driver}/{pool_mode}/{rows}/autocommit={autocommit}: "
        f"locked_after_return={locked} "
        f"next_in_transaction={in_trx} closed_broken={stats['closed_broken']}"
    )
    assert (locked, in_trx, count) == (False, 0, rows)
    assert stats["closed_broken"] == 0  # drained and reused, not thrown away


def test_unread_result_sets_of_a_call_are_finished_at_return(
    mysql_pool: Any,
    admin: Any,
    table: str,
    mysql_driver: str,
    pool_mode: str,
    mysql_params: dict[str, Any],
) -> None:
    database = mysql_params["database"]
    procedure = f"`{database}`.`two_sets_{time.monotonic_ns()}`"
    with admin.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1), (2), (3)")
        cur.execute(
            f"CREATE PROCEDURE {procedure}() BEGIN "
            f"SELECT seq FROM `{database}`.seq_1_to_100; "
            f"SELECT id FROM {table} FOR UPDATE; END"
        )
    try:
        pool = mysql_pool(size=1, max_overflow=0)
        conn = pool.acquire()
        cur = unbuffered_cursor(conn)
        cur.execute(f"CALL {procedure}()")
        assert cur.fetchone() == (1,)  # the rest, and the second result set, left unread
        pool.release(conn)
        locked = row_locked(admin, table)
        if locked and pool.get_stats()["closed_broken"]:
            # Closed rather than drained: the server ends that session, and frees its
            # locks, on its own time after the socket closes.
            locked = not wait_until(lambda: not row_locked(admin, table), timeout=10.0)
        with pool as conn:
            in_trx = value(conn, "SELECT @@in_transaction")
            assert value(conn, f"SELECT COUNT(*) FROM {table}") == 3
        del cur
        print(
            f"\ncall/{mysql_driver}/{pool_mode}: locked_after_return={locked} "
            f"next_in_transaction={in_trx} closed_broken={pool.get_stats()['closed_broken']}"
        )
        assert (locked, in_trx) == (False, 0)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP PROCEDURE {procedure}")


def test_unread_result_too_long_to_drain_closes_the_connection(
    mysql_pool: Any,
    admin: Any,
    table: str,
    mysql_driver: str,
    pool_mode: str,
    mysql_params: dict[str, Any],
) -> None:
    rows = 200_000  # far more than can be read in a millisecond
    with admin.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} SELECT seq FROM `{mysql_params['database']}`.seq_1_to_{rows}"
        )
    pool = mysql_pool(size=1, max_overflow=0, ping_timeout=0.001)
    conn = pool.acquire()
    session = session_id(conn)
    cur = unbuffered_cursor(conn)
    cur.execute(f"SELECT id FROM {table} ORDER BY id FOR UPDATE")
    assert cur.fetchone() == (1,)
    pool.release(conn)
    assert pool.get_stats()["closed_broken"] == 1  # given up on, closed
    # The server ends the closed session's transaction and frees its locks.
    for _ in range(500):
        if not row_locked(admin, table):
            break
        time.sleep(0.01)
    assert not row_locked(admin, table)
    with pool as conn:
        assert session_id(conn) != session
        assert value(conn, f"SELECT COUNT(*) FROM {table}") == rows
    del cur


# -- decision: reset="rollback" restores the pool's autocommit ------------------------


@pytest.mark.parametrize(
    ("pool_autocommit", "statement"),
    [
        (True, "SET autocommit = 0"),
        (False, "SET autocommit = 1"),
    ],
)
def test_autocommit_changed_by_a_borrower_goes_back_at_return(
    mysql_pool: Any,
    admin: Any,
    table: str,
    pool_autocommit: bool,
    statement: str,
    mysql_driver: str,
    pool_mode: str,
) -> None:
    pool = mysql_pool(size=1, max_overflow=0, reset="rollback", autocommit=pool_autocommit)
    with pool as conn:
        session = value(conn, "SELECT CONNECTION_ID()")
        run(conn, statement)
    with pool as conn:
        assert value(conn, "SELECT CONNECTION_ID()") == session
        autocommit = value(conn, "SELECT @@autocommit")
        run(conn, f"INSERT INTO {table} VALUES (1)")  # no commit: the pool's setting decides
    with admin.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        kept = cur.fetchone()[0]
    print(
        f"\nautocommit/{mysql_driver}/{pool_mode}/pool={pool_autocommit}: "
        f"next_borrower_autocommit={autocommit} rows_kept={kept}"
    )
    assert autocommit == int(pool_autocommit)
    assert kept == int(pool_autocommit)


# -- item: a mistake in init_command is permanent --------------------------------------


@pytest.mark.parametrize(
    "init_command",
    ["SELEC 1", "SET SESSION no_such_variable = 1", "SET time_zone = 'Nowhere/Atlantis'"],
)
def test_init_command_mistake_fails_at_once(
    mysql_pool: Any, init_command: str, mysql_driver: str, pool_mode: str
) -> None:
    pool = mysql_pool(init_command=init_command, timeout=10)
    with pytest.raises(ConnectError) as caught:
        pool.acquire()
    stats = pool.get_stats()
    print(
        f"\ninit_command/{mysql_driver}: {caught.value} "
        f"(connect_failures={stats['connect_failures']})"
    )
    assert stats["connect_failures"] == 1
    assert "attempts" not in str(caught.value)
    assert "init_command" in str(caught.value)
