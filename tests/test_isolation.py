"""What one borrower leaves behind for the next, under each reset policy.

"rollback" (the default) ends an open transaction and puts autocommit back to the
pool's setting, and nothing else; "session" also clears user variables, temporary
tables, session variables and isolation changes with COM_RESET_CONNECTION. The pool
has one connection, so the next borrower always gets the same server session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.fix_proxy import TCPProxy
from tests.mariadb import MariaDBServer
from tests.queries import run, value

POLICIES = ("rollback", "session")
DRIVER_ERRORS = (pymysql.err.Error, mysql.connector.Error)


def temp_table_exists(conn: Any) -> bool:
    try:
        run(conn, "SELECT COUNT(*) FROM dbpool_probe_tmp")
    except DRIVER_ERRORS:
        return False
    return True


def set_autocommit_by_api(conn: Any) -> None:
    raw = conn.dbapi_connection
    if isinstance(raw, pymysql.connections.Connection):
        raw.autocommit(True)
    else:
        raw.autocommit = True


# name -> (change the session, read the state back, the state of a fresh session)
STATES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], Any]] = {
    "user_variable": (
        lambda c: run(c, "SET @dbpool_probe = 42"),
        lambda c: value(c, "SELECT @dbpool_probe"),
        None,
    ),
    "temporary_table": (
        lambda c: run(c, "CREATE TEMPORARY TABLE dbpool_probe_tmp (a INT)"),
        temp_table_exists,
        False,
    ),
    "session_variable": (
        lambda c: run(c, "SET SESSION sql_mode = 'ANSI_QUOTES'"),
        lambda c: "ANSI_QUOTES" in value(c, "SELECT @@SESSION.sql_mode"),
        False,
    ),
    "autocommit_sql": (
        lambda c: run(c, "SET autocommit = 1"),
        lambda c: int(value(c, "SELECT @@autocommit")),
        0,
    ),
    "autocommit_api": (set_autocommit_by_api, lambda c: int(value(c, "SELECT @@autocommit")), 0),
    "isolation_level": (
        lambda c: run(c, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        lambda c: value(c, "SELECT @@SESSION.tx_isolation"),
        "REPEATABLE-READ",
    ),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("state", sorted(STATES))
def test_session_state_and_the_reset_policy(
    mysql_pool: Any, policy: str, state: str, pool_mode: str, mysql_driver: str
) -> None:
    change, read, fresh = STATES[state]
    pool = mysql_pool(size=1, max_overflow=0, reset=policy)
    with pool as conn:
        session = value(conn, "SELECT CONNECTION_ID()")
        assert read(conn) == fresh
        change(conn)
        assert read(conn) != fresh
    with pool as conn:
        assert value(conn, "SELECT CONNECTION_ID()") == session  # the same server session
        seen = read(conn)
    cleared = seen == fresh
    print(
        f"\nisolation/{policy}/{state}/{mysql_driver}/{pool_mode}: "
        f"{'cleared' if cleared else 'kept'} ({seen!r})"
    )
    # "session" clears everything; "rollback" leaves session state to the next borrower,
    # except autocommit, which goes back to the pool's setting under both.
    assert cleared == (policy == "session" or state.startswith("autocommit"))


@pytest.fixture
def table(admin: Any, mysql_params: dict[str, Any]) -> Iterator[str]:
    name = f"`{mysql_params['database']}`.`isolation_rows_{time.monotonic_ns()}`"
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY) ENGINE=InnoDB")
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE {name}")


@pytest.mark.parametrize("policy", POLICIES)
def test_open_transaction_rolled_back_on_return(
    mysql_pool: Any, policy: str, admin: Any, table: str, pool_mode: str, mysql_driver: str
) -> None:
    pool = mysql_pool(size=1, max_overflow=0, reset=policy)
    with pool as conn:
        session = value(conn, "SELECT CONNECTION_ID()")
        run(conn, f"INSERT INTO {table} VALUES (1)")  # no commit
        assert value(conn, f"SELECT COUNT(*) FROM {table}") == 1
    with admin.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s",
            (session,),
        )
        open_trx = cur.fetchone()[0]
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        on_server = cur.fetchone()[0]
    with pool as conn:
        seen = value(conn, f"SELECT COUNT(*) FROM {table}")
    print(
        f"\nisolation/{policy}/open_transaction/{mysql_driver}/{pool_mode}: "
        f"open_trx_after_return={open_trx} rows_on_server={on_server} rows_seen_next={seen}"
    )
    assert (open_trx, on_server, seen) == (0, 0, 0)


@pytest.mark.parametrize("pool_mode", ["shared"])
def test_cost_of_the_session_reset(
    mysql_pool: Any, mariadb: MariaDBServer, mysql_driver: str
) -> None:
    """Commands sent per return under each policy, counted by a proxy in between."""
    releases = 200
    figures = {}
    with TCPProxy(mariadb.host, mariadb.port) as proxy:
        for policy in POLICIES:
            pool = mysql_pool(size=1, max_overflow=0, reset=policy, port=proxy.port)
            with pool as conn:
                run(conn, "SELECT 1")
            before = proxy.chunks_up
            start = time.perf_counter()
            for _ in range(releases):
                with pool as conn:
                    pass
            per_return = (time.perf_counter() - start) / releases
            figures[policy] = ((proxy.chunks_up - before) / releases, per_return)
            pool.dispose()
    print(
        f"\nreset-cost/{mysql_driver}: "
        + " ".join(
            f"{p}: commands_per_return={n:.2f} time_per_return={t * 1e6:.0f}us"
            for p, (n, t) in figures.items()
        )
    )
    # rollback: a ROLLBACK when a transaction may be open (always for PyMySQL with
    # autocommit off, which cannot tell); session: the reset, then the driver's own
    # setup again (autocommit; mysql-connector also the character set).
    assert figures["rollback"][0] <= 1.05
    assert figures["session"][0] - figures["rollback"][0] >= 0.95
