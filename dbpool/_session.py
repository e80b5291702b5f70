"""_Session: one connection in use by the facade, and the transaction blocks on it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, TypeVar

from ._sql import _DIALECTS, Params, _Dialect
from .connection import PooledConnection
from .errors import PoolError

log = logging.getLogger("dbpool.facade")

_T = TypeVar("_T")


class _Session:
    """A connection in use by the facade, with the depth of its open transaction blocks."""

    __slots__ = ("conn", "depth", "dialect", "doomed", "ended", "opener", "outer", "thread")

    def __init__(self, conn: Any, dialect: _Dialect) -> None:
        self.conn = conn
        self.dialect = dialect
        self.depth = 0
        self.doomed = False
        # Of a session pinned by a transaction block (see _PoolEntry.pin): the thread that
        # opened the block, the block it was opened in (another config's pool aside), and
        # whether it has ended.
        self.thread = 0
        self.outer: _Session | None = None
        self.ended = False
        self.opener: FrameType | None = None  # the generator's frame, for a block in one

    def run(self, sql: str, params: Params, read: Callable[[Any], _T]) -> _T:
        """Execute one statement and return ``read(cursor)``."""
        if self.doomed:
            raise PoolError(
                "the transaction was rolled back when a nested block failed to undo "
                "its work; leave the transaction block"
            )
        has_params = params is not None
        sql = self.dialect.sql(sql, has_params)
        cur = self.conn.cursor()
        try:
            if has_params:
                cur.execute(sql, params)
            else:
                cur.execute(sql)
            return read(cur)
        finally:
            cur.close()

    def run_many(self, sql: str, rows: Iterable[Params]) -> int:
        if self.doomed:
            raise PoolError(
                "the transaction was rolled back when a nested block failed to undo "
                "its work; leave the transaction block"
            )
        batch = list(rows)
        if not batch:
            return 0
        sql = self.dialect.sql(sql, True)
        cur = self.conn.cursor()
        try:
            cur.executemany(sql, batch)
            return int(cur.rowcount)
        finally:
            cur.close()

    def control(self, sql: str) -> None:
        """A statement of the facade's own (BEGIN, SAVEPOINT...), never with parameters."""
        cur = self.conn.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    def rollback_quietly(self) -> None:
        # Called while another error is on its way up: that one is what the caller must see.
        try:
            self.conn.rollback()
        except Exception as exc:
            log.debug("rollback failed (the connection may be lost): %s", exc)

    def begin(self) -> None:
        if self.dialect is _DIALECTS["sqlite"]:
            raw = (
                self.conn.dbapi_connection if isinstance(self.conn, PooledConnection) else self.conn
            )
            if not raw.in_transaction:
                self.control("BEGIN")
        else:
            # Also right when the connection runs with autocommit on.
            self.control("START TRANSACTION")

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """A transaction block: the outermost commits or rolls back, inner ones are savepoints."""
        if self.depth == 0:
            self.begin()
            self.depth = 1
            self.doomed = False
            log.debug("transaction begun")
            try:
                yield
            except BaseException:
                self.depth = 0
                self.rollback_quietly()
                log.debug("transaction rolled back")
                raise
            self.depth = 0
            if self.doomed:
                self.rollback_quietly()
                raise PoolError(
                    "transaction rolled back: a nested block that failed could not "
                    "be undone on its own"
                )
            try:
                self.conn.commit()
            except BaseException:
                self.rollback_quietly()
                raise
            log.debug("transaction committed")
            return
        savepoint = f"dbpool_sp{self.depth}"
        self.control(f"SAVEPOINT {savepoint}")
        self.depth += 1
        try:
            yield
        except BaseException:
            self.depth -= 1
            try:
                self.control(f"ROLLBACK TO SAVEPOINT {savepoint}")
                self.control(f"RELEASE SAVEPOINT {savepoint}")
            except Exception as exc:
                # The outer block must not commit work that was meant to be undone.
                self.doomed = True
                log.debug("rollback to savepoint %s failed: %s", savepoint, exc)
            raise
        self.depth -= 1
        self.control(f"RELEASE SAVEPOINT {savepoint}")
