"""dbpool.metrics.instrument with OpenTelemetry's SDK and its in-memory reader."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    InMemoryMetricReader,
    Sum,
)

from dbpool import PoolTimeout, make_pool
from dbpool.metrics import instrument
from dbpool.stats import BUCKETS
from tests.fakedb import FakeDriver

POOL = "db.client.connection.pool.name"
SERVER = {"server.address": "127.0.0.1", "server.port": 3306}  # the default server

# name -> (unit, kind, monotonic for sums)
EXPECTED = {
    "db.client.connection.count": ("{connection}", Sum, False),
    "db.client.connection.max": ("{connection}", Sum, False),
    "db.client.connection.idle.max": ("{connection}", Sum, False),
    "db.client.connection.idle.min": ("{connection}", Sum, False),
    "db.client.connection.pending_requests": ("{request}", Sum, False),
    "db.client.connection.timeouts": ("{timeout}", Sum, True),
    "db.client.connection.create_time": ("s", Histogram, None),
    "db.client.connection.wait_time": ("s", Histogram, None),
    "db.client.connection.use_time": ("s", Histogram, None),
}


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def read(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    metrics: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "dbpool"
            for metric in scope.metrics:
                metrics[metric.name] = metric
    return metrics


def points(metric: Any, pool: str) -> list[Any]:
    return [p for p in metric.data.data_points if p.attributes[POOL] == pool]


@pytest.mark.parametrize("mode", ["shared", "persistent"])
def test_every_instrument_with_its_unit_and_attributes(pools: list[Any], mode: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pool = make_pool(
        mode=mode, driver=FakeDriver(connect_delay=0.002), name="orders", size=2, max_overflow=1
    )
    other = make_pool(mode=mode, driver=FakeDriver(), name="reports", size=1, max_overflow=0)
    pools.extend([pool, other])
    instrument(pool, provider)
    instrument(other, meter_provider=provider)
    instrument(pool, provider)  # a second call changes nothing
    try:
        for _ in range(4):
            with pool:
                pass
        held = pool.acquire()
        with other:
            pass
        with other:
            timed_out: list[BaseException] = []

            def late() -> None:  # another thread: in persistent mode, too, it must wait
                try:
                    other.acquire(timeout=0.01)
                except PoolTimeout as exc:
                    timed_out.append(exc)

            thread = threading.Thread(target=late)
            thread.start()
            thread.join(10)
            assert len(timed_out) == 1

            metrics = read(reader)
            assert set(metrics) == set(EXPECTED)
            for name, (unit, kind, monotonic) in EXPECTED.items():
                metric = metrics[name]
                assert metric.unit == unit, name
                assert isinstance(metric.data, kind), name
                if monotonic is not None:
                    assert metric.data.is_monotonic is monotonic, name
                for point in metric.data.data_points:
                    expected_keys = {POOL}
                    if name == "db.client.connection.count":
                        # One server: the pool's own figures, naming the server.
                        expected_keys |= {"db.client.connection.state", *SERVER}
                        assert {k: point.attributes[k] for k in SERVER} == SERVER, name
                    assert set(point.attributes) == expected_keys, name
                assert {p.attributes[POOL] for p in metric.data.data_points} == {
                    "orders",
                    "reports",
                }, name

            def value(name: str, pool_name: str, **attributes: str) -> Any:
                for point in points(metrics[name], pool_name):
                    wanted = {f"db.client.connection.{k}": v for k, v in attributes.items()}
                    if all(point.attributes.get(k) == v for k, v in wanted.items()):
                        return point.value if not hasattr(point, "bucket_counts") else point
                raise AssertionError(f"no point {name} {pool_name} {attributes}")

            stats = pool.get_stats()
            assert value("db.client.connection.count", "orders", state="used") == 1
            assert (
                value("db.client.connection.count", "orders", state="idle") == (stats["pool_size"])
            )
            assert value("db.client.connection.count", "reports", state="used") == 1
            assert value("db.client.connection.max", "orders") == 3
            assert value("db.client.connection.idle.max", "orders") == 2
            assert value("db.client.connection.idle.min", "orders") == 0
            assert value("db.client.connection.pending_requests", "orders") == 0
            assert value("db.client.connection.timeouts", "reports") == 1
            assert value("db.client.connection.timeouts", "orders") == 0

            for otel, key in (
                ("create_time", "connect_time"),
                ("wait_time", "wait_time"),
                ("use_time", "use_time"),
            ):
                point = value(f"db.client.connection.{otel}", "orders")
                ours = stats[key]
                assert point.count == ours["count"] > 0, otel
                assert point.sum == pytest.approx(ours["sum"]), otel
                assert list(point.explicit_bounds) == list(BUCKETS), otel
                cumulative = [sum(point.bucket_counts[: i + 1]) for i in range(len(BUCKETS))]
                assert cumulative == [count for _, count in ours["buckets"]], otel
            assert value("db.client.connection.use_time", "orders").count == 4
            assert value("db.client.connection.wait_time", "orders").count == 4  # at return
            assert value("db.client.connection.create_time", "orders").min >= 0.002
        pool.release(held)
    finally:
        provider.shutdown()


def test_global_meter_provider_is_the_default(
    pools: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import metrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: provider)
    pool = make_pool(driver=FakeDriver(), name="global")
    pools.append(pool)
    instrument(pool)
    with pool:
        pass
    try:
        metrics_read = read(reader)
        assert points(metrics_read["db.client.connection.wait_time"], "global")[0].count == 1
    finally:
        provider.shutdown()
