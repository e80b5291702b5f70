"""ObjData and ObjDataThreadSafe: SQL in one call, over pooled connections, sync or async."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from . import _aio
from ._registry import _given_back, _opening_frame, _PoolEntry, _registry
from ._session import _Session
from ._sql import Params, Row, _dialect_of, _dicts, _lastrowid, _rowcount, _rows
from .connection import PooledConnection
from .errors import ConfigError
from .pool import ConnectionPool

log = logging.getLogger("dbpool.facade")

_T = TypeVar("_T")
_Self = TypeVar("_Self", bound="_SqlMethods")


class _SqlMethods:
    """The SQL methods of both facades, written once over ``_pinned`` and ``_borrow_from``."""

    config_name: str
    # Reads outside a transaction go to the pool's replicas (ObjDataThreadSafe's option).
    _read_from_replicas = False

    def _pinned(self) -> _Session | None:
        raise NotImplementedError

    def _borrow_from(self) -> _PoolEntry:
        raise NotImplementedError

    @contextlib.contextmanager
    def _statement(self, write: bool) -> Iterator[_Session]:
        """The session one statement runs on, committed afterwards unless in a transaction."""
        session = self._pinned()
        if session is not None:
            if session.depth:
                yield session
                return
            try:
                yield session
            except BaseException:
                session.rollback_quietly()
                raise
            # Also after a read: a long-lived connection must not keep reading an old snapshot.
            session.conn.commit()
            return
        entry = self._borrow_from()
        conn = entry.pool.acquire(readonly=not write and self._read_from_replicas)
        session = _Session(conn, entry.dialect)
        try:
            yield session
            if write:
                conn.commit()
        finally:
            # A failed statement may have left a transaction open (InnoDB keeps a lock
            # on a duplicate key): the pool rolls it back when the connection returns.
            entry.give_back(conn)

    def sql_get_values(self, sql: str, params: Params = None) -> list[Row]:
        """The rows of a query, as tuples."""
        with self._statement(write=False) as session:
            return session.run(sql, params, _rows)

    def sql_get_dicts(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """The rows of a query, as dicts keyed by column name."""
        with self._statement(write=False) as session:
            return session.run(sql, params, _dicts)

    def sql_get_value(self, sql: str, params: Params = None, default: Any = None) -> Any:
        """The first column of the first row, or ``default`` when there is no row."""
        rows = self.sql_get_values(sql, params)
        return rows[0][0] if rows else default

    def sql_execute(self, sql: str, params: Params = None) -> int:
        """Run a statement and commit it (unless in a transaction); the affected-row count."""
        with self._statement(write=True) as session:
            return session.run(sql, params, _rowcount)

    def sql_executemany(self, sql: str, seq_of_params: Iterable[Params]) -> int:
        """Run a statement once per parameter set, then commit; the affected-row count."""
        with self._statement(write=True) as session:
            return session.run_many(sql, seq_of_params)

    def sql_insert(self, sql: str, params: Params = None) -> int | None:
        """Run an INSERT and commit it (unless in a transaction); the new row's id."""
        with self._statement(write=True) as session:
            return session.run(sql, params, _lastrowid)

    @contextlib.contextmanager
    def transaction(self: _Self) -> Iterator[_Self]:
        """A block whose statements commit together at its end, or roll back on an exception.

        Blocks nest: an inner block is a savepoint, undone alone when it raises.
        """
        session = self._pinned()
        if session is not None:
            with session.block():
                yield self
            return
        opener = _opening_frame(sys._getframe(1))
        entry = self._borrow_from()
        conn = entry.pool.acquire()
        session = _Session(conn, entry.dialect)
        entry.pin(session, opener)
        try:
            with session.block():
                yield self
        finally:
            entry.unpin(session)
            entry.give_back(conn)


class ObjData(_SqlMethods):
    """SQL methods over one connection (``DB=conn``), or over the pool of ``config_name``.

    Without ``DB``, a transaction block belongs to the thread, as with ObjDataThreadSafe:
    every ObjData() of that config the thread uses inside the block runs in it.
    Not to be shared between threads: use one instance per thread, or ObjDataThreadSafe.
    """

    def __init__(self, DB: Any = None, config_name: str = "primary") -> None:
        self.DB = DB
        self.config_name = config_name
        self._entry: _PoolEntry | None = None
        self._fixed: _Session | None = None  # over DB, for the instance's lifetime
        self._remotes: dict[str, PooledConnection] = {}  # of db_connect_remote
        if DB is None:
            self._entry = _registry.get(config_name, {})
        else:
            self._fixed = _Session(DB, _dialect_of(DB))

    def _pinned(self) -> _Session | None:
        if self._fixed is not None:
            return self._fixed
        assert self._entry is not None
        return self._entry.pinned()

    def _borrow_from(self) -> _PoolEntry:
        assert self._entry is not None  # DB=None made one; with a DB, _pinned() never misses
        return self._entry

    def db_connect_remote(self, config_name: str) -> PooledConnection:
        """A connection from the class-level pool of another config; give it back with close().

        Calling it again for the same config returns the same connection until it is given
        back. A ``with`` block on it gives it back at the end.
        """
        conn = self._remotes.get(config_name)
        if conn is None or _given_back(conn):
            conn = self._remotes[config_name] = _registry.get(config_name, {}).pool.acquire()
        return conn

    def close(self) -> None:
        """Give back the connections of ``db_connect_remote``; ``DB`` is left to its owner."""
        remotes = self._remotes
        while remotes:
            _, conn = remotes.popitem()
            conn.close()

    def __enter__(self) -> ObjData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        over = "a given connection" if self.DB is not None else f"config {self.config_name!r}"
        return f"<ObjData over {over}>"


class ObjDataThreadSafe(_SqlMethods):
    """SQL methods that any number of threads, and asyncio tasks, may call on one instance.

    Each statement borrows a connection from the class-level pool of ``config_name`` and
    gives it back; ``with obj.transaction():`` keeps one for the calling thread until the
    block ends. pool_size and other options (``mode``, ``max_overflow``, connection
    parameters...) build that pool on first use; see ``ConnectionPool``.
    read_from_replicas: this instance sends ``sql_get_values``, ``sql_get_dicts`` and
    ``sql_get_value`` outside a transaction to the config's replicas.
    """

    def __init__(
        self,
        pool_size: int | None = None,
        config_name: str = "primary",
        *,
        read_from_replicas: bool = False,
        **options: Any,
    ) -> None:
        if not isinstance(read_from_replicas, bool):
            raise ConfigError(
                f"read_from_replicas must be true or false (got {read_from_replicas!r})"
            )
        self._read_from_replicas = read_from_replicas
        if pool_size is not None:
            if "size" in options:
                raise ConfigError("pass pool_size or size, not both")
            options["size"] = pool_size
        self.config_name = config_name
        self._entry = _registry.get(config_name, options)

    @property
    def pool(self) -> ConnectionPool:
        """The class-level pool this instance uses."""
        return self._entry.pool

    def _pinned(self) -> _Session | None:
        return self._entry.pinned()

    def _borrow_from(self) -> _PoolEntry:
        return self._entry

    # An instance is shared by threads, so each thread gets its own remote connections;
    # they are kept on the remote pool's entry, where close_thread_connection() finds them.
    def db_connect_remote(self, config_name: str) -> PooledConnection:
        """A connection from the class-level pool of another config, for the calling thread.

        Calling it again in the same thread returns the same connection until it is given
        back: by ``close()`` (or the end of a ``with`` block on the instance) in that
        thread, by ``close_thread_connection()``, or by its own ``close()``.
        """
        return _registry.get(config_name, {}).lend_remote(self)

    def close(self) -> None:
        """Give back the calling thread's ``db_connect_remote`` connections of this instance."""
        for entry in _registry.entries(None):
            entry.give_back_remotes(self)

    def __enter__(self) -> ObjDataThreadSafe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- class level -----------------------------------------------------------------

    @classmethod
    def get_pool(cls, config_name: str = "primary") -> ConnectionPool:
        """The class-level pool of ``config_name``; PoolError when none was made yet."""
        return _registry.find(config_name).pool

    @classmethod
    def get_pool_stats(cls, config_name: str = "primary") -> dict[str, Any]:
        """``get_stats()`` of the class-level pool of ``config_name``."""
        return cls.get_pool(config_name).get_stats()

    @classmethod
    def close_thread_connection(cls, config_name: str | None = None) -> None:
        """Give back the connections the calling thread holds (of every config by default).

        Those are its ``db_connect_remote`` connections and, in persistent mode, the one it
        keeps between statements. Inside a transaction block it is an error.
        """
        for entry in _registry.entries(config_name):
            entry.release_thread()

    @classmethod
    def close_pool(cls, config_name: str | None = None) -> None:
        """Dispose of the class-level pool of ``config_name`` (of every config by default).

        Instances made before keep the disposed pool and get PoolClosed; new instances
        make a new pool.
        """
        for entry in _registry.pop(config_name):
            entry.close()
            log.debug("closed the class-level pool of config %r", entry.config_name)

    # -- asyncio ---------------------------------------------------------------------

    async def _arun(self, call: Callable[[], _T]) -> _T:
        return await _aio.run(self._entry, call)

    async def asql_get_values(self, sql: str, params: Params = None) -> list[Row]:
        """``sql_get_values`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_get_values, sql, params))

    async def asql_get_dicts(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """``sql_get_dicts`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_get_dicts, sql, params))

    async def asql_get_value(self, sql: str, params: Params = None, default: Any = None) -> Any:
        """``sql_get_value`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_get_value, sql, params, default))

    async def asql_execute(self, sql: str, params: Params = None) -> int:
        """``sql_execute`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_execute, sql, params))

    async def asql_executemany(self, sql: str, seq_of_params: Iterable[Params]) -> int:
        """``sql_executemany`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_executemany, sql, list(seq_of_params)))

    async def asql_insert(self, sql: str, params: Params = None) -> int | None:
        """``sql_insert`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_insert, sql, params))

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[ObjDataThreadSafe]:
        """``transaction()`` for asyncio: the task's statements in the block share one connection.

        The block holds one worker thread, which runs its statements in order. Nested
        blocks are savepoints, as in ``transaction()``.
        """
        async with _aio.transaction(self._entry, self.transaction()):
            yield self

    def __repr__(self) -> str:
        return f"<ObjDataThreadSafe config {self.config_name!r} pool {self._entry.pool.name}>"
