"""ObjData and ObjDataThreadSafe: SQL in one call, over pooled connections, sync or async."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import queue
import re
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from .config import POOL_OPTION_NAMES
from .errors import ConfigError, PoolClosed, PoolError
from .pool import ConnectionPool, PooledConnection, make_pool

log = logging.getLogger("dbpool.facade")

Params = Sequence[Any] | Mapping[str, Any] | None
Row = tuple[Any, ...]
_T = TypeVar("_T")
_Self = TypeVar("_Self", bound="_SqlMethods")

# How often the thread of an async transaction looks whether its event loop is gone.
_ABANDON_POLL = 0.5
_SECRET_MARKERS = ("pass", "secret", "token")
_ALIASES = {"ip": "host", "db": "database"}


# -- placeholders ----------------------------------------------------------------
#
# The facade's SQL follows PyMySQL's rules on every driver: %s and %(name)s are
# placeholders and, when parameters are given, %% is a literal percent sign.

_TOKEN = re.compile(r"%%|%\((\w+)\)s|%s")


@functools.lru_cache(maxsize=512)
def _to_qmark(sql: str) -> str:
    """sqlite3: %s becomes ?, %(name)s becomes :name, %% becomes %; native SQL stays as is."""
    found = False

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        token = match.group(0)
        if token == "%%":
            return "%"
        found = True
        name = match.group(1)
        return "?" if name is None else f":{name}"

    converted = _TOKEN.sub(replace, sql)
    # Without a %-placeholder the statement is written in sqlite's own style (?, :name).
    return converted if found else sql


@functools.lru_cache(maxsize=512)
def _unescape_percent(sql: str) -> str:
    """mysql-connector: %% becomes %, as PyMySQL reads it; placeholders are left alone."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token != "%%":
            return token
        following = sql[match.end():match.end() + 1]
        if following in ("s", "("):
            raise ValueError(
                f"mysql-connector cannot tell a literal '%{following}' from a placeholder in "
                f"{sql!r}: pass that text as a parameter instead")
        return "%"

    return _TOKEN.sub(replace, sql)


class _Dialect:
    """How one driver wants the facade's %s-style SQL."""

    def __init__(self, convert: Callable[[str], str] | None) -> None:
        self._convert = convert

    def sql(self, sql: str, has_params: bool) -> str:
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a string (got {type(sql).__name__})")
        if self._convert is None or not has_params:
            return sql
        return self._convert(sql)


_FORMAT = _Dialect(None)
_DIALECTS = {"sqlite": _Dialect(_to_qmark), "mysql-connector": _Dialect(_unescape_percent)}


def _dialect_of(conn: Any) -> _Dialect:
    """The dialect of a connection handed in from outside (DB=...)."""
    raw = conn.dbapi_connection if isinstance(conn, PooledConnection) else conn
    if isinstance(raw, sqlite3.Connection):
        return _DIALECTS["sqlite"]
    if any(cls.__module__.startswith("mysql.connector") for cls in type(raw).__mro__):
        return _DIALECTS["mysql-connector"]
    return _FORMAT


# -- one connection, and the transaction on it -------------------------------------


class _Session:
    """A connection in use by the facade, with the depth of its open transaction blocks."""

    __slots__ = ("conn", "depth", "dialect", "doomed")

    def __init__(self, conn: Any, dialect: _Dialect) -> None:
        self.conn = conn
        self.dialect = dialect
        self.depth = 0
        self.doomed = False

    def run(self, sql: str, params: Params, read: Callable[[Any], _T]) -> _T:
        """Execute one statement and return ``read(cursor)``."""
        if self.doomed:
            raise PoolError("the transaction was rolled back when a nested block failed to undo "
                            "its work; leave the transaction block")
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
            raise PoolError("the transaction was rolled back when a nested block failed to undo "
                            "its work; leave the transaction block")
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
            raw = (self.conn.dbapi_connection if isinstance(self.conn, PooledConnection)
                   else self.conn)
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
                raise PoolError("transaction rolled back: a nested block that failed could not "
                                "be undone on its own")
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


def _rows(cur: Any) -> list[Row]:
    return [tuple(row) for row in cur.fetchall()]


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [column[0] for column in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _rowcount(cur: Any) -> int:
    if cur.description is not None:
        cur.fetchall()  # mysql-connector refuses to close a cursor with unread rows
    return int(cur.rowcount)


def _lastrowid(cur: Any) -> int | None:
    if cur.description is not None:
        cur.fetchall()
    value = cur.lastrowid
    return None if value is None else int(value)


# -- the class-level pools -------------------------------------------------------------


class _Keeper:
    """Marks a thread that keeps its persistent-mode connection between statements."""

    __slots__ = ("__weakref__",)


class _PoolEntry:
    """One named config's pool, with what the facade keeps per thread for it."""

    def __init__(self, config_name: str, options: Mapping[str, Any]) -> None:
        self.config_name = config_name
        self.options = dict(options)
        self.pool = make_pool(config_name=config_name, **self.options)
        self.dialect = _DIALECTS.get(self.pool.settings.driver, _FORMAT)
        self.persistent = self.pool.mode == "persistent"
        self.closed = False
        # The session a thread has pinned in `with obj.transaction():`, and its keeper mark.
        self.local = threading.local()
        self._lock = threading.Lock()
        # Threads that keep their connection; a thread that ends drops out by itself.
        self._keepers: weakref.WeakSet[_Keeper] = weakref.WeakSet()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # Persistent mode pins a connection to every thread that used one. Were every thread
    # to keep it, threads beyond max_size would wait for connections nobody gives back.
    # So at most max_size - 1 threads keep theirs between statements and any other
    # thread closes its own after each statement: at rest a slot is always free.
    def give_back(self, conn: PooledConnection) -> None:
        """Return a borrowed connection; in persistent mode keep it or free its slot."""
        self.pool.release(conn)
        if not self.persistent or getattr(self.local, "keeper", None) is not None:
            return
        with self._lock:
            if len(self._keepers) < self.pool.max_size - 1:
                keeper = _Keeper()
                self._keepers.add(keeper)
                self.local.keeper = keeper
                return
        self.pool.close_thread_connection()

    def release_thread(self) -> None:
        """Give back what the calling thread holds outside a transaction."""
        if getattr(self.local, "session", None) is not None:
            raise PoolError(
                f"close_thread_connection() inside a transaction of config "
                f"{self.config_name!r}: leave the transaction block first")
        self.give_back_remotes(None)
        self.local.__dict__.pop("keeper", None)
        self.pool.close_thread_connection()

    def lend_remote(self, owner: object) -> PooledConnection:
        """The calling thread's db_connect_remote() connection for ``owner``, kept."""
        remotes: weakref.WeakKeyDictionary[object, PooledConnection]
        remotes = self.local.__dict__.setdefault("remotes", weakref.WeakKeyDictionary())
        conn = remotes.get(owner)
        if conn is None or _given_back(conn):
            conn = remotes[owner] = self.pool.acquire()
        return conn

    def give_back_remotes(self, owner: object | None) -> None:
        """Give back what the calling thread holds from ``lend_remote`` (for ``owner``, or all)."""
        remotes = self.local.__dict__.get("remotes")
        if not remotes:
            return
        if owner is None:
            conns = list(remotes.values())
            remotes.clear()
        else:
            conn = remotes.pop(owner, None)
            conns = [] if conn is None else [conn]
        for conn in conns:
            conn.close()

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The worker threads of the async methods: no more than the pool's max_size."""
        with self._lock:
            if self.closed:
                raise PoolClosed(f"pool {self.pool.name} is closed")
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.pool.max_size,
                    thread_name_prefix=f"dbpool-{self.config_name}")
            return self._executor

    def check(self, options: Mapping[str, Any]) -> None:
        """Refuse options that differ from those this pool was made with."""
        differing = []
        for key, value in options.items():
            current = self._effective(key)
            if current is _MISSING or current != value:
                differing.append((key, value, current))
        if not differing:
            return
        parts = []
        for key, value, current in differing:
            if any(marker in key.lower() for marker in _SECRET_MARKERS):
                parts.append(f"{key} (differs)")
            elif current is _MISSING:
                parts.append(f"{key}={value!r} (not set on the pool)")
            else:
                parts.append(f"{key}={value!r} (the pool has {current!r})")
        raise ConfigError(
            f"the pool of config {self.config_name!r} already exists with other options: "
            f"{', '.join(parts)}. All ObjDataThreadSafe instances of one config share one pool: "
            f"pass no options to use it, or call ObjDataThreadSafe.close_pool("
            f"{self.config_name!r}) first")

    def _effective(self, key: str) -> Any:
        if key in self.options:
            return self.options[key]
        settings = self.pool.settings
        if key in POOL_OPTION_NAMES:
            return getattr(settings.pool, key)
        if key == "driver":
            return settings.driver
        return settings.params.get(_ALIASES.get(key, key), _MISSING)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self.pool.dispose()


_MISSING: Any = object()


class _Registry:
    """The class-level pools, one per config name, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _PoolEntry] = {}

    def get(self, config_name: str, options: Mapping[str, Any]) -> _PoolEntry:
        if not isinstance(config_name, str):
            raise ConfigError(f"config_name must be a string (got {type(config_name).__name__})")
        with self._lock:
            entry = self._entries.get(config_name)
            if entry is None:
                # Building a pool reads the config file but opens no connection.
                entry = _PoolEntry(config_name, options)
                self._entries[config_name] = entry
                return entry
        entry.check(options)
        return entry

    def find(self, config_name: str) -> _PoolEntry:
        with self._lock:
            entry = self._entries.get(config_name)
            names = sorted(self._entries)
        if entry is None:
            known = ", ".join(repr(name) for name in names) or "none"
            raise PoolError(f"no pool for config {config_name!r} yet (pools exist for: {known}); "
                            "create an ObjDataThreadSafe for it first")
        return entry

    def entries(self, config_name: str | None) -> list[_PoolEntry]:
        with self._lock:
            if config_name is None:
                return list(self._entries.values())
            entry = self._entries.get(config_name)
            return [] if entry is None else [entry]

    def pop(self, config_name: str | None) -> list[_PoolEntry]:
        with self._lock:
            if config_name is None:
                entries = list(self._entries.values())
                self._entries.clear()
                return entries
            entry = self._entries.pop(config_name, None)
            return [] if entry is None else [entry]


_registry = _Registry()


# -- the SQL methods -----------------------------------------------------------------------


class _SqlMethods:
    """The SQL methods of both facades, written once over ``_pinned`` and ``_borrow_from``."""

    config_name: str

    def _pinned(self) -> _Session | None:
        raise NotImplementedError

    def _pin(self, session: _Session | None) -> None:
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
        conn = entry.pool.acquire()
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
        entry = self._borrow_from()
        conn = entry.pool.acquire()
        session = _Session(conn, entry.dialect)
        self._pin(session)
        try:
            with session.block():
                yield self
        finally:
            self._pin(None)
            entry.give_back(conn)


def _given_back(conn: PooledConnection) -> bool:
    try:
        conn.dbapi_connection  # noqa: B018 - raises once the connection was given back
    except PoolError:
        return True
    return False


class ObjData(_SqlMethods):
    """SQL methods over one connection (``DB=conn``), or over the pool of ``config_name``.

    Not to be shared between threads: use one instance per thread, or ObjDataThreadSafe.
    """

    def __init__(self, DB: Any = None, config_name: str = "primary") -> None:
        self.DB = DB
        self.config_name = config_name
        self._entry: _PoolEntry | None = None
        self._fixed: _Session | None = None  # over DB, for the instance's lifetime
        self._own: _Session | None = None  # of a transaction on a borrowed connection
        self._remotes: dict[str, PooledConnection] = {}  # of db_connect_remote
        if DB is None:
            self._entry = _registry.get(config_name, {})
        else:
            self._fixed = _Session(DB, _dialect_of(DB))

    def _pinned(self) -> _Session | None:
        return self._fixed or self._own

    def _pin(self, session: _Session | None) -> None:
        self._own = session

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


# The async transaction each task is in, per pool: statements of the task go to it.
_ASYNC_TX: contextvars.ContextVar[dict[_PoolEntry, _TxThread]] = contextvars.ContextVar(
    "dbpool_async_transactions", default={})  # noqa: B039 - never mutated, only replaced


class ObjDataThreadSafe(_SqlMethods):
    """SQL methods that any number of threads, and asyncio tasks, may call on one instance.

    Each statement borrows a connection from the class-level pool of ``config_name`` and
    gives it back; ``with obj.transaction():`` keeps one for the calling thread until the
    block ends. pool_size and other options (``mode``, ``max_overflow``, connection
    parameters...) build that pool on first use; see ``ConnectionPool``.
    """

    _registry: ClassVar[_Registry] = _registry

    def __init__(self, pool_size: int | None = None, config_name: str = "primary",
                 **options: Any) -> None:
        if pool_size is not None:
            if "size" in options:
                raise ConfigError("pass pool_size or size, not both")
            options["size"] = pool_size
        self.config_name = config_name
        self._entry = self._registry.get(config_name, options)

    @property
    def pool(self) -> ConnectionPool:
        """The class-level pool this instance uses."""
        return self._entry.pool

    def _pinned(self) -> _Session | None:
        session: _Session | None = getattr(self._entry.local, "session", None)
        return session

    def _pin(self, session: _Session | None) -> None:
        self._entry.local.session = session

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
        return self._registry.get(config_name, {}).lend_remote(self)

    def close(self) -> None:
        """Give back the calling thread's ``db_connect_remote`` connections of this instance."""
        for entry in self._registry.entries(None):
            entry.give_back_remotes(self)

    def __enter__(self) -> ObjDataThreadSafe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- class level -----------------------------------------------------------------

    @classmethod
    def get_pool(cls, config_name: str = "primary") -> ConnectionPool:
        """The class-level pool of ``config_name``; PoolError when none was made yet."""
        return cls._registry.find(config_name).pool

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
        for entry in cls._registry.entries(config_name):
            entry.release_thread()

    @classmethod
    def close_pool(cls, config_name: str | None = None) -> None:
        """Dispose of the class-level pool of ``config_name`` (of every config by default).

        Instances made before keep the disposed pool and get PoolClosed; new instances
        make a new pool.
        """
        for entry in cls._registry.pop(config_name):
            entry.close()
            log.debug("closed the class-level pool of config %r", entry.config_name)

    # -- asyncio ---------------------------------------------------------------------

    async def _arun(self, call: Callable[[], _T]) -> _T:
        tx = _ASYNC_TX.get().get(self._entry)
        if tx is not None:
            return await tx.submit(call)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._entry.executor(), call)

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
        return await self._arun(functools.partial(self.sql_executemany, sql,
                                                  list(seq_of_params)))

    async def asql_insert(self, sql: str, params: Params = None) -> int | None:
        """``sql_insert`` on a worker thread."""
        return await self._arun(functools.partial(self.sql_insert, sql, params))

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[ObjDataThreadSafe]:
        """``transaction()`` for asyncio: the task's statements in the block share one connection.

        The block holds one worker thread, which runs its statements in order. Nested
        blocks are savepoints, as in ``transaction()``.
        """
        active = _ASYNC_TX.get()
        tx = active.get(self._entry)
        token = None
        if tx is None:
            tx = _TxThread(asyncio.get_running_loop(), self._entry)
            token = _ASYNC_TX.set({**active, self._entry: tx})
        block = self.transaction()
        try:
            await tx.submit(functools.partial(tx.enter, block))
            try:
                yield self
            except BaseException as exc:
                # Shielded: a task cancelled again must still wait for its rollback.
                await asyncio.shield(tx.submit(functools.partial(tx.exit, block, exc)))
                raise
            await tx.submit(functools.partial(tx.exit, block, None))
        finally:
            if token is not None:
                tx.stop()
                _ASYNC_TX.reset(token)

    def __repr__(self) -> str:
        return f"<ObjDataThreadSafe config {self.config_name!r} pool {self._entry.pool.name}>"


class _TxThread:
    """Runs the statements of one async transaction, in order, on one worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, entry: _PoolEntry) -> None:
        self._loop = loop
        self._entry = entry
        self._open: list[contextlib.AbstractContextManager[Any]] = []  # used by the worker only
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._calls = queue.SimpleQueue()
        entry.executor().submit(self._serve)

    def submit(self, call: Callable[[], _T]) -> asyncio.Future[_T]:
        """Queue ``call``; queued at once, so calls run in the order they were submitted."""
        future: asyncio.Future[_T] = self._loop.create_future()
        self._calls.put((call, future))
        return future

    def stop(self) -> None:
        self._calls.put(None)

    def enter(self, block: contextlib.AbstractContextManager[Any]) -> None:
        """On the worker: open a transaction block."""
        block.__enter__()
        self._open.append(block)

    def exit(self, block: contextlib.AbstractContextManager[Any],
             exc: BaseException | None) -> None:
        """On the worker: close the innermost block, with the exception that ended it."""
        if self._open and self._open[-1] is block:
            self._open.pop()
        if exc is None:
            block.__exit__(None, None, None)
        else:
            block.__exit__(type(exc), exc, exc.__traceback__)

    def _serve(self) -> None:
        while True:
            try:
                item = self._calls.get(timeout=_ABANDON_POLL)
            except queue.Empty:
                if self._loop.is_closed() or self._entry.closed:
                    if self._open:
                        log.warning("an async transaction on config %r lost its event loop "
                                    "or pool; rolling it back", self._entry.config_name)
                    self._unwind()
                    return
                continue
            if item is None:
                self._unwind()  # a block its task left without closing it (cancelled early)
                return
            call, future = item
            try:
                result = call()
            except BaseException as exc:
                self._settle(future, None, exc)
            else:
                self._settle(future, result, None)

    def _settle(self, future: asyncio.Future[Any], result: Any,
                exc: BaseException | None) -> None:
        def settle() -> None:
            if future.done():
                return  # the awaiting task was cancelled
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(settle)

    def _unwind(self) -> None:
        """Roll back the blocks still open, innermost first, and give the connection back."""
        while self._open:
            block = self._open.pop()
            abandoned = PoolError("the async transaction block was abandoned")
            try:
                block.__exit__(PoolError, abandoned, None)
            except Exception as exc:
                log.debug("closing an abandoned transaction block: %s", exc)
