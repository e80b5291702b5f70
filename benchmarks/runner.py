"""One measured cell: an approach, a workload, a thread count, with or without latency."""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .approaches import Approach, Target
from .network import connect_delay, exempt, round_trip_delay
from .workloads import Workload

POLL_INTERVAL = 0.01
JOIN_TIMEOUT = 120.0
# Server counters reported per request (beyond Questions and Connections).
COUNTERS = (
    "Com_admin_commands",
    "Com_select",
    "Com_update",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_set_option",
    "Com_do",
    "Com_show_status",
)
_WANTED = frozenset(
    (
        *COUNTERS,
        "Questions",
        "Connections",
        "Threads_connected",
        "Aborted_clients",
        "Aborted_connects",
    )
)


def _ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


_TICKS = _ticks_per_second()


class Sampler:
    """The benchmark's own admin connection: server status, with its own queries counted.

    ``server_pid``: the server's process, when it runs on this machine, for its CPU time.
    """

    def __init__(self, conn: Any, server_pid: int | None = None) -> None:
        self.conn = exempt(conn)
        self.server_pid = server_pid
        self.queries = 0
        self._cur = conn.cursor()
        # The names spelled out: the whole SHOW GLOBAL STATUS is 500+ rows to parse.
        names = ", ".join(f"'{name}'" for name in sorted(_WANTED))
        self._status_sql = f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"

    def status(self) -> dict[str, int]:
        self.queries += 1
        self._cur.execute(self._status_sql)
        return {name: int(value) for name, value in self._cur.fetchall() if name in _WANTED}

    def threads_connected(self) -> int:
        self.queries += 1
        self._cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return int(self._cur.fetchall()[0][1])

    def server_cpu(self) -> float | None:
        """CPU seconds the server process has used so far (user + system), if known."""
        if self.server_pid is None:
            return None
        try:
            with open(f"/proc/{self.server_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # Fields 14 and 15 of stat (utime, stime), counted after the ")" of the name.
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def settle(self, baseline: int, timeout: float = 3.0) -> int:
        """Wait until the server is back to ``baseline`` connections; the count seen last."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.threads_connected()
            if now <= baseline or time.monotonic() > deadline:
                return now
            time.sleep(POLL_INTERVAL)

    def server_version(self) -> str:
        self._cur.execute("SELECT VERSION()")
        return str(self._cur.fetchall()[0][0])

    def close(self) -> None:
        self._cur.close()
        self.conn.close()


@dataclass
class _State:
    recording: bool = False
    stop: bool = False


@dataclass
class _Worker:
    latencies: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None


def _work(
    approach: Approach,
    request: Any,
    state: _State,
    worker: _Worker,
    seed: int,
    start: threading.Barrier,
) -> None:
    rng = random.Random(seed)
    clock = time.perf_counter
    latencies, waits = worker.latencies, worker.waits
    checkout, checkin = approach.checkout, approach.checkin
    try:
        start.wait()
        while not state.stop:
            recording = state.recording
            t0 = clock()
            try:
                token, conn = checkout()
            except Exception as exc:
                if recording:
                    worker.errors += 1
                    worker.first_error = worker.first_error or repr(exc)
                time.sleep(0.001)  # a failing checkout must not spin the CPU
                continue
            t1 = clock()
            try:
                request(conn, rng)
            except Exception as exc:
                if recording:
                    worker.errors += 1
                    worker.first_error = worker.first_error or repr(exc)
            finally:
                try:
                    checkin(token)
                except Exception as exc:
                    if recording:
                        worker.errors += 1
                        worker.first_error = worker.first_error or repr(exc)
            t2 = clock()
            if recording:
                latencies.append(t2 - t0)
                waits.append(t1 - t0)
    except Exception as exc:  # the barrier broke, or the approach failed outright
        worker.errors += 1
        worker.first_error = worker.first_error or repr(exc)
    finally:
        try:
            approach.thread_end()
        except Exception as exc:
            worker.errors += 1
            worker.first_error = worker.first_error or repr(exc)


def _percentile_ms(values: np.ndarray, q: float) -> float | None:
    if values.size == 0:
        return None
    return float(np.percentile(values, q) * 1000.0)


def run_cell(
    sampler: Sampler,
    approach_cls: type[Approach],
    target: Target,
    workload: Workload,
    *,
    threads: int,
    rows: int,
    slow: float,
    warmup: float,
    duration: float,
    latency: float,
    seed: int,
    profiler: Any = None,
) -> dict[str, Any]:
    """Run one cell and return its measurements (see the module docstring of report)."""
    baseline = sampler.settle(sampler.threads_connected())
    before = sampler.status()
    state = _State()
    workers = [_Worker() for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    request = workload.make(rows, slow)
    peak = baseline
    result: dict[str, Any] = {
        "approach": approach_cls.key,
        "workload": workload.key,
        "threads": threads,
        "latency_ms": latency * 1000.0,
    }
    with round_trip_delay(latency):
        t_build = time.perf_counter()
        try:
            approach = approach_cls(target, threads)
        except Exception as exc:
            result.update(error=f"cannot build: {exc!r}", requests=0, errors=1)
            return result
        result["build_s"] = time.perf_counter() - t_build
        run = _work if profiler is None else profiler.wrap(_work)
        pool_threads = [
            threading.Thread(
                target=run,
                args=(approach, request, state, w, seed + i, start),
                name=f"bench-{i}",
                daemon=True,
            )
            for i, w in enumerate(workers)
        ]
        try:
            for thread in pool_threads:
                thread.start()
            start.wait()
            peak = _poll(sampler, time.perf_counter() + warmup, peak)
            window_start = sampler.status()
            mark = sampler.queries
            server_a = sampler.server_cpu()
            cpu_a = time.process_time()
            state.recording = True
            t_a = time.perf_counter()
            peak = _poll(sampler, t_a + duration, peak)
            state.recording = False
            t_b = time.perf_counter()
            cpu_b = time.process_time()
            server_b = sampler.server_cpu()
            window_end = sampler.status()
            own_queries = sampler.queries - mark  # ours after the 1st snapshot, the 2nd included
        finally:
            state.stop = True
            if start.n_waiting and not start.broken:
                start.abort()
            deadline = time.monotonic() + JOIN_TIMEOUT
            for thread in pool_threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = sum(thread.is_alive() for thread in pool_threads)
            peak = max(peak, sampler.threads_connected())
            try:
                approach.close()
            except Exception as exc:
                result["close_error"] = repr(exc)
    after = sampler.status()
    sampler.settle(baseline)

    latencies = np.fromiter((x for w in workers for x in w.latencies), dtype=float)
    waits = np.fromiter((x for w in workers for x in w.waits), dtype=float)
    requests = int(latencies.size)
    window = t_b - t_a
    delta = {key: window_end.get(key, 0) - window_start.get(key, 0) for key in _WANTED}
    delta["Questions"] -= own_queries
    delta["Com_show_status"] -= own_queries
    errors = sum(w.errors for w in workers) + stuck
    first_error = next((w.first_error for w in workers if w.first_error), None)
    if stuck:
        first_error = f"{stuck} worker threads did not stop; " + (first_error or "")
    per_request = {
        key: (delta[key] / requests if requests else None) for key in ("Questions", *COUNTERS)
    }
    commands = delta["Questions"] + delta["Com_admin_commands"]
    result.update(
        requests=requests,
        window_s=window,
        throughput=requests / window if window > 0 else 0.0,
        p50_ms=_percentile_ms(latencies, 50),
        p90_ms=_percentile_ms(latencies, 90),
        p99_ms=_percentile_ms(latencies, 99),
        wait_p50_ms=_percentile_ms(waits, 50),
        wait_p99_ms=_percentile_ms(waits, 99),
        peak_connections=max(0, peak - baseline),
        opened_window=delta["Connections"],
        opened_total=after["Connections"] - before["Connections"],
        commands_per_request=(commands / requests) if requests else None,
        client_cpu_us=(cpu_b - cpu_a) / requests * 1e6 if requests else None,
        server_cpu_us=(
            (server_b - server_a) / requests * 1e6
            if requests and server_a is not None and server_b is not None
            else None
        ),
        per_request=per_request,
        errors=errors,
        first_error=first_error,
    )
    return result


def _poll(sampler: Sampler, until: float, peak: int) -> int:
    """Sample Threads_connected until ``until``; the highest count seen."""
    while True:
        peak = max(peak, sampler.threads_connected())
        left = until - time.perf_counter()
        if left <= 0:
            return peak
        time.sleep(min(POLL_INTERVAL, left))


def one_connect_time(target: Target, delay: float, samples: int = 5) -> float:
    """Median seconds to open one PyMySQL connection with the simulated connect delay."""
    import pymysql

    times = []
    with connect_delay(delay):
        for _ in range(samples):
            t0 = time.perf_counter()
            conn = pymysql.connect(**target.pymysql_params())
            times.append(time.perf_counter() - t0)
            conn.close()
    return float(np.median(times))


def run_storm(
    sampler: Sampler,
    approach_cls: type[Approach],
    target: Target,
    workload: Workload,
    *,
    threads: int,
    rows: int,
    delay: float,
) -> dict[str, Any]:
    """Cold storm: ``threads`` threads hit a new, empty pool at once; time to all first queries.

    The clock starts before the approach is built (mysql-connector's pool
    opens its connections in its constructor) and stops when the last thread
    has run its first request.
    """
    baseline = sampler.settle(sampler.threads_connected())
    request = workload.make(rows, 0.0)
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    done = [0.0] * threads
    failures: list[str] = []
    holder: list[Approach] = []

    def storm_worker(index: int) -> None:
        rng = random.Random(index)
        try:
            ready.wait()
            go.wait()
            if not holder:
                raise RuntimeError("the approach could not be built")
            approach = holder[0]
            token, conn = approach.checkout()
            try:
                request(conn, rng)
            finally:
                approach.checkin(token)
            done[index] = time.perf_counter()
            approach.thread_end()
        except Exception as exc:
            failures.append(repr(exc))

    result: dict[str, Any] = {
        "approach": approach_cls.key,
        "threads": threads,
        "connect_delay_ms": delay * 1000.0,
    }
    with connect_delay(delay):
        pool_threads = [
            threading.Thread(target=storm_worker, args=(i,), daemon=True) for i in range(threads)
        ]
        for thread in pool_threads:
            thread.start()
        ready.wait()
        t0 = time.perf_counter()
        try:
            holder.append(approach_cls(target, threads))
        except Exception as exc:
            failures.append(f"cannot build: {exc!r}")
        go.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in pool_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in pool_threads)
        if holder:
            holder[0].close()
    sampler.settle(baseline)
    finished = [t for t in done if t]
    result.update(
        storm_ms=(max(finished) - t0) * 1000.0 if len(finished) == threads else None,
        first_ms=(min(finished) - t0) * 1000.0 if finished else None,
        errors=len(failures) + stuck,
        first_error=failures[0] if failures else None,
    )
    return result
