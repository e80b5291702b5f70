"""What min_idle and a password provider cost and save, on a real server.

    python -m benchmarks.lifecycle --config bench.yaml [--config-name primary]
        [--driver pymysql] [--burst 8] [--rounds 5]

- cold burst: ``--burst`` threads ask a new pool for a connection at once; the
  slowest of them waited for a connect (min_idle=0) or took one opened ahead
  (min_idle=burst, after ``pool.wait()``). Also the time ``wait()`` took.
- rotation: with ``password`` a function, the time from a password change (the
  function answering the new one) to the first new connection that logs in
  with it, and how many provider calls the pool made (one per connect).
Medians over ``--rounds``, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from dbpool import load_settings, make_pool


def _burst(params: dict[str, Any], driver: str, threads: int, min_idle: int) -> tuple[float, float]:
    """(wait() ms, slowest first acquire ms) of one new pool."""
    pool = make_pool(
        **params, driver=driver, size=threads, max_overflow=0, min_idle=min_idle, config=False
    )
    try:
        start = time.perf_counter()
        pool.wait(30)
        waited = time.perf_counter() - start
        barrier = threading.Barrier(threads)
        took: list[float] = []

        def one() -> None:
            barrier.wait()
            t = time.perf_counter()
            with pool.connection() as conn:
                took.append(time.perf_counter() - t)
                cur = conn.cursor()
                cur.execute("SELECT 1")
                cur.fetchall()
                cur.close()

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return waited * 1000, max(took) * 1000
    finally:
        pool.dispose()


def _rotation(params: dict[str, Any], driver: str) -> tuple[float, int]:
    """(ms from the new password to a connection logged in with it, provider calls)."""
    password = params["password"]
    calls = [0]

    def provider() -> str:
        calls[0] += 1
        return password

    pool = make_pool(**{**params, "password": provider}, driver=driver, size=2, config=False)
    try:
        with pool.connection():
            pass
        start = time.perf_counter()
        pool.drain()  # the same password here: what is measured is the pool's part
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()
        return (time.perf_counter() - start) * 1000, calls[0]
    finally:
        pool.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.lifecycle", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="a dbpool config file")
    parser.add_argument("--config-name", default="primary")
    parser.add_argument("--driver", default="pymysql", choices=["pymysql", "mysql-connector"])
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings(args.config_name, config=args.config)
    params = {
        k: v
        for k, v in settings.params.items()
        if k in ("host", "port", "user", "password", "database")
    }
    for min_idle in (0, args.burst):
        rows = [_burst(params, args.driver, args.burst, min_idle) for _ in range(args.rounds)]
        waited = statistics.median(r[0] for r in rows)
        slowest = statistics.median(r[1] for r in rows)
        print(
            f"{args.driver} burst of {args.burst}, min_idle={min_idle}: wait() {waited:.1f} ms, "
            f"slowest first acquire {slowest:.1f} ms"
        )
    rows2 = [_rotation(params, args.driver) for _ in range(args.rounds)]
    print(
        f"{args.driver} drain + first connection with a password provider: "
        f"{statistics.median(r[0] for r in rows2):.1f} ms, provider calls "
        f"{rows2[0][1]} (one per connect)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
