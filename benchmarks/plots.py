"""PNG plots of a run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from .approaches import CEILING

_DBPOOL_STYLE = {
    "dbpool-shared": ("tab:red", "-", "o"),
    "dbpool-persistent": ("tab:blue", "-", "s"),
    "dbpool-shared-session": ("tab:pink", "-", "^"),
}
_OTHER_COLORS = (
    "tab:orange",
    "tab:green",
    "tab:olive",
    "tab:cyan",
    "tab:purple",
    "tab:brown",
    "tab:gray",
    "gold",
    "black",
)
_MARKERS = ("v", "D", "P", "X", "<", ">", "*", "h", "d")


def _plain_log_x(ax: Axes) -> None:
    """A log x axis labelled 0.5, 1, 2 rather than powers of ten."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _styles(keys: list[str]) -> dict[str, tuple[str, str, str, float]]:
    styles = {}
    others = [k for k in keys if k not in _DBPOOL_STYLE and k != CEILING]
    for key in keys:
        if key in _DBPOOL_STYLE:
            color, line, marker = _DBPOOL_STYLE[key]
            styles[key] = (color, line, marker, 2.4)
        elif key == CEILING:
            styles[key] = ("black", "--", "x", 2.0)
        else:
            i = others.index(key)
            styles[key] = (
                _OTHER_COLORS[i % len(_OTHER_COLORS)],
                ":",
                _MARKERS[i % len(_MARKERS)],
                1.3,
            )
    return styles


def plot_all(data: dict[str, Any], out: Path, prefix: str) -> list[Path]:
    """Write the plots of ``data`` (with its ``summary``); the paths written."""
    paths = []
    summary = data["summary"]
    if summary["cells"]:
        paths.append(_throughput(data, out / f"{prefix}throughput.png"))
        paths.append(_latency(data, out / f"{prefix}latency.png"))
    if summary["storm"] or summary["micro"]:
        paths.append(_storm_micro(data, out / f"{prefix}storm-micro.png"))
    return paths


def _throughput(data: dict[str, Any], path: Path) -> Path:
    s = data["settings"]
    rows = data["summary"]["cells"]
    keys = list(s["approaches"])
    styles = _styles(keys)
    latencies, workloads = s["latency_ms"], list(s["workloads"])
    fig, axes = plt.subplots(
        len(latencies),
        len(workloads),
        squeeze=False,
        figsize=(4.2 * len(workloads), 3.6 * len(latencies) + 1.4),
    )
    for i, latency in enumerate(latencies):
        for j, workload in enumerate(workloads):
            ax: Axes = axes[i][j]
            for key in keys:
                pts = sorted(
                    (r["threads"], r["throughput"], r["throughput_min"], r["throughput_max"])
                    for r in rows
                    if r["approach"] == key
                    and r["workload"] == workload
                    and r["latency_ms"] == latency
                    and r["throughput"] is not None
                )
                if not pts:
                    continue
                color, line, marker, width = styles[key]
                xs = [p[0] for p in pts]
                ax.plot(
                    xs,
                    [p[1] for p in pts],
                    line,
                    color=color,
                    marker=marker,
                    linewidth=width,
                    markersize=4,
                    label=s["approaches"][key]["label"],
                )
                if len(pts) > 1 and (key in _DBPOOL_STYLE or key == CEILING):
                    ax.fill_between(
                        xs,
                        [p[2] for p in pts],
                        [p[3] for p in pts],
                        color=color,
                        alpha=0.08,
                        linewidth=0,
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(s["threads"], [str(t) for t in s["threads"]])
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            lat = "no added latency" if not latency else f"+{latency:g} ms per round trip"
            ax.set_title(f"{workload}, {lat}", fontsize=10)
            if j == 0:
                ax.set_ylabel("requests/s")
            if i == len(latencies) - 1:
                ax.set_xlabel("threads")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"Throughput vs threads ({data['name']}; bands: min-max over rounds "
        "for dbpool and the ceiling)"
    )
    fig.tight_layout(rect=(0, 0.09 if len(latencies) > 1 else 0.16, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(data: dict[str, Any], path: Path) -> Path:
    s = data["settings"]
    rows = data["summary"]["cells"]
    keys = list(s["approaches"])
    threads = 16 if 16 in s["threads"] else max(s["threads"])
    latencies, workloads = s["latency_ms"], list(s["workloads"])
    fig, axes = plt.subplots(
        len(latencies),
        len(workloads),
        squeeze=False,
        figsize=(4.2 * len(workloads), 0.32 * len(keys) * len(latencies) + 1.6 * len(latencies)),
    )
    styles = _styles(keys)
    for i, latency in enumerate(latencies):
        for j, workload in enumerate(workloads):
            ax: Axes = axes[i][j]
            index = {
                r["approach"]: r
                for r in rows
                if r["workload"] == workload
                and r["latency_ms"] == latency
                and r["threads"] == threads
            }
            ys = list(range(len(keys)))[::-1]
            for y, key in zip(ys, keys, strict=True):
                r = index.get(key)
                if r is None or r["p50_ms"] is None:
                    continue
                color = styles[key][0]
                ax.barh(y, r["p50_ms"], color=color, alpha=0.75, height=0.6)
                ax.plot([r["p50_ms"], r["p99_ms"]], [y, y], color=color, linewidth=1)
                ax.plot(r["p99_ms"], y, "|", color=color, markersize=9)
            _plain_log_x(ax)
            ax.set_yticks(
                ys, [s["approaches"][k]["label"] if j == 0 else "" for k in keys], fontsize=8
            )
            ax.grid(True, axis="x", alpha=0.3)
            lat = "no added latency" if not latency else f"+{latency:g} ms per round trip"
            ax.set_title(f"{workload}, {lat}", fontsize=10)
            if i == len(latencies) - 1:
                ax.set_xlabel("ms (bar: p50, tick: p99)")
    fig.suptitle(f"Request latency at {threads} threads ({data['name']})")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _storm_micro(data: dict[str, Any], path: Path) -> Path:
    s = data["settings"]
    storms = data["summary"]["storm"]
    micro = data["summary"]["micro"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    if storms:
        labels = [
            s["approaches"].get(r["approach"], {}).get("label", r["approach"]) for r in storms
        ]
        values = [r["storm_ms"] or 0.0 for r in storms]
        errs = [
            [max(0.0, (r["storm_ms"] or 0) - (r["storm_ms_min"] or 0)) for r in storms],
            [max(0.0, (r["storm_ms_max"] or 0) - (r["storm_ms"] or 0)) for r in storms],
        ]
        ys = list(range(len(storms)))[::-1]
        colors = _styles([r["approach"] for r in storms])
        left.barh(
            ys, values, xerr=errs, color=[colors[r["approach"]][0] for r in storms], alpha=0.8
        )
        left.set_yticks(ys, labels, fontsize=8)
        connect = s.get("one_connect_ms")
        if connect:
            left.axvline(connect, color="black", linestyle="--", linewidth=1)
            left.axvline(2 * connect, color="black", linestyle=":", linewidth=1)
        _plain_log_x(left)
        left.set_xlabel("ms until every thread ran its first query (lines: 1x and 2x one connect)")
        left.set_title(
            f"Cold storm: {s['storm_threads']} threads, {s['storm_delay_ms']:g} ms connects",
            fontsize=10,
        )
    if micro:
        keys = list(dict.fromkeys(r["approach"] for r in micro))
        width = 0.38
        for k, threads in enumerate((1, 4)):
            index = {r["approach"]: r for r in micro if r["threads"] == threads}
            xs = [i + (k - 0.5) * width for i in range(len(keys))]
            right.bar(
                xs,
                [(index[key]["ns_per_op"] or 0) / 1000 if key in index else 0 for key in keys],
                width,
                label=f"{threads} thread(s)",
            )
        right.set_xticks(
            range(len(keys)),
            [s["micro_approaches"].get(key, key) for key in keys],
            rotation=25,
            ha="right",
            fontsize=8,
        )
        right.set_ylabel("µs per checkout + return")
        right.legend(fontsize=8)
        right.set_title("Checkout + return with a no-I/O driver", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
