"""``dbpool top``: a live terminal view of the pools behind a Prometheus endpoint.

Each refresh reads the endpoint, parses it with prometheus_client's parser and
compares it with the previous read: rates (requests, timeouts, connect
failures per second) and the wait percentiles come from the difference, so
they describe the last interval, not the application's whole life. The
percentiles are estimated from the histogram buckets as Prometheus'
``histogram_quantile`` does. rich draws the screen; the keyboard is read in
cbreak mode, so that a single ``q`` quits.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

POOL = "db_client_connection_pool_name"
WAIT = "db_client_connection_wait_time_seconds"
_BAR_WIDTH = 24


@dataclass
class PoolFigures:
    """One pool's figures from one read of the endpoint."""

    used: float = 0.0
    idle: float = 0.0
    max: float = 0.0
    waiting: float = 0.0
    requests: float = 0.0
    timeouts: float = 0.0
    connect_failures: float = 0.0
    wait_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


_GAUGES = {
    "db_client_connection_max": "max",
    "db_client_connection_pending_requests": "waiting",
    "dbpool_requests_total": "requests",
    "db_client_connection_timeouts_total": "timeouts",
    "dbpool_connect_failures_total": "connect_failures",
}


def parse(text: str) -> dict[str, PoolFigures]:
    """The figures of each pool in a Prometheus text exposition."""
    pools: dict[str, PoolFigures] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get(POOL)
            if name is None:
                continue
            figures = pools.setdefault(name, PoolFigures())
            if sample.name == "db_client_connection_count":
                # One series per server over a host list or with replicas: add them up.
                state = sample.labels.get("db_client_connection_state")
                if state in ("used", "idle"):
                    setattr(figures, state, getattr(figures, state) + sample.value)
            elif sample.name in _GAUGES:
                setattr(figures, _GAUGES[sample.name], sample.value)
            elif sample.name == WAIT + "_bucket":
                figures.wait_buckets[float(sample.labels["le"])] = sample.value
    return pools


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative buckets (le -> count), interpolated within its bucket.

    None without observations; the largest finite bound when it falls in the
    last, unbounded bucket.
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def read(url: str, timeout: float) -> dict[str, PoolFigures]:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return parse(answer.read().decode("utf-8", "replace"))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _rate(now: float, before: float | None, elapsed: float) -> str:
    if before is None or elapsed <= 0:
        return "-"
    return f"{max(0.0, now - before) / elapsed:.1f}"


def _bar(figures: PoolFigures, width: int) -> Text:
    """used (yellow, red when threads wait), idle (green), free (dim) out of max."""
    size = max(figures.max, figures.used + figures.idle, 1.0)
    used = round(width * figures.used / size)
    idle = min(round(width * figures.idle / size), width - used)
    bar = Text()
    bar.append("█" * used, style="red" if figures.waiting else "yellow")
    bar.append("▓" * idle, style="green")
    bar.append("░" * (width - used - idle), style="dim")
    return bar


def render(
    url: str,
    current: dict[str, PoolFigures],
    previous: dict[str, PoolFigures],
    elapsed: float,
    error: str | None,
    interval: float,
    width: int = 100,
) -> Group:
    """The whole screen: a title, one row per pool, the keys; bars fit ``width`` columns."""
    longest = max((len(name) for name in current), default=4)
    bar_width = max(11, min(_BAR_WIDTH, width - longest - 62))
    title = Text.assemble(
        ("dbpool top", "bold"),
        f"  {url}  ",
        (time.strftime("%H:%M:%S"), "cyan"),
        f"  every {interval:g}s",
    )
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", padding=(0, 1, 0, 0))
    table.add_column("pool", no_wrap=True)
    table.add_column("connections", no_wrap=True)
    for column in (
        "used/\nidle/max",
        "wait-\ning",
        "req/s",
        "wait\np50",
        "wait\np99",
        "time-\nouts/s",
        "connect\nfails/s",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for name in sorted(current):
        now = current[name]
        before = previous.get(name)
        window = {
            le: count - (before.wait_buckets.get(le, 0.0) if before else count)
            for le, count in now.wait_buckets.items()
        }
        table.add_row(
            name,
            _bar(now, bar_width),
            f"{now.used:g}/{now.idle:g}/{now.max:g}",
            Text(f"{now.waiting:g}", style="bold red" if now.waiting else ""),
            _rate(now.requests, before.requests if before else None, elapsed),
            _seconds(quantile(0.5, window)),
            _seconds(quantile(0.99, window)),
            _rate(now.timeouts, before.timeouts if before else None, elapsed),
            _rate(now.connect_failures, before.connect_failures if before else None, elapsed),
        )
    parts: list[Text | Table] = [title, table]
    if not current and error is None:
        parts.append(Text("no dbpool pools at this endpoint", style="yellow"))
    if error is not None:
        parts.append(Text(f"cannot read {url}: {error}", style="bold red"))
    keys = Text.assemble(
        ("█", "yellow"),
        " used  ",
        ("▓", "green"),
        " idle  ",
        ("░", "dim"),
        " free    q or Ctrl-C: quit",
    )
    parts.append(keys)
    return Group(*parts)


@contextlib.contextmanager
def _keyboard() -> Iterator[int | None]:
    """The terminal in cbreak mode (keys arrive one by one, Ctrl-C still interrupts)."""
    if not sys.stdin.isatty():
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for a key; True if it was q."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if fd is None:
            time.sleep(remaining)
            return False
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready and os.read(fd, 1) in (b"q", b"Q"):
            return True


def _sample(url: str, timeout: float) -> tuple[dict[str, PoolFigures] | None, str | None, float]:
    taken = time.monotonic()
    try:
        return read(url, timeout), None, taken
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return None, str(reason), taken


def run(url: str, *, interval: float = 1.0, once: bool = False, timeout: float = 5.0) -> int:
    """Show the view until q or Ctrl-C (or, with ``once``, print one view); the exit status."""
    from rich.live import Live

    console = Console()
    current, error, taken = _sample(url, timeout)
    if once:
        time.sleep(interval)
        later, error, later_taken = _sample(url, timeout)
        if later is None:
            console.print(f"dbpool top: cannot read {url}: {error}", style="bold red")
            return 1
        console.print(
            render(url, later, current or {}, later_taken - taken, None, interval, console.width)
        )
        return 0
    previous: dict[str, PoolFigures] = {}
    shown = current or {}
    elapsed = 0.0
    try:
        with (
            _keyboard() as fd,
            Live(
                render(url, shown, previous, elapsed, error, interval, console.width),
                console=console,
                screen=True,
                auto_refresh=False,
            ) as live,
        ):
            while not _quit_pressed(fd, interval - (time.monotonic() - taken)):
                figures, error, now = _sample(url, timeout)
                if figures is not None:
                    previous, shown, elapsed = shown, figures, now - taken
                    taken = now
                live.update(
                    render(url, shown, previous, elapsed, error, interval, console.width),
                    refresh=True,
                )
    except KeyboardInterrupt:
        pass
    return 0
