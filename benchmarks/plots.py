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
_DBPOOL_MAIN = ("dbpool-shared", "dbpool-persistent")
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
        paths.append(_throughput(data, out / f"{prefix}throughput.png", main=True))
        paths.append(_throughput(data, out / f"{prefix}throughput-others.png", main=False))
        paths.append(_latency(data, out / f"{prefix}latency.png"))
    if summary["storm"] or summary["micro"] or summary.get("micro_live") or summary.get("spike"):
        paths.append(_storm_micro(data, out / f"{prefix}storm-micro.png"))
    return paths


def _panels(data: dict[str, Any]) -> list[tuple[float, str]]:
    """The (latency, workload) pairs that have cells, in the run's order: no empty panel."""
    s = data["settings"]
    have = {
        (r["latency_ms"], r["workload"])
        for r in data["summary"]["cells"]
        if r["throughput"] is not None
    }
    return [(lat, w) for lat in s["latency_ms"] for w in s["workloads"] if (lat, w) in have]


def _best_other(rows: list[dict[str, Any]], keys: list[str]) -> str | None:
    """The other pool with the highest mean throughput over a panel's thread counts."""
    from .report import _is_other_pool

    best, best_value = None, -1.0
    for key in keys:
        if not _is_other_pool(key):
            continue
        values = [r["throughput"] for r in rows if r["approach"] == key and r["throughput"]]
        value = sum(values) / len(values) if values else -1.0
        if value > best_value:
            best, best_value = key, value
    return best


def _throughput(data: dict[str, Any], path: Path, *, main: bool) -> Path:
    """Throughput vs threads, one panel per workload and latency.

    main: dbpool's two modes, the best other pool of each panel and the ceiling;
    otherwise every other approach (with the ceiling for scale).
    """
    s = data["settings"]
    rows = data["summary"]["cells"]
    keys = list(s["approaches"])
    styles = _styles(keys)
    panels = _panels(data)
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    height = (5.6 if main else 4.0) * nrows + (0.4 if main else 1.6)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(4.8 * ncols, height))
    for ax in axes.flat[len(panels) :]:
        ax.remove()
    handles: dict[str, Any] = {}
    for ax, (latency, workload) in zip(axes.flat, panels, strict=False):
        panel = [
            r
            for r in rows
            if r["workload"] == workload
            and r["latency_ms"] == latency
            and r["throughput"] is not None
        ]
        best = _best_other(panel, keys)
        if main:
            shown = [k for k in keys if k in _DBPOOL_MAIN or k in (CEILING, best)]
        else:
            shown = [k for k in keys if k not in _DBPOOL_MAIN]
        for key in shown:
            pts = sorted(
                (r["threads"], r["throughput"], r["throughput_min"], r["throughput_max"])
                for r in panel
                if r["approach"] == key
            )
            if not pts:
                continue
            color, line, marker, width = styles[key]
            xs = [p[0] for p in pts]
            label = f"{s['approaches'][key]['label']} [{s['approaches'][key]['bound']}]"
            if main and key == best:
                label = f"best other pool: {label}"
            (handle,) = ax.plot(
                xs,
                [p[1] for p in pts],
                line,
                color=color,
                marker=marker,
                linewidth=width,
                markersize=4,
                label=label,
            )
            handles.setdefault(key, handle)
            if len(pts) > 1 and main:
                ax.fill_between(
                    xs,
                    [p[2] for p in pts],
                    [p[3] for p in pts],
                    color=color,
                    alpha=0.10,
                    linewidth=0,
                )
        if len(s["threads"]) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(s["threads"], [str(t) for t in s["threads"]])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        lat = "no added latency" if not latency else f"+{latency:g} ms per round trip"
        ax.set_title(f"{s['workloads'][workload]}\n{lat}", fontsize=9)
        ax.set_ylabel("requests/s")
        ax.set_xlabel("threads")
        if main:
            # Below the panel, where it hides no point.
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    if not main:
        fig.legend(
            list(handles.values()),
            [h.get_label() for h in handles.values()],
            loc="lower center",
            ncol=2,
            fontsize=7,
            frameon=False,
        )
    what = (
        "dbpool, the best other pool and the ceiling (bands: min-max over rounds)"
        if main
        else "every other approach (the dedicated ceiling for scale)"
    )
    fig.suptitle(
        f"Throughput vs threads: {what}; [bound on connections] ({data['name']})", fontsize=10
    )
    fig.tight_layout(rect=(0, 0 if main else 0.16, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(data: dict[str, Any], path: Path) -> Path:
    s = data["settings"]
    rows = data["summary"]["cells"]
    keys = list(s["approaches"])
    threads = 16 if 16 in s["threads"] else max(s["threads"])
    panels = _panels(data)
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, squeeze=False, figsize=(4.6 * ncols, (0.3 * len(keys) + 1.4) * nrows)
    )
    for ax in axes.flat[len(panels) :]:
        ax.remove()
    styles = _styles(keys)
    for n, (ax, (latency, workload)) in enumerate(zip(axes.flat, panels, strict=False)):
        index = {
            r["approach"]: r
            for r in rows
            if r["workload"] == workload and r["latency_ms"] == latency and r["threads"] == threads
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
        first = n % ncols == 0
        ax.set_yticks(ys, [s["approaches"][k]["label"] if first else "" for k in keys], fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        lat = "no added latency" if not latency else f"+{latency:g} ms per round trip"
        ax.set_title(f"{workload}, {lat}", fontsize=10)
        ax.set_xlabel("ms (bar: p50, tick: p99)")
    fig.suptitle(f"Request latency at {threads} threads ({data['name']})")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _storm_micro(data: dict[str, Any], path: Path) -> Path:
    summary = data["summary"]
    parts = [name for name in ("storm", "spike", "micro_live") if summary.get(name)]
    fig, axes = plt.subplots(1, len(parts), squeeze=False, figsize=(6.2 * len(parts), 4.8))
    for ax, name in zip(axes[0], parts, strict=True):
        if name == "storm":
            _storm_panel(ax, data)
        elif name == "spike":
            _spike_panel(ax, data)
        else:
            _micro_panel(ax, data)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _storm_panel(ax: Axes, data: dict[str, Any]) -> None:
    s = data["settings"]
    storms = data["summary"]["storm"]
    labels = [s["approaches"].get(r["approach"], {}).get("label", r["approach"]) for r in storms]
    values = [r["storm_ms"] or 0.0 for r in storms]
    errs = [
        [max(0.0, (r["storm_ms"] or 0) - (r["storm_ms_min"] or 0)) for r in storms],
        [max(0.0, (r["storm_ms_max"] or 0) - (r["storm_ms"] or 0)) for r in storms],
    ]
    ys = list(range(len(storms)))[::-1]
    colors = _styles([r["approach"] for r in storms])
    ax.barh(ys, values, xerr=errs, color=[colors[r["approach"]][0] for r in storms], alpha=0.8)
    ax.set_yticks(ys, labels, fontsize=8)
    connect = s.get("one_connect_ms")
    if connect:
        ax.axvline(connect, color="black", linestyle="--", linewidth=1)
        ax.axvline(2 * connect, color="black", linestyle=":", linewidth=1)
    _plain_log_x(ax)
    ax.set_xlabel("ms until every thread ran its first query\n(lines: 1x and 2x one connect)")
    ax.set_title(
        f"Cold storm: {s['storm_threads']} threads, {s['storm_delay_ms']:g} ms connects",
        fontsize=10,
    )


def _spike_panel(ax: Axes, data: dict[str, Any]) -> None:
    s = data["settings"]
    spikes = data["summary"]["spike"]
    labels = [s["approaches"].get(r["approach"], {}).get("label", r["approach"]) for r in spikes]
    ys = list(range(len(spikes)))[::-1]
    colors = _styles([r["approach"] for r in spikes])
    ax.barh(
        ys,
        [r["burst_ms"] or 0.0 for r in spikes],
        color=[colors[r["approach"]][0] for r in spikes],
        alpha=0.8,
    )
    for y, r in zip(ys, spikes, strict=True):
        ax.text(
            (r["burst_ms"] or 0.0) * 1.02,
            y,
            f"{r['opened'] or 0:.0f} opened",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(ys, labels, fontsize=8)
    connect = s.get("spike_one_connect_ms")
    if connect:
        ax.axvline(connect, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("ms until the burst is served (line: one connect)")
    ax.set_xlim(right=max([r["burst_ms"] or 0.0 for r in spikes] + [connect or 0.0]) * 1.35)
    ax.set_title(
        f"Spike: {s['spike_size']} warm, {s['spike_threads']} threads at once, "
        f"{s['spike_delay_ms']:g} ms connects",
        fontsize=10,
    )


def _micro_panel(ax: Axes, data: dict[str, Any]) -> None:
    s = data["settings"]
    micro = data["summary"]["micro_live"]
    keys = list(dict.fromkeys(r["approach"] for r in micro))
    width = 0.38
    for k, threads in enumerate((1, 4)):
        index = {r["approach"]: r for r in micro if r["threads"] == threads}
        xs = [i + (k - 0.5) * width for i in range(len(keys))]
        ax.bar(
            xs,
            [(index[key]["cpu_ns_per_op"] or 0) / 1000 if key in index else 0 for key in keys],
            width,
            label=f"{threads} thread(s)",
        )
    labels = s.get("micro_live_approaches", {})
    ax.set_xticks(
        range(len(keys)),
        [labels.get(key, key) for key in keys],
        rotation=20,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("µs of CPU per checkout + return")
    ax.legend(fontsize=8)
    ax.set_title("Checkout + return, live PyMySQL connection", fontsize=10)
