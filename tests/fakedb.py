"""A fake DB-API driver with no I/O, for fast tests of the pool's own logic."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any

from dbpool import Driver


class FakeError(Exception):
    """The fake driver's base error."""


class FakeOperationalError(FakeError):
    pass


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> int:
        self.conn.check()
        self.conn.statements.append(sql)
        if sql.upper().startswith(("INSERT", "UPDATE", "DELETE", "BEGIN")):
            self.conn.in_transaction = True
        # "SELECT %s" with (value,) gives back (value,), as a server would.
        echo = sql.upper().startswith("SELECT") and isinstance(params, (tuple, list)) and params
        self.rows = [tuple(params)] if echo else [(1,)]
        return 1

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def close(self) -> None:
        pass


class FakeConnection:
    ids = itertools.count(1)

    def __init__(self, driver: FakeDriver) -> None:
        self.id = next(self.ids)
        self.driver = driver
        self.closed = False
        self.killed = False
        self.in_transaction = False
        self.rollbacks = 0
        self.pings = 0
        self.statements: list[str] = []
        self.user: threading.Thread | None = None

    def check(self) -> None:
        if self.closed:
            raise FakeOperationalError("connection closed")
        if self.killed:
            raise FakeOperationalError("connection was killed")

    def cursor(self) -> FakeCursor:
        self.check()
        return FakeCursor(self)

    def commit(self) -> None:
        self.check()
        self.in_transaction = False

    def rollback(self) -> None:
        self.check()
        self.rollbacks += 1
        self.in_transaction = False

    def ping(self) -> None:
        self.pings += 1
        self.check()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self.driver.lock:
                self.driver.open.discard(self)


class FakeDriver(Driver):
    """Connections that live in memory; `connect_delay` makes each connect slow."""

    name = "fake"
    errors = (FakeError,)

    def __init__(
        self, connect_delay: float = 0.0, fail_connects: int = 0, permanent: bool = False
    ) -> None:
        self.connect_delay = connect_delay
        self.fail_connects = fail_connects
        self.permanent = permanent
        self.lock = threading.Lock()
        self.open: set[FakeConnection] = set()
        self.connects = 0
        self.probes = 0

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> FakeConnection:
        if self.connect_delay:
            time.sleep(self.connect_delay)
        with self.lock:
            self.connects += 1
            if self.fail_connects:
                self.fail_connects -= 1
                raise FakeOperationalError("Access denied" if self.permanent else "refused")
            conn = FakeConnection(self)
            self.open.add(conn)
        return conn

    def probe(self, raw: Any) -> bool | None:
        self.probes += 1
        return not (raw.killed or raw.closed)

    def ping(self, raw: Any) -> None:
        raw.ping()

    def is_permanent(self, exc: BaseException) -> bool:
        return "Access denied" in str(exc)

    def describe(self, params: Mapping[str, Any]) -> str:
        return "fake://"
