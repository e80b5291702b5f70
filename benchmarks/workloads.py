"""The workloads: what one request does with the connection it got."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TABLE = "dbpool_bench_rows"

_POINT_SQL = f"SELECT id, k, c FROM {TABLE} WHERE id = %s"
_UPDATE_SQL = f"UPDATE {TABLE} SET k = k + 1 WHERE id = %s"

Request = Callable[[Any, random.Random], None]


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    make: Callable[[int, float], Request]  # (rows, slow seconds) -> request function


def _point(rows: int, slow: float) -> Request:
    def point_select(conn: Any, rng: random.Random) -> None:
        cur = conn.cursor()
        cur.execute(_POINT_SQL, (rng.randint(1, rows),))
        cur.fetchall()
        cur.close()

    return point_select


def _write(rows: int, slow: float) -> Request:
    def write_transaction(conn: Any, rng: random.Random) -> None:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(_UPDATE_SQL, (rng.randint(1, rows),))
        cur.close()
        conn.commit()

    return write_transaction


def _mix(rows: int, slow: float) -> Request:
    read, write = _point(rows, slow), _write(rows, slow)

    def read_write_mix(conn: Any, rng: random.Random) -> None:
        if rng.random() < 0.1:
            write(conn, rng)
        else:
            read(conn, rng)

    return read_write_mix


def _slow(rows: int, slow: float) -> Request:
    sql = f"DO SLEEP({slow:.4f})"

    def slow_query(conn: Any, rng: random.Random) -> None:
        cur = conn.cursor()
        cur.execute(sql)
        cur.close()

    return slow_query


WORKLOADS: tuple[Workload, ...] = (
    Workload("point", "point select by primary key", _point),
    Workload("write", "write transaction (BEGIN, UPDATE by key, COMMIT)", _write),
    Workload("mix", "90 % point selects, 10 % write transactions", _mix),
    Workload("slow", "slow query (DO SLEEP), pool size is the bottleneck", _slow),
)
BY_KEY = {w.key: w for w in WORKLOADS}


def select(keys: list[str] | None) -> list[Workload]:
    if not keys:
        return list(WORKLOADS)
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise ValueError(f"unknown workload {', '.join(unknown)}; valid: {', '.join(BY_KEY)}")
    return [w for w in WORKLOADS if w.key in keys]


def create_table(admin: Any, database: str, rows: int) -> None:
    """(Re)create the benchmark table with ``rows`` rows, ids 1..rows."""
    rng = random.Random(4)
    cur = admin.cursor()
    cur.execute(f"DROP TABLE IF EXISTS `{database}`.{TABLE}")
    cur.execute(
        f"CREATE TABLE `{database}`.{TABLE} ("
        "id INT NOT NULL PRIMARY KEY, k INT NOT NULL, c CHAR(60) NOT NULL"
        ") ENGINE=InnoDB"
    )
    batch = 1000
    for start in range(1, rows + 1, batch):
        values = [
            (i, rng.randint(1, rows), f"{rng.getrandbits(200):060d}"[:60])
            for i in range(start, min(start + batch, rows + 1))
        ]
        cur.executemany(f"INSERT INTO `{database}`.{TABLE} (id, k, c) VALUES (%s, %s, %s)", values)
    cur.close()


def drop_table(admin: Any, database: str) -> None:
    cur = admin.cursor()
    cur.execute(f"DROP TABLE IF EXISTS `{database}`.{TABLE}")
    cur.close()
