"""The ``dbpool`` command: check a database, run a demo workload, watch a running pool.

``dbpool bench`` lives in ``dbpool.advisor``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import advisor
from .config import DEFAULT_SQLITE_PATH, MODES, find_config_file
from .errors import ConfigError, PoolError
from .pool import ConnectionPool, make_pool

DESCRIPTION = """\
Check a database, run a demo workload, watch the pools of a running application,
or measure your statements in both pool modes.

Options may come before or after the command: dbpool check --config app.yaml
and dbpool --config app.yaml check are the same.
"""

EPILOG = """\
The config file is found as by the library: --config, else $DBPOOL_CONFIG,
else ./config.yaml. Exit status: 0 on success, 1 when a check fails or a
command cannot reach its target, 2 for a usage or configuration error.
"""

# Exit statuses.
OK, FAILED, USAGE = 0, 1, 2


class _Fail(Exception):
    """A command's own failure: its message is printed, and the command exits with ``code``."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- dbpool check -------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    if args.sqlite:
        if args.config is not None:
            raise _Fail("--sqlite checks the embedded SQLite database: leave out --config", USAGE)
        found = find_config_file(None)
        if found is not None:
            raise _Fail(
                f"--sqlite checks the embedded SQLite database, but there is a config "
                f"file ({found}); leave out --sqlite to check it",
                USAGE,
            )
    elif find_config_file(args.config) is None:
        raise _Fail(
            f"no config file: none given with --config, $DBPOOL_CONFIG is not set and there "
            f"is no {Path.cwd() / 'config.yaml'}. Pass --config PATH, or --sqlite to check "
            f"the embedded SQLite database ./{DEFAULT_SQLITE_PATH} on purpose.",
            USAGE,
        )
    pool = make_pool(
        config_name=args.config_name,
        config=args.config,
        size=1,
        max_overflow=0,
        timeout=args.timeout,
    )
    try:
        result = pool.check(timeout=args.timeout)
    finally:
        pool.dispose()
    target = pool._label
    if args.json:
        print(json.dumps(result, sort_keys=True))
    if not result["ok"]:
        raise _Fail(f"check FAILED for {target}: {result['error']}")
    if not args.json:
        print(f"ok: {target} answered in {result['latency_s'] * 1000:.1f} ms")
    return OK


# -- dbpool demo --------------------------------------------------------------------


def _scratch_table() -> str:
    return f"dbpool_demo_{uuid.uuid4().hex[:12]}"


def _workload(pool: ConnectionPool, table: str, threads: int, tasks: int) -> float:
    """Run ``tasks`` small read/write units of work on ``threads`` threads; return seconds."""
    marker = "?" if pool.settings.driver == "sqlite" else "%s"

    def task(i: int) -> None:
        with pool as conn:
            cur = conn.cursor()
            cur.execute(
                f"INSERT INTO {table} VALUES ({marker}, {marker})",
                (threading.current_thread().name, i),
            )
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            cur.fetchall()
            cur.close()
            conn.commit()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="worker") as executor:
        list(executor.map(task, range(tasks)))
    return time.perf_counter() - start


def _execute(pool: ConnectionPool, sql: str) -> None:
    with pool as conn:
        cur = conn.cursor()
        cur.execute(sql)
        cur.close()
        conn.commit()
    pool.close_thread_connection()  # persistent mode: leave every connection to the workers


def _demo(args: argparse.Namespace) -> int:
    table = _scratch_table()
    sizes = {"size": args.size, "max_overflow": args.max_overflow}
    for mode in MODES:
        pool = make_pool(
            mode=mode,
            config_name=args.config_name,
            config=args.config,
            **{key: value for key, value in sizes.items() if value is not None},
        )
        try:
            threads = args.threads
            if mode == "persistent" and threads > pool.max_size:
                # Each thread keeps its connection: more threads than connections would wait.
                print(f"persistent mode: using {pool.max_size} threads, one per connection")
                threads = pool.max_size
            print(
                f"{mode} mode on {pool._label}: creating the scratch table {table} "
                "(dropped at the end)"
            )
            _execute(pool, f"CREATE TABLE {table} (worker VARCHAR(100), n INTEGER)")
            try:
                seconds = _workload(pool, table, threads, args.tasks)
            finally:
                _execute(pool, f"DROP TABLE {table}")
            stats = pool.get_stats()
        finally:
            pool.dispose()
        print(
            f"{mode} mode on {pool._label} (size {pool.size}, max {pool.max_size}): "
            f"{args.tasks} tasks on {threads} threads in {seconds:.2f}s; "
            f"dropped {table}"
        )
        for key in ("wait_time", "connect_time", "use_time"):  # the buckets are for exporters
            stats[key] = {k: v for k, v in stats[key].items() if k != "buckets"}
        print(json.dumps(stats, indent=2, sort_keys=True))
    return OK


# -- dbpool top ---------------------------------------------------------------------


def _top(args: argparse.Namespace) -> int:
    try:
        from ._top import run
    except ImportError as exc:
        raise _Fail(
            f"dbpool top needs the cli extra ({exc.name} is missing): "
            "pip install 'dbpool-dbutils[cli]'",
            USAGE,
        ) from exc
    return run(args.url, interval=args.interval, once=args.once, timeout=args.timeout)


# -- the parser ----------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {text})")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative (got {text})")
    return value


def _config_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """--config and --config-name, accepted before and after the command.

    Given after the command they win; a command's parser must not reset them
    to their defaults when they were given before it (hence SUPPRESS there).
    """
    default: Callable[[Any], Any] = (
        (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help="the config file (default: $DBPOOL_CONFIG, then ./config.yaml)",
    )
    parser.add_argument(
        "--config-name",
        metavar="NAME",
        default=default("primary"),
        help="the entry of the config file (default: primary)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``dbpool`` argument parser."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dbpool",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dbpool {__version__}")
    _config_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="connect and make one round trip to the database",
        description="Connect to the configured database and make one round trip. Fails, "
        "with exit status 2, when there is no config file, unless --sqlite asks "
        "for the embedded SQLite database; with exit status 1 when the server "
        "cannot be reached or refuses the login.",
    )
    _config_options(check, top_level=False)
    check.add_argument(
        "--sqlite",
        action="store_true",
        help=f"check the embedded SQLite database ./{DEFAULT_SQLITE_PATH} "
        "(when there is no config file)",
    )
    check.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="give up after this long, connecting included (default: 5)",
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(run=_check)

    demo = commands.add_parser(
        "demo",
        help="run a threaded workload in both modes and print the statistics",
        description="Run a short threaded workload (an insert and a count per task) in both "
        "pool modes and print the statistics of each. It works in a scratch table "
        "of its own, named dbpool_demo_<random>, and drops it at the end. Pool "
        "sizes come from the config entry unless given here.",
    )
    _config_options(demo, top_level=False)
    demo.add_argument("--threads", type=_count, default=6, help="worker threads (default: 6)")
    demo.add_argument("--tasks", type=_count, default=400, help="tasks in all (default: 400)")
    demo.add_argument(
        "--size", type=_count, default=None, help="the pool's size (default: the config's, else 10)"
    )
    demo.add_argument(
        "--max-overflow",
        type=_count,
        default=None,
        help="the pool's max_overflow (default: the config's, else 5)",
    )
    demo.set_defaults(run=_demo)

    top = commands.add_parser(
        "top",
        help="a live view of a running application's pools, from its metrics endpoint",
        description="A live view of the pools of a running application, read from its "
        "Prometheus endpoint (dbpool.metrics.PoolCollector): connections used, idle "
        "and the maximum, threads waiting, wait time p50 and p99 over the last "
        "refresh, timeouts and connect failures per second. Press q or Ctrl-C to "
        "quit. Needs the cli extra: pip install 'dbpool-dbutils[cli]'.",
    )
    top.add_argument("url", help="the metrics endpoint, e.g. http://127.0.0.1:8000/metrics")
    top.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default: 1)",
    )
    top.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="how long one read of the endpoint may take (default: 5)",
    )
    top.add_argument(
        "--once", action="store_true", help="print one view (two reads, an interval apart) and exit"
    )
    top.set_defaults(run=_top)
    advisor.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except _Fail as exc:
        print(f"dbpool {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"dbpool {args.command}: {exc}", file=sys.stderr)
        return USAGE
    except PoolError as exc:
        print(f"dbpool {args.command}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130  # the shell's status for a run ended by Ctrl-C
    return code
