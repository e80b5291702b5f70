"""The cluster tier's topologies do what the fault tests rely on.

Plain driver connections only: these check the replication pair, the Galera
cluster and HAProxy themselves, not dbpool.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import pymysql
import pytest

from tests.fix_cluster import GaleraCluster, GaleraNode, HAProxy, ReplicationPair, query, wait_for
from tests.mariadb import MariaDBServer


def connect(server: MariaDBServer, **kwargs: Any) -> pymysql.connections.Connection:
    """A connection as the test user, over TCP."""
    return pymysql.connect(
        **{
            **server.params(),
            "autocommit": True,
            "connect_timeout": 5,
            "read_timeout": 30,
            **kwargs,
        }
    )


def fetch_one(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return None if row is None else row[0]


def table(server: MariaDBServer) -> str:
    """A new table ``(id INT PRIMARY KEY, note VARCHAR(64))`` made on ``server``."""
    name = f"`{server.database}`.`t_{uuid.uuid4().hex[:8]}`"
    query(server, f"CREATE TABLE {name} (id INT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB")
    return name


# -- replication ------------------------------------------------------------------


def test_replication_carries_a_row_to_a_read_only_replica(replication: ReplicationPair) -> None:
    name = table(replication.primary)
    with contextlib.closing(connect(replication.primary)) as conn:
        fetch_one(conn, f"INSERT INTO {name} VALUES (1, 'from the primary')")
        primary_id = fetch_one(conn, "SELECT @@server_id")
    replication.wait_caught_up()
    with contextlib.closing(connect(replication.replica)) as conn:
        assert fetch_one(conn, f"SELECT note FROM {name} WHERE id = 1") == "from the primary"
        replica_id = fetch_one(conn, "SELECT @@server_id")
        with pytest.raises(pymysql.err.OperationalError) as caught:
            fetch_one(conn, f"INSERT INTO {name} VALUES (2, 'on the replica')")
    assert caught.value.args[0] == 1290
    assert primary_id != replica_id
    assert replication.lag() == 0


def test_replication_switchover_moves_writes_and_back(replication: ReplicationPair) -> None:
    old, new = replication.primary, replication.replica
    name = table(old)
    replication.wait_caught_up()
    with contextlib.closing(connect(old)) as on_old:
        fetch_one(on_old, f"INSERT INTO {name} VALUES (1, 'before')")
        replication.switchover()
        # A connection opened before the switchover now fails with 1290.
        with pytest.raises(pymysql.err.OperationalError) as caught:
            fetch_one(on_old, f"INSERT INTO {name} VALUES (2, 'on the old primary')")
    assert caught.value.args[0] == 1290
    assert replication.primary is new and replication.replica is old
    with contextlib.closing(connect(new)) as conn:
        fetch_one(conn, f"INSERT INTO {name} VALUES (3, 'after')")
    replication.wait_caught_up()
    assert query(old, f"SELECT id FROM {name} ORDER BY id") == [(1,), (3,)]
    replication.reset()
    assert replication.primary is replication.first
    with contextlib.closing(connect(replication.first)) as conn:
        fetch_one(conn, f"INSERT INTO {name} VALUES (4, 'back')")
    replication.wait_caught_up()
    assert query(replication.second, f"SELECT COUNT(*) FROM {name}") == [(3,)]


def test_replication_lag_and_stopped_replication_show(replication: ReplicationPair) -> None:
    name = table(replication.primary)
    replication.wait_caught_up()
    replication.set_delay(30)
    query(replication.primary, f"INSERT INTO {name} VALUES (1, 'delayed')")
    wait_for(lambda: (replication.lag() or 0) >= 2, 10, "the replica to lag 2 s")
    assert query(replication.replica, f"SELECT COUNT(*) FROM {name}") == [(0,)]
    replication.set_delay(0)
    replication.wait_caught_up()
    replication.stop_sql_thread()
    assert replication.lag() is None
    replication.start_replication()
    assert replication.lag() == 0


# -- Galera -----------------------------------------------------------------------


def read_until(node: GaleraNode, sql: str, expect: Any, timeout: float = 10.0) -> None:
    """Galera applies remote writes asynchronously: read with wsrep_sync_wait."""
    with contextlib.closing(connect(node, init_command="SET SESSION wsrep_sync_wait = 1")) as conn:
        wait_for(
            lambda: fetch_one(conn, sql) == expect, timeout, f"{sql} = {expect!r} on {node.name}"
        )


def test_galera_has_three_nodes_and_replicates_writes(galera: GaleraCluster) -> None:
    first, second, third = galera.nodes
    assert [galera.size(node) for node in galera.nodes] == [3, 3, 3]
    name = table(first)
    with contextlib.closing(connect(first)) as conn:
        fetch_one(conn, f"INSERT INTO {name} VALUES (1, 'node1')")
        assert fetch_one(conn, "SELECT @@wsrep_node_name") == "node1"
    with contextlib.closing(connect(third)) as conn:
        fetch_one(conn, f"INSERT INTO {name} VALUES (3, 'node3')")
    read_until(second, f"SELECT COUNT(*) FROM {name}", 2)
    read_until(first, f"SELECT note FROM {name} WHERE id = 3", "node3")


def test_galera_killed_node_leaves_and_rejoins(galera: GaleraCluster) -> None:
    first, second, third = galera.nodes
    name = table(first)
    # A node killed before it applied the CREATE TABLE may come back without it.
    read_until(third, f"SELECT COUNT(*) FROM {name}", 0)
    start = time.monotonic()
    third.kill()
    galera.wait_size(2, [first, second], timeout=30)
    left = time.monotonic() - start
    with contextlib.closing(connect(first)) as conn:
        fetch_one(conn, f"INSERT INTO {name} VALUES (1, 'while node3 was down')")
    start = time.monotonic()
    third.resume()
    galera.wait_synced()
    rejoined = time.monotonic() - start
    read_until(third, f"SELECT note FROM {name} WHERE id = 1", "while node3 was down")
    transfer = third.last_transfer()
    print(
        f"\ngalera: node3 left the view in {left:.1f}s, rejoined by {transfer} in {rejoined:.1f}s"
    )
    assert transfer == "IST"  # it recovered its position after the crash


def test_galera_isolated_node_refuses_queries_and_heals(galera: GaleraCluster) -> None:
    first, second, third = galera.nodes
    name = table(first)
    read_until(third, f"SELECT COUNT(*) FROM {name}", 0)
    with contextlib.closing(connect(third)) as conn:
        third.isolate()
        galera.wait_size(2, [first, second], timeout=30)
        wait_for(lambda: third.status()["wsrep_ready"] == "OFF", 30, "node3 not ready")
        # What a client can see: wsrep_ready is a status variable (there is no
        # @@wsrep_ready), and a query without tables still succeeds.
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
            assert cur.fetchall() == (("wsrep_ready", "OFF"),)
        assert fetch_one(conn, "SELECT 1") == 1
        with pytest.raises(pymysql.err.OperationalError) as caught:
            fetch_one(conn, f"SELECT COUNT(*) FROM {name}")
    assert caught.value.args[0] == 1047
    assert third.status()["wsrep_cluster_status"] != "Primary"
    third.isolate(False)
    galera.wait_synced()
    read_until(third, f"SELECT COUNT(*) FROM {name}", 0)


# -- HAProxy ----------------------------------------------------------------------


def node_of(proxy: HAProxy, count: int) -> list[str]:
    """The node names of ``count`` fresh connections through the proxy."""
    names = []
    for _ in range(count):
        with contextlib.closing(pymysql.connect(**proxy.params(), connect_timeout=5)) as conn:
            names.append(fetch_one(conn, "SELECT @@wsrep_node_name"))
    return names


def test_haproxy_routes_to_live_nodes_only(galera_proxy: HAProxy, galera: GaleraCluster) -> None:
    assert sorted(set(node_of(galera_proxy, 6))) == ["node1", "node2", "node3"]
    held = [pymysql.connect(**galera_proxy.params(), connect_timeout=5) for _ in range(6)]
    try:
        on_node = [fetch_one(conn, "SELECT @@wsrep_node_name") for conn in held]
        galera.nodes[1].kill()
        wait_for(
            lambda: galera_proxy.states()[galera.nodes[1].address] == "DOWN",
            10,
            "haproxy to mark node2 down",
        )
        assert sorted(set(node_of(galera_proxy, 6))) == ["node1", "node3"]
        for conn, name in zip(held, on_node, strict=True):
            if name == "node2":
                with pytest.raises(pymysql.err.OperationalError):
                    fetch_one(conn, "SELECT 1")
            else:
                assert fetch_one(conn, "SELECT 1") == 1
    finally:
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()
    galera.restore()
    galera_proxy.wait_up(3)
    assert sorted(set(node_of(galera_proxy, 6))) == ["node1", "node2", "node3"]
