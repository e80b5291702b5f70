"""From measured figures to advice: which mode to pick, and why, in figures.

Pure functions of the figures, so every branch is tested on made-up numbers.
For each thread count the two modes are compared:

- a mode that failed (no request done, or more than 1 % errors) loses;
- persistent ahead by more than ``TIE`` wins where its one connection per thread
  fits in ``max_size``; beyond that it wins only with ``max_size`` raised to
  the thread count, and never past the server's ``max_connections``;
- shared ahead by more than ``TIE`` wins;
- within ``TIE``, or when the two modes' throughputs over the rounds overlap,
  the throughput is even: shared wins when it used clearly fewer
  connections, else neither mode matters. When the throughput also hardly grew
  with the threads (see ``FLAT_SHARE``) while the client's CPU stayed below
  ``CLIENT_BUSY``, the threads were waiting on the server: the server is the
  bottleneck.

The overall advice is the verdicts' common choice, or persistent up to some
thread count and shared beyond it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

TIE = 0.10  # throughputs within 10 % of each other are even
FEWER_SHARE = 0.2  # "clearly fewer connections": at least 20 % (and one) fewer
# Throughput is flat when, with at least FLAT_THREADS times the threads, it grew by
# less than FLAT_SHARE of their growth (3x the threads, less than 1.4x the throughput).
FLAT_THREADS = 2
FLAT_SHARE = 0.2
CLIENT_BUSY = 0.75  # client CPU, in cores, where Python itself becomes the limit
ERROR_SHARE = 0.01  # more failed requests than this share disqualify a mode
MAX_CONNECTIONS_SHARE = 0.9  # the share of max_connections a bench may plan to use


@dataclass(frozen=True)
class Figures:
    """One contender at one thread count: medians over the rounds (sums for counts)."""

    contender: str
    threads: int
    throughput: float  # requests per second
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    wait_p99_ms: float | None = None
    server_connections: int | None = None  # the most the server saw (over its count before)
    opened: int | None = None  # connections the pool opened
    client_cpu_us: float | None = None  # the client's CPU time per request
    bound: int | None = None  # the most connections the pool could open
    throughput_min: float | None = None
    throughput_max: float | None = None
    rounds: int = 1
    first_error: str | None = None

    @property
    def failed(self) -> bool:
        done = self.requests + self.errors
        return self.requests == 0 or self.errors > ERROR_SHARE * done

    @property
    def connections(self) -> int | None:
        """The server's count when it was sampled, else what the pool opened."""
        return self.server_connections if self.server_connections is not None else self.opened

    @property
    def client_cores(self) -> float | None:
        if self.client_cpu_us is None:
            return None
        return self.client_cpu_us * self.throughput / 1e6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The choice at one thread count, with its reason in one sentence."""

    threads: int
    choice: str  # "shared", "persistent", "either" or "none"
    reason: str
    ratio: float | None = None  # persistent's throughput over shared's
    server_bound: bool = False
    needs_max_size: int | None = None  # persistent wins only with max_size raised to this


@dataclass(frozen=True)
class Advice:
    choice: str  # "shared", "persistent", "either", "depends" or "none"
    headline: str
    verdicts: tuple[Verdict, ...]

    @property
    def paragraph(self) -> str:
        return " ".join([self.headline, *(v.reason for v in self.verdicts)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "headline": self.headline,
            "paragraph": self.paragraph,
            "verdicts": [asdict(v) for v in self.verdicts],
        }


def aggregate(cells: Iterable[Mapping[str, Any]]) -> list[Figures]:
    """One Figures per (contender, threads) from the cells of every round."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[(cell["contender"], cell["threads"])].append(cell)
    figures = []
    for (contender, threads), group in groups.items():
        throughputs = [float(c.get("throughput") or 0.0) for c in group]
        figures.append(
            Figures(
                contender=contender,
                threads=threads,
                throughput=statistics.median(throughputs),
                requests=sum(int(c.get("requests") or 0) for c in group),
                errors=sum(int(c.get("errors") or 0) for c in group),
                p50_ms=_median(c.get("p50_ms") for c in group),
                p99_ms=_median(c.get("p99_ms") for c in group),
                wait_p99_ms=_median(c.get("wait_p99_ms") for c in group),
                server_connections=_most(c.get("server_connections") for c in group),
                opened=_most(c.get("opened") for c in group),
                client_cpu_us=_median(c.get("client_cpu_us") for c in group),
                bound=_most(c.get("bound") for c in group),
                throughput_min=min(throughputs),
                throughput_max=max(throughputs),
                rounds=len(group),
                first_error=next((c["first_error"] for c in group if c.get("first_error")), None),
            )
        )
    return sorted(figures, key=lambda f: (f.threads, f.contender))


def _median(values: Iterable[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _most(values: Iterable[Any]) -> int | None:
    present = [int(v) for v in values if v is not None]
    return max(present) if present else None


def recommend(
    figures: Sequence[Figures], *, max_size: int, max_connections: int | None = None
) -> Advice:
    """The advice for the two modes' figures (other contenders are ignored)."""
    by_threads: dict[int, dict[str, Figures]] = defaultdict(dict)
    for f in figures:
        if f.contender in ("shared", "persistent"):
            by_threads[f.threads][f.contender] = f
    pairs = [
        (t, m["shared"], m["persistent"]) for t, m in sorted(by_threads.items()) if len(m) == 2
    ]
    if not pairs:
        return Advice("none", "No answer: the run has no figures for both modes.", ())
    working = [(s, p) for _, s, p in pairs if not (s.failed or p.failed)]
    smallest = working[0] if working else None
    verdicts = tuple(_verdict(s, p, smallest, max_size, max_connections) for _, s, p in pairs)
    return _overall(verdicts)


def _verdict(
    s: Figures,
    p: Figures,
    smallest: tuple[Figures, Figures] | None,
    max_size: int,
    max_connections: int | None,
) -> Verdict:
    t = s.threads
    at = f"At {t} thread{'s' if t != 1 else ''}"
    if s.failed and p.failed:
        return Verdict(
            t, "none", f"{at} both modes failed: shared {_failure(s)}; persistent {_failure(p)}."
        )
    if p.failed:
        return Verdict(
            t, "shared", f"{at} persistent {_failure(p)}, shared did {_rate(s.throughput)} req/s."
        )
    if s.failed:
        return Verdict(
            t,
            "persistent",
            f"{at} shared {_failure(s)}, persistent did {_rate(p.throughput)} req/s.",
        )
    ratio = p.throughput / s.throughput
    both = f"(persistent {_rate(p.throughput)}, shared {_rate(s.throughput)} req/s)"
    sc, pc = s.connections, p.connections
    if ratio > 1 + TIE and not _overlap(s, p):
        lead = f"{at} persistent did {ratio:.1f}x shared's throughput {both}"
        if t <= max_size:
            return Verdict(
                t, "persistent", f"{lead}, and {t} threads ≤ max_size {max_size}.", ratio
            )
        if max_connections is not None and t > MAX_CONNECTIONS_SHARE * max_connections:
            return Verdict(
                t,
                "shared",
                f"{lead}, but it needs {t} connections, one per thread, "
                f"too close to the server's max_connections "
                f"{max_connections}; shared held {_count(sc)}.",
                ratio,
            )
        return Verdict(
            t,
            "persistent",
            f"{lead}, but only with {t} connections, one per thread, where max_size "
            f"is {max_size}; shared held {_count(sc)}.",
            ratio,
            needs_max_size=t,
        )
    if ratio < 1 - TIE and not _overlap(s, p):
        return Verdict(
            t,
            "shared",
            f"{at} shared did {1 / ratio:.1f}x persistent's throughput "
            f"{both} "
            f"with {_count(sc)} connections against {_count(pc)}.",
            ratio,
        )
    server = _server_bound(s, p, smallest)
    share = s.throughput / p.throughput
    # Even by the rounds' overlap rather than by TIE: say so, the gap looks large.
    noise = (
        f", within the rounds' spread ({_spread(s)}, {_spread(p)})," if abs(ratio - 1) > TIE else ""
    )
    bottleneck = ""
    if server is not None:
        fewer_threads, growth, cores = server
        bottleneck = (
            f"; the server is the bottleneck: {growth:.2f}x the throughput of "
            f"{fewer_threads} threads with {t / fewer_threads:.3g}x the threads, "
            f"while the client used {cores:.2f} CPU"
        )
    if _fewer(sc, pc):
        return Verdict(
            t,
            "shared",
            f"{at} shared reached {share:.0%} of persistent's "
            f"throughput{noise} with {sc} connections instead of {pc}"
            f"{bottleneck}.",
            ratio,
            server is not None,
        )
    if server is not None:
        return Verdict(
            t,
            "either",
            f"{at} neither mode matters: both did about "
            f"{_rate(p.throughput)} req/s (shared {share:.0%} of "
            f"persistent{noise.rstrip(',')}){bottleneck}.",
            ratio,
            True,
        )
    return Verdict(
        t,
        "either",
        f"{at} the modes are even: shared reached {share:.0%} of "
        f"persistent's throughput {both}{noise} with {_count(sc)} "
        f"connections against {_count(pc)}.",
        ratio,
    )


def _server_bound(
    s: Figures, p: Figures, smallest: tuple[Figures, Figures] | None
) -> tuple[int, float, float] | None:
    """(fewer threads, throughput growth, client CPU) if flat while the client was not busy."""
    if smallest is None:
        return None
    s0, p0 = smallest
    more_threads = s.threads / s0.threads
    if more_threads < FLAT_THREADS:
        return None
    more_throughput = max(s.throughput, p.throughput) / max(s0.throughput, p0.throughput)
    if more_throughput >= 1 + FLAT_SHARE * (more_threads - 1):
        return None
    cores = [c for c in (s.client_cores, p.client_cores) if c is not None]
    if not cores or max(cores) >= CLIENT_BUSY:
        return None
    return s0.threads, more_throughput, max(cores)


def _overlap(a: Figures, b: Figures) -> bool:
    """Whether the throughputs of the two over their rounds overlap: a difference within noise."""
    if a.rounds < 2 or b.rounds < 2:
        return False
    a_low, a_high, b_low, b_high = (
        a.throughput_min,
        a.throughput_max,
        b.throughput_min,
        b.throughput_max,
    )
    if a_low is None or a_high is None or b_low is None or b_high is None:
        return False
    return a_low <= b_high and b_low <= a_high


def _spread(f: Figures) -> str:
    if not f.throughput or f.throughput_min is None or f.throughput_max is None:
        return "?"
    return f"±{(f.throughput_max - f.throughput_min) / 2 / f.throughput:.0%}"


def _fewer(mine: int | None, theirs: int | None) -> bool:
    if mine is None or theirs is None:
        return False
    return theirs - mine >= max(1.0, FEWER_SHARE * theirs)


def _overall(verdicts: tuple[Verdict, ...]) -> Advice:
    choices = {v.choice for v in verdicts}
    firm = choices & {"shared", "persistent"}
    if choices == {"none"}:
        return Advice(
            "none",
            "No answer: both modes failed at every thread count; fix the "
            "errors below and run again.",
            verdicts,
        )
    if not firm:
        server = any(v.server_bound for v in verdicts)
        why = " because the server is the bottleneck" if server else ""
        return Advice(
            "either",
            f"Neither mode matters for this workload{why}: keep shared, "
            "the default, whose bound holds however many threads run.",
            verdicts,
        )
    if firm == {"shared"}:
        return Advice("shared", "Pick shared.", verdicts)
    if firm == {"persistent"}:
        raise_to = max((v.needs_max_size or 0) for v in verdicts)
        if raise_to:
            return Advice(
                "persistent",
                f"Pick persistent, with max_size raised to at least "
                f"{raise_to} (one connection per thread).",
                verdicts,
            )
        return Advice("persistent", "Pick persistent.", verdicts)
    persistent = [v.threads for v in verdicts if v.choice == "persistent"]
    shared = [v.threads for v in verdicts if v.choice == "shared"]
    raise_to = max((v.needs_max_size or 0) for v in verdicts)
    raised = f" (with max_size raised to {raise_to})" if raise_to else ""
    if max(persistent) < min(shared):
        return Advice(
            "depends",
            f"It depends on your thread count: pick persistent for up to "
            f"{max(persistent)} threads{raised}, shared from "
            f"{min(shared)} on.",
            verdicts,
        )
    return Advice(
        "depends",
        f"It depends on your thread count, irregularly: persistent at "
        f"{_listing(persistent)} threads{raised}, shared at "
        f"{_listing(shared)}. An irregular pattern often means noise: "
        "more --rounds or a longer --duration settle it.",
        verdicts,
    )


def _listing(numbers: list[int]) -> str:
    text = [str(n) for n in numbers]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _failure(f: Figures) -> str:
    done = f.requests + f.errors
    error = f" ({f.first_error})" if f.first_error else ""
    return f"failed {f.errors:,} of {done:,} requests{error}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)
