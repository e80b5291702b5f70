"""Replica reads on a real GTID replication pair: causal reads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dbpool import make_pool
from tests.fix_cluster import ReplicationPair, query

TABLE = "causal_ledger"


@pytest.fixture
def pair(replication: ReplicationPair) -> Iterator[ReplicationPair]:
    """The pair with an empty table on both servers and a replica one second behind."""
    query(replication.primary, f"DROP TABLE IF EXISTS `{replication.primary.database}`.{TABLE}")
    query(
        replication.primary,
        f"CREATE TABLE `{replication.primary.database}`.{TABLE} (id INT PRIMARY KEY) ENGINE=InnoDB",
    )
    replication.wait_caught_up()
    replication.set_delay(1)
    yield replication
    replication.set_delay(0)
    replication.wait_caught_up()


@pytest.fixture
def pair_pool(
    pair: ReplicationPair,
    pools: list[Any],
    mysql_driver: str,
    pool_mode: str,
) -> Any:

    def new(**options: Any) -> Any:
        pool = make_pool(
            **{
                **pair.primary.params(),
                "replicas": [pair.replica.address],
                "driver": mysql_driver,
                "mode": pool_mode,
                **options,
            }
        )
        pools.append(pool)
        return pool

    return new


def read_back(pool: Any, row: int, timeout: float | None = None) -> tuple[int, int]:
    """(server_id, rows with id ``row``) read on a readonly connection."""
    with pool.connection(timeout, readonly=True) as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT @@server_id, COUNT(*) FROM {TABLE} WHERE id = %s", (row,))
        server_id, count = cur.fetchall()[0]
        cur.close()
        conn.commit()  # end the read's snapshot
    return int(server_id), int(count)


def insert(pool: Any, row: int) -> None:
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {TABLE} VALUES (%s)", (row,))
        cur.close()
        conn.commit()


def test_causal_reads_see_the_threads_own_write_on_the_replica(
    pair: ReplicationPair, pair_pool: Any
) -> None:
    pool = pair_pool(causal_reads=True, timeout=10)
    insert(pool, 1)
    started = time.monotonic()
    server_id, count = read_back(pool, 1)
    waited = time.monotonic() - started
    stats = pool.get_stats()
    print(
        f"\ncausal read: waited {waited:.2f}s for the replica, "
        f"causal_waits={stats['causal_waits']} causal_timeouts={stats['causal_timeouts']}"
    )
    assert (server_id, count) == (pair.replica.server_id, 1)
    assert (stats["causal_waits"], stats["causal_timeouts"]) == (1, 0)
    # Caught up: the next reads need no wait.
    assert read_back(pool, 1) == (pair.replica.server_id, 1)
    assert pool.get_stats()["causal_waits"] == 1


def test_without_causal_reads_the_replica_may_be_behind(
    pair: ReplicationPair, pair_pool: Any
) -> None:
    # MASTER_DELAY compares whole seconds of the event's timestamp: a one-second
    # delay may hold a transaction back for almost nothing. Five leave at least four.
    pair.set_delay(5)
    pool = pair_pool(timeout=10)
    insert(pool, 2)
    assert read_back(pool, 2) == (pair.replica.server_id, 0)


def test_causal_read_past_the_deadline_goes_to_the_primary(
    pair: ReplicationPair, pair_pool: Any
) -> None:
    # Five seconds (at least four, see above): the replica is still behind when the
    # read's half second is over, even on a busy machine.
    pair.set_delay(5)
    # Only the read has the short deadline; the connects and the write have time.
    pool = pair_pool(causal_reads=True, timeout=10)
    assert read_back(pool, 3) == (pair.replica.server_id, 0)  # no write yet: no wait
    insert(pool, 3)
    assert read_back(pool, 3, timeout=0.5) == (pair.primary.server_id, 1)
    assert pool.get_stats()["causal_timeouts"] == 1


def test_causal_reads_after_a_result_left_unread(pair: ReplicationPair, pair_pool: Any) -> None:
    pool = pair_pool(causal_reads=True, timeout=10)
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {TABLE} VALUES (5)")
        conn.commit()
        cur.execute(f"SELECT id FROM {TABLE}")  # not read: mysql-connector leaves it unread
    assert read_back(pool, 5) == (pair.replica.server_id, 1)
