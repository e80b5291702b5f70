"""Plugin: the ``backend`` fixture, one pool contract run on every kind of pool.

``backend`` is each of: the fake driver (tests/fakedb.py), SQLite, and MariaDB
through PyMySQL and through mysql-connector, each in both modes. A test written
against it states what every pool must do, whatever is behind it.
The MariaDB backends carry the ``mysql`` marker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbpool import ConnectionPool, make_pool
from dbpool.config import MODES
from tests.fakedb import FakeDriver

KINDS = ("fake", "sqlite", "pymysql", "mysql-connector")


class Backend:
    """Makes pools of one kind and mode, and sees what the database side sees."""

    def __init__(self, kind: str, mode: str, tmp_path: Path, request: pytest.FixtureRequest):
        self.kind = kind
        self.mode = mode
        self.pools: list[ConnectionPool] = []
        self.fake: FakeDriver | None = None
        self._admin: Any = None
        self._user = ""
        self._before: set[int] = set()  # sessions of the test user older than this backend
        if kind == "fake":
            self.fake = FakeDriver()
            self.options: dict[str, Any] = {"driver": self.fake}
        elif kind == "sqlite":
            self.options = {"driver": "sqlite", "path": str(tmp_path / "contract.sqlite3")}
        else:
            params = request.getfixturevalue("mysql_params")
            self._admin = request.getfixturevalue("admin")
            self._user = params["user"]
            self.options = {**params, "driver": kind}
            self._before = self._session_ids()

    def __repr__(self) -> str:
        return f"<Backend {self.kind}-{self.mode}>"

    @property
    def mysql(self) -> bool:
        return self.kind in ("pymysql", "mysql-connector")

    def pool(self, **options: Any) -> ConnectionPool:
        """A pool on this backend, disposed of after the test."""
        pool = make_pool(**{**self.options, "mode": self.mode, **options})
        self.pools.append(pool)
        return pool

    def config_entry(self) -> dict[str, Any] | None:
        """A config-file entry for this backend, or None (the fake driver has no name)."""
        if self.kind == "fake":
            return None
        return {**self.options}

    def select(self, conn: Any, value: int = 1) -> int:
        """Run ``SELECT value`` on ``conn`` and return what came back."""
        cur = conn.cursor()
        try:
            cur.execute("SELECT ?" if self.kind == "sqlite" else "SELECT %s", (value,))
            (result,) = cur.fetchone()
        finally:
            cur.close()
        return int(result)

    def assert_open(self, count: int | ConnectionPool) -> None:
        """Assert that the database side has ``count`` of the pool's connections open.

        ``count`` may be a pool: then its ``total_connections``, read again at each
        look, since a background connect may still be adding one. SQLite has no
        server to ask: there, nothing is checked.
        """
        if self.fake is not None:
            with self.fake.lock:
                assert len(self.fake.open) == self._expected(count)
        elif self._admin is not None:
            assert self.server_sessions(expect=count) == self._expected(count)

    @staticmethod
    def _expected(count: int | ConnectionPool) -> int:
        if isinstance(count, int):
            return count
        return int(count.get_stats()["total_connections"])

    def server_sessions(self, expect: int | ConnectionPool | None = None) -> int:
        """The MariaDB server's count of the test user's sessions opened since this backend.

        Sessions left by earlier tests are not counted. The server notices closed
        connections asynchronously: with ``expect``, it is asked again for a while
        until it agrees.
        """
        count = -1
        for _ in range(250):
            count = len(self._session_ids() - self._before)
            if expect is None or count == self._expected(expect):
                break
            time.sleep(0.02)
        return count

    def _session_ids(self) -> set[int]:
        with self._admin.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (self._user,)
            )
            return {int(row[0]) for row in cur.fetchall()}

    def close(self) -> None:
        for pool in self.pools:
            pool.dispose()


@pytest.fixture(
    params=[
        pytest.param(
            (kind, mode),
            id=f"{kind}-{mode}",
            marks=[pytest.mark.mysql] if kind in ("pymysql", "mysql-connector") else [],
        )
        for kind in KINDS
        for mode in MODES
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each kind of pool in each mode: fake driver, SQLite, MariaDB by each driver."""
    kind, mode = request.param
    made = Backend(kind, mode, tmp_path, request)
    try:
        yield made
    finally:
        made.close()
