"""Pool metrics for OpenTelemetry and Prometheus, under the semantic conventions' names.

``instrument(pool)`` registers OpenTelemetry's database client connection pool
instruments (needs the ``otel`` extra); ``PoolCollector(*pools)`` is a
``prometheus_client`` collector (needs the ``prometheus`` extra). The pool
itself never imports this module.

Both read ``get_stats()`` when metrics are collected, so they cost nothing on
the hot path; only OpenTelemetry's three histograms take each figure as it is
recorded, because its API has no way to report buckets counted elsewhere.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .stats import BUCKETS

if TYPE_CHECKING:
    from .pool import ConnectionPool

log = logging.getLogger("dbpool.metrics")

__all__ = ["PoolCollector", "instrument"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

_COUNT_HELP = (
    "The number of connections that are currently in the state described by the state attribute"
)
# Pool-level gauge-like figures: (instrument name, unit, description, value from the stats).
_CURRENT: tuple[tuple[str, str, str, Callable[[dict[str, Any]], int]], ...] = (
    (
        "db.client.connection.max",
        "{connection}",
        "The maximum number of open connections allowed",
        lambda s: s["max_size"],
    ),
    (
        "db.client.connection.idle.max",
        "{connection}",
        "The maximum number of idle open connections allowed",
        lambda s: s["size"],
    ),
    (
        "db.client.connection.idle.min",
        "{connection}",
        "The minimum number of idle open connections allowed",
        lambda s: 0,
    ),
    (
        "db.client.connection.pending_requests",
        "{request}",
        "The number of current pending requests for an open connection",
        lambda s: s["waiting"],
    ),
)

# The three histograms: (kind told by the pool's stats, instrument name, description).
_HISTOGRAMS = (
    ("connect", "db.client.connection.create_time", "The time it took to create a new connection"),
    (
        "wait",
        "db.client.connection.wait_time",
        "The time it took to obtain an open connection from the pool",
    ),
    (
        "use",
        "db.client.connection.use_time",
        "The time between borrowing a connection and returning it to the pool",
    ),
)
_STATS_KEY = {"connect": "connect_time", "wait": "wait_time", "use": "use_time"}

Server = tuple[str, int]


def _server(key: str) -> Server:
    """A ``host:port`` (``[v6]:port``) key of ``get_stats()["hosts"]`` as address and port."""
    host, _, port = key.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _connection_counts(stats: dict[str, Any]) -> list[tuple[str, Server | None, int]]:
    """The points of ``db.client.connection.count``: (state, server or None, connections).

    A pool over one server reports its own figures with that server (``used``
    counts a connect under way too). With several servers, or replicas, each
    server reports the open connections it holds, lent (``used``) or not
    (``idle``), the replicas' included: the points add up to every open
    connection, and no point without a server counts them twice.
    """
    hosts = stats["hosts"]
    if len(hosts) <= 1:
        server = _server(next(iter(hosts))) if hosts else None
        return [("idle", server, stats["pool_size"]), ("used", server, stats["in_use"])]
    points: list[tuple[str, Server | None, int]] = []
    for key, figures in hosts.items():
        server = _server(key)
        points.append(("idle", server, figures["open"] - figures["in_use"]))
        points.append(("used", server, figures["in_use"]))
    return points


# -- OpenTelemetry -------------------------------------------------------------


class _Instruments:
    """The instruments of one meter provider, shared by every pool instrumented on it.

    OpenTelemetry keeps the first callback of an instrument name and ignores
    later registrations, so one callback reports all of the provider's pools.
    """

    def __init__(self, meter_provider: Any) -> None:
        from . import __version__

        self.pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
        meter = meter_provider.get_meter("dbpool", __version__)
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._observe_counts],
            unit="{connection}",
            description=_COUNT_HELP,
        )
        for name, unit, description, value in _CURRENT:
            meter.create_observable_up_down_counter(
                name, callbacks=[self._observer(value)], unit=unit, description=description
            )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            callbacks=[self._observer(_timeouts)],
            unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to obtain "
            "a connection from the pool",
        )
        self.histograms = {
            kind: meter.create_histogram(
                name,
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=list(BUCKETS),
            )
            for kind, name, description in _HISTOGRAMS
        }

    def _observer(self, value: Callable[[dict[str, Any]], int]) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterable[Any]:
            for pool in list(self.pools):
                yield Observation(value(pool.get_stats()), {POOL_NAME: pool.name})

        return observe

    def _observe_counts(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        for pool in list(self.pools):
            for state, server, value in _connection_counts(pool.get_stats()):
                attributes: dict[str, str | int] = {POOL_NAME: pool.name, STATE: state}
                if server is not None:
                    attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server
                yield Observation(value, attributes)

    def add(self, pool: ConnectionPool) -> None:
        if pool in self.pools:
            return
        self.pools.add(pool)
        attributes = {POOL_NAME: pool.name}
        histograms = self.histograms

        def listener(kind: str, seconds: float) -> None:
            histograms[kind].record(seconds, attributes)

        pool._stats.listeners += (listener,)


def _timeouts(stats: dict[str, Any]) -> int:
    return int(stats["timeouts"])


_providers: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_providers_lock = threading.Lock()


def instrument(pool: ConnectionPool, meter_provider: Any = None) -> None:
    """Report ``pool`` through OpenTelemetry's database connection pool instruments.

    ``meter_provider``: where to register them (default: the global one, from
    ``opentelemetry.metrics.get_meter_provider()``). Calling it again for the
    same pool and provider does nothing. The histograms count figures from
    this call on; the other instruments read ``get_stats()`` at collection.
    """
    if meter_provider is None:
        from opentelemetry import metrics

        meter_provider = metrics.get_meter_provider()
    with _providers_lock:
        instruments = _providers.get(meter_provider)
        if instruments is None:
            instruments = _providers[meter_provider] = _Instruments(meter_provider)
        instruments.add(pool)


# -- Prometheus ----------------------------------------------------------------

# dbpool's own counters: (metric name without _total, help, stats key).
_COUNTERS = (
    ("dbpool_requests", "Calls to acquire(), including those that failed", "requests"),
    ("dbpool_connections_created", "Connections opened", "created"),
    ("dbpool_connect_failures", "Connect attempts that failed", "connect_failures"),
    (
        "dbpool_validation_failures",
        "Connections that failed the check before lending",
        "validation_failures",
    ),
    (
        "dbpool_connections_reclaimed",
        "Connections garbage-collected without being given back, then closed by the pool",
        "reclaimed",
    ),
    ("dbpool_leaks_reported", "Connections reported as held past leak_threshold", "leaks_reported"),
)
# Why connections were closed: the reasons of the pool's log lines, from the stats.
_CLOSE_REASONS = (
    ("recycled", "recycled"),
    ("overflow", "closed_overflow"),
    ("broken", "closed_broken"),
)
# Each server's own figures, from get_stats()["hosts"]: (metric, kind, help, value).
_HOST_FIGURES: tuple[tuple[str, str, str, Callable[[dict[str, Any]], float]], ...] = (
    (
        "dbpool_host_connects",
        "counter",
        "Connections opened to the server",
        lambda h: h["connects"],
    ),
    (
        "dbpool_host_connect_failures",
        "counter",
        "Connect attempts to the server that failed",
        lambda h: h["connect_failures"],
    ),
    (
        "dbpool_host_denied",
        "gauge",
        "1 while the server is on the deny list (not tried after a failure), else 0",
        lambda h: int(h["denied"]),
    ),
    (
        "dbpool_host_denied_seconds",
        "gauge",
        "Seconds left before a denied server is tried again",
        lambda h: h["denied_for"],
    ),
)
_POOL_LABEL = "db_client_connection_pool_name"
_STATE_LABEL = "db_client_connection_state"
_ADDRESS_LABEL = "server_address"
_PORT_LABEL = "server_port"


class PoolCollector:
    """A ``prometheus_client`` collector of pools, read from ``get_stats()`` at each scrape.

    With no pools given, it reports every pool of the process that is alive at
    scrape time. Register it once::

        prometheus_client.REGISTRY.register(PoolCollector(pool))
    """

    def __init__(self, *pools: ConnectionPool) -> None:
        names = [pool.name for pool in pools]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(
                f"pools share the name {', '.join(map(repr, doubled))}: give each its own "
                "name= so that their metrics stay apart"
            )
        self._pools = pools
        self._warned: set[str] = set()

    def _targets(self) -> list[ConnectionPool]:
        if self._pools:
            return list(self._pools)
        from .pool import _live_pools

        chosen: dict[str, ConnectionPool] = {}
        for pool in sorted(_live_pools, key=id):
            if pool._closed:
                continue
            if pool.name in chosen:
                if pool.name not in self._warned:
                    self._warned.add(pool.name)
                    log.warning(
                        "several pools are named %r; only one is exported: give each its own name=",
                        pool.name,
                    )
                continue
            chosen[pool.name] = pool
        return list(chosen.values())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            Metric,
        )

        snapshots = [(pool.name, pool.get_stats()) for pool in self._targets()]
        pool_label = [_POOL_LABEL]

        # Label sets differ between pools (a SQLite pool has no server): samples by hand.
        count = Metric("db_client_connection_count", _COUNT_HELP, "gauge")
        for name, stats in snapshots:
            for state, server, connections in _connection_counts(stats):
                labels = {_POOL_LABEL: name, _STATE_LABEL: state}
                if server is not None:
                    labels[_ADDRESS_LABEL], labels[_PORT_LABEL] = server[0], str(server[1])
                count.add_sample(count.name, labels, connections)
        yield count
        for metric, _, description, value in _CURRENT:
            gauge = GaugeMetricFamily(metric.replace(".", "_"), description, labels=pool_label)
            for name, stats in snapshots:
                gauge.add_metric([name], value(stats))
            yield gauge

        timeouts = CounterMetricFamily(
            "db_client_connection_timeouts",
            "The number of connection timeouts that have occurred trying to obtain a connection "
            "from the pool",
            labels=pool_label,
        )
        for name, stats in snapshots:
            timeouts.add_metric([name], stats["timeouts"])
        yield timeouts

        for kind, metric, description in _HISTOGRAMS:
            histogram = HistogramMetricFamily(
                metric.replace(".", "_") + "_seconds",
                description,
                labels=pool_label,
                unit="seconds",
            )
            for name, stats in snapshots:
                figures = stats[_STATS_KEY[kind]]
                buckets = [(_le(bound), count) for bound, count in figures["buckets"]]
                buckets.append(("+Inf", figures["count"]))
                histogram.add_metric([name], buckets, figures["sum"])
            yield histogram

        for metric, description, key in _COUNTERS:
            counter = CounterMetricFamily(metric, description, labels=pool_label)
            for name, stats in snapshots:
                counter.add_metric([name], stats[key])
            yield counter
        closed = CounterMetricFamily(
            "dbpool_connections_closed",
            "Connections closed, by reason: recycled, overflow (returned to a full pool), "
            "broken, closed (close_all(), dispose(), reclaimed or let go)",
            labels=[_POOL_LABEL, "reason"],
        )
        for name, stats in snapshots:
            rest = stats["closed"]
            for reason, key in _CLOSE_REASONS:
                closed.add_metric([name, reason], stats[key])
                rest -= stats[key]
            closed.add_metric([name, "closed"], rest)
        yield closed

        host_labels = [_POOL_LABEL, _ADDRESS_LABEL, _PORT_LABEL, "role"]
        for metric, kind, description, figure in _HOST_FIGURES:
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(metric, description, labels=host_labels)
            else:
                family = GaugeMetricFamily(metric, description, labels=host_labels)
            for name, stats in snapshots:
                for key, figures in stats["hosts"].items():
                    address, port = _server(key)
                    family.add_metric([name, address, str(port), figures["role"]], figure(figures))
            yield family


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``0.005``)."""
    return repr(float(bound)) if math.isfinite(bound) else "+Inf"
