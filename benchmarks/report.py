"""Aggregate the rounds, check the targets, write JSON, Markdown and plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .approaches import BY_KEY as APPROACH_CLASSES
from .approaches import CEILING, DBPOOL_KEYS
from .attribution import own_package
from .machine import describe as machine_info
from .micro import LIVE_REFERENCE
from .micro import REFERENCE as MICRO_REFERENCE

__all__ = ["aggregate", "machine_info", "targets", "targets_text", "write", "write_results_md"]

# The targets, from the benchmark's brief.
CEILING_TARGETS = {"dbpool-shared": 0.95, "dbpool-persistent": 0.97}
# The slow query is bound by the pool size on purpose (15 connections against the
# ceiling's one per thread), so the ceiling targets apply to the other workloads.
CEILING_WORKLOADS = ("point", "write", "mix")
# Client CPU per point select, x a dedicated connection: at 1 thread, and at more.
CPU_TARGET_ONE = 1.05
CPU_TARGET_MANY = 1.08
STORM_TARGET = 2.0
# The spike (shared mode): connections opened, and the burst served within one connect.
SPIKE_OPENED_TARGET = 7
SPIKE_TIME_TARGET = 1.0
# Overload (threads beyond size + overflow, shared mode): connections opened per
# 1000 requests, and the p99 wait within this many times the median wait.
CHURN_TARGET = 0.1
FAIRNESS_TARGET = 2.0
# Targets where a lower value is better.
_LOWER_IS_BETTER = frozenset(
    ("cpu", "micro", "storm", "spike-opened", "spike-time", "churn", "fairness")
)

_PER_REQUEST_COLUMNS = (
    ("Com_admin_commands", "ping/reset"),
    ("Com_rollback", "rollback"),
    ("Com_commit", "commit"),
    ("Com_set_option", "set"),
)


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _lo_hi(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def _spread(values: list[float | None], name: str) -> dict[str, float | None]:
    """``name``: the median of ``values``; ``name_min``, ``name_max``: their range."""
    lo, hi = _lo_hi(values)
    return {name: _median(values), f"{name}_min": lo, f"{name}_max": hi}


def _errors(group: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' errors summed, and the first message any of them gave."""
    messages = (r.get("first_error") or r.get("error") for r in group)
    return {
        "errors": sum(r.get("errors") or 0 for r in group),
        "first_error": next((m for m in messages if m), None),
    }


def _by_approach(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["approach"]].append(run)
    return groups


def _rank(approach: str) -> int:
    """An approach's place in the tables: the order of benchmarks/approaches.py."""
    return _APPROACH_RANK.get(approach, 99)


_APPROACH_RANK = {key: i for i, key in enumerate(APPROACH_CLASSES)}


def _in_approach_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: _rank(r["approach"]))


def _label(key: str, data: dict[str, Any]) -> str:
    approaches = data["settings"]["approaches"]
    if key in approaches:
        return str(approaches[key]["label"])
    return key


def _is_other_pool(key: str) -> bool:
    cls = APPROACH_CLASSES.get(key)
    return bool(cls is not None and cls.pooled and not key.startswith("dbpool"))


# -- aggregation -----------------------------------------------------------------


def aggregate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (latency, workload, threads, approach): medians over rounds and spread."""
    groups: dict[tuple[float, str, int, str], list[dict[str, Any]]] = defaultdict(list)
    by_round: dict[tuple[float, str, int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for cell in cells:
        key = (cell["latency_ms"], cell["workload"], cell["threads"], cell["approach"])
        groups[key].append(cell)
        by_round[(cell["latency_ms"], cell["workload"], cell["threads"], cell["round"])][
            cell["approach"]
        ] = cell
    rows = []
    for (latency, workload, threads, approach), group in groups.items():
        throughputs = [c.get("throughput") for c in group]
        ratios: list[float | None] = []
        ahead = []
        cpu_ratios = []
        for c in group:
            peers = by_round[(latency, workload, threads, c["round"])]
            ceiling = peers.get(CEILING, {}).get("throughput")
            if ceiling and c.get("throughput") is not None:
                ratios.append(c["throughput"] / ceiling)
            ceiling_cpu = peers.get(CEILING, {}).get("client_cpu_us")
            if ceiling_cpu and c.get("client_cpu_us") is not None:
                cpu_ratios.append(c["client_cpu_us"] / ceiling_cpu)
            others = [p.get("throughput") or 0.0 for k, p in peers.items() if _is_other_pool(k)]
            if others and max(others) > 0 and c.get("throughput") is not None:
                ahead.append(c["throughput"] / max(others))
        per_request = {
            name: _median(c.get("per_request", {}).get(name) for c in group)
            for name in (group[0].get("per_request") or {})
        }
        rows.append(
            {
                "latency_ms": latency,
                "workload": workload,
                "threads": threads,
                "approach": approach,
                "rounds": len(group),
                **_spread(throughputs, "throughput"),
                **_spread(ratios, "ratio"),
                "vs_best_other_pool": _median(ahead),
                **_spread(cpu_ratios, "cpu_ratio"),
                "wait_p50_ms": _median(c.get("wait_p50_ms") for c in group),
                "p50_ms": _median(c.get("p50_ms") for c in group),
                "p99_ms": _median(c.get("p99_ms") for c in group),
                "wait_p99_ms": _median(c.get("wait_p99_ms") for c in group),
                "served_min": _median(c.get("served_min") for c in group),
                "served_median": _median(c.get("served_median") for c in group),
                "served_max": _median(c.get("served_max") for c in group),
                "peak_connections": max((c.get("peak_connections") or 0) for c in group),
                "opened_window": _median(c.get("opened_window") for c in group),
                "opened_total": _median(c.get("opened_total") for c in group),
                "commands_per_request": _median(c.get("commands_per_request") for c in group),
                "client_cpu_us": _median(c.get("client_cpu_us") for c in group),
                "client_switches": _median(c.get("client_switches") for c in group),
                "server_cpu_us": _median(c.get("server_cpu_us") for c in group),
                "per_request": per_request,
                "requests": sum(c.get("requests") or 0 for c in group),
                **_errors(group),
            }
        )
    rows.sort(key=lambda r: (r["latency_ms"], r["workload"], r["threads"], _rank(r["approach"])))
    return rows


def _against_connect(
    runs: list[dict[str, Any]],
    key: str,
    connect_ms: float | None,
    more: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per approach of a burst timed in ``key`` (ms): its spread over the rounds,
    how many single connects' time the median is, ``more`` of the group, the errors."""
    rows = []
    for approach, group in _by_approach(runs).items():
        times = _spread([r.get(key) for r in group], key)
        median = times[key]
        rows.append(
            {
                "approach": approach,
                "rounds": len(group),
                "threads": group[0]["threads"],
                **times,
                "vs_connect": median / connect_ms if median is not None and connect_ms else None,
                **more(group),
                **_errors(group),
            }
        )
    return _in_approach_order(rows)


def aggregate_storm(storms: list[dict[str, Any]], connect_ms: float | None) -> list[dict[str, Any]]:
    return _against_connect(
        storms,
        "storm_ms",
        connect_ms,
        lambda group: {"first_ms": _median(s.get("first_ms") for s in group)},
    )


def _micro_rounds(
    micros: list[dict[str, Any]],
) -> tuple[dict[tuple[str, int], list[dict[str, Any]]], dict[tuple[int, int], dict[str, float]]]:
    """The measurements by (approach, threads); and each round's CPU ns per operation,
    by (threads, round) and approach."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    by_round: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for m in micros:
        groups[(m["approach"], m["threads"])].append(m)
        if m.get("cpu_ns_per_op") is not None:
            by_round[(m["threads"], m["round"])][m["approach"]] = m["cpu_ns_per_op"]
    return groups, by_round


def aggregate_micro(micros: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups, by_round = _micro_rounds(micros)
    rows = []
    for (approach, threads), group in groups.items():
        values = [m.get("cpu_ns_per_op") for m in group]
        lo, hi = _lo_hi(values)
        ref = MICRO_REFERENCE.get(approach)
        ratios = []
        if ref is not None:
            for m in group:
                peer = by_round[(threads, m["round"])].get(ref)
                if peer and m.get("cpu_ns_per_op") is not None:
                    ratios.append(m["cpu_ns_per_op"] / peer)
        rows.append(
            {
                "approach": approach,
                "threads": threads,
                "rounds": len(group),
                "ns_per_op": _median(values),
                "ns_min": lo,
                "ns_max": hi,
                "reference": ref,
                "vs_reference": _median(ratios),
                **_errors(group),
            }
        )
    rows.sort(
        key=lambda r: (
            r["threads"],
            list(MICRO_REFERENCE).index(r["approach"]) if r["approach"] in MICRO_REFERENCE else 9,
            r["approach"],
        )
    )
    return rows


def aggregate_spike(spikes: list[dict[str, Any]], connect_ms: float | None) -> list[dict[str, Any]]:
    return _against_connect(
        spikes,
        "burst_ms",
        connect_ms,
        lambda group: _spread([s.get("opened") for s in group], "opened"),
    )


def aggregate_micro_live(micros: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live checkout + return: medians, and dbpool's ratio to its DBUtils reference per round."""
    groups, by_round = _micro_rounds(micros)
    rows = []
    for (approach, threads), group in groups.items():
        values = [m.get("ns_per_op") for m in group]
        lo, hi = _lo_hi(values)
        refs, goal = LIVE_REFERENCE.get(approach, ((), None))
        # Ratios of CPU time: on a busy machine the wall time includes waiting for a core.
        ratios = []
        for m in group:
            peers = by_round[(threads, m["round"])]
            if refs and all(peers.get(r) for r in refs) and m.get("cpu_ns_per_op") is not None:
                ratios.append(m["cpu_ns_per_op"] / sum(peers[r] for r in refs))
        rows.append(
            {
                "approach": approach,
                "threads": threads,
                "rounds": len(group),
                "ns_per_op": _median(values),
                "ns_min": lo,
                "ns_max": hi,
                "cpu_ns_per_op": _median(m.get("cpu_ns_per_op") for m in group),
                "reference": list(refs) or None,
                "goal": goal,
                "vs_reference": _median(ratios),
                **_errors(group),
            }
        )
    order = {
        "dbpool-shared": 0,
        "dbutils-pooleddb": 1,
        "dbpool-persistent": 2,
        "dbutils-persistentdb": 3,
        "tcp-info": 4,
    }
    rows.sort(key=lambda r: (r["threads"], order.get(r["approach"], 9)))
    return rows


# -- targets ---------------------------------------------------------------------


def _pool_bound(key: str, threads: int, settings: dict[str, Any]) -> int:
    """The most connections a dbpool mode may hold in a cell (see approaches.BOUNDS)."""
    max_size = int(settings["size"]) + int(settings["overflow"])
    return max(max_size, threads) if key == "dbpool-persistent" else max_size


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value, whether it is met, and by how much not."""
    rows = aggregate(data["cells"])
    index = {(r["latency_ms"], r["workload"], r["threads"], r["approach"]): r for r in rows}
    out: list[dict[str, Any]] = []
    settings = data["settings"]
    for latency in settings["latency_ms"]:
        for workload in settings["workloads"]:
            for threads in settings["threads"]:
                for key in DBPOOL_KEYS:
                    row = index.get((latency, workload, threads, key))
                    if row is None:
                        continue
                    if workload == "point" and not latency:
                        goal = CPU_TARGET_ONE if threads == 1 else CPU_TARGET_MANY
                        value = row["cpu_ratio"]
                        target = _target("cpu", key, workload, latency, threads, value, goal)
                        target["rounds"] = (row["cpu_ratio_min"], row["cpu_ratio_max"])
                        out.append(target)
                    if (
                        workload in CEILING_WORKLOADS
                        and key in CEILING_TARGETS
                        and threads <= _pool_bound(key, threads, settings)
                    ):
                        out.append(
                            _target(
                                "ceiling",
                                key,
                                workload,
                                latency,
                                threads,
                                row["ratio"],
                                CEILING_TARGETS[key],
                            )
                        )
                    out.append(
                        _target(
                            "ahead", key, workload, latency, threads, row["vs_best_other_pool"], 1.0
                        )
                    )
                    if (
                        workload == "point"
                        and not latency
                        and key == "dbpool-shared"
                        and threads > _pool_bound(key, threads, settings)
                    ):
                        opened, reqs = row["opened_window"], row["requests"] / row["rounds"]
                        churn = None if opened is None or not reqs else opened / reqs * 1000
                        out.append(
                            _target("churn", key, workload, latency, threads, churn, CHURN_TARGET)
                        )
                        p50, p99 = row["wait_p50_ms"], row["wait_p99_ms"]
                        fair = p99 / p50 if p50 and p99 is not None else None
                        out.append(
                            _target(
                                "fairness", key, workload, latency, threads, fair, FAIRNESS_TARGET
                            )
                        )
    for m in aggregate_micro_live(data.get("micro_live", [])):
        if m["goal"] is not None:
            out.append(
                _target(
                    "micro", m["approach"], None, None, m["threads"], m["vs_reference"], m["goal"]
                )
            )
    for s in aggregate_storm(data["storm"], settings.get("one_connect_ms")):
        if s["approach"] in DBPOOL_KEYS:
            out.append(
                _target(
                    "storm", s["approach"], None, None, s["threads"], s["vs_connect"], STORM_TARGET
                )
            )
    for s in aggregate_spike(data.get("spike", []), settings.get("spike_one_connect_ms")):
        if s["approach"] == "dbpool-shared":
            out.append(
                _target(
                    "spike-opened",
                    s["approach"],
                    None,
                    None,
                    s["threads"],
                    s["opened"],
                    SPIKE_OPENED_TARGET,
                )
            )
            out.append(
                _target(
                    "spike-time",
                    s["approach"],
                    None,
                    None,
                    s["threads"],
                    s["vs_connect"],
                    SPIKE_TIME_TARGET,
                )
            )
    return out


def _target(
    kind: str,
    approach: str,
    workload: str | None,
    latency: float | None,
    threads: int,
    value: float | None,
    goal: float,
) -> dict[str, Any]:
    lower = kind in _LOWER_IS_BETTER
    if value is None:
        met, gap = False, None
    elif kind == "spike-time":  # strictly less than one connect
        met, gap = value < goal, value - goal
    elif kind == "ahead":  # strictly ahead
        met, gap = value > goal, goal - value
    elif lower:
        met, gap = value <= goal, value - goal
    else:
        met, gap = value >= goal, goal - value
    return {
        "kind": kind,
        "approach": approach,
        "workload": workload,
        "latency_ms": latency,
        "threads": threads,
        "value": value,
        "goal": goal,
        "met": met,
        "missed_by": None if met else gap,
    }


def _mark(t: dict[str, Any] | None, judged: bool = True) -> str:
    if t is None or t["value"] is None:
        return "-"
    text = f"{t['value']:.2f}"
    lo, hi = t.get("rounds") or (None, None)
    rounds = f", rounds {lo:.2f}-{hi:.2f}" if lo is not None and hi is not None else ""
    if not judged:
        return text
    if t["met"]:
        return f"{text} ✓" + (f" ({rounds[2:]})" if rounds else "")
    gap = t["missed_by"]
    if gap is None:
        return f"{text} ✗"
    return (
        f"{text} ✗ ({gap:.2f} over{rounds})"
        if t["kind"] in _LOWER_IS_BETTER
        else (f"{text} ✗ ({gap:.2f} short{rounds})")
    )


_SINGLE_TARGETS = {
    "micro": "checkout + return, live PyMySQL, x DBUtils' cycle (shared ≤ 2.0x PooledDB; "
    "persistent ≤ 2.5x PersistentDB + one TCP_INFO read)",
    "storm": "cold storm, x one connect (≤ 2x)",
    "spike-opened": "spike: connections opened (≤ 7)",
    "spike-time": "spike: burst served, x one connect (< 1x)",
    "churn": "overload: connections opened per 1000 requests (≤ 0.1)",
    "fairness": "overload: p99 wait / median wait (≤ 2x)",
}


def targets_text(data: dict[str, Any]) -> str:
    """The targets section in Markdown (a quick run shows the figures, judging none)."""
    ts = targets(data)
    settings = data["settings"]
    judged = not settings.get("quick")
    lines = []
    if judged:
        met = sum(t["met"] for t in ts)
        lines.append(
            f"Targets met: **{met} of {len(ts)}**. ✓ met, ✗ missed (in brackets: by how much).\n"
        )
    else:
        lines.append(
            "Quick run: a smoke test of the harness, with windows too short to "
            "judge any target. The figures below are shown unjudged; run "
            "`python -m benchmarks` for the real ones.\n"
        )
    threads = settings["threads"]
    header = "| mode | workload | latency | " + " | ".join(f"{t} thr" for t in threads) + " |"
    rule = "|---|---|---|" + "---|" * len(threads)
    index = {
        (t["kind"], t["approach"], t["workload"], t["latency_ms"], t["threads"]): t for t in ts
    }

    def matrix(kind: str) -> None:
        lines.append(header)
        lines.append(rule)
        for key in DBPOOL_KEYS:
            for workload in settings["workloads"]:
                for latency in settings["latency_ms"]:
                    marks = [index.get((kind, key, workload, latency, n)) for n in threads]
                    if not any(marks):
                        continue
                    lines.append(
                        f"| {_label(key, data)} | {workload} | {latency:g} ms | "
                        + " | ".join(_mark(m, judged) for m in marks)
                        + " |"
                    )
        lines.append("")

    if any(t["kind"] == "cpu" for t in ts):
        lines.append(
            "**Client CPU per point select vs a dedicated connection per thread** "
            f"(≤ {CPU_TARGET_ONE:.2f}x at 1 thread, ≤ {CPU_TARGET_MANY:.2f}x "
            "at more; the median of the rounds' ratios, and their range). CPU time moves "
            "far less with the machine's load than throughput, but not nothing: at 1 "
            "thread every request sleeps on its socket, and what the wake-up costs "
            "follows the machine, so a round's ratio can move by more than dbpool's share. "
            "The figure that holds still is the bytecode count of \"Where the client's "
            'time goes".\n'
        )
        matrix("cpu")
    if any(t["kind"] == "ceiling" for t in ts):
        lines.append(
            "**Throughput vs the dedicated-connection ceiling** (shared ≥ 0.95x, "
            "persistent ≥ 0.97x, where the pool is not the bound: threads ≤ its "
            "most connections; the slow query is left out, where pools are bound "
            "to 15 connections on purpose):\n"
        )
        matrix("ceiling")
    if any(t["kind"] == "ahead" for t in ts):
        lines.append(
            "**Throughput vs the best other pool in the same round** (> 1.00 means "
            "ahead of every other pooled approach):\n"
        )
        matrix("ahead")
    singles = [t for t in ts if t["kind"] in _SINGLE_TARGETS]
    if singles:
        lines.append("| target | approach | threads | value |")
        lines.append("|---|---|---|---|")
        for t in singles:
            lines.append(
                f"| {_SINGLE_TARGETS[t['kind']]} | {_label(t['approach'], data)} | "
                f"{t['threads']} | {_mark(t, judged)} |"
            )
        lines.append("")
    if judged:
        lines.extend(_why_missed(data, ts))
    return "\n".join(lines)


def _connections(key: str, threads: int, settings: dict[str, Any]) -> int:
    """The most connections approach ``key`` could hold in a cell of ``threads`` threads."""
    bound = settings["size"] + settings["overflow"]
    cls = APPROACH_CLASSES.get(key)
    return max(bound, threads) if cls is not None and cls.thread_affine else bound


def _behind_why(
    t: dict[str, Any],
    index: dict[tuple[float, str, int, str], dict[str, Any]],
    data: dict[str, Any],
) -> str:
    """One cell where dbpool is behind: who is ahead, with how many connections, and the spread."""
    settings = data["settings"]
    where = (t["latency_ms"], t["workload"], t["threads"])
    others = [
        r
        for key in settings["approaches"]
        if _is_other_pool(key) and (r := index.get((*where, key))) and r["throughput"]
    ]
    mine = index.get((*where, t["approach"]))
    cell = (
        f"{_label(t['approach'], data)}, {t['workload']}, {t['latency_ms']:g} ms, "
        f"{t['threads']} threads:"
    )
    if not others or mine is None or t["value"] is None:
        return f"{cell} no figure (see the cell's errors)"
    cell += f" {t['value']:.2f}x"
    best = max(others, key=lambda r: r["throughput"])
    theirs = _connections(best["approach"], t["threads"], settings)
    ours = _connections(t["approach"], t["threads"], settings)
    text = f"{cell} of {_label(best['approach'], data)}"
    if theirs > ours:
        return (
            f"{text}, which held up to {theirs} connections to dbpool's {ours}: the "
            "server ran more statements at once"
        )
    return (
        f"{text}, both up to {ours} connections; their rounds ranged "
        f"{_num(mine['throughput_min'])}-{_num(mine['throughput_max'])} and "
        f"{_num(best['throughput_min'])}-{_num(best['throughput_max'])} req/s"
    )


def _why_waiting(data: dict[str, Any], index: dict[tuple[Any, ...], dict[str, Any]]) -> str:
    """Shared mode's waits beyond its connections, in the CPU targets' explanation."""
    settings = data["settings"]
    bound = settings["size"] + settings["overflow"]
    waits, switches = [], []
    for n in settings["threads"]:
        mine = index.get((0.0, "point", n, "dbpool-shared"))
        if n <= bound or mine is None or mine["wait_p50_ms"] is None:
            continue
        waits.append(f"{_ms(mine['wait_p50_ms'])} ms at {n} threads")
        theirs = index.get((0.0, "point", n, CEILING)) or {}
        if mine.get("client_switches") is not None and theirs.get("client_switches") is not None:
            switches.append(
                f"{mine['client_switches']:.2f} against {theirs['client_switches']:.2f} at {n}"
            )
    if not waits:
        return ""
    text = (
        f" With more threads than shared mode's {bound} connections, most requests "
        f"wait for one (median wait {', '.join(waits)}): a condition wait and a "
        "wake-up through the kernel, which a dedicated connection per thread never has"
    )
    if switches:
        text += (
            " (context switches per request, the dedicated connection's second: "
            f"{', '.join(switches)} threads)"
        )
    return text + "."


def _why_missed(data: dict[str, Any], ts: list[dict[str, Any]]) -> list[str]:
    """Why each missed CPU, throughput, checkout and wait target is missed, in figures.

    The figures are the run's own: the cycle's CPU, the bytecode counts, the waits.
    """
    missed = {t["kind"] for t in ts if not t["met"]}
    attributed = data.get("attribution") or {}
    requests, cycles = attributed.get("requests", {}), attributed.get("cycles", {})
    micro = {
        (m["approach"], m["threads"]): m for m in aggregate_micro_live(data.get("micro_live", []))
    }
    rows = aggregate(data["cells"])
    index = {(r["latency_ms"], r["workload"], r["threads"], r["approach"]): r for r in rows}
    out = []
    ceiling = index.get((0.0, "point", 1, CEILING))
    if missed & {"cpu", "ceiling"} and ceiling and ceiling["client_cpu_us"]:
        dedicated_us = ceiling["client_cpu_us"]
        costs = []
        for key in DBPOOL_KEYS:
            m = micro.get((key, 1))
            if m and m["cpu_ns_per_op"]:
                share = m["cpu_ns_per_op"] / 1000.0 / dedicated_us
                costs.append(
                    f"{m['cpu_ns_per_op'] / 1000.0:.1f} µs in {_label(key, data)} mode "
                    f"({share:.1%} of a point select's)"
                )
        text = (
            "**Why the client CPU and throughput targets are missed.** A point select over "
            f"the dedicated connection takes {dedicated_us:.0f} µs of client CPU at 1 thread "
            f"in this run, so 1.05x allows {dedicated_us * 0.05:.1f} µs for dbpool's own work."
        )
        if costs:
            text += " Checkout + return alone, with no query, costs " + " and ".join(costs) + "."
        base = requests.get(CEILING)
        counted = []
        for key in DBPOOL_KEYS:
            r, c = requests.get(key), cycles.get(key)
            if base and r and c:
                added = r["total"] - base["total"]
                counted.append(
                    f"{_label(key, data)} {r['total']:,} (+{added / base['total']:.0%}, "
                    f"{c['packages'].get(own_package(key), 0):,} of them in checkout + return)"
                )
        if base and counted:
            text += (
                f" Python bytecodes per point select: the dedicated connection "
                f"{base['total']:,}, " + ", ".join(counted) + " (see \"Where the client's "
                'time goes").'
            )
        text += (
            " With no added latency the client's core is the bound, so throughput follows "
            "the CPU ratio."
        )
        out.append(text + _why_waiting(data, index) + "\n")
    behind = [t for t in ts if t["kind"] == "ahead" and not t["met"]]
    if behind:
        lines = [_behind_why(t, index, data) for t in behind]
        out.append(
            "**Why dbpool is behind another pool in some cells.** The best other pool of "
            "each such cell, and the connections each could hold there:\n\n"
            + "\n".join(f"- {line}" for line in lines)
            + "\n"
        )
    if "micro" in missed and cycles:
        parts = []
        for key in (*DBPOOL_KEYS, "dbutils-pooleddb", "dbutils-persistentdb"):
            c = cycles.get(key)
            if c:
                own = c["packages"].get(own_package(key), 0)
                busiest = ", ".join(f"{name} {n}" for name, n in c["top"][:5])
                parts.append(f"{key} {own:,} ({busiest})")
        out.append(
            "**Why checkout + return is over its target.** Python bytecodes per cycle, the "
            "pool's own: "
            + "; ".join(parts)
            + ". DBUtils' PersistentDB hands the thread the same object each time and its "
            "close() does nothing; dbpool lends a new connection object per checkout (so "
            "that one given back cannot be used by mistake), validates it (the TCP_INFO "
            "look, recycle and host checks), counts it (stats, histograms) and checks at "
            "its return that nothing needs a reset.\n"
        )
    if "fairness" in missed:
        out.append(
            "**Why p99 / median wait is over 2x at 16 threads.** With 16 threads on 15 "
            "connections one thread at most waits, for the next of 15 returns that come at "
            "random: its wait is close to an exponential, whose p99 is 6.6 times its "
            "median whatever order the pool serves waiters in. The overload table gives "
            "the requests each thread got served, which shows whether waiters are served "
            "in turn.\n"
        )
    return out


# -- Markdown --------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _per_req(row: dict[str, Any], name: str) -> str:
    value = row["per_request"].get(name)
    return "-" if value is None else f"{value:.2f}"


def _latency_title(latency: float) -> str:
    return "no added latency" if not latency else f"{latency:g} ms added per round trip"


def markdown(data: dict[str, Any], plot_prefix: str) -> str:
    """The whole report; plots are linked as ``plot_prefix + file name``."""
    s = data["settings"]
    m = data["machine"]
    rows = aggregate(data["cells"])
    out: list[str] = []
    add = out.append
    add(f"# dbpool benchmark: {data['name']}\n")
    add(f"Run {data['started']}, {data['elapsed_s'] / 60:.1f} min: `{s['command']}`\n")
    add("## Machine\n")
    add("| | |\n|---|---|")
    add(f"| CPU | {m['cpu']} ({m['cores']} cores) |")
    add(f"| kernel | {m['kernel']} |")
    add(f"| Python | {m['python']} |")
    add(f"| server | {m['server']} |")
    add(f"| dbpool | {m['dbpool']} |")
    for name, version in m["packages"].items():
        add(f"| {name} | {version or 'not installed'} |")
    if m.get("load_average_start"):
        start = ", ".join(f"{x:.2f}" for x in m["load_average_start"])
        end = ", ".join(f"{x:.2f}" for x in m.get("load_average_end") or [])
        add(f"| load average | {start} at the start, {end} at the end |")
    pinning = (m.get("pinning") or {}).get("note")
    if pinning:
        add(f"| cores | {pinning} |")
    add("")
    add("## Settings\n")
    add(
        f"- {s['rounds']} rounds; in each, every cell runs once, the approaches one after "
        "the other (their order rotates by one each round). A cell runs its threads for "
        f"{s['warmup_s']:g} s of warm-up, then {s['duration_s']:g} s measured "
        f"({s['duration_s'] * 0.6:g} s with added latency). Figures are medians over the "
        "rounds; min-max is the spread; ratios are taken within a round."
    )
    add(
        "- The primary figure is CPU time per request, of the benchmark process (all its "
        "threads) and of the server process, over the measured window: it hardly moves with "
        "what else runs on the machine, while throughput does. "
        + (f"Cores: {pinning}." if pinning else "")
    )
    add(
        "- While a cell is measured, the benchmark's main thread only sleeps: server status "
        "is read at the window's edges by a separate monitor process (pinned with the "
        "server), so no sampler takes the GIL from the worker threads. Peak connections: "
        f"{m.get('peak_from', 'Threads_connected')}."
    )
    add(
        f"- Table of {s['rows']:,} rows; the slow query sleeps {s['slow_ms']:g} ms. Pools: "
        f"{s['size']} + {s['overflow']} overflow unless said otherwise below."
    )
    conn = ", ".join(f"{k}={v!r}" for k, v in s["connection"].items())
    add(
        f"- Every approach connects with the same settings: {conn} (mysql-connector: "
        "the same, use_pure=True). Autocommit is on everywhere: with it off, even a "
        "SELECT opens a transaction that a correct pool must roll back at return, while "
        "a dedicated connection would keep a stale snapshot, an unfair ceiling."
    )
    add(
        "- Latency variant: the first read after each write on a connection sleeps the "
        "given time (in both drivers' socket layers), so each round trip costs that much "
        "more; a new connection's greeting too."
    )
    add(
        "- Server commands per request: deltas of `SHOW GLOBAL STATUS` over the measured "
        "window, without the benchmark's own status queries, divided by requests. "
        "`commands` = Questions + Com_admin_commands (COM_PING and COM_RESET_CONNECTION; "
        "MariaDB counts a reset in Questions as well)."
    )
    add(
        "- Peak connections: the most connections seen above the cell's starting count. "
        "Opened: `Connections` delta during the measured window.\n"
    )
    add("| approach | bound on connections |\n|---|---|")
    for info in s["approaches"].values():
        add(f"| {info['label']} | {info['bound']} |")
    add("")
    add("## Targets\n")
    add(targets_text(data))
    _cpu_tables(add, data, rows)
    if data.get("plots"):
        add("## Plots\n")
        for name in data["plots"]:
            add(f"![{name}]({plot_prefix}{name}.png)\n")
    _throughput_tables(add, data, rows)
    _overload_table(add, data, rows)
    _commands_table(add, data, rows)
    _storm_table(add, data)
    _spike_table(add, data)
    _micro_live_table(add, data)
    _micro_table(add, data)
    _attribution_tables(add, data)
    _cell_tables(add, data, rows)
    return "\n".join(out) + "\n"


def _throughput_tables(add: Any, data: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    s = data["settings"]
    if not rows:
        return
    add("## Throughput\n")
    add("Requests per second, median (min-max), and x the dedicated-connection ceiling.\n")
    index = {(r["latency_ms"], r["workload"], r["threads"], r["approach"]): r for r in rows}
    for latency in s["latency_ms"]:
        for workload, label in s["workloads"].items():
            add(f"### {label}, {_latency_title(latency)}\n")
            add("| approach | " + " | ".join(f"{t} threads" for t in s["threads"]) + " |")
            add("|---|" + "---|" * len(s["threads"]))
            for key in s["approaches"]:
                cells = []
                for n in s["threads"]:
                    r = index.get((latency, workload, n, key))
                    if r is None or r["throughput"] is None:
                        cells.append("-")
                        continue
                    ratio = f" **{r['ratio']:.2f}x**" if r["ratio"] is not None else ""
                    errs = f" ({r['errors']} errors)" if r["errors"] else ""
                    cells.append(
                        f"{_num(r['throughput'])} ({_num(r['throughput_min'])}-"
                        f"{_num(r['throughput_max'])}){ratio}{errs}"
                    )
                add(f"| {_label(key, data)} | " + " | ".join(cells) + " |")
            add("")


def _commands_table(add: Any, data: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    s = data["settings"]
    if not rows:
        return
    threads = 16 if 16 in s["threads"] else max(s["threads"])
    latency = s["latency_ms"][0]
    add(f"## Server commands per request ({threads} threads, {_latency_title(latency)})\n")
    names = list(s["workloads"])
    add(
        "| approach | " + " | ".join(names) + " | point: ping/reset | rollback | commit "
        "| set | opened | client CPU µs | server CPU µs |"
    )
    add("|---|" + "---|" * (len(names) + 7))
    index = {
        (r["workload"], r["approach"]): r
        for r in rows
        if r["threads"] == threads and r["latency_ms"] == latency
    }
    for key in s["approaches"]:
        cmds = [
            _num(index[(w, key)]["commands_per_request"], 2) if (w, key) in index else "-"
            for w in names
        ]
        point = index.get(("point", key))
        extra = ["-"] * 7
        if point is not None:
            extra = [_per_req(point, name) for name, _ in _PER_REQUEST_COLUMNS]
            opened = point["opened_window"]
            reqs = point["requests"] / max(1, point["rounds"])
            extra.append("-" if opened is None or not reqs else f"{opened / reqs:.2f}")
            extra += [_num(point["client_cpu_us"]), _num(point["server_cpu_us"])]
        add(f"| {_label(key, data)} | " + " | ".join(cmds) + " | " + " | ".join(extra) + " |")
    add(
        "\nA point select alone is 1 command, a write transaction 3 (BEGIN, UPDATE, COMMIT). "
        "'opened' is connections opened per request. CPU per request (point select): the "
        "benchmark process's CPU time (all its threads) and the server process's, over the "
        "measured window; unlike throughput, these hardly depend on what else runs on the "
        "machine.\n"
    )


def _cpu_tables(add: Any, data: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    s = data["settings"]
    index = {(r["workload"], r["threads"], r["approach"]): r for r in rows if not r["latency_ms"]}
    if not index:
        return
    add("## CPU time per request\n")
    add(
        "Microseconds of CPU per request, client (the benchmark process, all threads) / "
        "server (the server process), median over rounds, no added latency; in bold the "
        "client's x the dedicated connection in the same round.\n"
    )
    for workload, label in s["workloads"].items():
        if not any(k[0] == workload for k in index):
            continue
        add(f"### {label}\n")
        add("| approach | " + " | ".join(f"{t} threads" for t in s["threads"]) + " |")
        add("|---|" + "---|" * len(s["threads"]))
        for key in s["approaches"]:
            cells = []
            for n in s["threads"]:
                r = index.get((workload, n, key))
                if r is None or r["client_cpu_us"] is None:
                    cells.append("-")
                    continue
                ratio = f" **{r['cpu_ratio']:.2f}x**" if r["cpu_ratio"] is not None else ""
                cells.append(f"{_num(r['client_cpu_us'])} / {_num(r['server_cpu_us'])}{ratio}")
            add(f"| {_label(key, data)} | " + " | ".join(cells) + " |")
        add("")


def _overload_table(add: Any, data: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    s = data["settings"]
    max_size = s["size"] + s["overflow"]
    over = [n for n in s["threads"] if n > max_size]
    index = {
        (r["threads"], r["approach"]): r
        for r in rows
        if not r["latency_ms"] and r["workload"] == "point"
    }
    if not over or not index:
        return
    add(
        f"## Overload\n\nPoint selects with more threads than connections "
        f"({s['size']} + {s['overflow']} for the bounded pools): connections opened per "
        "1000 requests while measured (churn); the wait in the checkout call, median "
        "and p99 (fair: p99 within 2x the median); and the requests each thread got "
        "served in the window, the least-served thread, the median one and the most-served "
        "(medians over the rounds). A percentile over requests cannot see a thread that "
        "is never served, since it has no requests: a pool that lets the thread that just "
        "gave a connection back take one again ahead of those waiting shows short waits "
        "while some threads starve (least-served 0). With one waiter at a time (16 "
        "threads on 15 connections), its wait is the time until the next of 15 returns "
        "that come at random, close to an exponential whose p99 is 6.6 times its median "
        "whatever order the pool serves waiters in.\n"
    )
    add(
        "| approach | threads | opened / 1000 req | wait p50 (ms) | wait p99 (ms) | p99 / p50 "
        "| requests per thread: least / median / most |"
    )
    add("|---|---|---|---|---|---|---|")
    for key in s["approaches"]:
        for n in over:
            r = index.get((n, key))
            if r is None or not r["requests"]:
                continue
            reqs = r["requests"] / max(1, r["rounds"])
            churn = "-" if r["opened_window"] is None else f"{r['opened_window'] / reqs * 1000:.2f}"
            p50, p99 = r["wait_p50_ms"], r["wait_p99_ms"]
            fair = f"{p99 / p50:.1f}" if p50 and p99 is not None else "-"
            served = " / ".join(
                _num(r.get(k)) for k in ("served_min", "served_median", "served_max")
            )
            add(
                f"| {_label(key, data)} | {n} | {churn} | {_ms(p50)} | {_ms(p99)} | {fair} "
                f"| {served} |"
            )
    add("")


def _spike_table(add: Any, data: dict[str, Any]) -> None:
    s = data["settings"]
    spikes = aggregate_spike(data.get("spike", []), s.get("spike_one_connect_ms"))
    if not spikes:
        return
    add(
        f'## Spike\n\nHikariCP\'s "Welcome to the Jungle": a pool of size '
        f"{s['spike_size']}, max_overflow {s['spike_overflow']}, with {s['spike_size']} warm "
        f"connections; then {s['spike_threads']} threads at once, each running a 2 ms query "
        f"(`DO SLEEP`), while every new connect takes {s['spike_delay_ms']:g} ms longer "
        f"(one connect: {_ms(s.get('spike_one_connect_ms'))} ms). Opened: the server's new "
        f"connections; burst: until the last thread is done. Median of {s['spike_rounds']} "
        "rounds. In persistent mode a connection belongs to its thread, so the warm ones "
        "(of threads that ended) cannot serve the new threads.\n"
    )
    add("| approach | opened | min-max | burst (ms) | min-max | x one connect | errors |")
    add("|---|---|---|---|---|---|---|")
    for r in spikes:
        ratio = "-" if r["vs_connect"] is None else f"{r['vs_connect']:.2f}x"
        add(
            f"| {_label(r['approach'], data)} | {_num(r['opened'])} | {_num(r['opened_min'])}-"
            f"{_num(r['opened_max'])} | {_ms(r['burst_ms'])} | {_ms(r['burst_ms_min'])}-"
            f"{_ms(r['burst_ms_max'])} | {ratio} | {r['errors']} |"
        )
    add("")


def _attribution_tables(add: Any, data: dict[str, Any]) -> None:
    attributed = data.get("attribution")
    if not attributed:
        return
    add(
        "## Where the client's time goes\n\nPython bytecodes run per request by one thread "
        f"(Python {attributed['python']}), counted by an opcode tracer over 20 requests after "
        "a warm-up, by the package of each function: a profile that does not move with the "
        "machine's load. A C call (a socket read, a lock) counts as the one bytecode that "
        "calls it; the CPU tables give the time.\n"
    )
    base = attributed["requests"].get(CEILING)
    add("| point select | bytecodes | pymysql | dbpool | other | x dedicated |")
    add("|---|---|---|---|---|---|")
    for key, r in attributed["requests"].items():
        packages = r["packages"]
        other = r["total"] - packages.get("pymysql", 0) - packages.get("dbpool", 0)
        ratio = f"{r['total'] / base['total']:.2f}x" if base else "-"
        add(
            f"| {_label(key, data)} | {r['total']:,} | {packages.get('pymysql', 0):,} | "
            f"{packages.get('dbpool', 0):,} | {other:,} | {ratio} |"
        )
    add("")
    add("Checkout + return with no query, and the functions of the pool that run the most:\n")
    add("| checkout + return | bytecodes, the pool's own | with the loop | busiest functions |")
    add("|---|---|---|---|")
    for key, c in attributed["cycles"].items():
        own = c["packages"].get(own_package(key), 0)
        busiest = ", ".join(f"`{name}` {n}" for name, n in c["top"])
        add(f"| {key} | {own:,} | {c['total']:,} | {busiest} |")
    add("")


def _micro_live_table(add: Any, data: dict[str, Any]) -> None:
    s = data["settings"]
    micro = aggregate_micro_live(data.get("micro_live", []))
    if not micro:
        return
    add(
        f"## Checkout + return, live PyMySQL connection\n\nNo query, only checkout + "
        f"return on live connections to the server; {s['micro_ops']:,} per measurement, "
        f"median of {s['micro_rounds']} rounds. dbpool with validation on and "
        '`reset="rollback"`; DBUtils\' own cycles with its ping and reset off (dbpool '
        "does those itself); one TCP_INFO read is the socket look dbpool's validation "
        "takes. Nanoseconds per cycle: CPU time of the process (the figure the ratio uses: "
        "on a busy machine wall time includes waiting for a core) and wall time.\n"
    )
    add("| approach | threads | CPU ns | wall ns | wall min-max | x reference (CPU) |")
    add("|---|---|---|---|---|---|")
    labels = s.get("micro_live_approaches", {})
    for r in micro:
        ratio = "-"
        if r["vs_reference"] is not None:
            ratio = f"{r['vs_reference']:.2f}x ({' + '.join(r['reference'])})"
        add(
            f"| {labels.get(r['approach'], r['approach'])} | {r['threads']} | "
            f"{_num(r['cpu_ns_per_op'])} | {_num(r['ns_per_op'])} | {_num(r['ns_min'])}-"
            f"{_num(r['ns_max'])} | {ratio} |"
        )
    add("")


def _storm_table(add: Any, data: dict[str, Any]) -> None:
    s = data["settings"]
    storms = aggregate_storm(data["storm"], s.get("one_connect_ms"))
    if not storms:
        return
    add(
        f"## Cold storm\n\n{s['storm_threads']} threads hit a new, empty pool at once; "
        f"every connect takes {s['storm_delay_ms']:g} ms longer. One connect takes "
        f"{_ms(s.get('one_connect_ms'))} ms. Time until every thread has run its first "
        f"query, median of {s['storm_rounds']} rounds.\n"
    )
    add("| approach | all done (ms) | min-max | x one connect | first done (ms) | errors |")
    add("|---|---|---|---|---|---|")
    for r in storms:
        ratio = "-" if r["vs_connect"] is None else f"{r['vs_connect']:.2f}x"
        add(
            f"| {_label(r['approach'], data)} | {_ms(r['storm_ms'])} | {_ms(r['storm_ms_min'])}"
            f"-{_ms(r['storm_ms_max'])} | {ratio} | {_ms(r['first_ms'])} | {r['errors']} |"
        )
    add("")


def _micro_table(add: Any, data: dict[str, Any]) -> None:
    s = data["settings"]
    micro = aggregate_micro(data["micro"])
    if not micro:
        return
    add(
        f"## Checkout + return, no I/O\n\nA fake driver that does nothing (no target: "
        "these show the pools' own bookkeeping, DBUtils with its default ping=1); "
        f"{s['micro_ops']:,} checkouts per measurement, median of {s['micro_rounds']} rounds. "
        "Nanoseconds of the process's CPU time per checkout + return (with 4 threads: total "
        "over total checkouts).\n"
    )
    add("| approach | threads | ns | min-max | x raw DBUtils |")
    add("|---|---|---|---|---|")
    labels = s["micro_approaches"]
    for r in micro:
        ratio = "-" if r["vs_reference"] is None else f"{r['vs_reference']:.2f}x"
        add(
            f"| {labels.get(r['approach'], r['approach'])} | {r['threads']} | "
            f"{_num(r['ns_per_op'])} | {_num(r['ns_min'])}-{_num(r['ns_max'])} | {ratio} |"
        )
    add("")


def _cell_tables(add: Any, data: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    s = data["settings"]
    if not rows:
        return
    add("## Every cell\n")
    add(
        "req/s: median; x ceiling: median of per-round ratios; latencies in ms (medians "
        "over rounds of each round's percentile); wait: time in the checkout call; "
        "peak: most server connections seen; opened: connections opened while measured; "
        "cmds: server commands per request; client/server µs: CPU time per request of the "
        "benchmark process and of the server.\n"
    )
    for latency in s["latency_ms"]:
        for workload, label in s["workloads"].items():
            add(f"### {label}, {_latency_title(latency)}\n")
            add(
                "| approach | threads | req/s | min-max | x ceiling | p50 | p99 | wait p99 "
                "| peak | opened | cmds | ping/reset | rollback | commit | set "
                "| client µs | server µs | errors |"
            )
            add("|---|" + "---|" * 17)
            for r in rows:
                if r["latency_ms"] != latency or r["workload"] != workload:
                    continue
                ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
                add(
                    f"| {_label(r['approach'], data)} | {r['threads']} | "
                    f"{_num(r['throughput'])} | {_num(r['throughput_min'])}-"
                    f"{_num(r['throughput_max'])} | {ratio} | {_ms(r['p50_ms'])} | "
                    f"{_ms(r['p99_ms'])} | {_ms(r['wait_p99_ms'])} | {r['peak_connections']} | "
                    f"{_num(r['opened_window'])} | {_num(r['commands_per_request'], 2)} | "
                    + " | ".join(_per_req(r, name) for name, _ in _PER_REQUEST_COLUMNS)
                    + f" | {_num(r['client_cpu_us'])} | {_num(r['server_cpu_us'])}"
                    + f" | {r['errors']} |"
                )
            add("")
    errors = [r for r in rows if r["first_error"]]
    if errors:
        add("### Errors seen\n")
        for r in errors:
            add(
                f"- {_label(r['approach'], data)}, {r['workload']}, {r['threads']} threads, "
                f"{r['latency_ms']:g} ms: {r['first_error']}"
            )
        add("")


# -- files -----------------------------------------------------------------------


def write(
    data: dict[str, Any], out: Path, *, plots: bool = True, markdown_file: bool = True
) -> list[Path]:
    """Write <name>.json, <name>.md and the plots into ``out``; the paths written.

    Adds the aggregated ``summary`` (and the ``plots`` made) to ``data``.
    ``markdown_file=False``: no <name>.md (RESULTS.md holds the same report).
    """
    out.mkdir(parents=True, exist_ok=True)
    name = data["name"]
    data["summary"] = {
        "cells": aggregate(data["cells"]),
        "storm": aggregate_storm(data["storm"], data["settings"].get("one_connect_ms")),
        "micro": aggregate_micro(data["micro"]),
        "micro_live": aggregate_micro_live(data.get("micro_live", [])),
        "spike": aggregate_spike(
            data.get("spike", []), data["settings"].get("spike_one_connect_ms")
        ),
        "targets": targets(data),
    }
    json_path = out / f"{name}.json"
    paths = [json_path]
    if plots:
        from .plots import plot_all

        written = plot_all(data, out, prefix=f"{name}-")
        data["plots"] = [p.stem[len(name) + 1 :] for p in written]
        paths += written
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path = out / f"{name}.md"
    if markdown_file:
        md_path.write_text(markdown(data, plot_prefix=f"{name}-"))
        paths.append(md_path)
    else:
        md_path.unlink(missing_ok=True)  # an older run's: RESULTS.md is this run's report
    return paths


def write_results_md(data: dict[str, Any], out: Path, path: Path) -> None:
    """The report of this run as ``benchmarks/RESULTS.md``, plots linked from ``out``."""
    try:
        rel = out.resolve().relative_to(path.resolve().parent)
        prefix = f"{rel.as_posix()}/{data['name']}-"
    except ValueError:
        prefix = f"{out.resolve().as_posix()}/{data['name']}-"
    path.write_text(markdown(data, plot_prefix=prefix))
