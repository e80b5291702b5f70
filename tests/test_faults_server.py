"""Server faults under load: restart, killed connections, max_connections reached.

Each test prints one line of figures (see with ``pytest -s``) and asserts on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from dbpool import ConnectError
from tests.faultkit import (
    CLEAR_ERRORS,
    Ledger,
    kill_all,
    session_count,
    session_id,
    session_open,
    wait_until,
)
from tests.loadgen import Load, error_kinds, select_one
from tests.mariadb import MariaDBServer

pytestmark = pytest.mark.faults

StartLoad = Callable[..., Load]  # the start_load fixture

THREADS = 64
POOL_TIMEOUT = 2.0
# The longest a call may take while the server is down: the acquire deadline
# (connects included), plus the failing statement, plus scheduling on a busy machine.
CALL_BOUND = POOL_TIMEOUT + 3.0


def pool_for_threads(mysql_pool: Any, pool_mode: str, threads: int, **options: Any) -> Any:
    """Shared: fewer connections than threads. Persistent: one per thread, as it needs."""
    if pool_mode == "persistent":
        return mysql_pool(size=threads, max_overflow=0, timeout=POOL_TIMEOUT, **options)
    return mysql_pool(size=8, max_overflow=8, timeout=POOL_TIMEOUT, **options)


@pytest.mark.timing
def test_server_restart_under_load(
    mysql_pool: Any,
    pool_mode: str,
    mysql_driver: str,
    restartable_mariadb: MariaDBServer,
    mysql_params: dict[str, Any],
    ledger: Ledger,
    start_load: StartLoad,
) -> None:
    pool = pool_for_threads(mysql_pool, pool_mode, THREADS)
    user = mysql_params["user"]
    reads = start_load(pool, THREADS - 4, select_one)
    writes = start_load(pool, 4, ledger.transaction)
    try:
        time.sleep(0.5)
        t_down = time.monotonic()
        restartable_mariadb.halt(graceful=False)  # a crash: every connection drops at once
        time.sleep(0.7)
        restartable_mariadb.resume()
        t_up = time.monotonic()
        time.sleep(1.0)
        # Calls caught by the crash may still be running: wait for some that began after it.
        assert wait_until(
            lambda: len(reads.calls_between(t_up)) + len(writes.calls_between(t_up)) >= THREADS,
            timeout=30,
        ), "no calls after the restart"
    finally:
        hung = reads.stop() + writes.stop()
        if not restartable_mariadb.running:
            restartable_mariadb.resume()
    calls = reads.calls + writes.calls
    down = [c for c in calls if t_down <= c.start < t_up]
    after = [c for c in calls if c.start >= t_up]
    errors_down = [c for c in down if c.error is not None]
    errors_after = [c for c in after if c.error is not None]
    longest_down = max((c.seconds for c in down), default=0.0)
    stats = pool.get_stats()
    admin = restartable_mariadb.admin_connect()
    try:
        server = session_count(admin, user, expect=stats["total_connections"])
        figures = ledger.check()
        pool.dispose()
        left = session_count(admin, user, expect=0)
    finally:
        admin.close()
    print(
        f"\nrestart/{pool_mode}/{mysql_driver}: requests={len(calls)} "
        f"errors_down={len(errors_down)} {error_kinds(errors_down)} "
        f"errors_after={len(errors_after)} hung={hung} longest_down={longest_down:.2f}s "
        f"conns={stats['total_connections']}/{stats['max_size']} server={server} "
        f"conns_left={left} txn={figures}"
    )
    assert hung == 0
    assert not [c.error for c in errors_down if not isinstance(c.error, CLEAR_ERRORS)]
    assert longest_down < CALL_BOUND
    assert len(after) > 0
    assert errors_after == [], error_kinds(errors_after)
    assert stats["in_use"] == 0
    assert stats["total_connections"] <= stats["max_size"]
    assert server == stats["total_connections"]
    assert left == 0


@pytest.mark.timing
def test_server_down_fails_fast_with_a_clear_error(
    mysql_pool: Any, pool_mode: str, restartable_mariadb: MariaDBServer
) -> None:
    pool = mysql_pool(size=2, timeout=POOL_TIMEOUT)
    with pool as conn:
        conn.cursor().execute("SELECT 1")
    restartable_mariadb.halt(graceful=False)
    try:
        start = time.monotonic()
        with pytest.raises(ConnectError) as caught:
            pool.acquire()
        took = time.monotonic() - start
    finally:
        restartable_mariadb.resume()
    message = str(caught.value)
    print(f"\nserver-down/{pool_mode}: {took:.2f}s: {message}")
    assert took < CALL_BOUND
    assert "cannot connect to" in message and "attempts" in message
    assert restartable_mariadb.password not in message
    with pool as conn:
        conn.cursor().execute("SELECT 1")


def test_every_pooled_connection_killed_mid_load(
    mysql_pool: Any,
    pool_mode: str,
    mysql_driver: str,
    admin: Any,
    mysql_params: dict[str, Any],
    start_load: StartLoad,
) -> None:
    """Kills land while the connections sit in the pool: validation must catch them all."""
    threads = 16
    pool = pool_for_threads(mysql_pool, pool_mode, threads)
    user = mysql_params["user"]
    load = start_load(pool, threads, select_one)
    killed = 0

    def run_for(seconds: float, calls: int) -> None:
        """Let the load run ``seconds``, and at least ``calls`` more calls (bounded)."""
        until = load.requests + calls
        time.sleep(seconds)
        assert wait_until(lambda: load.requests >= until, timeout=30), "the load made no progress"

    try:
        for _ in range(5):
            run_for(0.3, 2 * threads)  # connections open (again) to be killed
            assert load.pause(), "workers did not pause"
            assert pool.get_stats()["in_use"] == 0
            killed += kill_all(admin, user)
            load.resume()
        run_for(0.5, 4 * threads)  # every connection is used (and checked) again
        assert load.pause()
        stats = pool.get_stats()
        server = session_count(admin, user, expect=stats["total_connections"])
    finally:
        hung = load.stop()
    errors = [c for c in load.calls if c.error is not None]
    print(
        f"\nkill/{pool_mode}/{mysql_driver}: requests={load.requests} killed={killed} "
        f"errors={len(errors)} {error_kinds(errors)} hung={hung} "
        f"validation_failures={stats['validation_failures']} "
        f"conns={stats['total_connections']} server={server}"
    )
    assert hung == 0
    assert killed >= 5
    assert errors == []
    assert stats["validation_failures"] >= 5
    assert server == stats["total_connections"] <= stats["max_size"]


def test_kills_inside_transactions_surface_and_nothing_runs_twice(
    mysql_pool: Any,
    pool_mode: str,
    mysql_driver: str,
    admin: Any,
    mysql_params: dict[str, Any],
    ledger: Ledger,
    start_load: StartLoad,
) -> None:
    threads = 8
    pool = pool_for_threads(mysql_pool, pool_mode, threads)
    user = mysql_params["user"]
    load = start_load(pool, threads, ledger.transaction)
    rounds = 0
    try:
        time.sleep(0.2)
        # Kill at random moments until some transaction was cut (bounded).
        while rounds < 100 and not (ledger.failed and rounds >= 5):
            kill_all(admin, user)
            rounds += 1
            time.sleep(0.05)
        time.sleep(0.5)
        t_calm = time.monotonic()
        time.sleep(0.5)
    finally:
        hung = load.stop()
    figures = ledger.check()
    errors = [c for c in load.calls if c.error is not None]
    calm_errors = [c for c in load.calls_between(t_calm) if c.error is not None]
    print(
        f"\nkill-in-txn/{pool_mode}/{mysql_driver}: requests={load.requests} "
        f"kill_rounds={rounds} errors={len(errors)} {error_kinds(errors)} "
        f"errors_after={len(calm_errors)} hung={hung} {figures}"
    )
    assert hung == 0
    assert figures["failed"] > 0, "no transaction was ever cut: the test proved nothing"
    assert not [c.error for c in errors if not isinstance(c.error, CLEAR_ERRORS)]
    assert calm_errors == []


@pytest.mark.timing
def test_server_out_of_connections(
    mysql_pool: Any, pool_mode: str, mysql_driver: str, admin: Any, mysql_params: dict[str, Any]
) -> None:
    pool = mysql_pool(size=2, timeout=POOL_TIMEOUT)
    hogs: list[Any] = []
    with admin.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_connections")
        saved = int(cur.fetchone()[0])
        cur.execute("SHOW STATUS LIKE 'Threads_connected'")
        connected = int(cur.fetchone()[1])
        cur.execute(f"SET GLOBAL max_connections = {max(10, connected + 2)}")

    def fill() -> None:
        """Open connections until the server refuses one for max_connections."""
        for _ in range(50):
            try:
                hogs.append(pymysql.connect(**mysql_params, connect_timeout=5))
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1040
                return
        pytest.fail("max_connections was never reached")

    try:
        fill()
        for _ in range(10):
            start = time.monotonic()
            try:
                conn = pool.acquire()
            except ConnectError as exc:
                took = time.monotonic() - start
                caught = exc
                break
            # A session of an earlier test ended after the server was full, and the pool
            # took the slot it left: give that back, and fill the server again.
            conn_id = session_id(conn)
            pool.release(conn, discard=True)
            session_open(admin, conn_id, expect=False)
            fill()
        else:
            pytest.fail("the server kept taking connections after max_connections was reached")
        hogs.pop().close()
        assert wait_until(lambda: _can_connect(pool), timeout=15.0)
    finally:
        for hog in hogs:
            hog.close()
        with admin.cursor() as cur:
            cur.execute(f"SET GLOBAL max_connections = {saved}")
    message = str(caught)
    print(
        f"\nmax-connections/{pool_mode}/{mysql_driver}: hogs={len(hogs) + 1} "
        f"took={took:.2f}s error={message!r}"
    )
    assert "max_connections reached" in message
    assert took < CALL_BOUND
    assert mysql_params["password"] not in message
    assert pool.get_stats()["in_use"] == 0


def _can_connect(pool: Any) -> bool:
    try:
        conn = pool.acquire(timeout=1.0)
    except ConnectError:
        return False
    pool.release(conn)
    return True
