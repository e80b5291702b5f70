"""Soak: minutes of full load in each mode; connections and memory stay flat, 0 errors.

Marked slow: ``bash tools/test.sh --run-slow -m slow -s`` runs it.
``DBPOOL_SOAK_SECONDS`` is the total time over all runs (default 180).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faultkit import session_count
from tests.loadgen import Load, select_one

pytestmark = pytest.mark.slow

RUNS = 4  # two modes, two drivers
THREADS = 32
SAMPLE_EVERY = 2.0


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_soak(
    mysql_pool: Any,
    admin: Any,
    pool_mode: str,
    mysql_driver: str,
    mysql_params: dict[str, Any],
    start_load: Callable[..., Load],
) -> None:
    seconds = float(os.environ.get("DBPOOL_SOAK_SECONDS", "180")) / RUNS
    if pool_mode == "persistent":
        pool = mysql_pool(size=THREADS, max_overflow=0, timeout=10.0)
    else:
        # Overflow connections are closed at return by design; the soak checks the steady
        # state of a pool sized for its load.
        pool = mysql_pool(size=16, max_overflow=4, timeout=10.0)
    load = start_load(pool, THREADS, select_one, keep_calls=False)
    samples: list[tuple[float, int, int, int]] = []  # (time, pool conns, server sessions, rss)
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            time.sleep(SAMPLE_EVERY)
            gc.collect()
            stats = pool.get_stats()
            samples.append(
                (
                    time.monotonic() - start,
                    stats["total_connections"],
                    session_count(admin, mysql_params["user"]),
                    rss_bytes(),
                )
            )
    finally:
        hung = load.stop()
    stats = pool.get_stats()
    # Memory: compare the last quarter with the first quarter after a warm-up sample.
    warm = samples[1:] or samples
    quarter = max(1, len(warm) // 4)
    rss_first = sum(s[3] for s in warm[:quarter]) / quarter
    rss_last = sum(s[3] for s in warm[-quarter:]) / quarter
    growth_mib = (rss_last - rss_first) / 2**20
    conns = {s[1] for s in samples}
    server = {s[2] for s in samples}
    print(
        f"\nsoak/{pool_mode}/{mysql_driver}: seconds={seconds:.0f} requests={load.requests} "
        f"errors={len(load.errors)} hung={hung} conns={sorted(conns)} "
        f"server_sessions={sorted(server)} created={stats['created']} "
        f"rss_first={rss_first / 2**20:.1f}MiB rss_last={rss_last / 2**20:.1f}MiB "
        f"growth={growth_mib:.1f}MiB longest_call={load.longest:.3f}s"
    )
    assert load.errors == []
    assert hung == 0
    assert max(conns) <= stats["max_size"]
    # Flat: the bound holds on both sides, and connections are reused, not churned
    # (a few overflow connections may be closed at return and opened again).
    assert max(server) <= stats["max_size"]
    assert stats["created"] <= stats["max_size"] + load.requests // 1000
    assert growth_mib < 8.0
