"""Per-server metrics of pools over host lists and replicas, on the fake driver."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dbpool import ConnectionPool, make_pool
from dbpool.metrics import PoolCollector, instrument
from tests.fakedb import FakeDriver

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
SERVERS = {("a", 3306), ("b", 3307), ("r1", 3306), ("r2", 3306)}


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def busy(pools: list[Any], pool_mode: str) -> Any:
    """A pool over a, b:3307 (a down) and replicas r1, r2, with connections used and idle.

    Returns the pool; b holds one connection lent and one idle (shared mode),
    r1 one lent and one idle, a and r2 none.
    """
    driver = FakeDriver()
    driver.server("a:3306").down = True
    pool = make_pool(
        mode=pool_mode,
        driver=driver,
        user="app",
        name="multi",
        host=["a", "b:3307"],
        replicas=["r1", "r2"],
        size=2,
        max_overflow=1,
    )
    pools.append(pool)
    held: list[Any] = []
    for readonly in (False, True):
        first = pool.acquire(readonly=readonly)
        if pool_mode == "shared":
            second = pool.acquire(readonly=readonly)
            pool.release(second)  # kept idle
        held.append(first)
    yield pool
    for conn in held:
        pool.release(conn)


def host_totals(stats: dict[str, Any]) -> tuple[int, int]:
    """(used, open) over every server of get_stats(), the replicas' included."""
    hosts = stats["hosts"].values()
    return sum(h["in_use"] for h in hosts), sum(h["open"] for h in hosts)


def test_otel_counts_connections_per_server(busy: ConnectionPool, pool_mode: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(busy, provider)
    try:
        data = reader.get_metrics_data()
        assert data is not None
        metrics = {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        points = metrics["db.client.connection.count"].data.data_points
        stats = busy.get_stats()
        counts: Counter[tuple[str, str, int]] = Counter()
        for point in points:
            attributes = dict(point.attributes)
            # Every series names its server: none is a pool-wide total counted again.
            assert set(attributes) == {POOL, STATE, "server.address", "server.port"}
            assert attributes[POOL] == "multi"
            assert isinstance(attributes["server.port"], int)
            key = (attributes[STATE], attributes["server.address"], attributes["server.port"])
            assert key not in counts, key
            counts[key] = point.value
        assert {(address, port) for _, address, port in counts} == SERVERS
        assert {state for state, _, _ in counts} == {"idle", "used"}
        idle = 1 if pool_mode == "shared" else 0
        assert counts["used", "b", 3307] == 1
        assert counts["idle", "b", 3307] == idle
        assert counts["used", "r1", 3306] == 1
        assert counts["idle", "r1", 3306] == idle
        assert counts["used", "a", 3306] == counts["idle", "a", 3306] == 0
        assert counts["used", "r2", 3306] == counts["idle", "r2", 3306] == 0
        # The sums are the pool's, replicas included.
        used = sum(v for (state, _, _), v in counts.items() if state == "used")
        assert used == stats["in_use"] + stats["replicas"]["in_use"] == 2
        assert sum(counts.values()) == (
            stats["total_connections"] + stats["replicas"]["total_connections"]
        )
        assert (used, sum(counts.values())) == host_totals(stats)
        # Pool-wide figures stay pool-wide.
        for name in ("db.client.connection.max", "db.client.connection.pending_requests"):
            for point in metrics[name].data.data_points:
                assert set(point.attributes) == {POOL}, name
    finally:
        provider.shutdown()


def scrape(*pools: ConnectionPool) -> dict[str, list[Any]]:
    registry = CollectorRegistry()
    registry.register(PoolCollector(*pools))
    text = generate_latest(registry).decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def test_prometheus_counts_and_host_figures_per_server(
    busy: ConnectionPool, pool_mode: str
) -> None:
    samples = scrape(busy)
    stats = busy.get_stats()
    counts: dict[tuple[str, str, str], float] = {}
    for sample in samples["db_client_connection_count"]:
        labels = sample.labels
        assert set(labels) == {
            "db_client_connection_pool_name",
            "db_client_connection_state",
            "server_address",
            "server_port",
        }
        key = (
            labels["db_client_connection_state"],
            labels["server_address"],
            labels["server_port"],
        )
        assert key not in counts, key
        counts[key] = sample.value
    assert {(address, int(port)) for _, address, port in counts} == SERVERS
    for key, figures in stats["hosts"].items():
        address, port = key.split(":")
        assert counts["used", address, port] == figures["in_use"], key
        assert counts["idle", address, port] == figures["open"] - figures["in_use"], key
    used = sum(v for (state, _, _), v in counts.items() if state == "used")
    assert (used, sum(counts.values())) == host_totals(stats)
    assert sum(counts.values()) == (
        stats["total_connections"] + stats["replicas"]["total_connections"]
    )
    assert counts["used", "b", "3307"] == counts["used", "r1", "3306"] == 1

    def by_server(name: str) -> dict[tuple[str, str], tuple[str, float]]:
        found = {}
        for sample in samples[name]:
            labels = sample.labels
            assert labels["db_client_connection_pool_name"] == "multi"
            found[labels["server_address"], labels["server_port"]] = (labels["role"], sample.value)
        return found

    failures = by_server("dbpool_host_connect_failures_total")
    assert failures == {
        ("a", "3306"): ("primary", stats["hosts"]["a:3306"]["connect_failures"]),
        ("b", "3307"): ("primary", 0),
        ("r1", "3306"): ("replica", 0),
        ("r2", "3306"): ("replica", 0),
    }
    assert failures["a", "3306"][1] >= 1
    denied = by_server("dbpool_host_denied")
    assert denied["a", "3306"] == ("primary", 1)
    assert denied["b", "3307"] == ("primary", 0)
    assert denied["r1", "3306"] == ("replica", 0)
    denied_for = by_server("dbpool_host_denied_seconds")
    assert denied_for["a", "3306"][1] > 0
    assert denied_for["b", "3307"][1] == 0
    connects = by_server("dbpool_host_connects_total")
    assert {server: value for server, (_, value) in connects.items()} == {
        (key.split(":")[0], key.split(":")[1]): figures["connects"]
        for key, figures in stats["hosts"].items()
    }
    assert connects["b", "3307"][1] == (2 if pool_mode == "shared" else 1)
    # Pool-wide figures stay pool-wide.
    for name in ("db_client_connection_max", "db_client_connection_pending_requests"):
        assert [s.labels for s in samples[name]] == [{"db_client_connection_pool_name": "multi"}]


def test_one_server_keeps_the_pool_figures_and_names_it(pools: list[Any]) -> None:
    pool = make_pool(driver=FakeDriver(), user="app", name="one", host="db.example", port=3310)
    sqlite = make_pool(driver="sqlite", path=":memory:", name="embedded")
    pools.extend([pool, sqlite])
    held = pool.acquire()
    samples = scrape(pool, sqlite)
    counts = {
        (s.labels["db_client_connection_pool_name"], s.labels["db_client_connection_state"]): s
        for s in samples["db_client_connection_count"]
    }
    assert counts["one", "used"].value == 1
    assert counts["one", "used"].labels["server_address"] == "db.example"
    assert counts["one", "used"].labels["server_port"] == "3310"
    assert counts["one", "idle"].value == pool.get_stats()["pool_size"] == 0
    # A SQLite pool has no server to name.
    assert set(counts["embedded", "idle"].labels) == {
        "db_client_connection_pool_name",
        "db_client_connection_state",
    }
    assert {s.labels["db_client_connection_pool_name"] for s in samples["dbpool_host_denied"]} == {
        "one"
    }
    pool.release(held)


def test_ipv6_servers_lose_their_brackets(pools: list[Any]) -> None:
    pool = make_pool(driver=FakeDriver(), user="app", name="v6", host=["[::1]:3311", "b"])
    pools.append(pool)
    with pool:
        samples = scrape(pool)
    servers = {
        (s.labels["server_address"], s.labels["server_port"])
        for s in samples["db_client_connection_count"]
    }
    assert servers == {("::1", "3311"), ("b", "3306")}
