"""Plugin: a bounded multi-threaded load for fault and soak tests, with per-call records.

::

    load = start_load(pool, 64, select_one)   # the fixture; or Load(...).start()
    ...                         # inject a fault, note times with time.monotonic()
    hung = load.stop()          # threads still running after the join timeout
    load.calls_between(t0, t1)  # the calls that started in that window

Fixture: ``start_load(pool, threads, work, **options)`` starts a Load; every
load it started is stopped when the test ends, so a failing test leaves no
worker threads behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    error: BaseException | None

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Load:
    """``threads`` threads each calling ``work(pool)`` in a loop until ``stop()``.

    ``keep_calls=False`` keeps counters only (for long runs). ``gate`` may be
    cleared to pause the workers between two calls.
    """

    def __init__(
        self,
        pool: Any,
        threads: int,
        work: Callable[[Any], None],
        *,
        keep_calls: bool = True,
        think: float = 0.0,
    ) -> None:
        self.pool = pool
        self.work = work
        self.keep_calls = keep_calls
        self.think = think
        self.calls: list[Call] = []  # list.append is atomic
        self.gate = threading.Event()
        self.gate.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.requests = 0
        self.errors: list[BaseException] = []
        self.longest = 0.0
        self.paused = 0  # workers waiting at the gate now
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """Stop the workers; return how many are still running after ``timeout`` (hung)."""
        self._stop.set()
        self.gate.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)

    def pause(self, timeout: float = 30.0) -> bool:
        """Hold every worker at the gate between two calls; False if they did not all stop."""
        self.gate.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.paused == len(self._threads):
                    return True
            time.sleep(0.005)
        return False

    def resume(self) -> None:
        self.gate.set()

    def calls_between(self, start: float, end: float = float("inf")) -> list[Call]:
        return [c for c in self.calls if start <= c.start < end]

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.gate.is_set():
                with self._lock:
                    self.paused += 1
                self.gate.wait()
                with self._lock:
                    self.paused -= 1
                continue
            start = time.monotonic()
            error: BaseException | None = None
            try:
                self.work(self.pool)
            except Exception as exc:
                error = exc
            end = time.monotonic()
            with self._lock:
                self.requests += 1
                self.longest = max(self.longest, end - start)
                if error is not None and len(self.errors) < 1000:
                    self.errors.append(error)
            if self.keep_calls:
                self.calls.append(Call(start, end, error))
            if self.think:
                self._stop.wait(self.think)


def select_one(pool: Any) -> None:
    """One request: borrow a connection, run a query, give it back."""
    with pool.connection() as conn:
        cur = conn.cursor()
        try:
            cur.execute("SELECT 1")
            if cur.fetchall()[0][0] != 1:
                raise AssertionError("SELECT 1 did not return 1")
        finally:
            cur.close()


def error_kinds(calls: list[Call]) -> dict[str, int]:
    """Count the errors of ``calls`` by exception class name."""
    kinds: dict[str, int] = {}
    for call in calls:
        if call.error is not None:
            name = type(call.error).__name__
            kinds[name] = kinds.get(name, 0) + 1
    return kinds


@pytest.fixture
def start_load() -> Iterator[Callable[..., Load]]:
    """Starts a Load (``pool, threads, work`` and Load's options); stops them all at the end."""
    started: list[Load] = []

    def start(pool: Any, threads: int, work: Callable[[Any], None], **options: Any) -> Load:
        load = Load(pool, threads, work, **options)
        started.append(load)
        return load.start()

    yield start
    for load in started:
        load.stop()
