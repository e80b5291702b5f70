"""Checkout + return cost of the pools themselves, over a driver that does no I/O."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
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


def _dbpool(mode: str, config: str, config_name: str) -> Pool:
    from dbpool import make_pool

    pool = make_pool(
        mode,
        driver=FakeDriver(),
        config=config,
        config_name=config_name,
        size=10,
        max_overflow=5,
        pre_ping=True,
        reset="rollback",
    )
    return pool.acquire, lambda conn: conn.close(), pool.dispose


def _pooled_db(config: str, config_name: str) -> Pool:
    from dbutils.pooled_db import PooledDB

    db = PooledDB(
        FakeModule,
        mincached=0,
        maxcached=10,
        maxshared=0,
        maxconnections=15,
        blocking=True,
        ping=1,
        reset=True,
    )
    return db.connection, lambda conn: conn.close(), db.close


def _persistent_db(config: str, config_name: str) -> Pool:
    from dbutils.persistent_db import PersistentDB

    db = PersistentDB(FakeModule, ping=1, closeable=False)
    return db.connection, lambda conn: conn.close(), lambda: None


def _queue_pool(pre_ping: bool) -> Callable[[str, str], Pool]:
    def build(config: str, config_name: str) -> Pool:
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
        return pool.connect, lambda conn: conn.close(), pool.dispose

    return build


MICRO: dict[str, tuple[str, Callable[[str, str], Pool]]] = {
    "dbpool-shared": ("dbpool shared", lambda c, n: _dbpool("shared", c, n)),
    "dbpool-persistent": ("dbpool persistent", lambda c, n: _dbpool("persistent", c, n)),
    "dbutils-pooleddb": ("DBUtils PooledDB (ping=1)", _pooled_db),
    "dbutils-persistentdb": ("DBUtils PersistentDB (ping=1)", _persistent_db),
    "sqlalchemy-queuepool": ("SQLAlchemy QueuePool", _queue_pool(False)),
    "sqlalchemy-queuepool-preping": ("SQLAlchemy QueuePool, pre_ping", _queue_pool(True)),
}
# dbpool's mode -> the raw DBUtils class it is compared with.
REFERENCE = {"dbpool-shared": "dbutils-pooleddb", "dbpool-persistent": "dbutils-persistentdb"}


def measure(
    key: str, threads: int, operations: int, config: str, config_name: str, profiler: Any = None
) -> dict[str, Any]:
    """Nanoseconds of wall time per checkout + return, ``operations`` in all over ``threads``."""
    _, build = MICRO[key]
    acquire, release, dispose = build(config, config_name)
    per_thread = max(1, operations // threads)
    start = threading.Barrier(threads + 1)
    failures: list[str] = []

    def loop() -> None:
        try:
            for _ in range(min(200, per_thread)):  # warm-up: connections opened, caches filled
                release(acquire())
            start.wait()
            for _ in range(per_thread):
                release(acquire())
            start.wait()
        except Exception as exc:
            failures.append(repr(exc))
            start.abort()

    run = loop if profiler is None else profiler.wrap(loop)
    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    elapsed = None
    try:
        start.wait()
        t0 = time.perf_counter()
        start.wait()
        elapsed = time.perf_counter() - t0
    except threading.BrokenBarrierError:
        pass
    for worker in workers:
        worker.join(60)
    dispose()
    total = per_thread * threads
    return {
        "approach": key,
        "threads": threads,
        "operations": total,
        "ns_per_op": elapsed / total * 1e9 if elapsed is not None else None,
        "errors": len(failures),
        "first_error": failures[0] if failures else None,
    }
