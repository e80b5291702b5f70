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

from dbpool import ConnectError, PoolError
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
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY %s", (password,))
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


def test_connection_closed_by_failed_ping_is_retired_at_return(
    mysql_pool: Any, admin: Any
) -> None:
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
