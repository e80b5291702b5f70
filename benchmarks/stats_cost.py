"""What the histograms cost per checkout and return: ``python -m benchmarks.stats_cost``.

A checkout records its wait (a lock-free append); the return, under the lock it
takes anyway, counts its use time and moves the pending wait into its bucket.
This times exactly that sequence on one ``PoolStats``, against the one append a
checkout made before the histograms existed, and prints nanoseconds of CPU time
per checkout (best of several runs).
The pool-level effect is in ``benchmarks.micro`` (``--workload micro``), where
it is within the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections import deque

from dbpool.stats import PoolStats


def measure(number: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` nanoseconds per checkout: with the histograms, the old path, overhead."""
    stats = PoolStats()
    # The old hot path: one append to the bounded deque of recent waits.
    recent: deque[float] = deque(maxlen=2048)

    def new_path() -> None:
        stats.record_wait(0.00004)
        stats.returned(0.0012)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    result = measure(args.number, args.repeat)
    print(
        f"recording per checkout: {result['with_histograms_ns']:.0f} ns with the histograms, "
        f"{result['before_ns']:.0f} ns before; added {result['added_ns']:.0f} ns"
    )


if __name__ == "__main__":
    main()
