"""Counters and wait-time figures behind ``ConnectionPool.get_stats()``."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

# Recent acquisitions kept for the percentile; enough for a stable p99, small enough to sort.
_WAIT_SAMPLES = 2048


class PoolStats:
    """Event counters of one pool; the owner updates them while holding its lock."""

    __slots__ = (
        "_waits",
        "acquired",
        "causal_timeouts",
        "causal_waits",
        "closed",
        "closed_broken",
        "closed_idle",
        "closed_lagging",
        "closed_not_ready",
        "closed_overflow",
        "closed_read_only",
        "closed_stale",
        "closed_usage",
        "connect_failures",
        "created",
        "leaks_reported",
        "reclaimed",
        "recycled",
        "released",
        "requests_rejected",
        "timeouts",
        "validation_failures",
    )

    def __init__(self) -> None:
        self.created = 0
        self.recycled = 0
        self.acquired = 0
        self.released = 0
        self.timeouts = 0
        self.connect_failures = 0
        self.validation_failures = 0
        self.closed = 0
        self.closed_broken = 0
        self.closed_overflow = 0
        self.closed_idle = 0
        self.closed_usage = 0
        self.requests_rejected = 0
        self.closed_read_only = 0
        self.closed_not_ready = 0
        self.closed_lagging = 0
        self.closed_stale = 0
        self.causal_waits = 0
        self.causal_timeouts = 0
        self.reclaimed = 0
        self.leaks_reported = 0
        self._waits: deque[float] = deque(maxlen=_WAIT_SAMPLES)

    def record_wait(self, seconds: float) -> None:
        """Note the time one successful acquisition took.

        Safe without the owner's lock: a bounded deque's append is atomic, so the
        hot path need not take the lock again after validating a connection.
        """
        self._waits.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        """The counters and wait figures as a plain dict (times in milliseconds).

        The wait figures cover the most recent acquisitions only.
        """
        waits = sorted(self._waits.copy())
        p99 = waits[max(0, math.ceil(0.99 * len(waits)) - 1)] if waits else 0.0
        mean = math.fsum(waits) / len(waits) if waits else 0.0
        return {
            "created": self.created,
            "recycled": self.recycled,
            "acquired": self.acquired,
            "released": self.released,
            "timeouts": self.timeouts,
            "connect_failures": self.connect_failures,
            "validation_failures": self.validation_failures,
            "closed": self.closed,
            "closed_broken": self.closed_broken,
            "closed_overflow": self.closed_overflow,
            "closed_idle": self.closed_idle,
            "closed_usage": self.closed_usage,
            "requests_rejected": self.requests_rejected,
            "closed_read_only": self.closed_read_only,
            "closed_not_ready": self.closed_not_ready,
            "closed_lagging": self.closed_lagging,
            "closed_stale": self.closed_stale,
            "causal_waits": self.causal_waits,
            "causal_timeouts": self.causal_timeouts,
            "reclaimed": self.reclaimed,
            "leaks_reported": self.leaks_reported,
            "wait_ms_mean": round(mean * 1000.0, 3),
            "wait_ms_p99": round(p99 * 1000.0, 3),
            "wait_ms_max": round(waits[-1] * 1000.0, 3) if waits else 0.0,
        }
