"""How fair waits are with more threads than connections: ``python -m benchmarks.fairness``.

The overload table of the full run gives, for 16 and 64 threads on 10 + 5
connections, the wait in the checkout call, median and p99, and the requests
each thread got served. The wait figures mix
two things: how the pool orders its waiters, and when connections come back.
This separates them. Every "query" is a sleep of 2 to 4 ms (the GIL is free
while it runs, and no server's scheduling takes part), over a driver that does
no I/O, and the same workload runs through dbpool's shared mode and through
SQLAlchemy's QueuePool when it is installed.

At 16 threads on 15 connections one thread at most waits, for the next of 15
returns spread at random: its wait is the time left until then, close to an
exponential, whose p99 is ln(100)/ln(2) = 6.6 times its median, whatever order
a pool keeps. At 64 threads a waiter waits for some fifty returns in line, and
a pool that serves its waiters in order shows a p99 close to the median.

Percentiles over all requests hide a thread kept waiting: a pool that lets a
thread which just gave a connection back take one again before those already
waiting serves the same few threads over and over, at a tiny median wait, while
the others get few requests in (the requests each thread got served shows it).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from dbpool import make_pool

from .micro import FakeDriver, FakeModule

SIZE, OVERFLOW = 10, 5


def _percentile(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def run(
    checkout: Callable[[], Any],
    checkin: Callable[[Any], None],
    threads: int,
    seconds: float,
    seed: int,
) -> dict[str, float]:
    """Waits in ms and requests served per thread, ``threads`` threads for ``seconds``."""
    waits: list[float] = []
    served: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    warm = time.perf_counter() + 3600.0  # set once every thread is ready
    stop = warm

    def worker(index: int) -> None:
        rnd = random.Random(seed + index)
        mine: list[float] = []
        count = 0
        start.wait()
        while True:
            begun = time.perf_counter()
            if begun >= stop:
                break
            conn = checkout()
            waited = time.perf_counter() - begun
            time.sleep(rnd.uniform(0.002, 0.004))
            checkin(conn)
            if begun >= warm:
                mine.append(waited)
                count += 1
        with lock:
            waits.extend(mine)
            served.append(count)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    warm = time.perf_counter() + seconds / 5  # the first fifth warms up
    stop = warm + seconds
    start.wait()
    for thread in workers:
        thread.join()
    waits.sort()
    served.sort()
    p50, p99, worst = (_percentile(waits, p) * 1000 for p in (50, 99, 100))
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": worst,
        "ratio": p99 / p50 if p50 else 0.0,
        "served_min": served[0],
        "served_median": served[len(served) // 2],
        "served_max": served[-1],
    }


def dbpool_shared(threads: int, seconds: float, seed: int) -> dict[str, float]:
    pool = make_pool(
        mode="shared", driver=FakeDriver(), size=SIZE, max_overflow=OVERFLOW, timeout=30
    )
    try:
        return run(pool.acquire, pool.release, threads, seconds, seed)
    finally:
        pool.dispose()


def queuepool(threads: int, seconds: float, seed: int) -> dict[str, float] | None:
    try:
        from sqlalchemy.pool import QueuePool
    except ImportError:
        return None
    pool = QueuePool(FakeModule.connect, pool_size=SIZE, max_overflow=OVERFLOW, timeout=30)
    try:
        return run(pool.connect, lambda conn: conn.close(), threads, seconds, seed)
    finally:
        pool.dispose()


APPROACHES = (("dbpool shared", dbpool_shared), ("SQLAlchemy QueuePool", queuepool))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness", description=__doc__)
    parser.add_argument("--threads", default="16,64", help="thread counts (default 16,64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(
        f"{SIZE} + {OVERFLOW} connections, 2-4 ms sleeps: the wait in the checkout call "
        "(ms, over all requests) and the requests each thread got served"
    )
    print(
        f"{'approach':<22}{'threads':>8}{'p50':>9}{'p99':>9}{'max':>9}{'p99/p50':>9}"
        f"{'served: min':>13}{'median':>8}{'max':>6}"
    )
    for threads in (int(t) for t in args.threads.split(",")):
        for name, measure in (
            ("dbpool shared", dbpool_shared),
            ("SQLAlchemy QueuePool", queuepool),
        ):
            row = measure(threads, args.seconds, args.seed)
            if row is None:
                continue
            print(
                f"{name:<22}{threads:>8}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
                f"{row['max_ms']:>9.1f}{row['ratio']:>9.1f}{row['served_min']:>13}"
                f"{row['served_median']:>8}{row['served_max']:>6}"
            )


if __name__ == "__main__":
    main()
