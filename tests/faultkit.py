"""What the fault tests share: server-side counts, kills, and a ledger of transactions.

The ledger proves that no statement runs twice: each transaction inserts a row
with a token of its own and bumps one counter, then commits. Afterwards no
token may appear twice, the counter must equal the number of rows, and every
transaction the caller saw commit must be there exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# The errors a caller may legitimately see when the server or the network fails.
import mysql.connector
import pymysql

from dbpool import PoolError

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
    """

    connect: Any
    database: str
    name: str = field(default_factory=lambda: f"ledger_{uuid.uuid4().hex[:8]}")
    committed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count()
        self.rows = f"`{self.database}`.`{self.name}_rows`"
        self.counter = f"`{self.database}`.`{self.name}_counter`"
        with contextlib.closing(self.connect()) as admin, admin.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {self.rows} (id INT AUTO_INCREMENT PRIMARY KEY, "
                "token VARCHAR(64) NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(
                f"CREATE TABLE {self.counter} (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(f"INSERT INTO {self.counter} VALUES (1, 0)")

    def drop(self) -> None:
        with contextlib.closing(self.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.rows}, {self.counter}")

    def transaction(self, pool: Any) -> None:
        """One unit of work: insert a token, bump the counter, commit."""
        token = f"{threading.get_ident()}-{next(self._ids)}"
        try:
            with pool.connection() as conn:
                cur = conn.cursor()
                try:
                    cur.execute(f"INSERT INTO {self.rows} (token) VALUES (%s)", (token,))
                    cur.execute(f"UPDATE {self.counter} SET n = n + 1 WHERE id = 1")
                finally:
                    cur.close()
                conn.commit()
        except BaseException:
            self.failed.append(token)
            raise
        self.committed.append(token)

    def check(self) -> dict[str, int]:
        """Assert the invariants; return the figures."""
        with contextlib.closing(self.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"SELECT token, COUNT(*) FROM {self.rows} GROUP BY token")
            counts = {str(token): int(n) for token, n in cur.fetchall()}
            cur.execute(f"SELECT n FROM {self.counter} WHERE id = 1")
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
