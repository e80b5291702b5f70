"""Where the client's Python work goes: bytecodes run per request, by package and function.

CPU time moves with the machine; the number of Python bytecodes one request runs
does not (for one Python and one version of each package), so it is the profile
that explains the CPU targets: a point select through dbpool runs PyMySQL's
bytecodes, as the dedicated connection does, plus dbpool's own. Counted with an
opcode tracer (``sys.settrace``, ``f_trace_opcodes``) over a few requests of one
thread after a warm-up, split by the top-level package of each frame's module.

Bytecodes are not all equal: C calls (socket reads, ``getsockopt``, lock
operations) run below the tracer and are counted once, as the bytecode that
calls them, and system calls cost CPU in the kernel. They are a profile of the
Python work, not a clock; the CPU tables give the time.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import workloads
from .approaches import BY_KEY, Target
from .micro import LIVE, Context

# The approaches whose point select is counted, and the checkout + return cycles.
REQUEST_APPROACHES = ("dedicated", "dbpool-shared", "dbpool-persistent")
CYCLE_APPROACHES = (
    "dbpool-shared",
    "dbpool-persistent",
    "dbutils-pooleddb",
    "dbutils-persistentdb",
)
_WARMUP = 50
_COUNTED = 20
_TOP = 8  # functions listed per approach


def count(fn: Callable[[], None], times: int = _COUNTED) -> Counter[tuple[str, str]]:
    """Bytecodes ``fn`` runs per call, averaged over ``times`` calls, by (package, function).

    The calling thread only; the warm-up is the caller's.
    """
    counts: Counter[tuple[str, str]] = Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            module = frame.f_globals.get("__name__") or "?"
            name = frame.f_code.co_qualname.rpartition("<locals>.")[2]  # a class made in a call
            counts[(module.partition(".")[0], name)] += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        for _ in range(times):
            fn()
    finally:
        sys.settrace(previous)
    per_call: Counter[tuple[str, str]] = Counter()
    for key, n in counts.items():
        per_call[key] = round(n / times)
    return +per_call


def _summary(counts: Counter[tuple[str, str]], own: str | None) -> dict[str, Any]:
    """The total, the share of each package, and the busiest functions of ``own``."""
    packages: Counter[str] = Counter()
    for (package, _), n in counts.items():
        packages[package] += n
    top = [
        [name, n] for (package, name), n in counts.most_common() if own is None or package == own
    ][:_TOP]
    return {"total": sum(counts.values()), "packages": dict(packages), "top": top}


def own_package(key: str) -> str | None:
    """The package of a pool approach's own code ("dbpool-shared": dbpool); None for none."""
    if key.startswith("dbpool"):
        return "dbpool"
    if key.startswith("dbutils"):
        return "dbutils"
    return None


def attribute(target: Target, ctx: Context, rows: int) -> dict[str, Any]:
    """Bytecodes per point select (1 thread) and per checkout + return, live connections.

    ``rows``: those of the benchmark table, which must exist.
    """
    requests: dict[str, Any] = {}
    point = workloads.BY_KEY["point"].make(rows, 0.0)
    for key in REQUEST_APPROACHES:
        approach = BY_KEY[key](target, 1)
        rng = random.Random(7)

        def one(approach: Any = approach, rng: random.Random = rng) -> None:
            token, conn = approach.checkout()
            try:
                point(conn, rng)
            finally:
                approach.checkin(token)

        try:
            for _ in range(_WARMUP):
                one()
            requests[key] = _summary(count(one), own_package(key))
        finally:
            approach.close()
    cycles: dict[str, Any] = {}
    for key in CYCLE_APPROACHES:
        acquire, release, dispose = LIVE[key][1](ctx)

        def cycle(acquire: Any = acquire, release: Any = release) -> None:
            release(acquire())

        try:
            for _ in range(_WARMUP):
                cycle()
            cycles[key] = _summary(count(cycle), own_package(key))
        finally:
            dispose()
    return {
        "python": sys.version.split()[0],
        "thread": threading.current_thread().name,
        "requests": requests,
        "cycles": cycles,
    }
