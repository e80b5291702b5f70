"""ObjData and ObjDataThreadSafe against MariaDB, in both modes, with both MySQL drivers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from dbpool import ObjData, ObjDataThreadSafe, PoolError, make_pool
from tests.faultkit import kill

DRIVER_ERRORS = (pymysql.err.Error, mysql.connector.Error)

NASTY = [
    "'; DROP TABLE items; --",
    "Robert'); DELETE FROM items WHERE ('1'='1",
    '" OR "1"="1',
    "back\\slash \\' \\\" \\\\ \\0",
    "%s %(name)s %% %d ? :name",
    "naïve 北京 🙂",
    "line\nbreak\ttab\r",
    "",
]

SPEC_STATS_KEYS = {
    "created",
    "recycled",
    "acquired",
    "released",
    "timeouts",
    "total_connections",
    "pool_size",
    "max_size",
}

Factory = Callable[..., ObjDataThreadSafe]


@pytest.fixture
def facade(
    mysql_params: dict[str, Any],
    mysql_driver: str,
    pool_mode: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Factory]:
    """Makes the class-level pool on the test server; closes every such pool afterwards."""

    def new(**options: Any) -> ObjDataThreadSafe:
        return ObjDataThreadSafe(
            **{**mysql_params, "driver": mysql_driver, "mode": pool_mode, **options}
        )

    yield new
    ObjDataThreadSafe.close_pool()


@pytest.fixture
def items(admin: pymysql.connections.Connection, mysql_params: dict[str, Any]) -> Iterator[str]:
    name = f"{mysql_params['database']}.items_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {name} (id INT AUTO_INCREMENT PRIMARY KEY, "
            "name TEXT NOT NULL, n INT NOT NULL DEFAULT 0) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")


def committed(admin: pymysql.connections.Connection, table: str) -> list[str]:
    """The names another session sees: committed rows only."""
    with admin.cursor() as cur:
        cur.execute(f"SELECT name FROM {table} ORDER BY id")
        return [row[0] for row in cur.fetchall()]


@contextlib.contextmanager
def watching(db: ObjDataThreadSafe) -> Iterator[list[int]]:
    """Sample total_connections while the block runs; yields the samples."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(db.pool.get_stats()["total_connections"])
            stop.wait(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)


def test_64_threads_share_one_instance(facade: Factory, items: str) -> None:
    db = facade(pool_size=4, max_overflow=4, timeout=20)
    start = threading.Barrier(64)

    def work(i: int) -> tuple[int, list[tuple[Any, ...]]]:
        start.wait(20)
        for k in range(3):
            db.sql_execute(f"INSERT INTO {items} (name, n) VALUES (%s, %s)", (f"t{i}", k))
        count = db.sql_get_value(f"SELECT COUNT(*) FROM {items} WHERE name = %s", (f"t{i}",))
        rows = db.sql_get_values(f"SELECT n FROM {items} WHERE name = %s ORDER BY n", (f"t{i}",))
        return int(count), rows

    with watching(db) as samples, ThreadPoolExecutor(max_workers=64) as executor:
        results = list(executor.map(work, range(64)))
    assert results == [(3, [(0,), (1,), (2,)])] * 64
    assert db.sql_get_value(f"SELECT COUNT(*) FROM {items}") == 192
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["timeouts"] == 0
    assert stats["acquired"] == stats["released"]
    assert max(samples, default=0) <= 8
    assert stats["total_connections"] <= 8


def test_40_threads_5_connections_400_queries(facade: Factory) -> None:
    db = facade(pool_size=5, max_overflow=0, timeout=20)
    with watching(db) as samples, ThreadPoolExecutor(max_workers=40) as executor:
        answers = list(executor.map(lambda i: db.sql_get_value("SELECT %s + 1", (i,)), range(400)))
        assert [int(a) for a in answers] == [i + 1 for i in range(400)]
        # The 40 threads are alive and idle now: a newcomer still gets a connection at once.
        newcomer_answer: list[Any] = []
        newcomer = threading.Thread(
            target=lambda: newcomer_answer.append(db.pool.acquire(timeout=3).close() or 1)
        )
        newcomer.start()
        newcomer.join(10)
        assert newcomer_answer == [1]
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["timeouts"] == 0
    assert stats["acquired"] == stats["released"] == 401
    assert max(samples, default=0) <= 5


def test_injection_strings_are_stored_and_read_back_literally(facade: Factory, items: str) -> None:
    db = facade(pool_size=2)
    for text in NASTY:
        db.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", (text,))
        assert db.sql_get_value("SELECT %s", (text,)) == text
    for text in NASTY:
        assert (
            db.sql_get_value(f"SELECT COUNT(*) FROM {items} WHERE name = %(v)s", {"v": text}) == 1
        )
    stored = [row["name"] for row in db.sql_get_dicts(f"SELECT name FROM {items} ORDER BY id")]
    assert stored == NASTY


def test_percent_signs_read_alike_with_both_drivers(facade: Factory, mysql_driver: str) -> None:
    db = facade(pool_size=1)
    assert db.sql_get_value("SELECT CONCAT('a%%', %s)", ("b",)) == "a%b"
    assert db.sql_get_value("SELECT 'a%'") == "a%"
    assert db.sql_get_value("SELECT %s LIKE 'ab%%'", ("abc",)) == 1
    if mysql_driver == "mysql-connector":
        with pytest.raises(ValueError, match="literal '%s'"):
            db.sql_get_value("SELECT '%%s', %s", (1,))
    else:
        assert db.sql_get_values("SELECT '%%s', %s", (1,)) == [("%s", 1)]


def test_extras(facade: Factory, items: str) -> None:
    db = facade(pool_size=2)
    first = db.sql_insert(f"INSERT INTO {items} (name) VALUES (%s)", ("a",))
    second = db.sql_insert(f"INSERT INTO {items} (name) VALUES (%s)", ("b",))
    assert first is not None and second == first + 1
    rows = [(f"bulk{i}", i) for i in range(500)]
    assert db.sql_executemany(f"INSERT INTO {items} (name, n) VALUES (%s, %s)", rows) == 500
    assert db.sql_get_value(f"SELECT SUM(n) FROM {items}") == sum(range(500))
    assert db.sql_get_dicts(f"SELECT id, name FROM {items} WHERE id = %s", (first,)) == [
        {"id": first, "name": "a"}
    ]
    assert db.sql_get_value(f"SELECT name FROM {items} WHERE id = %s", (-1,), default="-") == "-"
    assert db.sql_execute(f"UPDATE {items} SET n = n + 1 WHERE name LIKE %s", ("bulk%",)) == 500
    assert db.sql_execute(f"DELETE FROM {items} WHERE n > %s", (250,)) == 250


def test_stats_through_get_pool_stats(facade: Factory) -> None:
    db = facade(pool_size=3, max_overflow=2)
    for i in range(10):
        db.sql_get_value("SELECT %s", (i,))
    stats = ObjDataThreadSafe.get_pool_stats()
    assert set(stats) >= SPEC_STATS_KEYS
    assert stats["max_size"] == 5
    assert stats["acquired"] == stats["released"] == 10
    assert stats["in_use"] == 0
    assert 1 <= stats["created"] == stats["total_connections"] + stats["closed"]
    assert stats["mode"] == db.pool.mode


# -- transactions ------------------------------------------------------------------------


def test_transaction_commits_on_success(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    db = facade(pool_size=2)
    with db.transaction():
        conn_id = db.sql_get_value("SELECT CONNECTION_ID()")
        db.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", ("a",))
        db.sql_insert(f"INSERT INTO {items} (name) VALUES (%s)", ("b",))
        db.sql_executemany(f"INSERT INTO {items} (name) VALUES (%s)", [("c",), ("d",)])
        # Every statement ran on one connection, and none was committed on its own.
        assert db.sql_get_value("SELECT CONNECTION_ID()") == conn_id
        assert db.sql_get_value(f"SELECT COUNT(*) FROM {items}") == 4
        assert committed(admin, items) == []
    assert committed(admin, items) == ["a", "b", "c", "d"]
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


def test_transaction_rolls_back_on_an_exception(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    db = facade(pool_size=2)
    with pytest.raises(RuntimeError), db.transaction():
        db.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", ("a",))
        raise RuntimeError("boom")
    assert committed(admin, items) == []
    with pytest.raises(DRIVER_ERRORS), db.transaction():
        db.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", ("b",))
        db.sql_execute(f"INSERT INTO {items} (no_such_column) VALUES (%s)", ("c",))
    assert committed(admin, items) == []
    db.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", ("after",))
    assert committed(admin, items) == ["after"]


def test_nested_transactions_are_savepoints(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    db = facade(pool_size=2)
    insert = f"INSERT INTO {items} (name) VALUES (%s)"
    with db.transaction():
        db.sql_execute(insert, ("outer",))
        with db.transaction():
            db.sql_execute(insert, ("inner kept",))
        with pytest.raises(KeyError), db.transaction():
            db.sql_execute(insert, ("inner undone",))
            raise KeyError
        db.sql_execute(insert, ("outer again",))
        assert committed(admin, items) == []
    assert committed(admin, items) == ["outer", "inner kept", "outer again"]


def test_a_lost_connection_in_a_transaction_raises(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    db = facade(pool_size=2, max_overflow=0)
    insert = f"INSERT INTO {items} (name) VALUES (%s)"
    with pytest.raises(DRIVER_ERRORS), db.transaction():
        db.sql_execute(insert, ("first half",))
        kill(admin, db.sql_get_value("SELECT CONNECTION_ID()"))
        db.sql_execute(insert, ("second half",))
    assert committed(admin, items) == []
    # Swallowing the error inside the block does not buy a fresh connection mid-transaction.
    with pytest.raises(DRIVER_ERRORS), db.transaction():
        db.sql_execute(insert, ("first half",))
        kill(admin, db.sql_get_value("SELECT CONNECTION_ID()"))
        with contextlib.suppress(*DRIVER_ERRORS):
            db.sql_execute(insert, ("lost",))
        db.sql_execute(insert, ("second half",))
    assert committed(admin, items) == []
    # Outside the transaction the pool replaces the broken connection.
    db.sql_execute(insert, ("later",))
    assert committed(admin, items) == ["later"]
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= 2


def test_a_failed_statement_leaves_no_lock_behind(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    """A duplicate key makes InnoDB lock the existing row; the facade must not keep that lock."""
    db = facade(pool_size=1, max_overflow=0)
    with admin.cursor() as cur:
        cur.execute(f"ALTER TABLE {items} ADD UNIQUE KEY (n)")
    db.sql_execute(f"INSERT INTO {items} (name, n) VALUES (%s, %s)", ("a", 1))
    with pytest.raises(DRIVER_ERRORS):
        db.sql_insert(f"INSERT INTO {items} (name, n) VALUES (%s, %s)", ("b", 1))
    with admin.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 2")
        cur.execute(f"DELETE FROM {items} WHERE n = 1")  # times out if a lock is still held
    assert committed(admin, items) == []


def test_objdata_over_a_pooled_connection(
    mysql_pool: Any, items: str, admin: pymysql.connections.Connection
) -> None:
    pool = mysql_pool(size=2)
    with pool as conn:
        data = ObjData(DB=conn)
        data.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", ("a",))
        assert committed(admin, items) == ["a"]
        with data.transaction():
            data.sql_execute(f"INSERT INTO {items} (name) VALUES (%s)", ("b",))
            assert committed(admin, items) == ["a"]
        assert data.sql_get_values(f"SELECT name FROM {items} ORDER BY id") == [("a",), ("b",)]
    assert committed(admin, items) == ["a", "b"]
    assert pool.get_stats()["in_use"] == 0


def test_objdata_sees_other_sessions_commits(
    mysql_pool: Any, items: str, admin: pymysql.connections.Connection
) -> None:
    """A held connection does not keep reading one old snapshot between statements."""
    pool = mysql_pool(size=1)
    with pool as conn:
        data = ObjData(DB=conn)
        assert data.sql_get_value(f"SELECT COUNT(*) FROM {items}") == 0
        with admin.cursor() as cur:
            cur.execute(f"INSERT INTO {items} (name) VALUES ('other')")
        assert data.sql_get_value(f"SELECT COUNT(*) FROM {items}") == 1


# -- close_thread_connection ----------------------------------------------------------


def test_close_thread_connection(
    facade: Factory,
    pool_mode: str,
    mysql_params: dict[str, Any],
    admin: pymysql.connections.Connection,
) -> None:
    db = facade(pool_size=3)
    conn_id = db.sql_get_value("SELECT CONNECTION_ID()")
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["in_use"] == 0
    assert stats["total_connections"] == 1
    ObjDataThreadSafe.close_thread_connection()
    stats = ObjDataThreadSafe.get_pool_stats()
    if pool_mode == "persistent":
        # The thread's own connection is closed and its slot free.
        assert stats["total_connections"] == 0
        with admin.cursor() as cur:
            for _ in range(100):
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)
                )
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the thread's connection is still open on the server")
    else:
        # Shared mode holds nothing per thread: the idle connection stays in the pool.
        assert stats["total_connections"] == 1
        assert db.sql_get_value("SELECT CONNECTION_ID()") == conn_id
    with db.transaction(), pytest.raises(PoolError, match="inside a transaction"):
        ObjDataThreadSafe.close_thread_connection()
    assert db.sql_get_value("SELECT 1") == 1


def test_worker_threads_give_back_when_they_finish(facade: Factory) -> None:
    """The seeds' pattern: each worker calls close_thread_connection() before it ends."""
    db = facade(pool_size=2, max_overflow=1, timeout=20)
    done = threading.Barrier(9)

    def worker() -> None:
        for i in range(5):
            assert db.sql_get_value("SELECT %s", (i,)) == i
        ObjDataThreadSafe.close_thread_connection()
        done.wait(20)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    done.wait(20)  # all eight alive, none holding a connection
    stats = ObjDataThreadSafe.get_pool_stats()
    for thread in threads:
        thread.join(20)
    assert stats["in_use"] == 0
    assert stats["timeouts"] == 0
    if db.pool.mode == "persistent":
        assert stats["total_connections"] == 0


# -- named configs ----------------------------------------------------------------------


def test_named_configs_and_db_connect_remote(
    mysql_params: dict[str, Any],
    mysql_driver: str,
    admin: pymysql.connections.Connection,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    secondary = f"dbpool_second_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {secondary}")
        cur.execute(f"CREATE TABLE {secondary}.remote_table (x TEXT)")
        cur.execute(f"INSERT INTO {secondary}.remote_table VALUES ('over there')")
        for host in ("127.0.0.1", "localhost"):
            cur.execute(
                f"GRANT ALL PRIVILEGES ON {secondary}.* TO %s@%s", (mysql_params["user"], host)
            )
    config = tmp_path / "config.yaml"
    p = mysql_params
    config.write_text(
        "database:\n"
        f"  primary: {{ip: {p['host']}, port: {p['port']}, user: {p['user']}, "
        f"db: {p['database']}, driver: {mysql_driver}, pool: {{size: 2}}}}\n"
        f"  secondary: {{ip: {p['host']}, port: {p['port']}, user: {p['user']}, "
        f"db: {secondary}, driver: {mysql_driver}, pool: {{size: 1, max_overflow: 0}}}}\n"
    )
    monkeypatch.setenv("DBPOOL_CONFIG", str(config))
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", p["password"])
    monkeypatch.setenv("DBPOOL_SECONDARY_PASSWORD", p["password"])
    try:
        main = ObjDataThreadSafe()
        other = ObjDataThreadSafe(config_name="secondary")
        assert main.sql_get_value("SELECT DATABASE()") == p["database"]
        assert other.sql_get_values("SELECT x FROM remote_table") == [("over there",)]
        assert ObjDataThreadSafe.get_pool_stats("secondary")["max_size"] == 1
        with ObjData() as data:
            remote = data.db_connect_remote("secondary")
            cur = remote.cursor()
            cur.execute("SELECT x FROM remote_table")
            assert [tuple(row) for row in cur.fetchall()] == [("over there",)]
            cur.close()
            assert data.db_connect_remote("secondary") is remote
            assert data.sql_get_value("SELECT DATABASE()") == p["database"]
        assert ObjDataThreadSafe.get_pool_stats("secondary")["in_use"] == 0
        assert p["password"] not in repr(main) + repr(ObjDataThreadSafe.get_pool_stats())
    finally:
        ObjDataThreadSafe.close_pool()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {secondary}")


# -- asyncio ---------------------------------------------------------------------------


def test_async_use(facade: Factory, items: str, admin: pymysql.connections.Connection) -> None:
    db = facade(pool_size=3, max_overflow=1, timeout=20)
    insert = f"INSERT INTO {items} (name) VALUES (%s)"

    async def main() -> None:
        answers = await asyncio.gather(
            *(db.asql_get_value("SELECT %s * 3", (i,)) for i in range(200))
        )
        assert [int(a) for a in answers] == [i * 3 for i in range(200)]
        await asyncio.gather(*(db.asql_execute(insert, (f"row{i}",)) for i in range(20)))
        async with db.atransaction():
            conn_id = await db.asql_get_value("SELECT CONNECTION_ID()")
            await db.asql_execute(insert, ("in tx",))
            ids = await asyncio.gather(
                *(db.asql_get_value("SELECT CONNECTION_ID()") for _ in range(5))
            )
            assert ids == [conn_id] * 5
            assert "in tx" not in committed(admin, items)
        assert "in tx" in committed(admin, items)
        with pytest.raises(ZeroDivisionError):
            async with db.atransaction():
                await db.asql_execute(insert, ("rolled back",))
                raise ZeroDivisionError
        assert "rolled back" not in committed(admin, items)

    asyncio.run(main())
    assert len(committed(admin, items)) == 21
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["timeouts"] == 0
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= 4


def test_make_pool_and_facade_agree_on_the_driver(
    mysql_params: dict[str, Any],
    mysql_driver: str,
    pools: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pool = make_pool(driver=mysql_driver, **mysql_params)
    pools.append(pool)
    with pool as conn:
        assert ObjData(DB=conn).sql_get_value("SELECT CONCAT('x%%', %s)", ("y",)) == "x%y"


# -- a thread's transaction, tasks and nested async blocks ----------------------------


def test_objdata_helpers_join_the_callers_transaction(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    facade(pool_size=2, max_overflow=0)
    insert = f"INSERT INTO {items} (name) VALUES (%s)"

    def helper(name: str) -> int:
        ObjData().sql_execute(insert, (name,))  # its own ObjData(), as the old interface did
        return int(ObjData().sql_get_value(f"SELECT COUNT(*) FROM {items}"))

    caller = ObjData()
    with pytest.raises(KeyError), caller.transaction():
        caller.sql_execute(insert, ("caller",))
        assert helper("helper") == 2
        assert committed(admin, items) == []  # the helper did not commit on its own
        raise KeyError
    assert committed(admin, items) == []
    with caller.transaction():
        caller.sql_execute(f"INSERT INTO {items} (name, n) VALUES (%s, %s)", ("locked", 1))
        # The caller holds the row's lock: the helper updates it in the same transaction.
        ObjData().sql_execute(f"UPDATE {items} SET n = 2 WHERE name = %s", ("locked",))
    assert committed(admin, items) == ["locked"]
    assert ObjData().sql_get_value(f"SELECT n FROM {items}") == 2
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


def test_concurrent_nested_async_blocks_keep_their_work(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    db = facade(pool_size=2, max_overflow=0)
    insert = f"INSERT INTO {items} (name) VALUES (%s)"

    async def main() -> None:
        async def step(i: int) -> None:
            async with db.atransaction():
                await db.asql_execute(insert, (f"step {i}",))
                await asyncio.sleep(0)
                await db.asql_execute(insert, (f"step {i} again",))
                if i % 3 == 0:
                    raise KeyError(i)

        async def sibling(i: int) -> None:
            await asyncio.sleep(0)
            await db.asql_execute(insert, (f"plain {i}",))

        async with db.atransaction():
            await db.asql_execute(insert, ("outer",))
            await asyncio.gather(
                *(step(i) for i in range(6)),
                *(sibling(i) for i in range(3)),
                return_exceptions=True,
            )

    asyncio.run(main())
    expected = {"outer"} | {f"plain {i}" for i in range(3)}
    for i in (1, 2, 4, 5):
        expected |= {f"step {i}", f"step {i} again"}
    assert sorted(committed(admin, items)) == sorted(expected)
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


def test_a_task_outliving_its_async_transaction_fails_at_once(
    facade: Factory, items: str, admin: pymysql.connections.Connection
) -> None:
    db = facade(pool_size=2, max_overflow=0)
    insert = f"INSERT INTO {items} (name) VALUES (%s)"

    async def main() -> None:
        go = asyncio.Event()

        async def late() -> Any:
            await go.wait()
            return await db.asql_execute(insert, ("late",))

        async with db.atransaction():
            await db.asql_execute(insert, ("in",))
            task = asyncio.create_task(late())
        go.set()
        with pytest.raises(PoolError, match="has ended"):
            await asyncio.wait_for(task, 10)
        inside = asyncio.Event()

        async def request() -> None:
            async with db.atransaction():
                await db.asql_execute(insert, ("doomed",))
                inside.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(request())
        await asyncio.wait_for(inside.wait(), 10)
        ObjDataThreadSafe.close_pool()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert committed(admin, items) == ["in"]
