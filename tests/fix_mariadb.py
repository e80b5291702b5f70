"""Plugin: the session's MariaDB server (tests/mariadb.py) as fixtures, and the ``mysql`` tier.

Fixtures: ``mariadb`` (the server, started on first use), ``restartable_mariadb``
(the same, for tests that stop and start it: skipped on an external server),
``mysql_params``, ``admin``, and ``mysql_config`` (writes a dbpool config file
whose ``primary`` entry is the server). Every test that uses ``mariadb``, directly or
through another fixture, gets the ``mysql`` marker, so ``-m "not mysql"`` runs
the fast tier.

Without MariaDB installed, these tests fail, unless ``DBPOOL_SKIP_MYSQL=1`` is
set: then they are skipped. ``DBPOOL_TEST_MYSQL`` names an existing server to
use instead (see tests/mariadb.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from tests.mariadb import ENV_EXTERNAL, MariaDBNotInstalled, MariaDBServer, find_binaries


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mysql: needs the MariaDB server the test session starts")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "mariadb" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mysql)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """The session's MariaDB server, started on first use."""
    missing = None
    if not os.environ.get(ENV_EXTERNAL):
        try:
            find_binaries()
        except MariaDBNotInstalled as exc:
            missing = str(exc)
    if missing is not None:
        if os.environ.get("DBPOOL_SKIP_MYSQL") == "1":
            pytest.skip(f"DBPOOL_SKIP_MYSQL=1 and {missing}")
        pytest.fail(f"{missing} (or set DBPOOL_SKIP_MYSQL=1 to skip these tests)", pytrace=False)
    server = MariaDBServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def restartable_mariadb(mariadb: MariaDBServer) -> MariaDBServer:
    """The session's server, for a test that halts or restarts it."""
    if mariadb.external:
        pytest.skip(f"the external server given by {ENV_EXTERNAL} cannot be restarted")
    return mariadb


@pytest.fixture
def mysql_params(mariadb: MariaDBServer) -> dict[str, Any]:
    """host, port, user, password, database of the test server (a fresh dict)."""
    return mariadb.params()


@pytest.fixture
def admin(mariadb: MariaDBServer) -> Iterator[pymysql.connections.Connection]:
    """A root connection with autocommit, closed after the test."""
    conn = mariadb.admin_connect()
    try:
        yield conn
    finally:
        if conn.open:
            conn.close()


@pytest.fixture
def mysql_config(mysql_params: dict[str, Any], tmp_path: Path) -> Callable[..., Path]:
    """Writes ``tmp_path/<name>``, a dbpool config file whose entry ``primary`` is the test
    server, and returns its path: host, port, user, database, the password unless
    ``password=False`` (for DBPOOL_PRIMARY_PASSWORD), and the given options (``pool={...}``)."""

    def write(name: str = "config.yaml", *, password: bool = True, **options: Any) -> Path:
        entry = {key: mysql_params[key] for key in ("host", "port", "user", "database")}
        if password:
            entry["password"] = mysql_params["password"]
        path = tmp_path / name
        document = {"database": {"primary": {**entry, **options}}}
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write
