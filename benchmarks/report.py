"""Aggregate the rounds, check the targets, write JSON, Markdown and plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .approaches import BY_KEY as APPROACH_CLASSES
from .approaches import CEILING, DBPOOL_KEYS
from .machine import describe as machine_info
from .micro import REFERENCE as MICRO_REFERENCE

__all__ = ["aggregate", "machine_info", "targets", "targets_text", "write", "write_results_md"]

# The targets, from the benchmark's brief.
CEILING_TARGETS = {"dbpool-shared": 0.95, "dbpool-persistent": 0.97}
# The slow query is bound by the pool size on purpose (15 connections against the
# ceiling's one per thread), so the ceiling targets apply to the other workloads.
CEILING_WORKLOADS = ("point", "write", "mix")
MICRO_TARGET = 1.5
STORM_TARGET = 2.0

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
        ratios = []
        ahead = []
        for c in group:
            peers = by_round[(latency, workload, threads, c["round"])]
            ceiling = peers.get(CEILING, {}).get("throughput")
            if ceiling and c.get("throughput") is not None:
                ratios.append(c["throughput"] / ceiling)
            others = [p.get("throughput") or 0.0 for k, p in peers.items() if _is_other_pool(k)]
            if others and max(others) > 0 and c.get("throughput") is not None:
                ahead.append(c["throughput"] / max(others))
        lo, hi = _lo_hi(throughputs)
        rlo, rhi = _lo_hi(ratios)
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
                "throughput": _median(throughputs),
                "throughput_min": lo,
                "throughput_max": hi,
                "ratio": _median(ratios),
                "ratio_min": rlo,
                "ratio_max": rhi,
                "vs_best_other_pool": _median(ahead),
                "p50_ms": _median(c.get("p50_ms") for c in group),
                "p99_ms": _median(c.get("p99_ms") for c in group),
                "wait_p99_ms": _median(c.get("wait_p99_ms") for c in group),
                "peak_connections": max((c.get("peak_connections") or 0) for c in group),
                "opened_window": _median(c.get("opened_window") for c in group),
                "opened_total": _median(c.get("opened_total") for c in group),
                "commands_per_request": _median(c.get("commands_per_request") for c in group),
                "client_cpu_us": _median(c.get("client_cpu_us") for c in group),
                "server_cpu_us": _median(c.get("server_cpu_us") for c in group),
                "per_request": per_request,
                "requests": sum(c.get("requests") or 0 for c in group),
                "errors": sum(c.get("errors") or 0 for c in group),
                "first_error": next(
                    (
                        c.get("first_error") or c.get("error")
                        for c in group
                        if c.get("first_error") or c.get("error")
                    ),
                    None,
                ),
            }
        )
    order = {key: i for i, key in enumerate(APPROACH_CLASSES)}
    rows.sort(
        key=lambda r: (r["latency_ms"], r["workload"], r["threads"], order.get(r["approach"], 99))
    )
    return rows


def aggregate_storm(storms: list[dict[str, Any]], connect_ms: float | None) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in storms:
        groups[s["approach"]].append(s)
    rows = []
    for approach, group in groups.items():
        times = [s.get("storm_ms") for s in group]
        lo, hi = _lo_hi(times)
        median = _median(times)
        rows.append(
            {
                "approach": approach,
                "rounds": len(group),
                "threads": group[0]["threads"],
                "storm_ms": median,
                "storm_ms_min": lo,
                "storm_ms_max": hi,
                "vs_connect": (median / connect_ms) if median is not None and connect_ms else None,
                "first_ms": _median(s.get("first_ms") for s in group),
                "errors": sum(s.get("errors") or 0 for s in group),
                "first_error": next(
                    (s["first_error"] for s in group if s.get("first_error")), None
                ),
            }
        )
    order = {key: i for i, key in enumerate(APPROACH_CLASSES)}
    rows.sort(key=lambda r: order.get(r["approach"], 99))
    return rows


def aggregate_micro(micros: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    by_round: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for m in micros:
        groups[(m["approach"], m["threads"])].append(m)
        if m.get("ns_per_op") is not None:
            by_round[(m["threads"], m["round"])][m["approach"]] = m["ns_per_op"]
    rows = []
    for (approach, threads), group in groups.items():
        values = [m.get("ns_per_op") for m in group]
        lo, hi = _lo_hi(values)
        ref = MICRO_REFERENCE.get(approach)
        ratios = []
        if ref is not None:
            for m in group:
                peer = by_round[(threads, m["round"])].get(ref)
                if peer and m.get("ns_per_op") is not None:
                    ratios.append(m["ns_per_op"] / peer)
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
                "errors": sum(m.get("errors") or 0 for m in group),
                "first_error": next(
                    (m["first_error"] for m in group if m.get("first_error")), None
                ),
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


# -- targets ---------------------------------------------------------------------


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
                    if workload in CEILING_WORKLOADS and key in CEILING_TARGETS:
                        goal = CEILING_TARGETS[key]
                        value = row["ratio"]
                        out.append(
                            _target(
                                "ceiling",
                                key,
                                workload,
                                latency,
                                threads,
                                value,
                                goal,
                                value is not None and value >= goal,
                            )
                        )
                    value = row["vs_best_other_pool"]
                    out.append(
                        _target(
                            "ahead",
                            key,
                            workload,
                            latency,
                            threads,
                            value,
                            1.0,
                            value is not None and value > 1.0,
                        )
                    )
    for m in aggregate_micro(data["micro"]):
        if m["reference"] is None:
            continue
        value = m["vs_reference"]
        out.append(
            _target(
                "micro",
                m["approach"],
                None,
                None,
                m["threads"],
                value,
                MICRO_TARGET,
                value is not None and value <= MICRO_TARGET,
            )
        )
    for s in aggregate_storm(data["storm"], settings.get("one_connect_ms")):
        if s["approach"] in DBPOOL_KEYS:
            value = s["vs_connect"]
            out.append(
                _target(
                    "storm",
                    s["approach"],
                    None,
                    None,
                    s["threads"],
                    value,
                    STORM_TARGET,
                    value is not None and value <= STORM_TARGET,
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
    met: bool,
) -> dict[str, Any]:
    if value is None:
        gap = None
    elif kind in ("micro", "storm"):
        gap = value - goal
    else:
        gap = goal - value
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


def _mark(t: dict[str, Any] | None) -> str:
    if t is None or t["value"] is None:
        return "-"
    text = f"{t['value']:.2f}"
    if t["met"]:
        return f"{text} ✓"
    gap = t["missed_by"]
    if gap is None:
        return f"{text} ✗"
    return (
        f"{text} ✗ ({gap:.2f} over)"
        if t["kind"] in ("micro", "storm")
        else (f"{text} ✗ ({gap:.2f} short)")
    )


def targets_text(data: dict[str, Any]) -> str:
    """The targets section in Markdown."""
    ts = targets(data)
    settings = data["settings"]
    lines = []
    met = sum(t["met"] for t in ts)
    lines.append(
        f"Targets met: **{met} of {len(ts)}**. ✓ met, ✗ missed (in brackets: by how much).\n"
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
                        + " | ".join(_mark(m) for m in marks)
                        + " |"
                    )
        lines.append("")

    lines.append(
        "**Throughput vs the dedicated-connection ceiling** (shared ≥ 0.95x, "
        "persistent ≥ 0.97x; the slow query is left out, where pools are bound "
        "to 15 connections on purpose):\n"
    )
    matrix("ceiling")
    lines.append(
        "**Throughput vs the best other pool in the same round** (> 1.00 means "
        "ahead of every other pooled approach):\n"
    )
    matrix("ahead")
    lines.append(
        "**Checkout + return vs raw DBUtils** (≤ 1.5x) and **cold storm vs one connect** (≤ 2x):\n"
    )
    lines.append("| target | approach | threads | value |")
    lines.append("|---|---|---|---|")
    for t in ts:
        if t["kind"] in ("micro", "storm"):
            what = "checkout + return" if t["kind"] == "micro" else "cold storm"
            lines.append(
                f"| {what} | {_label(t['approach'], data)} | {t['threads']} | {_mark(t)} |"
            )
    lines.append("")
    return "\n".join(lines)


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
    add("")
    add("## Settings\n")
    add(
        f"- {s['rounds']} rounds; in each, every cell runs once, the approaches one after "
        "the other (their order rotates by one each round). A cell runs its threads for "
        f"{s['warmup_s']:g} s of warm-up, then {s['duration_s']:g} s measured. Figures are "
        "medians over the rounds; min-max is the spread; ratios are taken within a round."
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
        "- Peak connections: the most `Threads_connected` seen above the cell's starting "
        "count, sampled every 10 ms by the benchmark's own connection. Opened: "
        "`Connections` delta during the measured window.\n"
    )
    add("| approach | bound on connections |\n|---|---|")
    for info in s["approaches"].values():
        add(f"| {info['label']} | {info['bound']} |")
    add("")
    add("## Targets\n")
    add(targets_text(data))
    if data.get("plots"):
        add("## Plots\n")
        for name in data["plots"]:
            add(f"![{name}]({plot_prefix}{name}.png)\n")
    _throughput_tables(add, data, rows)
    _commands_table(add, data, rows)
    _storm_table(add, data)
    _micro_table(add, data)
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
        f"## Checkout + return, no I/O\n\nA fake driver that does nothing; "
        f"{s['micro_ops']:,} checkouts per measurement, median of {s['micro_rounds']} rounds. "
        "Nanoseconds of wall time per checkout + return (with 4 threads: total time over "
        "total checkouts).\n"
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


def write(data: dict[str, Any], out: Path, *, plots: bool = True) -> list[Path]:
    """Write <name>.json, <name>.md and the plots into ``out``; the paths written.

    Adds the aggregated ``summary`` (and the ``plots`` made) to ``data``.
    """
    out.mkdir(parents=True, exist_ok=True)
    name = data["name"]
    data["summary"] = {
        "cells": aggregate(data["cells"]),
        "storm": aggregate_storm(data["storm"], data["settings"].get("one_connect_ms")),
        "micro": aggregate_micro(data["micro"]),
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
    md_path.write_text(markdown(data, plot_prefix=f"{name}-"))
    paths.append(md_path)
    return paths


def write_results_md(data: dict[str, Any], out: Path, path: Path) -> None:
    """The report of this run as ``benchmarks/RESULTS.md``, plots linked from ``out``."""
    try:
        rel = out.resolve().relative_to(path.resolve().parent)
        prefix = f"{rel.as_posix()}/{data['name']}-"
    except ValueError:
        prefix = f"{out.resolve().as_posix()}/{data['name']}-"
    path.write_text(markdown(data, plot_prefix=prefix))
