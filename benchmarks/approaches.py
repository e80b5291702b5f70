"""The ways of getting a connection that the benchmark compares, behind one small interface.

Every approach connects with the same settings (``Target.pymysql_params()``,
or their mysql-connector equivalent), autocommit on. Each exposes
``checkout()``, which returns a token and a DB-API connection, and
``checkin(token)``; the benchmark times ``checkout()`` as the acquisition wait.

Bounds: pools get ``size`` idle connections plus ``overflow`` more (10 + 5 by
default). Thread-affine approaches (dbpool persistent, DBUtils' PersistentDB,
a dedicated connection per thread) hold one connection per thread, so their
bound is ``max(size + overflow, threads)``: a persistent pool smaller than its
set of worker threads would leave the extra threads waiting for a thread to
end. See ``BOUNDS`` for what each one does.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pymysql

_pool_names = itertools.count(1)


@dataclass(frozen=True)
class Target:
    """Where and how every approach connects, and the pool bounds of a cell."""

    params: Mapping[str, Any]  # neutral names: host, port, user, password, database, charset
    config: str  # a dbpool config file holding the same entry
    config_name: str
    size: int = 10
    overflow: int = 5
    tls: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def pymysql_params(self) -> dict[str, Any]:
        """The keyword arguments of ``pymysql.connect`` used by every PyMySQL approach."""
        params = {"charset": "utf8mb4", **self.params, "autocommit": True, **self.extra}
        if not self.tls:
            # The server offers no TLS; without this, PyMySQL builds a TLS context
            # (~40 ms of CPU) on every connect only to find that out.
            params["ssl_disabled"] = True
        return params

    def connector_params(self) -> dict[str, Any]:
        """The same settings for mysql-connector (pure-Python protocol)."""
        params = self.pymysql_params()
        params["use_pure"] = True
        return params

    @property
    def max_size(self) -> int:
        return self.size + self.overflow


class Approach:
    """A way to get a connection; built per cell, closed at its end."""

    key = ""
    label = ""
    pooled = True  # compared against in the "ahead of every other pool" target
    thread_affine = False
    driver = "pymysql"

    def __init__(self, target: Target, threads: int) -> None:
        self.target = target
        self.threads = threads

    def checkout(self) -> tuple[Any, Any]:
        """A (token, DB-API connection) pair; the token goes back to ``checkin``."""
        raise NotImplementedError

    def checkin(self, token: Any) -> None:
        raise NotImplementedError

    def thread_end(self) -> None:
        """Called by each worker thread when it is done."""

    def close(self) -> None:
        """Close every connection the approach holds."""

    def bound(self) -> int:
        """The most connections this approach may open at once in this cell."""
        if self.thread_affine:
            return max(self.target.max_size, self.threads)
        return self.target.max_size


class DbpoolShared(Approach):
    key = "dbpool-shared"
    label = "dbpool shared"
    mode = "shared"
    reset = "rollback"

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from dbpool import make_pool

        overflow = self.bound() - target.size
        # The config file holds the same entry; passing every setting as well keeps
        # a ./config.yaml or $DBPOOL_CONFIG of the caller out of the measurement.
        self.pool = make_pool(
            self.mode,
            config=target.config,
            config_name=target.config_name,
            size=target.size,
            max_overflow=overflow,
            timeout=30.0,
            pre_ping=True,
            reset=self.reset,
            **target.pymysql_params(),
        )

    def checkout(self) -> tuple[Any, Any]:
        conn = self.pool.acquire()
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def close(self) -> None:
        self.pool.dispose()


class DbpoolPersistent(DbpoolShared):
    key = "dbpool-persistent"
    label = "dbpool persistent"
    mode = "persistent"
    thread_affine = True


class DbpoolSession(DbpoolShared):
    key = "dbpool-shared-session"
    label = "dbpool shared, reset=session"
    reset = "session"


class DBUtilsPooled(Approach):
    key = "dbutils-pooleddb"
    label = "DBUtils PooledDB"

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from dbutils.pooled_db import PooledDB

        # ping=1: check each connection when it is taken from the pool (the default);
        # reset=True: roll back every connection given back (the default).
        self.db = PooledDB(
            pymysql,
            mincached=0,
            maxcached=target.size,
            maxshared=0,
            maxconnections=target.max_size,
            blocking=True,
            ping=1,
            reset=True,
            **target.pymysql_params(),
        )

    def checkout(self) -> tuple[Any, Any]:
        conn = self.db.connection()
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def close(self) -> None:
        self.db.close()


class DBUtilsPersistent(Approach):
    key = "dbutils-persistentdb"
    label = "DBUtils PersistentDB"
    thread_affine = True

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from dbutils.persistent_db import PersistentDB

        # ping=1 (the default): check the thread's connection on every connection() call.
        self.db = PersistentDB(pymysql, ping=1, closeable=False, **target.pymysql_params())
        self._lock = threading.Lock()
        self._steady: list[Any] = []

    def checkout(self) -> tuple[Any, Any]:
        conn = self.db.connection()
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()  # a no-op: the connection stays with the thread

    def thread_end(self) -> None:
        # Keep the thread's connection to close it with the approach: DBUtils' own
        # thread-local would otherwise close it only when the thread object is collected.
        conn = getattr(self.db.thread, "connection", None)
        if conn is not None:
            with self._lock:
                self._steady.append(conn)

    def close(self) -> None:
        with self._lock:
            steady, self._steady = self._steady, []
        for conn in steady:
            conn._close()


class ConnectPerRequest(Approach):
    key = "connect-per-request"
    label = "pymysql connect per request"
    pooled = False

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        self.params = target.pymysql_params()

    def checkout(self) -> tuple[Any, Any]:
        conn = pymysql.connect(**self.params)
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def bound(self) -> int:
        return self.threads


class GlobalLock(Approach):
    key = "global-lock"
    label = "one pymysql connection + lock"
    pooled = False

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        self.lock = threading.Lock()
        self.conn = pymysql.connect(**target.pymysql_params())

    def checkout(self) -> tuple[Any, Any]:
        self.lock.acquire()
        return None, self.conn

    def checkin(self, token: Any) -> None:
        self.lock.release()

    def close(self) -> None:
        self.conn.close()

    def bound(self) -> int:
        return 1


class Dedicated(Approach):
    key = "dedicated"
    label = "dedicated connection per thread (ceiling)"
    pooled = False
    thread_affine = True

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        self.params = target.pymysql_params()
        self.local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def checkout(self) -> tuple[Any, Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = pymysql.connect(**self.params)
            with self._lock:
                self._all.append(conn)
        return None, conn

    def checkin(self, token: Any) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def bound(self) -> int:
        return self.threads


class SQLAlchemyQueuePool(Approach):
    key = "sqlalchemy-queuepool"
    label = "SQLAlchemy QueuePool"
    pre_ping = False

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from sqlalchemy import create_engine

        params = target.pymysql_params()

        def creator() -> Any:
            return pymysql.connect(**params)

        # The engine's QueuePool, used at the DB-API level (engine.pool.connect()),
        # so no SQL layer runs; the engine only lends its dialect for pre_ping.
        # Its default reset on return is a rollback.
        self.engine = create_engine(
            "mysql+pymysql://",
            creator=creator,
            pool_size=target.size,
            max_overflow=target.overflow,
            pool_timeout=30,
            pool_pre_ping=self.pre_ping,
        )
        self.pool = self.engine.pool

    def checkout(self) -> tuple[Any, Any]:
        conn = self.pool.connect()
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def close(self) -> None:
        self.engine.dispose()


class SQLAlchemyQueuePoolPrePing(SQLAlchemyQueuePool):
    key = "sqlalchemy-queuepool-preping"
    label = "SQLAlchemy QueuePool, pre_ping"
    pre_ping = True


class PyMySQLPool(Approach):
    key = "pymysql-pool"
    label = "pymysql-pool"

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        import pymysqlpool

        params = target.pymysql_params()
        autocommit = params.pop("autocommit")
        self.pool = pymysqlpool.ConnectionPool(
            size=target.size,
            maxsize=target.max_size,
            pre_create_num=0,
            name=f"bench{next(_pool_names)}",
            autocommit=autocommit,
            **params,
        )

    def checkout(self) -> tuple[Any, Any]:
        # pre_ping: validation on. It waits for a free connection by sleeping
        # retry_interval between tries; 10 tries is its hard limit.
        conn = self.pool.get_connection(retry_num=10, retry_interval=0.1, pre_ping=True)
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def close(self) -> None:
        while True:
            try:
                conn = self.pool._pool.pop()
            except IndexError:
                break
            conn._pool = None
            pymysql.connections.Connection.close(conn)  # past the pool's own close()


class ConnectorPool(Approach):
    key = "mysql-connector-pool"
    label = "mysql-connector pooling"
    driver = "mysql-connector"

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from mysql.connector.pooling import MySQLConnectionPool

        # A fixed pool of size + overflow connections, all opened when it is built.
        # get_connection() fails at once when all are lent, so a semaphore of the
        # same size makes callers wait instead, as an application would have to.
        self.pool = MySQLConnectionPool(
            pool_size=target.max_size,
            pool_name=f"bench{next(_pool_names)}",
            **target.connector_params(),
        )
        self.free = threading.BoundedSemaphore(target.max_size)

    def checkout(self) -> tuple[Any, Any]:
        self.free.acquire()
        try:
            conn = self.pool.get_connection()
        except BaseException:
            self.free.release()
            raise
        return conn, conn

    def checkin(self, token: Any) -> None:
        try:
            token.close()
        finally:
            self.free.release()

    def close(self) -> None:
        self.pool._remove_connections()


APPROACHES: tuple[type[Approach], ...] = (
    DbpoolShared,
    DbpoolPersistent,
    DbpoolSession,
    DBUtilsPooled,
    DBUtilsPersistent,
    SQLAlchemyQueuePool,
    SQLAlchemyQueuePoolPrePing,
    PyMySQLPool,
    ConnectorPool,
    ConnectPerRequest,
    GlobalLock,
    Dedicated,
)
BY_KEY: dict[str, type[Approach]] = {cls.key: cls for cls in APPROACHES}
CEILING = Dedicated.key
DBPOOL_KEYS = (DbpoolShared.key, DbpoolPersistent.key)

BOUNDS: dict[str, str] = {
    DbpoolShared.key: "size 10 + max_overflow 5",
    DbpoolPersistent.key: "one per thread, max_size = max(15, threads)",
    DbpoolSession.key: "size 10 + max_overflow 5",
    DBUtilsPooled.key: "maxcached 10, maxconnections 15, blocking",
    DBUtilsPersistent.key: "one per thread (PersistentDB has no bound)",
    SQLAlchemyQueuePool.key: "pool_size 10 + max_overflow 5",
    SQLAlchemyQueuePoolPrePing.key: "pool_size 10 + max_overflow 5",
    PyMySQLPool.key: "size 10, maxsize 15 (waits by retrying every 0.1 s, 10 tries)",
    ConnectorPool.key: "pool_size 15, opened up front; a semaphore of 15 makes callers wait",
    ConnectPerRequest.key: "one per thread, opened and closed per request",
    GlobalLock.key: "1, behind a lock",
    Dedicated.key: "one per thread, opened once, never checked",
}


def select(keys: list[str] | None) -> list[type[Approach]]:
    """The approaches named by ``keys`` (all when None), in the standard order."""
    if not keys:
        return list(APPROACHES)
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise ValueError(f"unknown approach {', '.join(unknown)}; valid: {', '.join(BY_KEY)}")
    return [cls for cls in APPROACHES if cls.key in keys]
