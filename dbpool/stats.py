"""Counters, histograms and wait-time figures behind ``ConnectionPool.get_stats()``.

Each counter is a field of ``Counters``, declared once; ``get_stats()`` lists
them all through ``dataclasses.asdict``. The pool changes them while holding
its lock.

The three histograms (wait, connect and use time) are cumulative and have the
same fixed buckets, in seconds, Prometheus-style, so that figures from many
processes add up. Recording one must cost next to nothing, and must not take
the pool's lock once more: ``list[i] += 1`` is a read and a write, and two
threads doing it at once can lose a count. So the buckets are written only in
critical sections the pool enters anyway. The return of a connection is one:
there ``returned`` counts its use time and the wait of the ``acquire()`` that
lent it (carried by the connection), two increments and no other work. A
connect time is known outside any critical section, so ``record_connect`` only
appends it to a deque, which is atomic and safe from any thread without a
lock; the next return, or ``get_stats()``, moves it into its buckets
(``absorb``). A return that takes no lock (a thread keeping the connection it
gave back, see ``ConnectionPool._park``) queues its two figures the same way
(``queued_returns``).

Listeners (the OpenTelemetry exporter of ``dbpool.metrics``) get each figure as
it is recorded, in the recording thread and outside every lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# The counter each reason for closing a connection adds to, besides "closed".
RETIRE_COUNTERS = {
    "recycled": "recycled",
    "overflow": "closed_overflow",
    "broken": "closed_broken",
    "discarded": "closed_broken",
    "idle": "closed_idle",
    "usage": "closed_usage",
    "lost": "closed_broken",
    "read_only": "closed_read_only",
    "not_ready": "closed_not_ready",
    "lagging": "closed_lagging",
    "stale": "closed_stale",
}
# Recent acquisitions kept for the percentile; enough for a stable p99, small enough to sort.
_WAIT_SAMPLES = 2048

# Upper bounds (seconds, inclusive) of the histogram buckets; one more bucket takes the rest.
# Fine at the low end, where a checkout from a warm pool lands, up to the longest timeouts.
BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

_FIRST = BUCKETS[0]

# What a listener is told: the histogram ("wait", "connect" or "use") and the figure.
Listener = Callable[[str, float], None]


class Histogram:
    """Counts per bucket of ``BUCKETS`` (the last one unbounded) and the sum of the figures."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def record(self, seconds: float) -> None:
        # bisect_left: a figure equal to a bound belongs to that bound's bucket (le). Most
        # waits of a warm pool fall in the first bucket, found without a search.
        self.counts[0 if seconds <= _FIRST else bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> dict[str, Any]:
        """count, sum and ``buckets``: [upper bound, figures at most that] pairs, cumulative."""
        cumulative = []
        total = 0
        for bound, count in zip(BUCKETS, self.counts, strict=False):
            total += count
            cumulative.append([bound, total])
        return {"count": total + self.counts[-1], "sum": self.sum, "buckets": cumulative}


@dataclass(slots=True)
class Counters:
    """The event counters of one pool; each is a key of ``get_stats()`` (see the README)."""

    requests: int = 0
    created: int = 0
    recycled: int = 0
    acquired: int = 0
    released: int = 0
    timeouts: int = 0
    connect_failures: int = 0
    validation_failures: int = 0
    closed: int = 0
    closed_broken: int = 0
    closed_overflow: int = 0
    closed_idle: int = 0
    closed_usage: int = 0
    requests_rejected: int = 0
    closed_read_only: int = 0
    closed_not_ready: int = 0
    closed_lagging: int = 0
    closed_stale: int = 0
    causal_waits: int = 0
    causal_timeouts: int = 0
    reclaimed: int = 0
    leaks_reported: int = 0


class PoolStats(Counters):
    """The counters, the histograms and the recent wait times of one pool."""

    __slots__ = (
        "_connects",
        "_recent",
        "connect_time",
        "listeners",
        "queued_returns",
        "use_time",
        "wait_time",
    )

    def __init__(self, previous: PoolStats | None = None) -> None:
        """Fresh figures; listeners carry over from ``previous`` (a pool starting anew)."""
        super().__init__()
        self.wait_time = Histogram()
        self.connect_time = Histogram()
        self.use_time = Histogram()
        self.listeners: tuple[Listener, ...] = () if previous is None else previous.listeners
        self._connects: deque[float] = deque()  # recorded, not yet in the histogram
        # (waited, used) of returns made without the lock, not yet in the histograms
        self.queued_returns: deque[tuple[float, float]] = deque()
        self._recent: deque[float] = deque(maxlen=_WAIT_SAMPLES)

    # record_wait and record_connect need no lock (see the module docstring).

    def record_wait(self, seconds: float) -> None:
        """Note the time one successful ``acquire()`` took, for ``wait_ms_*``.

        Its histogram counts it at the return of the connection (``returned``).
        """
        self._recent.append(seconds)

    def wait_recorder(self) -> Callable[[float], None]:
        """``record_wait`` as one C call (the deque's own append), for the checkout path."""
        return self._recent.append

    def record_connect(self, seconds: float) -> None:
        """Note the time one successful connect took."""
        self._connects.append(seconds)
        for listener in self.listeners:
            listener("connect", seconds)

    def returned(self, waited: float, used: float) -> None:
        """Count a returned connection's wait and use time (the caller holds the pool's lock).

        A return that takes no lock queues them in ``queued_returns`` instead.
        """
        self.wait_time.record(waited)
        self.use_time.record(used)
        if self._connects or self.queued_returns:
            self.absorb()

    def tell_returned(self, waited: float, used: float) -> None:
        """Give what ``returned`` counted to the listeners (outside the lock)."""
        for listener in self.listeners:
            listener("wait", waited)
            listener("use", used)

    def absorb(self) -> None:
        """Move the connect times and returns queued since the last call into their histograms.

        The caller holds the pool's lock: the histograms are written nowhere else.
        """
        connects = self._connects
        while connects:
            self.connect_time.record(connects.popleft())
        returns = self.queued_returns
        while returns:
            waited, used = returns.popleft()  # absorb alone takes them, lock held
            self.wait_time.record(waited)
            self.use_time.record(used)

    def snapshot(self) -> dict[str, Any]:
        """The counters, histograms and wait figures as a plain dict (caller holds the lock).

        ``wait_ms_*`` cover the most recent acquisitions only, in milliseconds;
        the histograms cover the pool's whole life, in seconds.
        """
        self.absorb()
        waits = sorted(self._recent.copy())
        p99 = waits[max(0, math.ceil(0.99 * len(waits)) - 1)] if waits else 0.0
        mean = math.fsum(waits) / len(waits) if waits else 0.0
        stats = asdict(self)
        stats.update(
            wait_ms_mean=round(mean * 1000.0, 3),
            wait_ms_p99=round(p99 * 1000.0, 3),
            wait_ms_max=round(waits[-1] * 1000.0, 3) if waits else 0.0,
            wait_time=self.wait_time.snapshot(),
            connect_time=self.connect_time.snapshot(),
            use_time=self.use_time.snapshot(),
        )
        return stats
