"""``python -m benchmarks``: run the benchmark and write its results.

The full run (the default) takes about 25 minutes on a 2-core machine; ``--quick``
takes seconds and only checks that everything runs (a smoke test: it judges no
target). See README.rst.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import yaml

from . import approaches as approaches_mod
from . import attribution, report
from . import micro as micro_mod
from . import workloads as workloads_mod
from .approaches import Target
from .machine import Pinning
from .monitor import Monitor
from .runner import one_connect_time, run_cell, run_spike, run_storm

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
# Rough seconds a cell costs beyond its warm-up and measurement (threads, pool, settling).
_CELL_OVERHEAD = 0.2
# The approaches of the spike test (HikariCP's "Welcome to the Jungle").
SPIKE_APPROACHES = ("dbpool-shared", "dbpool-persistent", "sqlalchemy-queuepool")


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("thread counts must be at least 1")
    return values


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="dbpool's two modes against the other ways of getting a MySQL connection.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a run of seconds that checks the harness (1 round, tiny durations)",
    )
    p.add_argument("--name", help="results file name (default: full, quick or partial)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    p.add_argument(
        "--write-results",
        action="store_true",
        help=f"also write {RESULTS_MD.relative_to(HERE.parent)} (full runs only), "
        "which then stands for results/<name>.md",
    )
    p.add_argument(
        "--config",
        help="use the server of this dbpool config file instead of starting a throwaway MariaDB",
    )
    p.add_argument("--config-name", default="primary", help="entry of --config (default primary)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="let the drivers negotiate TLS (default: ssl_disabled=True for all)",
    )
    g = p.add_argument_group("cells")
    g.add_argument("--rounds", type=int, help="rounds of every cell (default 3)")
    g.add_argument("--warmup", type=float, help="seconds of warm-up per cell (default 0.25)")
    g.add_argument(
        "--duration",
        type=float,
        help="measured seconds per cell (default 1.0; cells with added "
        "latency, a second view, run 0.6 of it)",
    )
    g.add_argument("--threads", type=_ints, help="thread counts, comma-separated (1,4,16,64)")
    g.add_argument(
        "--workload",
        type=_names,
        help=f"workloads, comma-separated ({','.join(workloads_mod.BY_KEY)})",
    )
    g.add_argument(
        "--approach",
        type=_names,
        help=f"approaches, comma-separated ({','.join(approaches_mod.BY_KEY)})",
    )
    g.add_argument(
        "--latency",
        type=_floats,
        help="simulated round-trip delays in ms, comma-separated (default 0,0.5)",
    )
    g.add_argument("--rows", type=int, help="rows of the table (default 10000)")
    g.add_argument("--slow-ms", type=float, default=3.0, help="the slow query's sleep (ms)")
    g.add_argument("--size", type=int, default=10, help="pool size (default 10)")
    g.add_argument("--overflow", type=int, default=5, help="pool overflow (default 5)")
    s = p.add_argument_group("cold storm, spike and micro")
    s.add_argument("--storm-threads", type=int, help="threads of the cold storm (default 32)")
    s.add_argument("--storm-delay-ms", type=float, help="simulated connect time (default 50 ms)")
    s.add_argument("--storm-rounds", type=int, help="cold storm rounds (default 5)")
    s.add_argument("--micro-ops", type=int, help="checkouts per micro measurement (20000)")
    s.add_argument("--micro-rounds", type=int, help="micro rounds (default 5)")
    s.add_argument("--spike-threads", type=int, help="threads of the spike (default 50)")
    s.add_argument(
        "--spike-delay-ms", type=float, help="simulated connect time in the spike (default 150 ms)"
    )
    s.add_argument("--spike-rounds", type=int, help="spike rounds (default 3)")
    s.add_argument(
        "--skip",
        type=_names,
        default=[],
        help="parts to leave out, comma-separated: cells, storm, spike, micro",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="JSON",
        help="run nothing: rewrite the Markdown and plots of an earlier run "
        "(and RESULTS.md with --write-results) from its JSON",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="profile the worker threads with cProfile; write the stats here",
    )
    p.add_argument("--seed", type=int, default=4)
    return p


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    fill = {
        "rounds": 1 if quick else 3,
        "warmup": 0.03 if quick else 0.25,
        "duration": 0.08 if quick else 1.0,
        "threads": [4] if quick else [1, 4, 16, 64],
        "latency": [0.0, 0.5],
        "rows": 1000 if quick else 10_000,
        "storm_threads": 8 if quick else 32,
        "storm_rounds": 1 if quick else 5,
        "storm_delay_ms": 10.0 if quick else 50.0,
        "micro_ops": 2000 if quick else 20_000,
        "micro_rounds": 1 if quick else 5,
        "spike_threads": 10 if quick else 50,
        "spike_delay_ms": 20.0 if quick else 150.0,
        "spike_rounds": 1 if quick else 3,
    }
    for key, value in fill.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    partial = bool(args.workload or args.approach or args.skip) or (
        not quick and (args.threads != [1, 4, 16, 64] or args.latency != [0.0, 0.5])
    )
    if args.name is None:
        args.name = "quick" if quick else ("partial" if partial else "full")
    args.partial = partial
    unknown = set(args.skip) - {"cells", "storm", "spike", "micro"}
    if unknown:
        raise SystemExit(f"--skip: unknown part {', '.join(sorted(unknown))}")
    if args.write_results and (quick or partial):
        raise SystemExit("--write-results needs a full run (no --quick, filters or --skip)")


class Profiler:
    """cProfile for worker threads: one profile per thread, merged at the end."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def wrap(self, fn: Callable[..., None]) -> Callable[..., None]:
        def profiled(*args: Any) -> None:
            prof = cProfile.Profile()
            self.profiles.append(prof)
            prof.enable()
            try:
                fn(*args)
            finally:
                prof.disable()

        return profiled

    def write(self, path: Path) -> None:
        if not self.profiles:
            return
        stats = pstats.Stats(self.profiles[0])
        for prof in self.profiles[1:]:
            stats.add(prof)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(path))
        with open(path.with_suffix(".txt"), "w") as f:
            pstats.Stats(str(path), stream=f).sort_stats("tottime").print_stats(40)
            pstats.Stats(str(path), stream=f).sort_stats("cumulative").print_stats(40)


@contextlib.contextmanager
def _server(
    args: argparse.Namespace,
) -> Iterator[tuple[dict[str, Any], Any, int | None, dict[str, Any]]]:
    """The server to use: connect params, an admin connection, its pid if started here,
    and the monitor's connect params (root on the socket of a server started here)."""
    if args.config:
        from dbpool import load_settings

        settings = load_settings(args.config_name, config=args.config)
        if settings.driver == "sqlite":
            raise SystemExit(
                f"config {args.config_name!r} is a SQLite entry; "
                "the benchmark needs a MySQL/MariaDB server"
            )
        params = dict(settings.params)
        admin_params = {**params, **({} if args.tls else {"ssl_disabled": True})}
        admin = pymysql.connect(**{**admin_params, "autocommit": True})
        try:
            yield params, admin, None, admin_params
        finally:
            admin.close()
        return
    # Tests' throwaway server (or $DBPOOL_TEST_MYSQL); importable from the repository root.
    root = str(HERE.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.mariadb import MariaDBServer

    with MariaDBServer() as server:
        admin = server.admin_connect()
        monitor_params = (
            {"unix_socket": server.socket_path, "user": "root"}
            if server.socket_path
            else dict(server.params())
        )
        try:
            yield server.params(), admin, server.pid, monitor_params
        finally:
            admin.close()


def _rotate(items: list[Any], by: int) -> list[Any]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def _progress(total: int, desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience
        return contextlib.nullcontext(None)
    # disable=None: no bar when stderr is not a terminal.
    return tqdm(total=total, desc=desc, unit="cell", disable=None, leave=False, dynamic_ncols=True)


def _rewrite(args: argparse.Namespace) -> int:
    data = json.loads(args.from_json.read_text())
    for key in ("summary", "plots"):
        data.pop(key, None)
    out = args.from_json.resolve().parent
    paths = report.write(data, out, plots=not args.no_plots, markdown_file=not args.write_results)
    if args.write_results:
        if data["settings"].get("quick") or data["name"] != "full":
            raise SystemExit("--write-results needs the JSON of a full run")
        report.write_results_md(data, out, RESULTS_MD)
        paths.append(RESULTS_MD)
    for path in paths:
        print(path, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_json is not None:
        return _rewrite(args)
    _defaults(args)
    approach_classes = approaches_mod.select(args.approach)
    workloads = workloads_mod.select(args.workload)
    profiler = Profiler() if args.profile else None
    started = time.time()
    cells: list[dict[str, Any]] = []
    storms: list[dict[str, Any]] = []
    micros: list[dict[str, Any]] = []

    configs = [
        (lat / 1000.0, w, t)
        for lat in args.latency
        for w in workloads
        for t in args.threads
        if not (lat and w.key == "slow")
    ]  # a 3 ms sleep hides a 0.5 ms round trip
    if args.quick:
        # Each workload once without latency, and the point select with it: every
        # approach still meets every workload and both network settings.
        configs = [(0.0, w, t) for w in workloads for t in args.threads]
        configs += [
            (lat / 1000.0, w, t)
            for lat in args.latency
            if lat
            for w in workloads[:1]
            for t in args.threads
        ]

    def runs_with(cls: type[approaches_mod.Approach], latency: float) -> bool:
        # With latency (a second view): the pools and the ceiling; connecting per
        # request and one shared connection are measured without it only.
        return not latency or cls.pooled or cls.key == approaches_mod.CEILING

    plan = [
        (lat, w, t, [c for c in approach_classes if runs_with(c, lat)]) for lat, w, t in configs
    ]
    n_cells = 0 if "cells" in args.skip else sum(len(p[3]) for p in plan) * args.rounds
    estimate = (
        sum(
            len(cls)
            * (args.warmup + (args.duration * 0.6 if lat else args.duration) + _CELL_OVERHEAD)
            for lat, _, _, cls in plan
        )
        * args.rounds
    )
    if "cells" in args.skip:
        estimate = 0.0
    print(
        f"dbpool benchmark {args.name!r}: {n_cells} cells, about {estimate / 60:.1f} min "
        "plus the cold storm, spike and micro parts",
        file=sys.stderr,
    )

    pinning: Pinning | None = None
    spikes: list[dict[str, Any]] = []
    live_micros: list[dict[str, Any]] = []
    attributed: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="dbpool-bench-") as tmp,
        _server(args) as (params, admin, server_pid, monitor_params),
    ):
        pinning = Pinning(server_pid).apply()
        monitor: Monitor | None = None
        try:
            monitor = Monitor(monitor_params, pinning.server_cpus)
            config_path = os.path.join(tmp, "config.yaml")
            neutral = {
                k: v
                for k, v in params.items()
                if k in ("host", "port", "user", "password", "database")
            }
            with open(config_path, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                yaml.safe_dump({"database": {"bench": dict(neutral), "fake": {"host": "fake"}}}, f)
            target = Target(
                params=params,
                config=config_path,
                config_name="bench",
                size=args.size,
                overflow=args.overflow,
                tls=args.tls,
            )
            machine = report.machine_info(monitor.version())
            machine["pinning"] = pinning.describe()
            machine["peak_from"] = (
                "Max_used_connections (FLUSH STATUS at each cell's start)"
                if monitor.flush_status
                else "Threads_connected polled every 10 ms by the monitor"
            )
            workloads_mod.create_table(admin, params["database"], args.rows)
            try:
                _run_parts(
                    args,
                    monitor,
                    target,
                    server_pid,
                    plan,
                    approach_classes,
                    profiler,
                    cells,
                    storms,
                    spikes,
                )
                ctx = micro_mod.Context(config=config_path, params=target.pymysql_params())
                if "micro" not in args.skip:
                    attributed = attribution.attribute(target, ctx, args.rows)
            finally:
                workloads_mod.drop_table(admin, params["database"])
            if "micro" not in args.skip:
                parts = [(True, list(micro_mod.LIVE)), (False, list(micro_mod.MICRO))]
                total = args.micro_rounds * 2 * sum(len(keys) for _, keys in parts)
                with _progress(total, "micro") as bar:
                    for rnd in range(args.micro_rounds):
                        for live, keys in parts:
                            for threads in (1, 4):
                                for key in _rotate(keys, rnd):
                                    m = micro_mod.measure(
                                        key, threads, args.micro_ops, ctx, live=live
                                    )
                                    m["round"] = rnd
                                    (live_micros if live else micros).append(m)
                                    if bar is not None:
                                        bar.update(1)
        finally:
            if monitor is not None:
                monitor.close()
            pinning.restore()
    connect_ms = storms[0].get("one_connect_ms") if storms else None
    spike_connect_ms = spikes[0].get("one_connect_ms") if spikes else None

    settings = {
        "quick": args.quick,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "threads": args.threads,
        "latency_ms": args.latency,
        "rows": args.rows,
        "slow_ms": args.slow_ms,
        "size": args.size,
        "overflow": args.overflow,
        "tls": args.tls,
        "workloads": {w.key: w.label for w in workloads},
        "approaches": {
            c.key: {"label": c.label, "pooled": c.pooled, "bound": approaches_mod.BOUNDS[c.key]}
            for c in approach_classes
        },
        "storm_threads": args.storm_threads,
        "storm_delay_ms": args.storm_delay_ms,
        "storm_rounds": args.storm_rounds,
        "one_connect_ms": connect_ms,
        "spike_threads": args.spike_threads,
        "spike_delay_ms": args.spike_delay_ms,
        "spike_rounds": args.spike_rounds,
        "spike_size": 5,
        "spike_overflow": max(0, args.spike_threads - 5),
        "spike_one_connect_ms": spike_connect_ms,
        "micro_ops": args.micro_ops,
        "micro_rounds": args.micro_rounds,
        "micro_approaches": {k: label for k, (label, _) in micro_mod.MICRO.items()},
        "micro_live_approaches": {k: label for k, (label, _) in micro_mod.LIVE.items()},
        "connection": {k: v for k, v in target.pymysql_params().items() if k != "password"},
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    data = {
        "name": args.name,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "elapsed_s": time.time() - started,
        "machine": machine,
        "settings": settings,
        "cells": cells,
        "storm": storms,
        "spike": spikes,
        "micro": micros,
        "micro_live": live_micros,
        "attribution": attributed,
    }
    paths = report.write(
        data, args.out, plots=not args.no_plots, markdown_file=not args.write_results
    )
    if profiler is not None:
        profiler.write(args.profile)
        paths.append(args.profile)
    if args.write_results:
        report.write_results_md(data, args.out, RESULTS_MD)
        paths.append(RESULTS_MD)
    for path in paths:
        print(path, file=sys.stderr)
    print(report.targets_text(data))
    return 0


def _run_parts(
    args: argparse.Namespace,
    monitor: Monitor,
    target: Target,
    server_pid: int | None,
    plan: list[Any],
    approach_classes: list[type[approaches_mod.Approach]],
    profiler: Any,
    cells: list[dict[str, Any]],
    storms: list[dict[str, Any]],
    spikes: list[dict[str, Any]],
) -> None:
    """The cells, the cold storm and the spike, appending to the lists given."""
    if "cells" not in args.skip:
        total = sum(len(p[3]) for p in plan) * args.rounds
        with _progress(total, "cells") as bar:
            for rnd in range(args.rounds):
                for latency, workload, threads, classes in plan:
                    for cls in _rotate(classes, rnd):
                        cell = run_cell(
                            monitor,
                            cls,
                            target,
                            workload,
                            threads=threads,
                            rows=args.rows,
                            slow=args.slow_ms / 1000.0,
                            warmup=args.warmup,
                            duration=args.duration * 0.6 if latency else args.duration,
                            latency=latency,
                            seed=args.seed + rnd * 1000,
                            server_pid=server_pid,
                            profiler=profiler,
                        )
                        cell["round"] = rnd
                        cells.append(cell)
                        if bar is not None:
                            bar.update(1)
    if "storm" not in args.skip:
        delay = args.storm_delay_ms / 1000.0
        connect_ms = one_connect_time(target, delay) * 1000.0
        point = workloads_mod.BY_KEY["point"]
        with _progress(args.storm_rounds * len(approach_classes), "storm") as bar:
            for rnd in range(args.storm_rounds):
                for cls in _rotate(approach_classes, rnd):
                    storm = run_storm(
                        monitor,
                        cls,
                        target,
                        point,
                        threads=args.storm_threads,
                        rows=args.rows,
                        delay=delay,
                    )
                    storm["round"] = rnd
                    storm["one_connect_ms"] = connect_ms
                    storms.append(storm)
                    if bar is not None:
                        bar.update(1)
    spike_classes = [c for c in approach_classes if c.key in SPIKE_APPROACHES]
    if "spike" not in args.skip and spike_classes:
        delay = args.spike_delay_ms / 1000.0
        connect_ms = one_connect_time(target, delay) * 1000.0
        warm = 5
        spike_target = dataclasses.replace(
            target, size=warm, overflow=max(0, args.spike_threads - warm)
        )
        with _progress(args.spike_rounds * len(spike_classes), "spike") as bar:
            for rnd in range(args.spike_rounds):
                for cls in _rotate(spike_classes, rnd):
                    spike = run_spike(
                        monitor,
                        cls,
                        spike_target,
                        warm=warm,
                        threads=args.spike_threads,
                        query_s=0.002,
                        delay=delay,
                    )
                    spike["round"] = rnd
                    spike["one_connect_ms"] = connect_ms
                    spikes.append(spike)
                    if bar is not None:
                        bar.update(1)
