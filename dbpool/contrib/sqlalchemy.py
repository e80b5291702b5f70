"""SQLAlchemy engines whose DB-API connections come from a dbpool pool.

``create_engine(pool)`` gives an ``Engine`` with the dialect of the pool's
driver (``mysql+pymysql``, ``mysql+mysqlconnector``, ``sqlite``). dbpool bounds,
validates, recycles and resets the connections, so SQLAlchemy's own pooling is
replaced by ``DBPoolSource``, a ``NullPool`` that borrows a connection from the
dbpool pool at each checkout and gives it back at each checkin:

- SQLAlchemy never closes a driver connection: where it would (at checkin, or
  when it invalidates a connection after a disconnect error), the connection
  goes back to dbpool, which rolls back an open transaction, and closes one
  that is broken.
- Nothing is sent at checkin beyond what dbpool sends (a ``ROLLBACK`` only when
  the server reports a transaction): SQLAlchemy's reset on return and pre-ping
  are off. SQLAlchemy also ends each of its transactions with the driver's
  ``commit()`` or ``rollback()``, even when the server has none open (autocommit
  on, or nothing run yet); the engine skips that call then, as dbpool does at
  return, which under autocommit saves one round trip per request.
- SQLAlchemy prepares each new DB-API connection (the dialect's connect hooks:
  PyMySQL's ``SET NAMES``, an ``isolation_level``...). A plain ``NullPool``
  would do that at every checkout; here it is done once per server connection
  and engine, the first time dbpool lends it to the engine.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any

from sqlalchemy import URL
from sqlalchemy import create_engine as _sa_create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.pool.base import _ConnectionRecord

from dbpool import ConnectionPool, PooledConnection

__all__ = ["DBPoolSource", "create_engine", "engine_url"]

_DIALECTS = {
    "pymysql": "mysql+pymysql",
    "mysql-connector": "mysql+mysqlconnector",
    "sqlite": "sqlite",
}
# SQLAlchemy's pooling options: dbpool's own options do these jobs.
_POOL_ARGUMENTS = (
    "pool",
    "poolclass",
    "creator",
    "pool_size",
    "max_overflow",
    "pool_timeout",
    "pool_recycle",
    "pool_pre_ping",
    "pool_use_lifo",
    "pool_reset_on_return",
    "async_creator",
)
_SERVER_STATUS_IN_TRANS = 0x0001  # the MySQL protocol's server-status bit


def _driver_connection(connection: Any) -> Any:
    # SQLAlchemy passes its proxy of the driver connection, or the driver connection.
    return getattr(connection, "dbapi_connection", None) or connection


def _server_in_transaction(raw: Any) -> bool:
    """Whether the server reports an open transaction on a driver connection of the pool."""
    status = getattr(raw, "server_status", None)
    if isinstance(status, int):
        # PyMySQL: dbpool's connections read the status from every reply (even the
        # end of a result set), and set the bit after an error reply.
        return bool(status & _SERVER_STATUS_IN_TRANS)
    return bool(getattr(raw, "in_transaction", True))  # mysql-connector, sqlite3


def _end_only_open_transactions(dialect: Any) -> None:
    """Make the dialect's commit and rollback skip the round trip when no transaction is open.

    Neither statement does anything on the server then; savepoints are SQL
    statements of their own and are not affected.
    """
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        if _server_in_transaction(_driver_connection(connection)):
            commit(connection)

    def do_rollback(connection: Any) -> None:
        if _server_in_transaction(_driver_connection(connection)):
            rollback(connection)

    dialect.do_commit, dialect.do_rollback = do_commit, do_rollback


def engine_url(pool: ConnectionPool) -> URL:
    """The URL an engine on ``pool`` shows: its dialect and target, never the password."""
    settings = pool.settings
    dialect = _DIALECTS[settings.driver]
    params = settings.params
    if dialect == "sqlite":
        return URL.create(dialect, database=str(params.get("path", "")))
    return URL.create(
        dialect,
        username=params.get("user"),
        host=params.get("host"),
        port=params.get("port"),
        database=params.get("database"),
    )


class DBPoolSource(NullPool):
    """A SQLAlchemy pool that lends the connections of a dbpool ``ConnectionPool``."""

    def __init__(
        self, pool: ConnectionPool, *, prepared: weakref.WeakSet[Any] | None = None, **kw: Any
    ) -> None:
        self.dbpool = pool
        # Driver connections this engine has run its connect hooks on.
        self._prepared: weakref.WeakSet[Any] = weakref.WeakSet() if prepared is None else prepared
        self._leases: dict[int, PooledConnection] = {}  # by id() of the checked-out record
        self._pending = threading.local()  # the lease the creator hands to a new record
        kw.setdefault("reset_on_return", None)
        kw.setdefault("pre_ping", False)
        super().__init__(self._lent_connection, **kw)

    def status(self) -> str:
        stats = self.dbpool.get_stats()
        return (
            f"DBPoolSource {self.dbpool.name}: {stats['in_use']} in use, "
            f"{stats['pool_size']} idle, max {stats['max_size']}"
        )

    def _lent_connection(self) -> Any:
        lease: PooledConnection = self._pending.lease
        return lease.dbapi_connection

    def _do_get(self) -> ConnectionPoolEntry:
        lease = self.dbpool.acquire()
        try:
            raw = lease.dbapi_connection
            if raw in self._prepared:
                # Prepared when first lent to this engine: no connect hooks again.
                record = _ConnectionRecord(self, connect=False)
                record.dbapi_connection = raw
                record.starttime = time.time()
            else:
                # A new record runs the creator and the connect hooks (and, once per
                # engine, the dialect's first-connect initialization).
                self._pending.lease = lease
                try:
                    record = _ConnectionRecord(self)
                finally:
                    self._pending.lease = None
                with contextlib.suppress(TypeError):
                    # sqlite3 connections take no weak reference: they are prepared at
                    # every checkout, which for SQLite costs no round trip.
                    self._prepared.add(raw)
        except BaseException:
            lease.close()
            raise
        self._leases[id(record)] = lease
        return record

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        lease = self._leases.pop(id(record), None)
        if lease is not None:
            lease.close()  # dbpool rolls back an open transaction, closes a broken connection

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        # Called where SQLAlchemy would close a driver connection (an invalidation,
        # a failed connect hook): it stays dbpool's, which checks it when it comes back.
        return None

    def recreate(self) -> DBPoolSource:
        self.logger.info("Pool recreating")
        return self.__class__(
            self.dbpool,
            prepared=self._prepared,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )


def create_engine(pool: ConnectionPool, **kw: Any) -> Engine:
    """A SQLAlchemy ``Engine`` on ``pool``, with the dialect of the pool's driver.

    Keyword arguments go to ``sqlalchemy.create_engine()``, except its pooling
    options (``poolclass``, ``pool_size``, ``pool_pre_ping``...): dbpool's own
    options do those jobs. ``engine.dispose()`` leaves the dbpool pool open.
    """
    if not isinstance(pool, ConnectionPool):
        raise TypeError(f"create_engine() needs a dbpool ConnectionPool (got {pool!r})")
    given = sorted(name for name in _POOL_ARGUMENTS if name in kw)
    if given:
        raise TypeError(
            f"create_engine() takes no SQLAlchemy pooling option ({', '.join(given)}): "
            "the dbpool pool bounds, validates, recycles and resets its connections; "
            "set its options instead"
        )
    url = kw.pop("url", None) or engine_url(pool)
    engine = _sa_create_engine(url, pool=DBPoolSource(pool), **kw)
    _end_only_open_transactions(engine.dialect)
    return engine
