"""``dbpool bench``: the command line of the mode advisor."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings, load_settings
from . import report
from .advice import aggregate, recommend
from .runner import (
    MODES,
    OTHER_PACKAGES,
    OTHERS,
    Contender,
    Target,
    execute,
    plan_bound,
    run_cell,
    settings_summary,
)
from .sampler import SamplerError, ServerSampler
from .workload import Workload, WorkloadError, check_think, from_arguments, load_workload

# 3 thread counts x 2 modes x 3 rounds of 1.9 s (and some settling): about 40 s.
DEFAULT_DURATION = 1.5
DEFAULT_WARMUP = 0.4
DEFAULT_ROUNDS = 3
MAX_THREADS = 1024
# Seconds a cell costs beyond its warm-up and window: threads, pool, settling.
_CELL_OVERHEAD = 0.3
_EXTRA = "pip install 'dbpool-dbutils[advisor]'"

_DESCRIPTION = """\
Run your statements on your server in both pool modes and recommend one.
Statements come from --sql (each followed by its --param or --params-file) or
from a YAML --workload file. Only statements that read run unless --allow-writes
is given; the load about to be put on the server is shown and must be confirmed
(or --yes). See "Which mode for my workload?" in the README."""


class BenchError(Exception):
    """A bench that cannot run as asked; the message says why."""


class _StatementAction(argparse.Action):
    """--sql starts a statement; --param and --params-file attach to the last one."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        statements: list[list[Any]] | None = getattr(namespace, "statements", None)
        if statements is None:
            statements = []
            namespace.statements = statements
        if self.dest == "sql":
            statements.append([values, [], None])
            return
        if not statements:
            parser.error(f"{option_string} must follow the --sql it belongs to")
        if self.dest == "param":
            statements[-1][1].append(values)
        else:
            if statements[-1][2] is not None:
                parser.error(f"--sql #{len(statements)} has two --params-file")
            statements[-1][2] = values


def _thread_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected thread counts like 4,16,64 (got {text!r})"
        ) from None
    if not counts or counts[0] < 1 or counts[-1] > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"thread counts must be 1 to {MAX_THREADS} (got {text!r})")
    return counts


def _ranged(
    convert: Callable[[str], float], expected: str, within: Callable[[float], bool], bound: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then check it is ``within`` its range."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})") from None
        if not within(value):
            raise argparse.ArgumentTypeError(f"expected {bound} (got {text!r})")
        return value

    return parse


_seconds = _ranged(float, "seconds", lambda v: 0 < v <= 3600, "0 < seconds <= 3600")
_warmup = _ranged(float, "seconds", lambda v: 0 <= v <= 600, "0 <= seconds <= 600")
_rounds = _ranged(int, "a whole number", lambda v: 1 <= v <= 100, "1 to 100 rounds")


def _names(text: str) -> list[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in OTHERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown pool {', '.join(unknown) or repr(text)}; choose from {', '.join(OTHERS)}"
        )
    return list(dict.fromkeys(names))


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the subcommands of the ``dbpool`` command."""
    p: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="measure your statements in both modes and recommend one",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Also accepted after the subcommand; SUPPRESS keeps the main parser's value otherwise.
    p.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config.yaml path (default: $DBPOOL_CONFIG, then ./config.yaml)",
    )
    p.add_argument(
        "--config-name",
        default=argparse.SUPPRESS,
        help="entry of the config file (default: primary)",
    )
    w = p.add_argument_group("workload")
    w.add_argument(
        "--sql",
        action=_StatementAction,
        metavar="SQL",
        help="a statement to run, with %%s for each parameter (repeatable)",
    )
    w.add_argument(
        "--param",
        action=_StatementAction,
        metavar="SPEC",
        help="a parameter of the last --sql: int:LO:HI, float:LO:HI, "
        "choice:A,B,C or str:LEN[:MAX] (one per %%s)",
    )
    w.add_argument(
        "--params-file",
        action=_StatementAction,
        metavar="FILE",
        help="the last --sql's parameters, one row per line (CSV or tabs)",
    )
    w.add_argument(
        "--workload",
        metavar="FILE",
        help="a YAML workload: statements with weights, parameters, transactions",
    )
    w.add_argument(
        "--think-ms",
        type=float,
        metavar="MS",
        help="average time between two requests of a thread, without a connection "
        "(default: the workload file's, else 0)",
    )
    w.add_argument(
        "--allow-writes",
        action="store_true",
        help="also run statements that are not SELECT, SHOW, EXPLAIN, DESCRIBE",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--threads",
        type=_thread_counts,
        metavar="N,N,...",
        help="thread counts (default: around the config's pool size)",
    )
    r.add_argument(
        "--duration",
        type=_seconds,
        default=DEFAULT_DURATION,
        metavar="SECONDS",
        help=f"measured seconds per cell (default {DEFAULT_DURATION:g})",
    )
    r.add_argument(
        "--warmup",
        type=_warmup,
        default=DEFAULT_WARMUP,
        metavar="SECONDS",
        help=f"unmeasured seconds before each cell (default {DEFAULT_WARMUP:g})",
    )
    r.add_argument(
        "--rounds",
        type=_rounds,
        default=DEFAULT_ROUNDS,
        help=f"rounds over all cells, interleaved (default {DEFAULT_ROUNDS})",
    )
    r.add_argument(
        "--compare",
        type=_names,
        default=[],
        metavar="POOL,...",
        help=f"also measure other pools: {', '.join(OTHERS)}",
    )
    r.add_argument("--seed", type=int, default=1, help="seed of the parameter generators")
    r.add_argument("-y", "--yes", action="store_true", help="run without asking")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the results as JSON")
    o.add_argument("--plot", metavar="PNG", help="write a plot of the results (needs matplotlib)")
    p.set_defaults(run=run, statements=None)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``dbpool bench``; the exit status."""
    try:
        return _run(args)
    except (BenchError, WorkloadError, SamplerError) as exc:
        print(f"dbpool bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndbpool bench: interrupted; its connections are closed", file=sys.stderr)
        return 130


def default_threads(settings: Settings) -> list[int]:
    """Half the pool's size, its bound, and twice its bound: below, at and above it."""
    options = settings.pool
    return sorted({max(1, options.size // 2), options.max_size, 2 * options.max_size})


def _workload(args: argparse.Namespace) -> Workload:
    statements = args.statements or []
    if args.workload and statements:
        raise BenchError("give --sql or --workload, not both")
    if args.workload:
        workload = load_workload(args.workload)
    elif statements:
        workload = from_arguments([tuple(s) for s in statements], 0.0)
    else:
        raise BenchError(
            "nothing to run: give --sql 'SELECT ...' (with --param for each %s) or --workload FILE"
        )
    if args.think_ms is not None:
        workload = Workload(
            workload.requests, think_ms=check_think(args.think_ms), source=workload.source
        )
    if not args.allow_writes:
        workload.check_read_only()
    return workload


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_optional(args: argparse.Namespace) -> None:
    """Fail now, not after a minute of load, when an optional package is missing."""
    wanted = [(OTHER_PACKAGES[name], f"--compare {name}") for name in args.compare]
    if args.plot:
        wanted.append(("matplotlib", "--plot"))
        folder = Path(args.plot).expanduser().absolute().parent
        if not folder.is_dir():
            raise BenchError(f"--plot: folder {folder} does not exist")
    for package, option in wanted:
        if package and not _installed(package.lower()):
            raise BenchError(f"{option} needs {package}, which is not installed: {_EXTRA}")


def _plan(
    settings: Settings,
    workload: Workload,
    classes: list[type[Contender]],
    threads: list[int],
    args: argparse.Namespace,
    target: Target,
) -> str:
    cells = len(classes) * len(threads) * args.rounds
    seconds = cells * (args.warmup + args.duration + _CELL_OVERHEAD)
    statements = workload.statements()
    kinds = sorted({s.sql.split(None, 1)[0].upper() for s in statements})
    access = "writes allowed" if args.allow_writes else "read-only"
    at_most = plan_bound(classes, target, threads)
    source = f" from {settings.source}" if settings.source else ""
    return "\n".join(
        [
            f"dbpool bench will put this load on {settings.describe()} "
            f"(config {settings.config_name!r}{source}):",
            f"  {len(statements)} statement{'s' if len(statements) != 1 else ''} "
            f"({', '.join(kinds)}; {access}), think time {workload.think_ms:g} ms",
            f"  pools: {', '.join(cls.label for cls in classes)}",
            f"  threads: {', '.join(map(str, threads))}; {args.rounds} round"
            f"{'s' if args.rounds != 1 else ''} of {args.duration:g} s per cell "
            f"(+{args.warmup:g} s warm-up)",
            f"  {cells} cells, about {_duration(seconds)}; at most {max(threads)} threads querying "
            f"at once, at most {at_most + 1} connections open (one pool at a time, plus one "
            "that samples the server's connection count)",
        ]
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _confirm() -> bool:
    if not sys.stdin.isatty():
        raise BenchError(
            "refusing to run: no terminal to confirm this load on; add --yes to run it"
        )
    print("Run it? [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


class _Progress:
    """tqdm's bar on a terminal; a plain counter there without tqdm; nothing otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.terminal = sys.stderr.isatty()
        self.bar: Any = None
        if self.terminal and _installed("tqdm"):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit="cell", leave=False, dynamic_ncols=True, file=sys.stderr
            )

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(label)
        elif self.terminal:
            print(
                f"\r  {self.done + 1}/{self.total} {label:<32}", end="", file=sys.stderr, flush=True
            )

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.terminal:
            print("\r" + " " * 48 + "\r", end="", file=sys.stderr, flush=True)


def _check_statements(settings: Settings, workload: Workload, read_only: bool) -> None:
    """Run each request once on one connection, so a typo fails now and plainly."""
    import random

    from .. import make_pool

    pool = make_pool(
        "shared", config=settings.source, config_name=settings.config_name, size=1, max_overflow=0
    )
    rng = random.Random(0)
    try:
        for number, request in enumerate(workload.requests, 1):
            conn = pool.acquire()
            try:
                execute(conn, request, rng, read_only)
            except Exception as exc:
                sql = " ".join(request.statements[0].sql.split())[:80]
                raise BenchError(
                    f"request {number} ({sql}) failed before the run: {type(exc).__name__}: {exc}"
                ) from exc
            finally:
                pool.release(conn)
    finally:
        pool.dispose()


def _local(settings: Settings) -> bool:
    """Whether the server runs on this machine, sharing its CPUs with the bench."""
    params = settings.params
    host = str(params.get("host") or "localhost")
    return (
        bool(params.get("unix_socket")) or host in ("localhost", "::1") or (host.startswith("127."))
    )


def _load() -> float | None:
    """The 1-minute load average of this machine, where there is one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _rotate(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def _run(args: argparse.Namespace) -> int:
    workload = _workload(args)
    config_name = getattr(args, "config_name", None) or "primary"
    settings = load_settings(config_name, config=getattr(args, "config", None))
    if settings.driver == "sqlite":
        where = settings.source or "no config file found"
        raise BenchError(
            f"config {config_name!r} ({where}) is a SQLite database; dbpool bench "
            "measures a MySQL or MariaDB server: give --config or $DBPOOL_CONFIG"
        )
    _check_optional(args)
    threads = args.threads or default_threads(settings)
    classes: list[type[Contender]] = [*MODES, *(OTHERS[name] for name in args.compare)]
    target = Target(settings, read_only=not args.allow_writes)
    print(_plan(settings, workload, classes, threads, args, target), file=sys.stderr)
    if not args.yes and not _confirm():
        print("Not run.", file=sys.stderr)
        return 1

    started = time.time()
    machine = {"cores": os.cpu_count(), "load_average_start": _load()}
    _check_statements(settings, workload, target.read_only)
    server: dict[str, Any] = {
        "max_connections": None,
        "connections_before": None,
        "local": _local(settings),
    }
    sampler: ServerSampler | None = None
    sampler_error: str | None = None
    try:
        sampler = ServerSampler(settings.source, settings.config_name)
    except SamplerError as exc:
        sampler_error = str(exc)
    else:
        server.update(max_connections=sampler.max_connections, connections_before=sampler.baseline)
        _warn_max_connections(sampler, plan_bound(classes, target, threads))
    try:
        cells = _measure(classes, target, workload, sampler, threads, args)
    finally:
        if sampler is not None:
            sampler_error = sampler.failed
            sampler.close()
    machine["load_average_end"] = _load()

    order = [cls.key for cls in classes]
    figures = sorted(aggregate(cells), key=lambda f: (f.threads, order.index(f.contender)))
    advice = recommend(
        figures, max_size=settings.pool.max_size, max_connections=server["max_connections"]
    )
    labels = {cls.key: cls.label for cls in classes}
    data: dict[str, Any] = {
        "target": settings.describe(),
        "config_name": settings.config_name,
        "config_file": settings.source,
        "settings": {
            "threads": threads,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "seed": args.seed,
            "allow_writes": args.allow_writes,
            "contenders": labels,
            "pool": dict(settings_summary(settings)),
        },
        "server": server,
        "sampler_error": sampler_error,
        "machine": machine,
        "workload": workload.describe(),
        "results": [f.as_dict() for f in figures],
        "recommendation": advice.as_dict(),
        "cells": cells,
        "elapsed_s": round(time.time() - started, 3),
    }
    if args.plot:
        path = report.plot(
            figures,
            labels,
            args.plot,
            f"dbpool bench: {settings.describe()}, think "
            f"{workload.think_ms:g} ms — {advice.headline}",
        )
        data["plot"] = os.fspath(path)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(report.text(data, figures, advice, labels))
        if args.plot:
            print(f"\nplot: {data['plot']}")
    return 0


def _warn_max_connections(sampler: ServerSampler, needed: int) -> None:
    room = sampler.max_connections - sampler.baseline
    if needed > room:
        print(
            f"warning: the server allows {sampler.max_connections} connections and has "
            f"{sampler.baseline} open: cells that need more than {room} will fail to "
            "connect",
            file=sys.stderr,
        )


def _measure(
    classes: list[type[Contender]],
    target: Target,
    workload: Workload,
    sampler: ServerSampler | None,
    threads: list[int],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Every cell, round after round; each round runs the pools in a rotated order."""
    cells: list[dict[str, Any]] = []
    progress = _Progress(len(classes) * len(threads) * args.rounds)
    try:
        for rnd in range(args.rounds):
            for count in threads:
                for cls in _rotate(classes, rnd):
                    progress.step(f"{cls.key}, {count} threads")
                    cell = run_cell(
                        cls,
                        target,
                        workload,
                        sampler,
                        threads=count,
                        warmup=args.warmup,
                        duration=args.duration,
                        seed=args.seed * 1_000_003 + rnd * 10_007 + count,
                    )
                    cell["round"] = rnd
                    cells.append(cell)
                    progress.advance()
    finally:
        progress.close()
    return cells
