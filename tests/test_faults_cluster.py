"""Many servers under faults: Galera nodes killed or cut off, a switchover, every
host down, replicas stopped or lagging, a node killed behind HAProxy; and, on
the same topologies, random host order and the facade's replica reads.

Each test prints one line of figures (see with ``pytest -s``) and asserts on
them: requests, errors (and when they started), hung threads, transactions run
twice (a ledger table with a primary key), connections left on each server.

The expensive tests run twice, shared mode with PyMySQL and persistent mode
with mysql-connector, so both modes and both drivers are covered; the cheap
ones run in all four combinations.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbpool import ConnectError, ObjDataThreadSafe, make_pool
from tests.faultkit import CLEAR_ERRORS, Ledger, session_count, wait_until
from tests.fix_cluster import GaleraCluster, HAProxy, ReplicationPair, query, wait_for
from tests.loadgen import Call, Load, error_kinds, select_one
from tests.queries import value

pytestmark = pytest.mark.faults

THREADS = 24
POOL_TIMEOUT = 10.0  # longer than a Galera view change (about 3 s here), which stalls commits
DENY = 3.0  # host_deny_seconds where a test waits for a host to be used again
RECYCLE = 2.0  # so that a persistent pool opens new connections, and can go back to a node
READ_ONLY_ERRORS = {1290, 1792, 1836}
NOT_READY = 1047

PAIRS = [("shared", "pymysql"), ("persistent", "mysql-connector")]
ALL = [
    (mode, driver) for mode in ("shared", "persistent") for driver in ("pymysql", "mysql-connector")
]

Factory = Callable[..., Any]


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def flavour(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(mode, driver): two combinations by default, all four where a test asks."""
    mode, driver = request.param
    return str(mode), str(driver)


def every_flavour(test: Any) -> Any:
    return pytest.mark.parametrize("flavour", ALL, indirect=True, ids=[f"{m}-{d}" for m, d in ALL])(
        test
    )


@pytest.fixture
def cluster_pool(pools: list[Any], flavour: tuple[str, str]) -> Factory:
    """Makes pools of the current mode and driver on given connect parameters."""
    mode, driver = flavour

    def new(params: dict[str, Any], threads: int = THREADS, **options: Any) -> Any:
        # Shared: fewer connections than threads. Persistent: one per thread.
        sizes = (
            {"size": threads, "max_overflow": 0}
            if mode == "persistent"
            else {"size": 8, "max_overflow": 8}
        )
        pool = make_pool(
            **{
                **params,
                **sizes,
                "driver": driver,
                "mode": mode,
                "timeout": POOL_TIMEOUT,
                **options,
            }
        )
        pools.append(pool)
        return pool

    return new


# -- helpers ----------------------------------------------------------------------


def error_code(exc: BaseException | None) -> int | None:
    """The server's error number of a driver exception (either driver), or None."""
    while exc is not None:
        code = getattr(exc, "errno", None)
        if isinstance(code, int) and code > 0:
            return code
        args = getattr(exc, "args", ())
        if args and isinstance(args[0], int):
            return int(args[0])
        exc = exc.__cause__
    return None


def hosts(pool: Any) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = pool.get_stats()["hosts"]
    return stats


def opened(pool: Any) -> dict[str, int]:
    """Connections open to each host, as the pool counts them."""
    return {address: int(h["open"]) for address, h in hosts(pool).items()}


def server_sessions(
    servers: list[Any], user: str, expect: dict[str, int] | None = None
) -> dict[str, int]:
    """The test user's sessions on each running server (polled until ``expect``)."""
    counts = {}
    for server in servers:
        if not server.running:
            continue
        with contextlib.closing(server.admin_connect()) as admin:
            want = None if expect is None else expect.get(server.address, 0)
            counts[server.address] = session_count(admin, user, expect=want)
    return counts


def errors_of(calls: list[Call]) -> list[Call]:
    return [call for call in calls if call.error is not None]


def codes_of(calls: list[Call]) -> dict[int | None, int]:
    """How many errors of each server error number (None: not a server error)."""
    counts: dict[int | None, int] = {}
    for call in errors_of(calls):
        code = error_code(call.error)
        counts[code] = counts.get(code, 0) + 1
    return counts


def unclear(calls: list[Call]) -> list[BaseException]:
    """Errors of a kind a caller should never see from a server fault."""
    return [c.error for c in calls if c.error is not None and not isinstance(c.error, CLEAR_ERRORS)]


def server_id(pool: Any, *, readonly: bool = False) -> int:
    with pool.connection(readonly=readonly) as conn:
        return int(value(conn, "SELECT @@server_id"))


def enough_calls(load: Load, since: float, count: int = 200, timeout: float = 30.0) -> None:
    """Let ``count`` calls start after ``since`` (bounded)."""
    assert wait_until(lambda: len(load.calls_between(since)) >= count, timeout), (
        f"fewer than {count} calls in {timeout:.0f} s"
    )


@pytest.fixture
def galera_ledger(galera: GaleraCluster) -> Iterator[Ledger]:
    """A ledger on the cluster, its tables on every node before the test starts."""
    book = Ledger(galera.admin_connect, galera.nodes[0].database, hot_row=False, tag=True)
    galera.wait_applied(f"SELECT COUNT(*) FROM {book.counter}")
    yield book
    book.drop()


@pytest.fixture
def pair_ledger(replication: ReplicationPair) -> Iterator[Ledger]:
    book = Ledger(lambda: replication.primary.admin_connect(), replication.first.database, tag=True)
    replication.wait_caught_up()
    yield book
    replication.reset()
    book.drop()


def primary_with_replica(pair: ReplicationPair) -> dict[str, Any]:
    """Connect parameters: the primary as ``host``, the replica in ``replicas``."""
    params = pair.primary.params()
    params["host"] = [pair.primary.address]
    del params["port"]
    params["replicas"] = [pair.replica.address]
    return params


# -- Galera -----------------------------------------------------------------------


@pytest.mark.timing
def test_galera_node_killed_under_writers(
    galera: GaleraCluster, galera_ledger: Ledger, cluster_pool: Factory, flavour: tuple[str, str]
) -> None:
    first, second, third = galera.nodes
    user = first.user
    # galera_check: the restarted node accepts connections while it is still
    # joining (IST) and answers 1047 until it is synced; the check keeps the
    # pool off it until then.
    pool = cluster_pool(galera.params(), host_deny_seconds=DENY, recycle=RECYCLE, galera_check=True)
    load = Load(pool, THREADS, galera_ledger.transaction).start()
    try:
        assert wait_until(lambda: len(galera_ledger.committed) >= 100, 30)
        before = opened(pool)
        first.kill()  # SIGKILL; returns once the process is gone
        t_dead = time.monotonic()
        galera.wait_size(2, [second, third], timeout=30)
        assert wait_until(lambda: opened(pool)[first.address] == 0, 10)
        t_moved = time.monotonic()
        enough_calls(load, t_moved)
        # Denied after each refused connect (the window may lapse between two).
        denied = wait_until(lambda: hosts(pool)[first.address]["denied"], 10)
        while_down = hosts(pool)[first.address]
        first.resume()
        galera.wait_synced()
        t_back = time.monotonic()
        # Its deny window over, new connections (recycled ones) go to node1 again.
        reused = wait_until(lambda: opened(pool)[first.address] > 0, DENY + RECYCLE + 15)
        t_reused = time.monotonic()
        enough_calls(load, t_reused)
    finally:
        hung = load.stop()
    in_flight = errors_of(load.calls_between(0, t_dead))
    late = errors_of(load.calls_between(t_dead))
    longest = max(c.seconds for c in load.calls)
    stats = pool.get_stats()
    per_host = opened(pool)
    servers = server_sessions(galera.nodes, user, expect=per_host)
    figures = galera_ledger.check()
    pool.dispose()
    left = server_sessions(galera.nodes, user, expect={})
    print(
        f"\ngalera-kill/{flavour[0]}/{flavour[1]}: requests={len(load.calls)} "
        f"errors_in_flight={len(in_flight)} {codes_of(in_flight)} "
        f"errors_after_kill={len(late)} {codes_of(late)} hung={hung} "
        f"longest={longest:.2f}s conns_before={before} "
        f"node1_while_down=open:{while_down['open']},denied:{denied} "
        f"moved_in={t_moved - t_dead:.2f}s reused_after_rejoin={t_reused - t_back:.2f}s "
        f"failed_by_port={galera_ledger.failures_by_port()} (node1={first.port}) "
        f"most_errors_per_conn={galera_ledger.most_failures_on_one_connection()} "
        f"conns_after={per_host} server={servers} left={left} txn={figures}"
    )
    assert hung == 0
    assert before[first.address] > 0 and before[second.address] == before[third.address] == 0
    assert not unclear(load.calls)
    assert len(in_flight) <= pool.max_size
    assert set(galera_ledger.failures_by_port()) <= {first.port, None}
    assert galera_ledger.most_failures_on_one_connection() <= 1
    assert late == [], error_kinds(late)
    assert while_down["open"] == 0 and denied
    assert reused, "node1 was not used again after it rejoined"
    assert longest < POOL_TIMEOUT + 10
    assert servers == {n.address: per_host.get(n.address, 0) for n in galera.nodes}
    assert stats["in_use"] == 0
    assert set(left.values()) == {0}


@pytest.mark.parametrize("galera_check", [False, True], ids=["plain", "galera_check"])
def test_galera_node_cut_off(
    galera: GaleraCluster,
    galera_ledger: Ledger,
    cluster_pool: Factory,
    flavour: tuple[str, str],
    galera_check: bool,
) -> None:
    first, second, third = galera.nodes
    threads = 16
    pool = cluster_pool(
        galera.params(),
        threads=threads,
        galera_check=galera_check,
        host_deny_seconds=30,
        ping_interval=0.2,
    )
    load = Load(pool, threads, galera_ledger.transaction).start()
    try:
        assert wait_until(lambda: len(galera_ledger.committed) >= 50, 30)
        assert load.pause(), "workers did not pause"
        before = opened(pool)
        first.isolate()  # gmcast.isolate=1: node1 drops out of the primary component
        galera.wait_size(2, [second, third], timeout=30)
        wait_for(lambda: first.status()["wsrep_ready"] == "OFF", 30, "node1 to be not ready")
        t_cut = time.monotonic()
        load.resume()  # every connection has idled past ping_interval: a real ping each
        enough_calls(load, t_cut)
        cut_off = hosts(pool)[first.address]
    finally:
        hung = load.stop()
        with contextlib.suppress(Exception):
            first.isolate(False)
    # Causal reads (the ledger's check) fail with 1205 while the view changes.
    galera.wait_synced()
    errors = errors_of(load.calls_between(t_cut))
    codes = sorted({error_code(c.error) for c in errors}, key=str)
    stats = pool.get_stats()
    figures = galera_ledger.check()
    print(
        f"\ngalera-cut-off/{flavour[0]}/{flavour[1]}/check={galera_check}: "
        f"requests={len(load.calls)} errors={len(errors)} codes={codes} hung={hung} "
        f"conns_before={before} node1_after=open:{cut_off['open']},"
        f"denied:{cut_off['denied']} validation_failures={stats['validation_failures']} "
        f"closed_read_only={stats.get('closed_read_only')} "
        f"most_errors_per_conn={galera_ledger.most_failures_on_one_connection()} "
        f"txn={figures}"
    )
    assert hung == 0
    assert before[first.address] > 0
    assert not unclear(load.calls)
    assert set(galera_ledger.failures_by_port()) <= {first.port}
    assert galera_ledger.most_failures_on_one_connection() <= 1
    if galera_check:
        assert errors == [], error_kinds(errors)
    else:
        # The ping (SELECT 1) still passes on a node out of the cluster: each
        # connection to it may fail once with 1047 (the pooled ones, and those
        # opened by threads that raced the first error), and is then closed.
        assert len(errors) <= pool.max_size
        assert set(codes) <= {NOT_READY}
    assert cut_off["open"] == 0 and cut_off["denied"]


def test_galera_random_order_spreads_connections(
    galera: GaleraCluster, cluster_pool: Factory, flavour: tuple[str, str]
) -> None:
    """Not a fault: with host_order="random" new connections go to every node."""
    threads = 24
    user = galera.nodes[0].user
    # A short recycle keeps new connections coming in both modes.
    pool = cluster_pool(galera.params(), threads=threads, host_order="random", recycle=0.5)
    made_before = {n.address: n.connections_made(user) for n in galera.nodes}

    def connects() -> dict[str, int]:
        return {n.address: n.connections_made(user) - made_before[n.address] for n in galera.nodes}

    load = Load(pool, threads, select_one).start()
    try:
        assert wait_until(lambda: sum(connects().values()) >= 60, 60, step=0.2)
        assert load.pause()
        per_host = opened(pool)
        servers = server_sessions(galera.nodes, user, expect=per_host)
    finally:
        hung = load.stop()
    made = connects()
    errors = errors_of(load.calls)
    print(
        f"\ngalera-random/{flavour[0]}/{flavour[1]}: requests={load.requests} "
        f"errors={len(errors)} hung={hung} connects={made} open={per_host} server={servers}"
    )
    assert hung == 0
    assert errors == []
    assert servers == per_host
    # About a third each; the bound is many standard deviations away.
    assert all(0 < n < 0.6 * sum(made.values()) for n in made.values()), made


# -- replication pair ---------------------------------------------------------------


@every_flavour
def test_switchover_moves_writes_to_the_new_primary(
    replication: ReplicationPair,
    pair_ledger: Ledger,
    cluster_pool: Factory,
    flavour: tuple[str, str],
) -> None:
    old, new = replication.primary, replication.replica
    threads = 16
    pool = cluster_pool(replication.params(), threads=threads)  # host: [old, new]
    load = Load(pool, threads, pair_ledger.transaction).start()
    try:
        assert wait_until(lambda: len(pair_ledger.committed) >= 50, 30)
        before = opened(pool)
        replication.switchover()
        # From here the new primary takes writes; only connections to the old one
        # may still fail, once each.
        t_promoted = replication.promoted_at
        assert wait_until(lambda: opened(pool)[old.address] == 0, 10), opened(pool)
        t_moved = time.monotonic()
        enough_calls(load, t_moved)
    finally:
        hung = load.stop()
    t_demoted = replication.demoted_at
    window = errors_of(load.calls_between(t_demoted, t_promoted))
    after = errors_of(load.calls_between(t_promoted))
    late = errors_of(load.calls_between(t_moved))
    codes = {error_code(c.error) for c in window + after}
    stats = pool.get_stats()
    old_host = hosts(pool)[old.address]
    servers = server_sessions([old, new], old.user, expect=opened(pool))
    figures = pair_ledger.check()
    print(
        f"\nswitchover/{flavour[0]}/{flavour[1]}: requests={len(load.calls)} "
        f"no_writer_for={t_promoted - t_demoted:.2f}s errors_no_writer={len(window)} "
        f"errors_after_promotion={len(after)} {error_kinds(after)} "
        f"codes={sorted(codes, key=str)} errors_after_move={len(late)} hung={hung} "
        f"conns_before={before} moved_in={t_moved - t_promoted:.2f}s "
        f"closed_read_only={stats['closed_read_only']} "
        f"failed_by_port={pair_ledger.failures_by_port()} (old={old.port}) "
        f"old=open:{old_host['open']},denied:{old_host['denied']} server={servers} "
        f"most_errors_per_conn={pair_ledger.most_failures_on_one_connection()} "
        f"txn={figures}"
    )
    assert hung == 0
    assert before[old.address] > 0 and before[new.address] == 0
    assert not unclear(load.calls)
    assert codes <= READ_ONLY_ERRORS, codes
    # At most one error per pooled connection, each then closed; once the new
    # primary takes writes, errors only from connections to the old one.
    assert pair_ledger.most_failures_on_one_connection() <= 1
    assert set(pair_ledger.failures_by_port(since=t_promoted)) <= {old.port}
    assert len(after) <= pool.max_size
    assert stats["closed_read_only"] >= len(window) + len(after)
    assert late == [], error_kinds(late)
    assert old_host["denied"] and old_host["open"] == 0
    assert servers[old.address] == 0
    assert servers[new.address] == stats["total_connections"]


@pytest.mark.timing
@every_flavour
def test_every_host_down_then_one_back(
    replication: ReplicationPair, cluster_pool: Factory, flavour: tuple[str, str]
) -> None:
    first, second = replication.first, replication.second
    timeout = 2.0
    threads = 16
    pool = cluster_pool(replication.params(), threads=threads, timeout=timeout)
    load = Load(pool, threads, select_one).start()
    try:
        assert wait_until(lambda: load.requests >= 4 * threads, 30)
        assert load.pause(), "workers did not pause"
        second.halt(graceful=False)
        first.halt(graceful=False)
        t_down = time.monotonic()
        load.resume()
        enough_calls(load, t_down, count=4 * threads)
        assert load.pause(), "workers did not pause"
        first.resume()
        t_up = time.monotonic()
        load.resume()
        enough_calls(load, t_up, count=100)
    finally:
        hung = load.stop()
        for server in (first, second):
            if not server.running:
                server.resume()
    down = load.calls_between(t_down, t_up)
    up = load.calls_between(t_up)
    messages = {str(c.error) for c in down if c.error is not None}
    longest = max(c.seconds for c in down)
    up_errors = errors_of(up)
    print(
        f"\nall-down/{flavour[0]}/{flavour[1]}: requests_down={len(down)} "
        f"errors_down={len(errors_of(down))} {error_kinds(down)} hung={hung} "
        f"longest_down={longest:.2f}s requests_up={len(up)} errors_up={len(up_errors)} "
        f"{error_kinds(up_errors)} message={sorted(messages)[0]!r}"
    )
    assert hung == 0
    assert errors_of(load.calls_between(0, t_down)) == []
    assert all(isinstance(c.error, ConnectError) for c in down), error_kinds(down)
    for message in messages:
        assert first.address in message and second.address in message, message
        assert first.password not in message
    assert longest < timeout + 3.0
    # Every host was denied: all are tried again, so the first call after one
    # came back is served.
    assert up_errors == [], error_kinds(up_errors)


@every_flavour
def test_readonly_connections_go_to_the_replica(
    replication: ReplicationPair, cluster_pool: Factory, flavour: tuple[str, str]
) -> None:
    primary, replica = replication.primary, replication.replica
    threads = 8
    pool = cluster_pool(primary_with_replica(replication), threads=2 * threads + 1)

    def read(pool: Any) -> None:
        if server_id(pool, readonly=True) != replica.server_id:
            raise AssertionError("a readonly connection went to the primary")

    def write(pool: Any) -> None:
        if server_id(pool) != primary.server_id:
            raise AssertionError("a read-write connection went to the replica")

    reads = Load(pool, threads, read).start()
    writes = Load(pool, threads, write).start()
    try:
        assert wait_until(lambda: reads.requests >= 200 and writes.requests >= 200, 30)
        assert reads.pause() and writes.pause()
        by_host = hosts(pool)  # while the threads (and a persistent pool's connections) live
        conn = pool.acquire(readonly=True)
        try:
            cur = conn.cursor()
            cur.execute("SELECT @@server_id, @@read_only")
            acquired = tuple(int(v) for v in cur.fetchall()[0])
            cur.close()
        finally:
            pool.release(conn)
    finally:
        hung = reads.stop() + writes.stop()
    errors = errors_of(reads.calls + writes.calls)
    print(
        f"\nreplica-reads/{flavour[0]}/{flavour[1]}: reads={reads.requests} "
        f"writes={writes.requests} errors={len(errors)} {error_kinds(errors)} hung={hung} "
        f"hosts={ {a: (h['role'], h['open']) for a, h in by_host.items()} }"
    )
    assert hung == 0
    assert errors == [], [c.error for c in errors[:3]]
    assert acquired == (replica.server_id, 1)
    assert by_host[primary.address]["role"] == "primary"
    assert by_host[replica.address]["role"] == "replica"
    assert by_host[replica.address]["open"] > 0 and by_host[primary.address]["open"] > 0
    assert set(by_host[replica.address]) >= {
        "role",
        "open",
        "in_use",
        "connect_failures",
        "denied",
        "denied_for",
    }


@pytest.mark.timing
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
def test_replica_down(
    replication: ReplicationPair, cluster_pool: Factory, flavour: tuple[str, str], fallback: bool
) -> None:
    primary, replica = replication.primary, replication.replica
    timeout = 2.0
    pool = cluster_pool(
        primary_with_replica(replication),
        threads=4,
        timeout=timeout,
        replica_fallback=fallback,
        host_deny_seconds=DENY,  # still denied when read back after ten reads on a busy machine
    )
    assert server_id(pool, readonly=True) == replica.server_id
    replica.halt(graceful=False)
    try:
        start = time.monotonic()
        if fallback:
            served_by = [server_id(pool, readonly=True) for _ in range(10)]
            message = ""
        else:
            with pytest.raises(ConnectError) as caught:
                server_id(pool, readonly=True)
            message = str(caught.value)
            served_by = []
        took = time.monotonic() - start
        writes = server_id(pool)
        denied = hosts(pool)[replica.address]["denied"]
    finally:
        replica.resume()
    back = wait_until(
        lambda: server_id(pool, readonly=True) == replica.server_id, DENY + 15, step=0.2
    )
    print(
        f"\nreplica-down/{flavour[0]}/{flavour[1]}/fallback={fallback}: "
        f"served_by={sorted(set(served_by))} took={took:.2f}s denied={denied} "
        f"message={message!r} back_on_replica={back}"
    )
    assert writes == primary.server_id
    assert denied
    if fallback:
        assert served_by == [primary.server_id] * 10
    else:
        assert replica.address in message
        assert primary.password not in message
        assert took < timeout + 3.0
    assert back


def test_replica_skipped_when_replication_stops_or_lags(
    replication: ReplicationPair, cluster_pool: Factory, flavour: tuple[str, str]
) -> None:
    primary, replica = replication.primary, replication.replica
    interval = 0.1
    pool = cluster_pool(
        primary_with_replica(replication),
        threads=4,
        replica_max_lag=1,
        ping_interval=interval,
        host_deny_seconds=0.5,
    )

    def reader() -> int:
        time.sleep(interval * 1.5)  # the lag check runs at most once per ping_interval
        return server_id(pool, readonly=True)

    table = f"`{primary.database}`.`lag_probe`"
    query(primary, f"CREATE TABLE IF NOT EXISTS {table} (id INT AUTO_INCREMENT PRIMARY KEY)")
    replication.wait_caught_up()
    assert reader() == replica.server_id

    replication.stop_replication()
    skipped_stopped = wait_until(lambda: reader() == primary.server_id, 10, step=0)
    while_stopped = [reader() for _ in range(10)]
    replication.start_replication()
    back_after_start = wait_until(lambda: reader() == replica.server_id, 10, step=0)

    replication.set_delay(30)
    query(primary, f"INSERT INTO {table} VALUES ()")
    skipped_lagging = wait_until(lambda: reader() == primary.server_id, 15, step=0)
    lag = replication.lag()
    while_lagging = [reader() for _ in range(10)]
    replication.set_delay(0)
    replication.wait_caught_up()
    back_after_lag = wait_until(lambda: reader() == replica.server_id, 10, step=0)
    query(primary, f"DROP TABLE {table}")
    print(
        f"\nreplica-lag/{flavour[0]}/{flavour[1]}: skipped_when_stopped={skipped_stopped} "
        f"while_stopped={while_stopped} back_after_start={back_after_start} "
        f"skipped_when_lagging={skipped_lagging} lag={lag}s while_lagging={while_lagging} "
        f"back_after_lag={back_after_lag}"
    )
    assert skipped_stopped and while_stopped == [primary.server_id] * 10
    assert back_after_start
    assert skipped_lagging and lag is not None and lag > 1
    assert while_lagging == [primary.server_id] * 10
    assert back_after_lag


@every_flavour
def test_facade_reads_from_replicas(
    replication: ReplicationPair,
    flavour: tuple[str, str],
) -> None:
    mode, driver = flavour
    primary, replica = replication.primary, replication.replica
    db = ObjDataThreadSafe(
        **primary_with_replica(replication), mode=mode, driver=driver, read_from_replicas=True
    )
    try:
        outside = db.sql_get_value("SELECT @@server_id")
        rows = db.sql_get_values("SELECT @@server_id")
        dicts = db.sql_get_dicts("SELECT @@server_id AS id")
        with db.transaction():
            inside = db.sql_get_value("SELECT @@server_id")
    finally:
        ObjDataThreadSafe.close_pool()
    assert outside == replica.server_id
    assert rows[0][0] == replica.server_id and dicts[0]["id"] == replica.server_id
    assert inside == primary.server_id


# -- HAProxy ------------------------------------------------------------------------


@pytest.mark.timing
def test_galera_node_killed_behind_haproxy(
    galera_proxy: HAProxy,
    galera: GaleraCluster,
    galera_ledger: Ledger,
    cluster_pool: Factory,
    flavour: tuple[str, str],
) -> None:
    victim = galera.nodes[1]
    others = [node for node in galera.nodes if node is not victim]
    user = victim.user
    pool = cluster_pool(galera_proxy.params(), recycle=RECYCLE)  # one host: the proxy
    load = Load(pool, THREADS, galera_ledger.transaction).start()
    try:
        assert wait_until(lambda: len(galera_ledger.committed) >= 100, 30)
        before = server_sessions(galera.nodes, user)
        victim.kill()
        t_dead = time.monotonic()
        wait_for(
            lambda: galera_proxy.states()[victim.address] == "DOWN",
            10,
            "haproxy to mark the node down",
        )
        t_down = time.monotonic()
        galera.wait_size(2, others, timeout=30)
        enough_calls(load, t_down)
    finally:
        hung = load.stop()
    in_flight = errors_of(load.calls_between(0, t_dead))
    late = errors_of(load.calls_between(t_dead))
    longest = max(c.seconds for c in load.calls)
    stats = pool.get_stats()
    servers = server_sessions(others, user)
    figures = galera_ledger.check()
    pool.dispose()
    left = server_sessions(others, user, expect={})
    print(
        f"\nhaproxy-kill/{flavour[0]}/{flavour[1]}: requests={len(load.calls)} "
        f"errors_in_flight={len(in_flight)} {codes_of(in_flight)} "
        f"errors_after_kill={len(late)} {codes_of(late)} hung={hung} "
        f"longest={longest:.2f}s marked_down_in={t_down - t_dead:.2f}s "
        f"sessions_before={before} sessions_after={servers} "
        f"pool_conns={stats['total_connections']} left={left} "
        f"failed_by_port={galera_ledger.failures_by_port()} (victim={victim.port}) "
        f"most_errors_per_conn={galera_ledger.most_failures_on_one_connection()} "
        f"txn={figures}"
    )
    assert hung == 0
    assert before[victim.address] > 0
    assert not unclear(load.calls)
    assert set(galera_ledger.failures_by_port()) <= {victim.port, None}
    assert galera_ledger.most_failures_on_one_connection() <= 1
    assert len(in_flight) <= pool.max_size
    assert late == [], error_kinds(late)
    assert longest < POOL_TIMEOUT + 10
    assert sum(servers.values()) == stats["total_connections"]
    assert set(left.values()) == {0}
