"""``python -m dbpool``: a demo workload and a connection check."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import advisor
from .config import MODES
from .errors import PoolError
from .pool import ConnectionPool, make_pool


def _workload(pool: ConnectionPool, threads: int, tasks: int) -> float:
    """Run ``tasks`` small read/write units of work on ``threads`` threads; return seconds."""
    with pool as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS dbpool_demo (worker TEXT, n INTEGER)")
        cur.execute("DELETE FROM dbpool_demo")
        cur.close()
        conn.commit()
    pool.close_thread_connection()  # persistent mode: leave every connection to the workers
    marker = "?" if pool.settings.driver == "sqlite" else "%s"

    def task(i: int) -> None:
        with pool as conn:
            cur = conn.cursor()
            cur.execute(f"INSERT INTO dbpool_demo VALUES ({marker}, {marker})",
                        (threading.current_thread().name, i))
            cur.execute("SELECT COUNT(*) FROM dbpool_demo")
            cur.fetchall()
            cur.close()
            conn.commit()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="worker") as executor:
        list(executor.map(task, range(tasks)))
    return time.perf_counter() - start


def _demo(args: argparse.Namespace) -> int:
    for mode in MODES:
        pool = make_pool(mode=mode, config_name=args.config_name, config=args.config,
                         size=args.size, max_overflow=args.max_overflow)
        threads = args.threads
        if mode == "persistent" and threads > pool.max_size:
            # Each thread keeps its connection: more threads than connections would wait.
            print(f"persistent mode: using {pool.max_size} threads, one per connection")
            threads = pool.max_size
        try:
            seconds = _workload(pool, threads, args.tasks)
            stats = pool.get_stats()
        finally:
            pool.dispose()
        print(f"{mode} mode on {pool.name}: {args.tasks} tasks on {threads} threads "
              f"in {seconds:.2f}s")
        print(json.dumps(stats, indent=2, sort_keys=True))
    return 0


def _check(args: argparse.Namespace) -> int:
    pool = make_pool(config_name=args.config_name, config=args.config, size=1, max_overflow=0)
    try:
        with pool as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()
        print(f"ok: {pool.name}")
    finally:
        pool.dispose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m dbpool", description=__doc__)
    parser.add_argument("--config",
                        help="config.yaml path (default: $DBPOOL_CONFIG, then ./config.yaml)")
    parser.add_argument("--config-name", default="primary", help="entry of the config file")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a threaded workload in both modes, print stats")
    demo.add_argument("--threads", type=int, default=6)
    demo.add_argument("--tasks", type=int, default=400)
    demo.add_argument("--size", type=int, default=4)
    demo.add_argument("--max-overflow", type=int, default=2)
    demo.set_defaults(run=_demo)
    check = commands.add_parser("check", help="open one connection and run SELECT 1")
    check.set_defaults(run=_check)
    advisor.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        code: Any = args.run(args)
    except PoolError as exc:
        print(f"dbpool: {exc}", file=sys.stderr)
        return 1
    return int(code)
