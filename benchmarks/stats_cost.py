"""What the histograms cost per checkout and return: ``python -m benchmarks.stats_cost``.

A checkout notes its wait for the recent figures (a lock-free append, as
before); the return, under the lock it takes anyway, counts that wait and the
use time in their buckets.
This times exactly that sequence on one ``PoolStats``, against the one append a
checkout made before the histograms existed, and prints nanoseconds of CPU time
per checkout (best of several runs).

``--pool`` also prints the CPU time of a whole checkout and return of both
modes over a driver that does no I/O (``benchmarks.micro``, one thread); run
it on two checkouts of the code to compare them.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections import deque

from dbpool.stats import PoolStats

from . import micro


def measure(number: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` nanoseconds per checkout: with the histograms, the old path, overhead."""
    stats = PoolStats()
    # The old hot path: one append to the bounded deque of recent waits.
    recent: deque[float] = deque(maxlen=2048)

    def new_path() -> None:
        stats.record_wait(0.00004)
        stats.returned(0.00004, 0.0012)

    def old_path() -> None:
        recent.append(0.00004)

    def empty() -> None:
        pass

    def best(fn: object) -> float:
        # CPU time of this thread: on a shared machine, wall time mostly measures the others.
        times = timeit.repeat(fn, number=number, repeat=repeat, timer=time.thread_time)  # type: ignore[arg-type]
        return min(times) / number * 1e9

    base = best(empty)
    new = best(new_path) - base
    old = best(old_path) - base
    return {"with_histograms_ns": new, "before_ns": old, "added_ns": new - old}


def pool_cost(operations: int, repeat: int, config: str, config_name: str) -> dict[str, float]:
    """Best-of-``repeat`` CPU nanoseconds of one checkout and return, per dbpool mode."""
    result = {}
    for key in ("dbpool-shared", "dbpool-persistent"):
        runs = []
        for _ in range(repeat):
            started = time.process_time()
            done = micro.measure(key, 1, operations, config, config_name)
            runs.append((time.process_time() - started) / done["operations"] * 1e9)
        result[key] = min(runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--pool",
        action="store_true",
        help="also time whole checkouts (needs --config with a MySQL entry)",
    )
    parser.add_argument(
        "--config",
        help="a config file whose entry names a MySQL server "
        "(never contacted: the driver does no I/O)",
    )
    parser.add_argument("--config-name", default="primary")
    args = parser.parse_args()
    result = measure(args.number, args.repeat)
    print(
        f"recording per checkout: {result['with_histograms_ns']:.0f} ns with the histograms, "
        f"{result['before_ns']:.0f} ns before; added {result['added_ns']:.0f} ns"
    )
    if args.pool:
        if not args.config:
            parser.error("--pool needs --config")
        for key, ns in pool_cost(60_000, args.repeat, args.config, args.config_name).items():
            print(f"{key}: {ns:.0f} ns of CPU per checkout and return")


if __name__ == "__main__":
    main()
