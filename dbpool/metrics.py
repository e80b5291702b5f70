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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .stats import BUCKETS

if TYPE_CHECKING:
    from .pool import ConnectionPool

log = logging.getLogger("dbpool.metrics")

__all__ = ["PoolCollector", "instrument"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

_COUNT_HELP = (
    "The number of connections that are currently in the state described by the state attribute"
)
# Gauge-like figures: (instrument name, unit, description, state or None, value from the stats).
_CURRENT: tuple[tuple[str, str, str, str | None, Callable[[dict[str, Any]], int]], ...] = (
    (
        "db.client.connection.count",
        "{connection}",
        _COUNT_HELP,
        "idle",
        lambda s: s["pool_size"],  # open and not lent (in_use counts a connect under way)
    ),
    (
        "db.client.connection.count",
        "{connection}",
        _COUNT_HELP,
        "used",
        lambda s: s["in_use"],
    ),
    (
        "db.client.connection.max",
        "{connection}",
        "The maximum number of open connections allowed",
        None,
        lambda s: s["max_size"],
    ),
    (
        "db.client.connection.idle.max",
        "{connection}",
        "The maximum number of idle open connections allowed",
        None,
        lambda s: s["size"],
    ),
    (
        "db.client.connection.idle.min",
        "{connection}",
        "The minimum number of idle open connections allowed",
        None,
        lambda s: 0,
    ),
    (
        "db.client.connection.pending_requests",
        "{request}",
        "The number of current pending requests for an open connection",
        None,
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
        names: dict[str, list[tuple[str | None, Callable[[dict[str, Any]], int]]]] = {}
        meta: dict[str, tuple[str, str]] = {}
        for name, unit, description, state, value in _CURRENT:
            names.setdefault(name, []).append((state, value))
            meta[name] = (unit, description)
        for name, figures in names.items():
            unit, description = meta[name]
            meter.create_observable_up_down_counter(
                name, callbacks=[self._observer(figures)], unit=unit, description=description
            )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            callbacks=[self._observer([(None, _timeouts)])],
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

    def _observer(
        self, figures: Sequence[tuple[str | None, Callable[[dict[str, Any]], int]]]
    ) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterable[Any]:
            for pool in list(self.pools):
                stats = pool.get_stats()
                for state, value in figures:
                    attributes = {POOL_NAME: pool.name}
                    if state is not None:
                        attributes[STATE] = state
                    yield Observation(value(stats), attributes)

        return observe

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
_POOL_LABEL = "db_client_connection_pool_name"
_STATE_LABEL = "db_client_connection_state"


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
        )

        snapshots = [(pool.name, pool.get_stats()) for pool in self._targets()]
        pool_label = [_POOL_LABEL]

        count = GaugeMetricFamily(
            "db_client_connection_count", _COUNT_HELP, labels=[_POOL_LABEL, _STATE_LABEL]
        )
        for name, stats in snapshots:
            count.add_metric([name, "idle"], stats["pool_size"])
            count.add_metric([name, "used"], stats["in_use"])
        yield count
        for metric, _, description, state, value in _CURRENT:
            if state is not None:
                continue
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


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``0.005``)."""
    return repr(float(bound)) if math.isfinite(bound) else "+Inf"
