"""The results of ``dbpool bench`` for people (a table, a paragraph, a PNG) and machines (JSON)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .advice import Advice, Figures

_COLUMNS = (
    "threads",
    "pool",
    "req/s",
    "±",
    "p50 ms",
    "p99 ms",
    "wait p99 ms",
    "server conns",
    "CPU µs/req",
    "errors",
)


def _number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _spread(f: Figures) -> str:
    if f.rounds < 2 or not f.throughput or f.throughput_min is None or f.throughput_max is None:
        return ""
    half = (f.throughput_max - f.throughput_min) / 2 / f.throughput
    return f"{half:.0%}"


def _conns(f: Figures) -> str:
    text = "-" if f.connections is None else str(f.connections)
    if f.server_connections is None and f.opened is not None:
        text += " (opened)"
    return text


def table(figures: Sequence[Figures], labels: Mapping[str, str]) -> str:
    rows = [_COLUMNS]
    for f in figures:
        rows.append(
            (
                str(f.threads),
                labels.get(f.contender, f.contender),
                _number(f.throughput, 0),
                _spread(f),
                _number(f.p50_ms),
                _number(f.p99_ms),
                _number(f.wait_p99_ms),
                _conns(f),
                _number(f.client_cpu_us, 0),
                f"{f.errors:,}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    left = {1}  # the pool's name; numbers align right
    lines = []
    for row in rows:
        cells = [
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def text(
    data: Mapping[str, Any], figures: Sequence[Figures], advice: Advice, labels: Mapping[str, str]
) -> str:
    """The human report: what ran, the table, the recommendation."""
    s = data["settings"]
    pool = s["pool"]
    head = (
        f"dbpool bench on {data['target']} (config {data['config_name']!r}: size "
        f"{pool['size']}, max_overflow {pool['max_overflow']}); {s['rounds']} round"
        f"{'s' if s['rounds'] != 1 else ''} of {s['duration_s']:g} s per cell, "
        f"think time {data['workload']['think_ms']:g} ms"
    )
    notes = []
    raised = sorted(
        {f.threads for f in figures if f.contender == "persistent" and f.threads > pool["max_size"]}
    )
    if raised:
        notes.append(
            f"persistent mode ran with max_size raised to the thread count at "
            f"{', '.join(map(str, raised))} threads (one connection per thread)."
        )
    if data.get("sampler_error"):
        notes.append(
            f"server connections not sampled ({data['sampler_error']}); "
            "'opened' counts the connections each pool opened."
        )
    machine = data.get("machine") or {}
    loads = [
        x
        for x in (machine.get("load_average_start"), machine.get("load_average_end"))
        if x is not None
    ]
    cores = machine.get("cores")
    if loads and cores and max(loads) > cores:
        notes.append(
            f"this machine was busy (load average {max(loads):.1f} on {cores} cores): "
            "other work shares its CPUs, so the figures are noisy; the spread (±) "
            "over the rounds shows how much."
        )
    if (data.get("server") or {}).get("local"):
        notes.append(
            "the server runs on this machine: it shares the CPUs with this bench, "
            "so 'the server is the bottleneck' may mean the machine is."
        )
    notes.append(
        "server conns: the most connections the server saw beyond those open "
        "before each cell; wait: time to get a connection; CPU: this process's."
    )
    parts = [head, "", table(figures, labels), ""]
    parts += [
        textwrap.fill(note, 100, initial_indent="  note: ", subsequent_indent="  ")
        for note in notes
    ]
    parts += ["", textwrap.fill("Recommendation: " + advice.paragraph, 100)]
    return "\n".join(parts)


def plot(
    figures: Sequence[Figures], labels: Mapping[str, str], path: str | Path, title: str
) -> Path:
    """Write throughput, p99 latency and server connections against threads as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contenders = list(dict.fromkeys(f.contender for f in figures))
    panels: tuple[tuple[str, Callable[[Figures], float | None]], ...] = (
        ("throughput (requests/s)", lambda f: f.throughput),
        ("p99 latency (ms)", lambda f: f.p99_ms),
        ("server connections", lambda f: f.connections),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4.2), layout="constrained")
    styles = {"shared": ("tab:red", "o"), "persistent": ("tab:blue", "s")}
    others = ("tab:orange", "tab:green", "tab:purple", "tab:brown")
    for ax, (name, value) in zip(axes, panels, strict=True):
        for i, key in enumerate(contenders):
            points = [
                (f.threads, value(f))
                for f in figures
                if f.contender == key and value(f) is not None
            ]
            if not points:
                continue
            color, marker = styles.get(key, (others[i % len(others)], "^"))
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                color=color,
                marker=marker,
                label=labels.get(key, key),
                linewidth=2.0 if key in styles else 1.2,
            )
        ax.set_xscale("log", base=2)
        ticks = sorted({f.threads for f in figures})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("threads")
        ax.set_title(name)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
