"""dbpool.metrics.PoolCollector: served over real HTTP, parsed back with prometheus_client."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from dbpool import make_pool
from dbpool.metrics import PoolCollector
from dbpool.stats import BUCKETS
from tests.fakedb import FakeDriver

POOL = "db_client_connection_pool_name"
HISTOGRAMS = {
    "db_client_connection_create_time_seconds": "connect_time",
    "db_client_connection_wait_time_seconds": "wait_time",
    "db_client_connection_use_time_seconds": "use_time",
}
COUNTERS = {
    "dbpool_requests_total": "requests",
    "dbpool_connections_created_total": "created",
    "dbpool_connect_failures_total": "connect_failures",
    "dbpool_validation_failures_total": "validation_failures",
    "dbpool_connections_reclaimed_total": "reclaimed",
    "dbpool_leaks_reported_total": "leaks_reported",
    "db_client_connection_timeouts_total": "timeouts",
}


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def served() -> Iterator[Any]:
    """Serve a fresh registry on a free loopback port; yield (registry, scrape())."""
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200
            text = answer.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in samples, f"duplicate sample {key}"
                samples[key] = sample.value
        return samples

    try:
        yield registry, scrape
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def sample(samples: dict[Any, float], name: str, pool: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({POOL: pool, **labels}.items())))]


def server(stats: dict[str, Any]) -> dict[str, str]:
    """The server labels of a pool over one server, which its connection counts carry."""
    (key,) = stats["hosts"]
    address, port = key.split(":")
    return {"server_address": address, "server_port": port}


def connections(samples: dict[Any, float], name: str, state: str, stats: dict[str, Any]) -> float:
    return sample(
        samples,
        "db_client_connection_count",
        name,
        db_client_connection_state=state,
        **server(stats),
    )


def check_against_stats(samples: dict[Any, float], name: str, stats: dict[str, Any]) -> None:
    """Every exported figure of pool ``name`` equals its get_stats() counterpart."""
    assert connections(samples, name, "used", stats) == stats["in_use"]
    assert connections(samples, name, "idle", stats) == stats["pool_size"]
    assert not [k for k in samples if k[0] == "db_client_connection_count" and len(k[1]) < 4]
    assert sample(samples, "db_client_connection_max", name) == stats["max_size"]
    assert sample(samples, "db_client_connection_idle_max", name) == stats["size"]
    assert sample(samples, "db_client_connection_idle_min", name) == 0
    assert sample(samples, "db_client_connection_pending_requests", name) == stats["waiting"]
    for metric, key in COUNTERS.items():
        assert sample(samples, metric, name) == stats[key], metric
    for metric, key in HISTOGRAMS.items():
        figures = stats[key]
        for bound, count in figures["buckets"]:
            assert sample(samples, metric + "_bucket", name, le=repr(float(bound))) == count
        assert sample(samples, metric + "_bucket", name, le="+Inf") == figures["count"]
        assert sample(samples, metric + "_count", name) == figures["count"]
        assert sample(samples, metric + "_sum", name) == pytest.approx(figures["sum"])
    closed = {
        reason: sample(samples, "dbpool_connections_closed_total", name, reason=reason)
        for reason in ("recycled", "overflow", "broken", "closed")
    }
    assert sum(closed.values()) == stats["closed"]
    assert closed["recycled"] == stats["recycled"]
    assert closed["overflow"] == stats["closed_overflow"]
    assert closed["broken"] == stats["closed_broken"]


def test_collector_over_http_unit(served: Any, pools: list[Any]) -> None:
    registry, scrape = served
    pool = make_pool(driver=FakeDriver(), name="unit", size=1, max_overflow=1)
    pools.append(pool)
    registry.register(PoolCollector(pool))
    first, second = pool.acquire(), pool.acquire()
    pool.release(first)
    pool.release(second)  # the pool keeps one: this one is closed, as overflow
    held = pool.acquire()
    stats = pool.get_stats()
    samples = scrape()
    check_against_stats(samples, "unit", stats)
    assert sample(samples, "dbpool_connections_closed_total", "unit", reason="overflow") == 1
    assert server(stats) == {"server_address": "127.0.0.1", "server_port": "3306"}
    assert connections(samples, "unit", "used", stats) == 1
    assert (
        len([k for k in samples if k[0] == "db_client_connection_wait_time_seconds_bucket"])
        == len(BUCKETS) + 1
    )
    pool.release(held)


def test_duplicate_pool_names_are_refused(pools: list[Any]) -> None:
    a = make_pool(driver=FakeDriver(), name="same")
    b = make_pool(driver=FakeDriver(), name="same")
    pools.extend([a, b])
    with pytest.raises(ValueError, match="pools share the name 'same'"):
        PoolCollector(a, b)


def test_no_pools_given_reports_every_live_pool(pools: list[Any]) -> None:
    a = make_pool(driver=FakeDriver(), name="live-a")
    b = make_pool(driver=FakeDriver(), name="live-b")
    gone = make_pool(driver=FakeDriver(), name="live-gone")
    pools.extend([a, b, gone])
    gone.dispose()
    registry = CollectorRegistry()
    registry.register(PoolCollector())
    text = generate_latest(registry).decode()
    assert f'{POOL}="live-a"' in text and f'{POOL}="live-b"' in text
    assert "live-gone" not in text


def test_collector_while_a_workload_runs_on_mariadb(served: Any, mysql_pool: Any) -> None:
    registry, scrape = served
    pool = mysql_pool(name="shop", size=3, max_overflow=2, timeout=20)
    registry.register(PoolCollector(pool))
    threads, rounds = 6, 40
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(rounds):
                with pool as conn:
                    cur = conn.cursor()
                    cur.execute("SELECT SLEEP(0.002)")
                    cur.fetchall()
                    cur.close()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    during = []
    while any(w.is_alive() for w in workers) and len(during) < 50 and not stop.is_set():
        during.append(scrape())
    for worker in workers:
        worker.join(60)
    assert not errors
    assert during, "no scrape happened during the workload"
    labels = server(pool.get_stats())
    for samples in during:
        assert (
            sample(
                samples,
                "db_client_connection_count",
                "shop",
                db_client_connection_state="used",
                **labels,
            )
            <= 5
        )
        assert sample(samples, "db_client_connection_wait_time_seconds_count", "shop") <= (
            sample(samples, "dbpool_requests_total", "shop")
        )

    samples = scrape()
    stats = pool.get_stats()
    check_against_stats(samples, "shop", stats)
    total = threads * rounds
    assert stats["requests"] == total
    for metric in HISTOGRAMS:
        if metric != "db_client_connection_create_time_seconds":
            assert sample(samples, metric + "_count", "shop") == total, metric
    assert (
        sample(samples, "db_client_connection_create_time_seconds_count", "shop")
        == (stats["created"])
    )
    # The queries slept 2 ms each: no use time is below that.
    assert sample(samples, "db_client_connection_use_time_seconds_bucket", "shop", le="0.001") == 0
