"""Plugin: what the fault tests share: server-side counts, kills, and a ledger of transactions.

The ledger proves that no statement runs twice: each transaction inserts a row
with a token of its own and bumps one counter, then commits. Afterwards no
token may appear twice, the counter must equal the number of rows, and every
transaction the caller saw commit must be there exactly once.

Fixture: ``ledger``, a Ledger in the session server's test database, its
tables dropped after the test. The functions (``sessions``, ``session_count``,
``kill``, ``wait_until``...) are imported where they are used.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mysql.connector
import pymysql
import pytest

from dbpool import PoolError
from tests.mariadb import MariaDBServer
from tests.queries import value

# The errors a caller may legitimately see when the server or the network fails.

CLEAR_ERRORS: tuple[type[BaseException], ...] = (
    PoolError,
    pymysql.err.Error,
    mysql.connector.Error,
)


def sessions(admin: Any, user: str) -> list[int]:
    """Ids of the server sessions of ``user``."""
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        return [int(row[0]) for row in cur.fetchall()]


def session_count(admin: Any, user: str, expect: int | None = None, timeout: float = 5.0) -> int:
    """The number of ``user``'s sessions, polled up to ``timeout`` until it equals ``expect``.

    The server notices closed connections a moment after the client closes them.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = len(sessions(admin, user))
        if expect is None or count == expect or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def session_id(conn: Any) -> int:
    """The server's id of the session behind ``conn`` (a pooled or driver connection)."""
    return int(value(conn, "SELECT CONNECTION_ID()"))


def session_open(admin: Any, conn_id: int, expect: bool, timeout: float = 5.0) -> bool:
    """Whether session ``conn_id`` is on the server, polled up to ``timeout`` until ``expect``.

    Looks at one session only, so sessions other tests left behind do not count.
    """
    deadline = time.monotonic() + timeout
    while True:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)
            )
            found = cur.fetchone()[0] == 1
        if found == expect or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def kill(admin: Any, conn_id: int, timeout: float = 5.0) -> None:
    """KILL CONNECTION one session; wait (bounded) until the server has dropped it."""
    with admin.cursor() as cur:
        cur.execute("KILL CONNECTION %s", (conn_id,))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)
            )
            if cur.fetchone()[0] == 0:
                return
        time.sleep(0.01)


def kill_all(admin: Any, user: str, timeout: float = 5.0) -> int:
    """KILL CONNECTION every session of ``user``; wait (bounded) until they are gone."""
    ids = sessions(admin, user)
    with admin.cursor() as cur:
        for conn_id in ids:
            with contextlib.suppress(pymysql.err.OperationalError):  # it ended meanwhile
                cur.execute(f"KILL CONNECTION {conn_id}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(ids) & set(sessions(admin, user)):
        time.sleep(0.01)
    return len(ids)


def wait_until(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@dataclass
class Ledger:
    """Tables ``<name>_rows`` and ``<name>_counter`` in the test database.

    ``connect`` opens an admin connection (one per check, so it survives restarts).
    ``hot_row=False`` is for a multi-writer cluster (Galera), where what is not
    the fault under test must not fail certification: it counts with one
    inserted row per transaction instead of one updated row (concurrent updates
    of one row from two nodes conflict), and keys rows by ``UUID()`` instead of
    AUTO_INCREMENT (Galera re-spaces auto-increment values when a node leaves,
    and inserts in flight then collide).
    ``tag=True`` first asks the server for ``@@port, CONNECTION_ID()``, so a
    failed transaction's entry in ``failed_on`` says which server and which
    connection it failed on (None when it failed before that answer).
    """

    connect: Any
    database: str
    name: str = field(default_factory=lambda: f"ledger_{uuid.uuid4().hex[:8]}")
    committed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    hot_row: bool = True
    tag: bool = False
    failed_on: list[tuple[int, int] | None] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # when each failed one began
    failed_with: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count()
        self.rows = f"`{self.database}`.`{self.name}_rows`"
        self.counter = f"`{self.database}`.`{self.name}_counter`"
        key = (
            "id INT AUTO_INCREMENT PRIMARY KEY"
            if self.hot_row
            else "id CHAR(36) NOT NULL DEFAULT (UUID()) PRIMARY KEY"
        )
        with contextlib.closing(self.connect()) as admin, admin.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {self.rows} ({key}, token VARCHAR(64) NOT NULL) ENGINE=InnoDB"
            )
            if self.hot_row:
                cur.execute(
                    f"CREATE TABLE {self.counter} (id INT PRIMARY KEY, n INT NOT NULL) "
                    "ENGINE=InnoDB"
                )
                cur.execute(f"INSERT INTO {self.counter} VALUES (1, 0)")
            else:
                cur.execute(
                    f"CREATE TABLE {self.counter} ({key}, token VARCHAR(64) NOT NULL) ENGINE=InnoDB"
                )

    def drop(self) -> None:
        with contextlib.closing(self.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.rows}, {self.counter}")

    def transaction(self, pool: Any) -> None:
        """One unit of work: insert a token, bump the counter, commit."""
        token = f"{threading.get_ident()}-{next(self._ids)}"
        where: tuple[int, int] | None = None
        began = time.monotonic()
        try:
            with pool.connection() as conn:
                cur = conn.cursor()
                try:
                    if self.tag:
                        cur.execute("SELECT @@port, CONNECTION_ID()")
                        port, conn_id = cur.fetchall()[0]
                        where = (int(port), int(conn_id))
                    cur.execute(f"INSERT INTO {self.rows} (token) VALUES (%s)", (token,))
                    if self.hot_row:
                        cur.execute(f"UPDATE {self.counter} SET n = n + 1 WHERE id = 1")
                    else:
                        cur.execute(f"INSERT INTO {self.counter} (token) VALUES (%s)", (token,))
                finally:
                    cur.close()
                conn.commit()
        except BaseException:
            self.failed.append(token)
            self.failed_on.append(where)
            self.failed_at.append(began)
            self.failed_with.append(sys.exc_info()[1] or RuntimeError("no exception"))
            raise
        self.committed.append(token)

    def failures_by_port(self, since: float = 0.0) -> dict[int | None, int]:
        """How many failed transactions each server (by port) saw; None: unknown.

        ``since``: only transactions that began at that ``time.monotonic()`` or later.
        """
        counts: dict[int | None, int] = {}
        for where, began in zip(self.failed_on, self.failed_at, strict=True):
            if began >= since:
                port = None if where is None else where[0]
                counts[port] = counts.get(port, 0) + 1
        return counts

    def most_failures_on_one_connection(self) -> int:
        """The largest number of failed transactions on one server connection."""
        counts: dict[tuple[int, int], int] = {}
        for where in self.failed_on:
            if where is not None:
                counts[where] = counts.get(where, 0) + 1
        return max(counts.values(), default=0)

    def check(self) -> dict[str, int]:
        """Assert the invariants; return the figures."""
        with contextlib.closing(self.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"SELECT token, COUNT(*) FROM {self.rows} GROUP BY token")
            counts = {str(token): int(n) for token, n in cur.fetchall()}
            if self.hot_row:
                cur.execute(f"SELECT n FROM {self.counter} WHERE id = 1")
            else:
                cur.execute(f"SELECT COUNT(*) FROM {self.counter}")
            counter = int(cur.fetchone()[0])
        rows = sum(counts.values())
        twice = {token: n for token, n in counts.items() if n > 1}
        assert not twice, f"statements ran twice: {twice}"
        assert counter == rows, f"counter {counter} != rows {rows}"
        missing = [t for t in self.committed if t not in counts]
        assert not missing, f"committed transactions lost: {missing[:5]}"
        # A failed transaction may have committed on the server before the error
        # reached the caller (the commit itself was cut): at most once, never twice.
        assert rows <= len(self.committed) + len(self.failed)
        return {
            "committed": len(self.committed),
            "failed": len(self.failed),
            "rows": rows,
            "twice": len(twice),
        }


@pytest.fixture
def ledger(mariadb: MariaDBServer) -> Iterator[Ledger]:
    """A Ledger in the session server's test database; its tables dropped after the test."""
    book = Ledger(mariadb.admin_connect, mariadb.database)
    try:
        yield book
    finally:
        book.drop()
