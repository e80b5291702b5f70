"""The throwaway MariaDB server of tests/mariadb.py works as the other tests expect."""

from __future__ import annotations

import time
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.mariadb import MariaDBServer, parse_external


def test_pymysql_connects(mysql_params: dict[str, Any]) -> None:
    conn = pymysql.connect(**mysql_params)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER(), DATABASE()")
            user, database = cur.fetchone()
    finally:
        conn.close()
    assert user.startswith(f"{mysql_params['user']}@")
    assert database == mysql_params["database"]


def test_mysql_connector_connects(mysql_params: dict[str, Any]) -> None:
    conn = mysql.connector.connect(**mysql_params, use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1 + 1")
        assert cur.fetchone() == (2,)
        cur.close()
    finally:
        conn.close()


def test_admin_kills_another_connection(
    mysql_params: dict[str, Any], admin: pymysql.connections.Connection
) -> None:
    victim = pymysql.connect(**mysql_params)
    try:
        victim_id = victim.thread_id()
        with admin.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s",
                (mysql_params["user"],),
            )
            assert victim_id in {row[0] for row in cur.fetchall()}
            cur.execute("KILL CONNECTION %s", (victim_id,))
        with pytest.raises(pymysql.err.OperationalError), victim.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        if victim.open:
            victim.close()


def test_user_can_kill_another_users_connection(
    mysql_params: dict[str, Any], admin: pymysql.connections.Connection
) -> None:
    # The test user itself has PROCESS and CONNECTION ADMIN, as fault tests need.
    killer = pymysql.connect(**mysql_params, autocommit=True)
    try:
        with killer.cursor() as cur:
            cur.execute("SHOW FULL PROCESSLIST")
            assert len(cur.fetchall()) >= 2  # sees the admin connection too
            cur.execute("KILL CONNECTION %s", (admin.thread_id(),))
        with pytest.raises(pymysql.err.OperationalError), admin.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        killer.close()


@pytest.mark.timing
def test_restart_keeps_port_and_data(restartable_mariadb: MariaDBServer) -> None:
    params = restartable_mariadb.params()
    conn = pymysql.connect(**params, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS restart_probe")
            cur.execute("CREATE TABLE restart_probe (id INT PRIMARY KEY, note VARCHAR(20))")
            cur.execute("INSERT INTO restart_probe VALUES (1, 'survives')")
        started = time.monotonic()
        restartable_mariadb.restart()
        elapsed = time.monotonic() - started
        assert restartable_mariadb.params() == params
        # The connection opened before the restart is broken now.
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        if conn.open:
            conn.close()
    conn = pymysql.connect(**params)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT note FROM restart_probe WHERE id = 1")
            assert cur.fetchone() == ("survives",)
            cur.execute("DROP TABLE restart_probe")
    finally:
        conn.close()
    assert elapsed < 30


def test_parse_external() -> None:
    assert parse_external("u:p@db.example:3307/x") == {
        "host": "db.example",
        "port": 3307,
        "user": "u",
        "password": "p",
        "database": "x",
    }
    assert parse_external("mysql://u:p%40ss@h/") == {
        "host": "h",
        "port": 3306,
        "user": "u",
        "password": "p@ss",
        "database": "dbpool_test",
    }
    assert parse_external("u:p@ss@h:1/d")["password"] == "p@ss"
    with pytest.raises(ValueError):
        parse_external("just-a-host")
