"""Shared fixtures: isolation from the environment, the pool modes and drivers, the backends.

Tiers: tests that use the ``mariadb`` fixture (directly or through
``mysql_params``/``admin``/``mysql_pool``/``backend``) get the ``mysql`` marker,
so ``-m "not mysql"`` runs the fast tier; ``slow`` tests run only with
``--run-slow``; ``-m "not timing"`` leaves out the few assertions on elapsed
time (bounds far above the expected figure). The server comes from the
tests/fix_mariadb.py plugin, the loopback proxy from tests/fix_proxy.py, the
contract's backends from tests/fix_backend.py, the cluster tier from tests/fix_cluster.py.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbpool.config import MODES

# tests/ has no __init__.py: make "tests.mariadb" importable whatever the import mode.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# The cluster tier's topologies (replication pair, Galera, HAProxy) are in tests/fix_cluster.py.
pytest_plugins = [
    "tests.fix_mariadb",
    "tests.fix_proxy",
    "tests.fix_backend",
    "tests.fix_cluster",
    "tests.fix_appserver",
    "tests.faultkit",
    "tests.loadgen",
]

# The variables dbpool reads: the config file, and DBPOOL_<NAME>_PASSWORD/_USER/_HOST/
# _PORT/_DATABASE/_URL.
_DBPOOL_VARIABLES = re.compile(r"DBPOOL_(CONFIG|.+_(PASSWORD|USER|HOST|PORT|DATABASE|URL))")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: use --run-slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test: an empty working directory, none of the variables dbpool reads,
    no password decoder, and no class-level facade pool left behind."""
    from dbpool import ObjDataThreadSafe, set_password_decoder

    for name in list(os.environ):
        if _DBPOOL_VARIABLES.fullmatch(name):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    set_password_decoder(None)
    yield work
    set_password_decoder(None)
    ObjDataThreadSafe.close_pool()


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


@pytest.fixture(params=MODES)
def pool_mode(request: pytest.FixtureRequest) -> str:
    """Each pool mode in turn."""
    return str(request.param)


@pytest.fixture
def mysql_pool(
    pools: list[Any], mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str
) -> Any:
    """A factory of pools on the test server, for the current driver and mode."""
    from dbpool import make_pool

    def new(**options: Any) -> Any:
        pool = make_pool(**{**mysql_params, "driver": mysql_driver, "mode": pool_mode, **options})
        pools.append(pool)
        return pool

    return new
