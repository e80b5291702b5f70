"""Host lists and replicas on real servers: the session's MariaDB and a second one.

The second server has the same account, so one pool can list both. Tests that stop
it or make it read-only put it back before they end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbpool import ConnectError, ObjDataThreadSafe
from tests.mariadb import MariaDBServer
from tests.queries import value

TABLE = "hosts_ledger"


@pytest.fixture(scope="module")
def spare(mariadb: MariaDBServer) -> Iterator[MariaDBServer]:
    """A second server with the same account and database as the session's."""
    if mariadb.external:
        pytest.skip("needs servers started by the tests")
    server = MariaDBServer(ignore_env=True)
    server.password = mariadb.password
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def both(mariadb: MariaDBServer, spare: MariaDBServer) -> Iterator[tuple[MariaDBServer, ...]]:
    """The spare and the session's server, each with an empty ledger table, spare writable."""
    if not spare.running:
        spare.resume()
    for server in (spare, mariadb):
        with contextlib.closing(server.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL read_only = OFF")
            cur.execute(f"DROP TABLE IF EXISTS `{server.database}`.{TABLE}")
            cur.execute(
                f"CREATE TABLE `{server.database}`.{TABLE} "
                "(id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB"
            )
    yield spare, mariadb
    if not spare.running:
        spare.resume()
    with contextlib.closing(spare.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL read_only = OFF")


def hosts_params(first: MariaDBServer, second: MariaDBServer) -> dict[str, Any]:
    params = first.params()
    params.pop("port")
    params["host"] = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    return params


def port_of(conn: Any) -> int:
    return int(value(conn, "SELECT @@port"))


def write(conn: Any, row: int) -> None:
    cur = conn.cursor()
    try:
        cur.execute(f"INSERT INTO {TABLE} VALUES (%s, 'x')", (row,))
    finally:
        cur.close()
    conn.commit()


def error_code(exc: BaseException) -> Any:
    code = getattr(exc, "errno", None)
    return exc.args[0] if code is None and exc.args else code


def rows_on(server: MariaDBServer) -> int:
    with contextlib.closing(server.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{server.database}`.{TABLE}")
        return int(cur.fetchone()[0])


def set_read_only(server: MariaDBServer, on: bool) -> None:
    with contextlib.closing(server.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute(f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.timing
def test_failover_to_the_next_host_and_back(
    both: tuple[MariaDBServer, ...], mysql_pool: Any, pool_mode: str
) -> None:
    spare, main = both
    spare.halt()
    # A deny window a busy machine does not overrun before the stats are read.
    pool = mysql_pool(**hosts_params(spare, main), host_deny_seconds=3.0, timeout=10)
    started = time.monotonic()
    with pool.connection() as conn:
        assert port_of(conn) == main.port
    assert time.monotonic() - started < 5
    hosts = pool.get_stats()["hosts"]
    spare_key, main_key = f"127.0.0.1:{spare.port}", f"127.0.0.1:{main.port}"
    assert hosts[spare_key]["denied"] and hosts[spare_key]["connect_failures"] >= 1
    assert hosts[main_key]["open"] == 1
    spare.resume()
    wait_until(lambda: not pool.get_stats()["hosts"][spare_key]["denied"], "the deny to end")
    # The connection to the main server is kept; a new one goes to the preferred host.
    held = pool.acquire()
    assert port_of(held) == main.port
    if pool_mode == "shared":
        with pool.connection() as conn:
            assert port_of(conn) == spare.port
    pool.release(held)
    if pool_mode == "persistent":
        pool.close_thread_connection()
        with pool.connection() as conn:
            assert port_of(conn) == spare.port


@pytest.mark.timing
def test_every_host_down_names_each_within_the_timeout(
    both: tuple[MariaDBServer, ...], mysql_pool: Any
) -> None:
    spare, main = both
    params = hosts_params(spare, main)
    params["host"] = [params["host"][0], "127.0.0.1:9"]  # the discard port: nobody listens
    spare.halt()
    # Both refuse at once: the retries end the acquire, long before the timeout (a deadline
    # reached first would leave a host "not tried").
    pool = mysql_pool(**params, timeout=30)
    started = time.monotonic()
    with pytest.raises(ConnectError) as failed:
        pool.acquire()
    assert time.monotonic() - started < 15
    text = str(failed.value)
    assert f"127.0.0.1:{spare.port}: the server cannot be reached" in text
    assert "127.0.0.1:9: the server cannot be reached" in text
    assert main.password not in text
    spare.resume()
    with pool.connection() as conn:
        assert port_of(conn) == spare.port


def test_read_only_switch_retires_connections_after_one_error(
    both: tuple[MariaDBServer, ...], mysql_pool: Any, pool_mode: str
) -> None:
    spare, main = both
    pool = mysql_pool(**hosts_params(spare, main), size=4, max_overflow=0)
    threads = 4 if pool_mode == "persistent" else 1
    errors: list[int] = []
    written: list[tuple[int, int]] = []
    lock = threading.Lock()
    opened = threading.Barrier(threads + 1)  # every worker's connections are open
    switched = threading.Event()

    def worker(index: int) -> None:
        conns = [pool.acquire() for _ in range(1 if threads > 1 else 4)]
        for conn in conns:
            assert port_of(conn) == spare.port
        for conn in conns:
            conn.close()
        opened.wait(10)
        switched.wait(10)
        for n in range(10):
            row = index * 100 + n
            with pool.connection() as conn:
                try:
                    write(conn, row)
                except Exception as exc:
                    with lock:
                        errors.append(error_code(exc))
                    continue
                with lock:
                    written.append((row, port_of(conn)))

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    opened.wait(10)
    set_read_only(spare, True)
    switched.set()
    for thread in workers:
        thread.join(30)
    assert not any(t.is_alive() for t in workers)
    stats = pool.get_stats()
    print(
        f"\nread-only switch ({pool_mode}): errors {errors}, writes {len(written)}, "
        f"closed_read_only {stats['closed_read_only']}, closed_stale {stats['closed_stale']}"
    )
    assert set(errors) <= {1290}
    assert len(errors) <= threads  # at most one per pooled connection
    assert {port for _, port in written} == {main.port}
    assert rows_on(spare) == 0
    assert rows_on(main) == len(written) == threads * 10 - len(errors)
    spare_key = f"127.0.0.1:{spare.port}"
    assert stats["hosts"][spare_key]["denied"] is True
    assert stats["hosts"][spare_key]["open"] == 0
    assert stats["closed_read_only"] == len(errors)


def test_new_connections_skip_a_read_only_primary(
    both: tuple[MariaDBServer, ...], mysql_pool: Any
) -> None:
    spare, main = both
    set_read_only(spare, True)
    pool = mysql_pool(**hosts_params(spare, main))
    for row in range(3):
        with pool.connection() as conn:
            assert port_of(conn) == main.port
            write(conn, row)
    stats = pool.get_stats()
    assert stats["hosts"][f"127.0.0.1:{spare.port}"]["last_error"] == "read_only is ON"
    assert rows_on(main) == 3 and rows_on(spare) == 0


def test_readonly_connections_go_to_the_replica(
    both: tuple[MariaDBServer, ...], mysql_pool: Any
) -> None:
    spare, main = both
    pool = mysql_pool(**main.params(), replicas=[f"127.0.0.1:{spare.port}"])
    with pool.connection(readonly=True) as conn:
        assert port_of(conn) == spare.port
    with pool.connection() as conn:
        assert port_of(conn) == main.port
    spare.halt()
    with pool.connection(readonly=True) as conn:  # the fallback
        assert port_of(conn) == main.port
    hosts = pool.get_stats()["hosts"]
    assert hosts[f"127.0.0.1:{spare.port}"]["role"] == "replica"
    assert hosts[f"127.0.0.1:{spare.port}"]["denied"] is True


def test_replica_without_replication_is_skipped_when_lag_matters(
    both: tuple[MariaDBServer, ...], mysql_pool: Any
) -> None:
    spare, main = both
    with contextlib.closing(spare.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute(f"GRANT REPLICA MONITOR ON *.* TO '{spare.user}'@'127.0.0.1'")
    pool = mysql_pool(
        **main.params(), replicas=[f"127.0.0.1:{spare.port}"], replica_max_lag=5, ping_interval=0
    )
    with pool.connection(readonly=True) as conn:
        assert port_of(conn) == main.port
    reason = pool.get_stats()["hosts"][f"127.0.0.1:{spare.port}"]["last_error"]
    assert reason == "replication is not configured on it"


def test_facade_reads_from_the_replica(
    both: tuple[MariaDBServer, ...], mysql_driver: str, pool_mode: str
) -> None:
    spare, main = both
    try:
        db = ObjDataThreadSafe(
            config_name="hosts_mysql",
            driver=mysql_driver,
            mode=pool_mode,
            **main.params(),
            replicas=[f"127.0.0.1:{spare.port}"],
            read_from_replicas=True,
        )
        assert db.sql_get_value("SELECT @@port") == spare.port
        db.sql_execute(f"INSERT INTO {TABLE} VALUES (1, 'w')")
        with db.transaction():
            assert db.sql_get_value("SELECT @@port") == main.port
        assert rows_on(main) == 1 and rows_on(spare) == 0
    finally:
        ObjDataThreadSafe.close_pool("hosts_mysql")


def test_statement_error_codes_are_seen_by_both_drivers(
    both: tuple[MariaDBServer, ...], mysql_pool: Any
) -> None:
    spare, main = both
    pool = mysql_pool(**hosts_params(spare, main))
    with pool.connection() as conn:
        assert port_of(conn) == spare.port
        set_read_only(spare, True)
        with pytest.raises(Exception) as failed:
            write(conn, 1)
        assert error_code(failed.value) == 1290
    assert pool.get_stats()["closed_read_only"] == 1
    with pool.connection() as conn:
        assert port_of(conn) == main.port
