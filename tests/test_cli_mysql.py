"""``dbpool demo`` against MariaDB: its own scratch table, dropped; the user's tables untouched."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dbpool.cli import main


def test_demo_on_mariadb(
    mysql_params: dict[str, Any],
    admin: pymysql.connections.Connection,
    mysql_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = mysql_params
    config = mysql_config("app.yaml", pool={"size": 2, "max_overflow": 1})
    database = p["database"]
    with admin.cursor() as cur:  # a table of the user's, named as the old demo's
        cur.execute(f"CREATE TABLE IF NOT EXISTS {database}.dbpool_demo (worker TEXT, n INT)")
        cur.execute(f"DELETE FROM {database}.dbpool_demo")
        cur.execute(f"INSERT INTO {database}.dbpool_demo VALUES ('mine', 1)")
    try:
        assert main(["demo", "--config", str(config), "--tasks", "30", "--threads", "4"]) == 0
        out = capsys.readouterr().out
        table = re.search(r"scratch table (dbpool_demo_[0-9a-f]{12}) \(dropped at the end\)", out)
        assert table is not None, out
        assert "(size 2, max 3)" in out
        assert "persistent mode: using 3 threads, one per connection" in out
        assert p["password"] not in out
        with admin.cursor() as cur:
            cur.execute(f"SHOW TABLES FROM {database} LIKE 'dbpool\\_demo%%'")
            assert [row[0] for row in cur.fetchall()] == ["dbpool_demo"]
            cur.execute(f"SELECT worker, n FROM {database}.dbpool_demo")
            assert cur.fetchall() == (("mine", 1),)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {database}.dbpool_demo")
