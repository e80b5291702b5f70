"""Checkout + return cost of the pools themselves: over a live PyMySQL connection, and over
a driver that does no I/O.

The live set is what the targets compare: dbpool's two modes (validation on,
``reset="rollback"``) against DBUtils' own cycles on the same connections,
``PooledDB.connection()`` + ``close()`` and ``PersistentDB.connection()``, with
DBUtils' ping and reset off (dbpool does those itself, outside DBUtils), and
against one ``TCP_INFO`` read of a live socket, the look dbpool's validation takes.
No query runs: a loop of checkout + return, timed over all threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dbpool.drivers import Driver


class FakeError(Exception):
    pass


class FakeCursor:
    def execute(self, sql: str, params: Any = None) -> int:
        return 1

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [(1,)]

    def close(self) -> None:
        pass


class FakeConnection:
    """A DB-API connection that lives in memory; every call returns at once."""

    in_transaction = False

    def cursor(self) -> FakeCursor:
        return FakeCursor()

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def ping(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


class FakeModule:
    """Stands for a DB-API module (what DBUtils and SQLAlchemy's creator get)."""

    apilevel = "2.0"
    threadsafety = 1
    paramstyle = "format"
    Error = OperationalError = InterfaceError = InternalError = FakeError

    @staticmethod
    def connect(*args: Any, **kwargs: Any) -> FakeConnection:
        return FakeConnection()


class FakeDriver(Driver):
    """The dbpool adapter of FakeModule: its socket check always passes, as on a live socket."""

    name = "fake"
    errors = (FakeError,)

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> FakeConnection:
        return FakeConnection()

    def probe(self, raw: Any) -> bool | None:
        return True

    def describe(self, params: Mapping[str, Any]) -> str:
        return "fake://"


Pool = tuple[Callable[[], Any], Callable[[Any], None], Callable[[], None]]


@dataclass(frozen=True)
class Context:
    """Where the micro measurements connect: a config file with a fake and a live entry."""

    config: str
    fake_name: str = "fake"
    live_name: str = "bench"
    params: Mapping[str, Any] = field(default_factory=dict)  # live PyMySQL connect arguments


def _close(conn: Any) -> None:
    conn.close()


def _dbpool(mode: str, ctx: Context, *, live: bool = False) -> Pool:
    """dbpool in ``mode``, validation on, ``reset="rollback"``: over FakeDriver, or live."""
    from dbpool import make_pool

    where: dict[str, Any] = (
        {"config_name": ctx.live_name, **ctx.params}
        if live
        else {"config_name": ctx.fake_name, "driver": FakeDriver()}
    )
    pool = make_pool(
        mode,
        config=ctx.config,
        size=10,
        max_overflow=5,
        pre_ping=True,
        reset="rollback",
        **where,
    )
    return pool.acquire, _close, pool.dispose


def _pooled_db_of(module: Any, *, ping: int, reset: bool, **params: Any) -> Pool:
    """DBUtils' PooledDB with dbpool's bounds (10 cached, 15 in all), blocking."""
    from dbutils.pooled_db import PooledDB

    db = PooledDB(
        module,
        mincached=0,
        maxcached=10,
        maxshared=0,
        maxconnections=15,
        blocking=True,
        ping=ping,
        reset=reset,
        **params,
    )
    return db.connection, _close, db.close


def _pooled_db(ctx: Context) -> Pool:
    return _pooled_db_of(FakeModule, ping=1, reset=True)


def _persistent_db(ctx: Context) -> Pool:
    from dbutils.persistent_db import PersistentDB

    db = PersistentDB(FakeModule, ping=1, closeable=False)
    return db.connection, _close, lambda: None


def _queue_pool(pre_ping: bool) -> Callable[[Context], Pool]:
    def build(ctx: Context) -> Pool:
        from sqlalchemy.pool import QueuePool

        kwargs: dict[str, Any] = {}
        if pre_ping:
            from sqlalchemy.pool.base import _ConnDialect

            class PingDialect(_ConnDialect):
                # What a dialect's do_ping does for a DB-API connection with ping().
                def _do_ping_w_event(self, dbapi_connection: Any) -> bool:
                    dbapi_connection.ping(False)
                    return True

            kwargs["dialect"] = PingDialect()
        pool = QueuePool(
            FakeModule.connect,
            pool_size=10,
            max_overflow=5,
            timeout=30,
            pre_ping=pre_ping,
            **kwargs,
        )
        return pool.connect, _close, pool.dispose

    return build


def _pooled_db_live(ctx: Context) -> Pool:
    import pymysql

    return _pooled_db_of(pymysql, ping=0, reset=False, **ctx.params)


def _persistent_db_live(ctx: Context) -> Pool:
    import pymysql
    from dbutils.persistent_db import PersistentDB

    # threading.local, as dbpool uses: DBUtils' default pure-Python local is slower.
    db = PersistentDB(pymysql, ping=0, closeable=False, threadlocal=threading.local, **ctx.params)
    return db.connection, _close, lambda: None


def _tcp_info(ctx: Context) -> Pool:
    import socket

    import pymysql

    conn = pymysql.connect(**ctx.params)
    sock = conn._sock
    level, option = socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", None)
    if option is None:
        conn.close()
        raise RuntimeError("this system has no TCP_INFO")

    def read() -> Any:
        return sock.getsockopt(level, option, 1)

    return read, lambda _: None, conn.close


# The checkouts with a live connection, which the targets are about.
LIVE: dict[str, tuple[str, Callable[[Context], Pool]]] = {
    "dbpool-shared": ("dbpool shared", lambda ctx: _dbpool("shared", ctx, live=True)),
    "dbpool-persistent": ("dbpool persistent", lambda ctx: _dbpool("persistent", ctx, live=True)),
    "dbutils-pooleddb": ("DBUtils PooledDB cycle (ping=0, reset=False)", _pooled_db_live),
    "dbutils-persistentdb": (
        "DBUtils PersistentDB cycle (ping=0, threading.local)",
        _persistent_db_live,
    ),
    "tcp-info": ("one TCP_INFO read of a live socket", _tcp_info),
}
# dbpool's mode -> (the DBUtils costs it is compared with, summed; the target ratio).
LIVE_REFERENCE: dict[str, tuple[tuple[str, ...], float]] = {
    "dbpool-shared": (("dbutils-pooleddb",), 2.0),
    "dbpool-persistent": (("dbutils-persistentdb", "tcp-info"), 2.5),
}

# The same pools over a driver that does no I/O (DBUtils with its defaults, ping=1).
MICRO: dict[str, tuple[str, Callable[[Context], Pool]]] = {
    "dbpool-shared": ("dbpool shared", lambda ctx: _dbpool("shared", ctx)),
    "dbpool-persistent": ("dbpool persistent", lambda ctx: _dbpool("persistent", ctx)),
    "dbutils-pooleddb": ("DBUtils PooledDB (ping=1)", _pooled_db),
    "dbutils-persistentdb": ("DBUtils PersistentDB (ping=1)", _persistent_db),
    "sqlalchemy-queuepool": ("SQLAlchemy QueuePool", _queue_pool(False)),
    "sqlalchemy-queuepool-preping": ("SQLAlchemy QueuePool, pre_ping", _queue_pool(True)),
}
# dbpool's mode -> the raw DBUtils class it is compared with.
REFERENCE = {"dbpool-shared": "dbutils-pooleddb", "dbpool-persistent": "dbutils-persistentdb"}


def measure(
    key: str,
    threads: int,
    operations: int,
    ctx: Context,
    *,
    live: bool = False,
    profiler: Any = None,
) -> dict[str, Any]:
    """Nanoseconds per checkout + return, ``operations`` in all over ``threads``.

    Wall time, and the process's CPU time, from the moment every thread is ready
    until the last is done, over the total checkouts.
    """
    _, build = (LIVE if live else MICRO)[key]
    acquire, release, dispose = build(ctx)
    per_thread = max(1, operations // threads)
    # The clock starts before the workers are let go, not when this thread wakes from a
    # barrier: a worker holding the GIL would run for up to a switch interval (5 ms,
    # thousands of cycles) before this thread could read the clock.
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    done = threading.Barrier(threads + 1)
    failures: list[str] = []

    def loop() -> None:
        try:
            for _ in range(min(200, per_thread)):  # warm-up: connections opened, caches filled
                release(acquire())
            ready.wait()
            go.wait()
            for _ in range(per_thread):
                release(acquire())
            done.wait()
        except Exception as exc:
            failures.append(repr(exc))
            ready.abort()
            done.abort()

    run = loop if profiler is None else profiler.wrap(loop)
    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    elapsed = cpu = None
    try:
        ready.wait()
        c0 = time.process_time()
        t0 = time.perf_counter()
        go.set()
        done.wait()  # every worker is blocked here or gone: nothing delays the readings
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    except threading.BrokenBarrierError:
        go.set()
    for worker in workers:
        worker.join(60)
    dispose()
    total = per_thread * threads
    return {
        "approach": key,
        "live": live,
        "threads": threads,
        "operations": total,
        "ns_per_op": elapsed / total * 1e9 if elapsed is not None else None,
        "cpu_ns_per_op": cpu / total * 1e9 if cpu is not None else None,
        "errors": len(failures),
        "first_error": failures[0] if failures else None,
    }
