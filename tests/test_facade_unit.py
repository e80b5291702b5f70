"""ObjData and ObjDataThreadSafe on SQLite and on the fake driver: no server needed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dbpool import (
    ConfigError,
    ObjData,
    ObjDataThreadSafe,
    PoolClosed,
    PoolError,
    PoolTimeout,
    make_pool,
)
from tests.fakedb import FakeConnection, FakeCursor, FakeDriver

NASTY = [
    "'; DROP TABLE items; --",
    "Robert'); DELETE FROM items WHERE ('1'='1",
    '" OR "1"="1',
    "back\\slash \\' \\\" \\\\",
    "%s %(name)s %% %d ? :name",
    "naïve 北京 🙂",
    "line\nbreak\ttab",
    "",
]


def make_db(mode: str = "shared", **options: Any) -> ObjDataThreadSafe:
    db = ObjDataThreadSafe(mode=mode, path="./facade.sqlite3", **options)
    db.sql_execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
    return db


def names(db: Any) -> list[str]:
    return [row[0] for row in db.sql_get_values("SELECT name FROM items ORDER BY id")]


def committed_names(path: Path) -> list[str]:
    """What another connection sees: only committed rows."""
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM items ORDER BY id")]
    finally:
        conn.close()


# -- SQL methods and placeholders ------------------------------------------------------


def test_sql_methods(pool_mode: str) -> None:
    db = make_db(pool_mode)
    first = db.sql_insert("INSERT INTO items (name) VALUES (%s)", ("a",))
    second = db.sql_insert("INSERT INTO items (name) VALUES (%(name)s)", {"name": "b"})
    assert (first, second) == (1, 2)
    assert db.sql_executemany("INSERT INTO items (name) VALUES (%s)", (("c",), ("d",), ("e",))) == 3
    assert db.sql_executemany("INSERT INTO items (name) VALUES (%s)", []) == 0
    assert db.sql_execute("UPDATE items SET name = %s WHERE id > %s", ("z", 3)) == 2
    assert db.sql_get_values("SELECT id, name FROM items WHERE id <= %s ORDER BY id", (2,)) == [
        (1, "a"),
        (2, "b"),
    ]
    assert db.sql_get_dicts("SELECT id, name FROM items WHERE id = %s", (1,)) == [
        {"id": 1, "name": "a"}
    ]
    assert db.sql_get_value("SELECT COUNT(*) FROM items") == 5
    assert db.sql_get_value("SELECT name FROM items WHERE id = %s", (99,)) is None
    assert db.sql_get_value("SELECT name FROM items WHERE id = %s", (99,), default="-") == "-"
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["acquired"] == stats["released"]
    assert stats["in_use"] == 0


def test_placeholders_follow_pymysql_rules_on_sqlite() -> None:
    db = make_db()
    # With parameters, %% is a literal percent sign, as with PyMySQL.
    assert db.sql_get_value("SELECT 'a%%' || %s", ("b",)) == "a%b"
    # Without parameters nothing is interpreted, as with PyMySQL.
    assert db.sql_get_value("SELECT 'a%%'") == "a%%"
    # SQLite's own placeholders still work when no %-placeholder is used.
    assert db.sql_get_value("SELECT ? || ?", ("x", "y")) == "xy"
    assert db.sql_get_value("SELECT :a || :b", {"a": "x", "b": "y"}) == "xy"
    assert db.sql_get_value("SELECT 'a%' || ?", ("b",)) == "a%b"
    with pytest.raises(TypeError, match="sql must be a string"):
        db.sql_get_values(b"SELECT 1", ())  # type: ignore[arg-type]


def test_injection_strings_are_stored_literally(pool_mode: str) -> None:
    db = make_db(pool_mode)
    for text in NASTY:
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", (text,))
    assert names(db) == NASTY
    for text in NASTY:
        assert db.sql_get_value("SELECT COUNT(*) FROM items WHERE name = %s", (text,)) == 1
    # The table is still there and nothing else was touched.
    assert db.sql_get_value("SELECT COUNT(*) FROM items") == len(NASTY)


# -- the class-level pool ----------------------------------------------------------------


def test_instances_of_one_config_share_one_pool() -> None:
    first = make_db(size=2, max_overflow=1)
    second = ObjDataThreadSafe()
    third = ObjDataThreadSafe(pool_size=2, max_overflow=1)  # the same options: fine
    assert first.pool is second.pool is third.pool is ObjDataThreadSafe.get_pool()
    assert second.sql_get_value("SELECT COUNT(*) FROM items") == 0
    assert ObjDataThreadSafe.get_pool_stats()["max_size"] == 3


def test_different_options_for_an_existing_pool_are_an_error() -> None:
    make_db(size=2)
    with pytest.raises(ConfigError, match=r"size=20 \(the pool has 2\).*close_pool\('primary'\)"):
        ObjDataThreadSafe(pool_size=20)
    with pytest.raises(ConfigError, match=r"mode='persistent' \(the pool has 'shared'\)"):
        ObjDataThreadSafe(mode="persistent")
    with pytest.raises(ConfigError) as info:
        ObjDataThreadSafe(password="hunter2-secret")
    assert "password (differs)" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="pool_size or size"):
        ObjDataThreadSafe(pool_size=2, size=2)
    # After close_pool the name is free for other options.
    ObjDataThreadSafe.close_pool("primary")
    assert ObjDataThreadSafe(pool_size=20, path="./other.sqlite3").pool.size == 20


def test_bad_options_fail_and_leave_no_pool() -> None:
    with pytest.raises(ConfigError, match="size"):
        ObjDataThreadSafe(pool_size=-1, path="./x.sqlite3")
    with pytest.raises(
        PoolError,
        match=r"no pool for config 'primary' yet \(pools exist for: "
        r"none\)",
    ):
        ObjDataThreadSafe.get_pool_stats()
    assert ObjDataThreadSafe(pool_size=1, path="./x.sqlite3").pool.size == 1


def test_close_pool_disposes_and_frees_the_name() -> None:
    db = make_db()
    db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
    pool = db.pool
    ObjDataThreadSafe.close_pool()
    assert pool.get_stats()["total_connections"] == 0
    with pytest.raises(PoolClosed):
        db.sql_get_values("SELECT 1")
    fresh = make_db()
    assert fresh.pool is not pool
    assert names(fresh) == ["a"]


def test_named_configs(cwd: Path) -> None:
    (cwd / "config.yaml").write_text(
        "database:\n"
        "  primary: {driver: sqlite, path: one.sqlite3}\n"
        "  secondary: {driver: sqlite, path: two.sqlite3, pool: {size: 2, max_overflow: 0}}\n"
    )
    one = ObjDataThreadSafe()
    two = ObjDataThreadSafe(config_name="secondary")
    assert one.pool is not two.pool
    assert two.pool.max_size == 2
    one.sql_execute("CREATE TABLE t (x TEXT)")
    two.sql_execute("CREATE TABLE t (x TEXT)")
    one.sql_execute("INSERT INTO t VALUES (%s)", ("one",))
    two.sql_execute("INSERT INTO t VALUES (%s)", ("two",))
    assert one.sql_get_values("SELECT x FROM t") == [("one",)]
    assert two.sql_get_values("SELECT x FROM t") == [("two",)]
    assert ObjDataThreadSafe.get_pool_stats("secondary")["max_size"] == 2
    with ObjData() as data:
        remote = data.db_connect_remote("secondary")
        assert data.db_connect_remote("secondary") is remote  # kept until given back
        cur = remote.cursor()
        cur.execute("SELECT x FROM t")
        assert cur.fetchall() == [("two",)]
        cur.close()
        assert ObjDataThreadSafe.get_pool_stats("secondary")["in_use"] == 1
    assert ObjDataThreadSafe.get_pool_stats("secondary")["in_use"] == 0
    with pytest.raises(ConfigError, match="unknown"):
        ObjDataThreadSafe(config_name="unknown")


# -- transactions ---------------------------------------------------------------------


def test_transaction_commits_at_the_end(cwd: Path, pool_mode: str) -> None:
    db = make_db(pool_mode)
    with db.transaction() as tx:
        assert tx is db
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
        db.sql_insert("INSERT INTO items (name) VALUES (%s)", ("b",))
        assert names(db) == ["a", "b"]  # the block sees its own work
        assert committed_names(cwd / "facade.sqlite3") == []  # nobody else does yet
        assert db.pool.get_stats()["in_use"] == 1
    assert committed_names(cwd / "facade.sqlite3") == ["a", "b"]
    assert db.pool.get_stats()["in_use"] == 0


def test_transaction_rolls_back_on_an_exception(cwd: Path, pool_mode: str) -> None:
    db = make_db(pool_mode)
    with pytest.raises(KeyError), db.transaction():
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
        raise KeyError("boom")
    assert names(db) == []
    assert db.pool.get_stats()["in_use"] == 0


def test_nested_blocks_are_savepoints(cwd: Path, pool_mode: str) -> None:
    db = make_db(pool_mode)
    with db.transaction():
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("outer",))
        with db.transaction():
            db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("kept",))
        with pytest.raises(ValueError), db.transaction():
            db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("undone",))
            with db.transaction():
                db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("undone too",))
            raise ValueError
        assert committed_names(cwd / "facade.sqlite3") == []
    assert committed_names(cwd / "facade.sqlite3") == ["outer", "kept"]
    # An inner failure that is not caught undoes the whole transaction.
    with pytest.raises(ValueError), db.transaction():
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("gone",))
        with db.transaction():
            raise ValueError
    assert committed_names(cwd / "facade.sqlite3") == ["outer", "kept"]


def test_each_thread_has_its_own_transaction(cwd: Path) -> None:
    db = make_db()
    inside = threading.Event()
    resume = threading.Event()
    seen: list[int] = []

    def other() -> None:
        inside.wait(5)
        # Not part of the main thread's open transaction: it runs on its own connection.
        seen.append(db.sql_get_value("SELECT COUNT(*) FROM items"))
        resume.set()

    thread = threading.Thread(target=other)
    thread.start()
    with db.transaction():
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
        inside.set()
        assert resume.wait(5)
    thread.join(5)
    assert seen == [0]
    assert names(db) == ["a"]


class _NoRollbackToCursor(sqlite3.Cursor):
    def execute(self, sql: str, *params: Any) -> Any:  # type: ignore[override]
        if sql.startswith("ROLLBACK TO"):
            raise sqlite3.OperationalError("no such savepoint")
        return super().execute(sql, *params)


class _FailingRollbackTo(sqlite3.Connection):
    """A sqlite3 connection whose ROLLBACK TO SAVEPOINT fails, as on a broken server."""

    def cursor(self, factory: Any = _NoRollbackToCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)


def test_a_nested_block_that_cannot_be_undone_dooms_the_transaction(cwd: Path) -> None:
    make_db()
    raw = sqlite3.connect(cwd / "facade.sqlite3", factory=_FailingRollbackTo)
    data = ObjData(DB=raw)
    with pytest.raises(PoolError, match="nested block"), data.transaction():
        data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("outer",))
        with pytest.raises(ValueError), data.transaction():
            data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("inner",))
            raise ValueError
        with pytest.raises(PoolError, match="rolled back"):
            data.sql_get_values("SELECT 1")
    assert committed_names(cwd / "facade.sqlite3") == []
    raw.close()


def test_close_thread_connection_inside_a_transaction_is_an_error() -> None:
    db = make_db("persistent")
    with db.transaction():
        with pytest.raises(PoolError, match="inside a transaction"):
            ObjDataThreadSafe.close_thread_connection()
        db.sql_execute("INSERT INTO items (name) VALUES (%s)", ("still fine",))
    assert names(db) == ["still fine"]


# -- ObjData ------------------------------------------------------------------------------


def test_objdata_over_a_given_connection_commits_each_statement(cwd: Path) -> None:
    make_db()
    raw = sqlite3.connect(cwd / "facade.sqlite3")
    data = ObjData(DB=raw)
    assert data.DB is raw
    data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
    assert committed_names(cwd / "facade.sqlite3") == ["a"]
    with data.transaction():
        data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("b",))
        assert committed_names(cwd / "facade.sqlite3") == ["a"]
    assert committed_names(cwd / "facade.sqlite3") == ["a", "b"]
    with pytest.raises(sqlite3.OperationalError):
        data.sql_execute("INSERT INTO missing VALUES (%s)", (1,))
    data.close()  # leaves the given connection to its owner
    assert raw.execute("SELECT COUNT(*) FROM items").fetchone() == (2,)
    raw.close()


def test_objdata_over_a_pooled_connection(pool_mode: str) -> None:
    pool = make_pool(mode=pool_mode, path="./facade.sqlite3", size=2)
    try:
        with pool as conn:
            data = ObjData(DB=conn)
            data.sql_execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
            data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
            assert data.sql_get_values("SELECT name FROM items") == [("a",)]
        assert pool.get_stats()["in_use"] == 0
    finally:
        pool.dispose()


def test_objdata_without_a_connection_borrows_per_statement() -> None:
    make_db(size=1, max_overflow=0)
    data = ObjData()
    assert data.DB is None
    data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0
    # So a second instance in the same thread is never stuck behind the first.
    assert ObjData().sql_get_value("SELECT COUNT(*) FROM items") == 1
    with data.transaction():
        data.sql_execute("INSERT INTO items (name) VALUES (%s)", ("b",))
        assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 1
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0
    assert names(data) == ["a", "b"]
    assert "ObjData over config 'primary'" in repr(data)


# -- threads ----------------------------------------------------------------------------


def test_more_threads_than_connections(pool_mode: str) -> None:
    """40 threads, 5 connections, 400 statements: all answered, the bound kept."""
    db = make_db(pool_mode, size=5, max_overflow=0, timeout=20)
    with ThreadPoolExecutor(max_workers=40) as executor:
        answers = list(executor.map(lambda i: db.sql_get_value("SELECT %s * 2", (i,)), range(400)))
        assert answers == [i * 2 for i in range(400)]
        stats = ObjDataThreadSafe.get_pool_stats()
        assert stats["timeouts"] == 0
        assert stats["total_connections"] <= 5
        # The 40 threads are still alive, idle: a newcomer still finds a connection at once.
        newcomer = threading.Thread(target=lambda: db.pool.acquire(timeout=2).close())
        newcomer.start()
        newcomer.join(10)
        assert ObjDataThreadSafe.get_pool_stats()["timeouts"] == 0


def test_persistent_mode_keeps_connections_for_a_few_threads() -> None:
    db = make_db("persistent", size=3, max_overflow=0)
    ObjDataThreadSafe.close_thread_connection()
    barrier = threading.Barrier(3)

    def work(_: int) -> None:
        for i in range(5):
            db.sql_get_value("SELECT %s", (i,))
        barrier.wait(5)  # all three alive at once, after their statements

    with ThreadPoolExecutor(max_workers=3) as executor:
        list(executor.map(work, range(3)))
        stats = db.pool.get_stats()
        # Two threads (max_size - 1) keep theirs; the third closed its own.
        assert stats["total_connections"] == 2
        assert stats["created"] <= 3 + 5


def test_close_thread_connection_in_persistent_mode() -> None:
    db = make_db("persistent", size=3)
    db.sql_get_values("SELECT 1")
    assert db.pool.get_stats()["total_connections"] == 1  # kept by this thread
    ObjDataThreadSafe.close_thread_connection()
    stats = db.pool.get_stats()
    assert stats["total_connections"] == 0
    assert stats["created"] == stats["closed"]
    db.sql_get_values("SELECT 1")  # and the thread may go on
    ObjDataThreadSafe.close_thread_connection("primary")
    assert db.pool.get_stats()["total_connections"] == 0
    ObjDataThreadSafe.close_thread_connection("no such config")  # holds nothing: no-op


# -- asyncio -----------------------------------------------------------------------------


class _SlowDriver(FakeDriver):
    """Statements take a while; the driver records how many ran at once."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()

    def connect(self, params: Any, timeout: float | None) -> FakeConnection:
        conn = super().connect(params, timeout)
        driver = self

        class Cursor(FakeCursor):
            def execute(self, sql: str, params: Any = None) -> int:
                with driver.lock:
                    driver.running += 1
                    driver.most = max(driver.most, driver.running)
                    driver.threads.add(threading.current_thread().name)
                try:
                    time.sleep(driver.delay)
                    return super().execute(sql, params)
                finally:
                    with driver.lock:
                        driver.running -= 1

        conn.cursor = lambda: Cursor(conn)  # type: ignore[method-assign]
        return conn


def test_async_methods_are_bounded_by_the_pool_and_leave_the_loop_free() -> None:
    driver = _SlowDriver(delay=0.02)
    db = ObjDataThreadSafe(pool_size=2, max_overflow=1, driver=driver)

    async def main() -> tuple[list[Any], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(db.asql_get_value("SELECT %s", (i,)) for i in range(30)))
        done.set()
        await tick_task
        return results, ticks

    results, ticks = asyncio.run(main())
    assert results == list(range(30))  # each statement's own answer, in order
    assert driver.most <= 3  # never more statements at once than max_size
    assert len(driver.threads) <= 3
    assert ticks >= 5  # the loop kept running while 30 statements took ~0.2 s
    assert ObjDataThreadSafe.get_pool_stats()["timeouts"] == 0


def test_async_methods_and_transactions(cwd: Path, pool_mode: str) -> None:
    db = make_db(pool_mode, size=3, max_overflow=0)

    async def main() -> None:
        await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
        assert await db.asql_insert("INSERT INTO items (name) VALUES (%s)", ("b",)) == 2
        assert (
            await db.asql_executemany("INSERT INTO items (name) VALUES (%s)", [("c",), ("d",)]) == 2
        )
        assert await db.asql_get_dicts("SELECT name FROM items WHERE id = %s", (1,)) == [
            {"name": "a"}
        ]
        assert await db.asql_get_value("SELECT COUNT(*) FROM items") == 4

        async with db.atransaction() as tx:
            assert tx is db
            await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("e",))
            # Concurrent statements of the block run in order on its one connection.
            counts = await asyncio.gather(
                *(db.asql_get_value("SELECT COUNT(*) FROM items") for _ in range(5))
            )
            assert counts == [5] * 5
            assert committed_names(cwd / "facade.sqlite3") == ["a", "b", "c", "d"]
            async with db.atransaction():
                await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("f",))
            with pytest.raises(KeyError):
                async with db.atransaction():
                    await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("undone",))
                    raise KeyError
        assert committed_names(cwd / "facade.sqlite3") == ["a", "b", "c", "d", "e", "f"]

        with pytest.raises(ValueError):
            async with db.atransaction():
                await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("gone",))
                raise ValueError
        assert await db.asql_get_value("SELECT COUNT(*) FROM items") == 6

    asyncio.run(main())
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["in_use"] == 0
    assert stats["acquired"] == stats["released"]


def test_a_cancelled_async_transaction_rolls_back(cwd: Path) -> None:
    db = make_db(size=2, max_overflow=0)

    async def main() -> None:
        started = asyncio.Event()

        async def victim() -> None:
            async with db.atransaction():
                await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(victim())
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.asql_get_value("SELECT COUNT(*) FROM items") == 0

    asyncio.run(main())
    assert committed_names(cwd / "facade.sqlite3") == []
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


def test_an_async_transaction_waits_for_a_connection_with_the_pool_timeout() -> None:
    db = make_db(size=1, max_overflow=0, timeout=0.2)

    async def main() -> None:
        conn = await asyncio.to_thread(db.pool.acquire)
        try:
            with pytest.raises(PoolTimeout):
                async with db.atransaction():
                    pass  # pragma: no cover - the block is never entered
        finally:
            await asyncio.to_thread(db.pool.release, conn)
        async with db.atransaction():
            await db.asql_execute("INSERT INTO items (name) VALUES (%s)", ("a",))

    asyncio.run(main())
    assert names(db) == ["a"]


def test_db_connect_remote_is_per_thread_on_the_thread_safe_facade(cwd: Path) -> None:
    (cwd / "config.yaml").write_text(
        "database:\n"
        "  primary: {driver: sqlite, path: one.sqlite3}\n"
        "  secondary: {driver: sqlite, path: two.sqlite3, pool: {size: 2, max_overflow: 0}}\n"
    )
    db = ObjDataThreadSafe()
    mine = db.db_connect_remote("secondary")
    assert db.db_connect_remote("secondary") is mine  # kept for this thread until given back
    theirs: list[Any] = []

    def other_thread() -> None:
        conn = db.db_connect_remote("secondary")
        theirs.append(conn.dbapi_connection)
        assert db.db_connect_remote("secondary") is conn
        ObjDataThreadSafe.close_thread_connection("secondary")  # gives it back
        theirs.append(ObjDataThreadSafe.get_pool_stats("secondary")["in_use"])

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert theirs[0] is not mine.dbapi_connection
    assert theirs[1] == 1  # only this thread's connection is still out
    db.close()  # gives back the calling thread's connections
    assert ObjDataThreadSafe.get_pool_stats("secondary")["in_use"] == 0
    fresh = db.db_connect_remote("secondary")
    assert fresh is not mine
    with db:
        assert ObjDataThreadSafe.get_pool_stats("secondary")["in_use"] == 1
    assert ObjDataThreadSafe.get_pool_stats("secondary")["in_use"] == 0
