"""Shared fixtures: a MariaDB server for the session, and the test tiers.

Tiers: tests that use the ``mariadb`` fixture (directly or through
``mysql_params``/``admin``) get the ``mysql`` marker, so ``-m "not mysql"``
runs the fast tier; ``slow`` tests run only with ``--run-slow``.

The server is started on first use and stopped at the end of the session (see
tests/mariadb.py, also for ``DBPOOL_TEST_MYSQL`` to use an existing server).
Without MariaDB installed, tests that need it fail, unless
``DBPOOL_SKIP_MYSQL=1`` is set: then they are skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

# tests/ has no __init__.py: make "tests.mariadb" importable whatever the import mode.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.mariadb import (  # noqa: E402
    ENV_EXTERNAL,
    MariaDBNotInstalled,
    MariaDBServer,
    find_binaries,
)

# The cluster tier's topologies (replication pair, Galera, HAProxy) and its marker.
pytest_plugins = ["tests.fix_cluster"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow")
    skip_slow = pytest.mark.skip(reason="slow test: use --run-slow")
    for item in items:
        if "mariadb" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mysql)
        if not run_slow and item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


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
def pools() -> Iterator[list[Any]]:
    """A list to put pools in; each is disposed of after the test."""
    made: list[Any] = []
    yield made
    for pool in made:
        pool.dispose()


@pytest.fixture(params=["pymysql", "mysql-connector"])
def mysql_driver(request: pytest.FixtureRequest) -> str:
    """Each MySQL driver in turn."""
    return str(request.param)


@pytest.fixture(params=["shared", "persistent"])
def pool_mode(request: pytest.FixtureRequest) -> str:
    """Each pool mode in turn."""
    return str(request.param)


@pytest.fixture
def mysql_pool(pools: list[Any], mysql_params: dict[str, Any], mysql_driver: str,
               pool_mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A factory of pools on the test server, for the current driver and mode."""
    from dbpool import make_pool

    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def new(**options: Any) -> Any:
        pool = make_pool(**{**mysql_params, "driver": mysql_driver, "mode": pool_mode,
                            **options})
        pools.append(pool)
        return pool

    return new
