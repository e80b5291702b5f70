"""The usage guide's examples (worker, background orders, ETL, queue worker) against MariaDB.

Each runs as the guide describes it, with the values passed as parameters
instead of being formatted into the SQL.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import pymysql
import pytest

from dbpool import ConnectionPool, ObjData, ObjDataThreadSafe, make_pool

Tables = Callable[..., str]


@pytest.fixture
def table(admin: pymysql.connections.Connection, mysql_params: dict[str, Any]) -> Iterator[Tables]:
    """Creates uniquely named tables (`table("name", "columns")`); drops them afterwards."""
    made: list[str] = []

    def create(name: str, columns: str) -> str:
        full = f"{mysql_params['database']}.{name}_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cur:
            cur.execute(f"CREATE TABLE {full} ({columns}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        made.append(full)
        return full

    yield create
    with admin.cursor() as cur:
        for name in made:
            cur.execute(f"DROP TABLE IF EXISTS {name}")


def options(
    mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str, **more: Any
) -> dict[str, Any]:
    return {**mysql_params, "driver": mysql_driver, "mode": pool_mode, **more}


def test_worker_threads_share_one_obj(
    table: Tables, mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    """Worker threads on one ObjDataThreadSafe; then the same with ObjData over `with pool`."""
    users = table("users", "id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100)")
    ObjDataThreadSafe(
        pool_size=5, **options(mysql_params, mysql_driver, pool_mode)
    ).sql_executemany(
        f"INSERT INTO {users} VALUES (%s, %s, %s)",
        [(i, f"user{i}", f"user{i}@example.org") for i in range(20)],
    )

    def worker() -> list[tuple[Any, ...]]:
        obj = ObjDataThreadSafe()  # joins the pool made above
        return obj.sql_get_values(f"SELECT id, name FROM {users} ORDER BY id")

    with ThreadPoolExecutor(max_workers=10) as executor:
        results = [f.result() for f in [executor.submit(worker) for _ in range(100)]]
    assert results == [[(i, f"user{i}") for i in range(20)]] * 100
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["acquired"] == stats["released"] == 101
    assert stats["timeouts"] == 0
    assert stats["total_connections"] <= stats["max_size"] == 10

    pool = ConnectionPool(size=5, **options(mysql_params, mysql_driver, pool_mode))
    try:

        def pooled_worker() -> list[tuple[Any, ...]]:
            with pool as conn:
                return ObjData(DB=conn).sql_get_values(
                    f"SELECT id FROM {users} WHERE id < %s", (3,)
                )

        with ThreadPoolExecutor(max_workers=10) as executor:
            results = list(executor.map(lambda _: pooled_worker(), range(100)))
        assert results == [[(0,), (1,), (2,)]] * 100
        assert pool.get_stats()["acquired"] == 100
    finally:
        pool.dispose()


def test_background_orders(
    table: Tables, mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    """100 threads each process one order on a 10 + 5 pool, in one transaction."""
    orders = table(
        "orders", "id INT PRIMARY KEY, status VARCHAR(20) NOT NULL, amount DECIMAL(10, 2) NOT NULL"
    )
    notifications = table(
        "notifications",
        "id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL, message TEXT NOT NULL",
    )
    pool = make_pool(
        size=10,
        max_overflow=5,
        timeout=30,
        recycle=3600,
        **options(mysql_params, mysql_driver, pool_mode),
    )
    try:
        with pool as conn:
            ObjData(DB=conn).sql_executemany(
                f"INSERT INTO {orders} VALUES (%s, 'new', %s)",
                [(order_id, order_id * 1.5) for order_id in range(1, 101)],
            )
        pool.close_thread_connection()
        failures: list[BaseException] = []

        def process_order(order_id: int) -> None:
            try:
                with pool as conn:
                    obj = ObjData(DB=conn)
                    with obj.transaction():
                        ((status, amount),) = obj.sql_get_values(
                            f"SELECT status, amount FROM {orders} WHERE id = %s FOR UPDATE",
                            (order_id,),
                        )
                        assert status == "new"
                        obj.sql_execute(
                            f"UPDATE {orders} SET status = %s WHERE id = %s",
                            ("processing", order_id),
                        )
                        obj.sql_execute(
                            f"INSERT INTO {notifications} (order_id, message) VALUES (%s, %s)",
                            (order_id, f"Order {order_id} processing ({amount})"),
                        )
            except BaseException as exc:  # reported below, from the main thread
                failures.append(exc)

        threads = [
            threading.Thread(target=process_order, args=(order_id,)) for order_id in range(1, 101)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        stats = pool.get_stats()
        assert stats["acquired"] == stats["released"] == 101
        assert stats["timeouts"] == 0
        assert stats["total_connections"] <= 15
        with pool as conn:
            obj = ObjData(DB=conn)
            assert obj.sql_get_values(f"SELECT status, COUNT(*) FROM {orders} GROUP BY status") == [
                ("processing", 100)
            ]
            assert obj.sql_get_value(f"SELECT COUNT(DISTINCT order_id) FROM {notifications}") == 100
            assert (
                obj.sql_get_value(f"SELECT message FROM {notifications} WHERE order_id = %s", (7,))
                == "Order 7 processing (10.50)"
            )
    finally:
        pool.dispose()


def test_etl_pipeline(
    table: Tables, mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    """Extract four tables in parallel, transform, and bulk-load into staging tables."""
    db = ObjDataThreadSafe(pool_size=15, **options(mysql_params, mysql_driver, pool_mode))
    sources = {}
    staging = {}
    for source in ("sales", "inventory", "customers", "products"):
        sources[source] = table(source, "id INT PRIMARY KEY, label VARCHAR(50), qty INT")
        staging[source] = table(
            f"staging_{source}", "id INT PRIMARY KEY, label VARCHAR(60), qty INT"
        )
        db.sql_executemany(
            f"INSERT INTO {sources[source]} VALUES (%s, %s, %s)",
            [(i, f"{source}-{i}", i % 7) for i in range(250)],
        )

    def extract_data(source: str) -> list[tuple[Any, ...]]:
        # A table name cannot be a parameter: it comes from our own list, never from input.
        return db.sql_get_values(f"SELECT id, label, qty FROM {sources[source]} ORDER BY id")

    def transform_data(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [(row_id, label.upper(), qty * 10) for row_id, label, qty in rows]

    def load_data(source: str, rows: list[tuple[Any, ...]]) -> int:
        return db.sql_executemany(f"INSERT INTO {staging[source]} VALUES (%s, %s, %s)", rows)

    loaded = {}
    with ThreadPoolExecutor(max_workers=10) as executor:
        futures = {executor.submit(extract_data, source): source for source in sources}
        for future in as_completed(futures):
            source = futures[future]
            loaded[source] = load_data(source, transform_data(future.result()))
    assert loaded == dict.fromkeys(sources, 250)
    for source in sources:
        assert db.sql_get_values(f"SELECT id, label, qty FROM {staging[source]} ORDER BY id") == [
            (i, f"{source}-{i}".upper(), (i % 7) * 10) for i in range(250)
        ]
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["timeouts"] == 0
    assert stats["in_use"] == 0


def test_queue_workers(
    table: Tables, mysql_params: dict[str, Any], mysql_driver: str, pool_mode: str
) -> None:
    """Five workers take inserts and selects from a queue, then give their connections back."""
    logs = table("logs", "id INT AUTO_INCREMENT PRIMARY KEY, message VARCHAR(100) NOT NULL")
    data = table("data", "id INT PRIMARY KEY, value VARCHAR(20) NOT NULL")
    ObjDataThreadSafe(
        pool_size=3, max_overflow=1, **options(mysql_params, mysql_driver, pool_mode)
    ).sql_executemany(
        f"INSERT INTO {data} VALUES (%s, %s)", [(i, f"value-{i}") for i in range(100)]
    )
    ObjDataThreadSafe.close_thread_connection()
    tasks: queue.Queue[tuple[str, Any] | None] = queue.Queue()
    selected: dict[int, list[tuple[Any, ...]]] = {}
    failures: list[BaseException] = []

    def worker() -> None:
        obj = ObjDataThreadSafe()
        while True:
            task = tasks.get()
            if task is None:
                tasks.task_done()
                break
            try:
                kind, payload = task
                if kind == "insert":
                    obj.sql_execute(f"INSERT INTO {logs} (message) VALUES (%s)", (payload,))
                else:
                    selected[payload] = obj.sql_get_values(
                        f"SELECT value FROM {data} WHERE id = %s", (payload,)
                    )
            except BaseException as exc:  # reported below, from the main thread
                failures.append(exc)
            finally:
                tasks.task_done()
        ObjDataThreadSafe.close_thread_connection()

    workers = [threading.Thread(target=worker) for _ in range(5)]
    for thread in workers:
        thread.start()
    for i in range(100):
        tasks.put(("insert", f"log-{i}") if i % 2 == 0 else ("select", i))
    tasks.join()
    for _ in workers:
        tasks.put(None)
    for thread in workers:
        thread.join(30)
    assert failures == []
    assert selected == {i: [(f"value-{i}",)] for i in range(1, 100, 2)}
    obj = ObjDataThreadSafe()
    assert sorted(row[0] for row in obj.sql_get_values(f"SELECT message FROM {logs}")) == sorted(
        f"log-{i}" for i in range(0, 100, 2)
    )
    stats = ObjDataThreadSafe.get_pool_stats()
    assert stats["timeouts"] == 0
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= 4
