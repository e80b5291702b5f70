"""One measured cell: an approach, a workload, a thread count, with or without latency."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import numpy as np

from dbpool.advisor.runner import measure

from .approaches import Approach, Target
from .monitor import COUNTERS, WANTED, Monitor
from .network import connect_delay, round_trip_delay
from .workloads import Workload

JOIN_TIMEOUT = 120.0


def _ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


_TICKS = _ticks_per_second()


def server_cpu(pid: int | None) -> float | None:
    """CPU seconds the server process has used so far (user + system), if it runs here."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" of the name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _percentile_ms(values: np.ndarray, q: float) -> float | None:
    if values.size == 0:
        return None
    return float(np.percentile(values, q) * 1000.0)


def run_cell(
    monitor: Monitor,
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
    server_pid: int | None = None,
    profiler: Any = None,
) -> dict[str, Any]:
    """Run one cell and return its measurements (see the module docstring of report).

    While the threads run, this (main) thread only sleeps: the server is read by
    the monitor process at the window's edges, so nothing else takes the GIL.
    """
    baseline = monitor.settle(None)
    monitor.mark()
    before = monitor.status()
    request = workload.make(rows, slow)
    result: dict[str, Any] = {
        "approach": approach_cls.key,
        "workload": workload.key,
        "threads": threads,
        "latency_ms": latency * 1000.0,
    }

    def at_start() -> tuple[dict[str, Any], float | None]:
        return monitor.status(), server_cpu(server_pid)

    def at_end() -> tuple[dict[str, Any], float | None]:
        cpu = server_cpu(server_pid)
        return monitor.status(), cpu

    with round_trip_delay(latency):
        t_build = time.perf_counter()
        try:
            approach = approach_cls(target, threads)
        except Exception as exc:
            result.update(error=f"cannot build: {exc!r}", requests=0, errors=1)
            return result
        result["build_s"] = time.perf_counter() - t_build
        try:
            window = measure(
                approach,
                request,
                threads=threads,
                warmup=warmup,
                duration=duration,
                seed=seed,
                at_start=at_start,
                at_end=at_end,
                wrap=None if profiler is None else profiler.wrap,
                join_timeout=JOIN_TIMEOUT,
            )
        finally:
            try:
                approach.close()
            except Exception as exc:
                result["close_error"] = repr(exc)
    after = monitor.status()
    monitor.settle(baseline)

    latencies = np.array(window.latencies, dtype=float)
    waits = np.array(window.waits, dtype=float)
    requests = window.requests
    (window_start, server_a), (window_end, server_b) = window.at_start, window.at_end
    start_status, end_status = window_start["status"], window_end["status"]
    delta = {key: end_status.get(key, 0) - start_status.get(key, 0) for key in WANTED}
    # The monitor's queries after the first snapshot, the second one included.
    own_queries = window_end["queries"] - window_start["queries"]
    delta["Questions"] -= own_queries
    delta["Com_show_status"] -= own_queries
    per_request = {
        key: (delta[key] / requests if requests else None) for key in ("Questions", *COUNTERS)
    }
    commands = delta["Questions"] + delta["Com_admin_commands"]
    result.update(
        requests=requests,
        window_s=window.seconds,
        throughput=window.throughput,
        p50_ms=_percentile_ms(latencies, 50),
        p90_ms=_percentile_ms(latencies, 90),
        p99_ms=_percentile_ms(latencies, 99),
        wait_p50_ms=_percentile_ms(waits, 50),
        wait_p99_ms=_percentile_ms(waits, 99),
        # Requests served per thread: a thread starved while others are served shows
        # here, where a percentile over requests cannot see it (it has no requests).
        served_min=min(window.served, default=None),
        served_median=float(np.median(window.served)) if window.served else None,
        served_max=max(window.served, default=None),
        peak_connections=max(0, after["peak"] - baseline),
        opened_window=delta["Connections"],
        opened_total=after["status"]["Connections"] - before["status"]["Connections"],
        commands_per_request=(commands / requests) if requests else None,
        client_cpu_us=window.cpu_us_per_request,
        client_switches=window.switches_per_request,
        server_cpu_us=(
            (server_b - server_a) / requests * 1e6
            if requests and server_a is not None and server_b is not None
            else None
        ),
        per_request=per_request,
        errors=window.errors,
        first_error=window.first_error,
    )
    return result


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
    monitor: Monitor,
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
    baseline = monitor.settle(None)
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
    monitor.settle(baseline)
    finished = [t for t in done if t]
    result.update(
        storm_ms=(max(finished) - t0) * 1000.0 if len(finished) == threads else None,
        first_ms=(min(finished) - t0) * 1000.0 if finished else None,
        errors=len(failures) + stuck,
        first_error=failures[0] if failures else None,
    )
    return result


def run_spike(
    monitor: Monitor,
    approach_cls: type[Approach],
    target: Target,
    *,
    warm: int,
    threads: int,
    query_s: float,
    delay: float,
) -> dict[str, Any]:
    """HikariCP's spike test: ``warm`` connections ready, then ``threads`` requests at once.

    The pool is built (``target`` carries its size and overflow) and warmed by
    ``warm`` threads that each run one query at the same time and end. Then,
    with every new connect taking ``delay`` longer, ``threads`` new threads are
    let go at once; each runs one ``DO SLEEP(query_s)`` and gives its connection
    back. Measured: the server's new connections over the burst (its
    ``Connections`` counter) and the time until the last thread is done.
    """
    sql = f"DO SLEEP({query_s:.4f})"
    baseline = monitor.settle(None)
    failures: list[str] = []
    result: dict[str, Any] = {
        "approach": approach_cls.key,
        "threads": threads,
        "warm": warm,
        "connect_delay_ms": delay * 1000.0,
        "query_ms": query_s * 1000.0,
    }

    def one(approach: Approach, gate: threading.Barrier, done: list[float], i: int) -> None:
        try:
            gate.wait()
            token, conn = approach.checkout()
            try:
                cur = conn.cursor()
                cur.execute(sql)
                cur.close()
            finally:
                approach.checkin(token)
            done[i] = time.perf_counter()
            approach.thread_end()
        except Exception as exc:
            failures.append(repr(exc))

    def wave(approach: Approach, n: int) -> tuple[float, list[float], int]:
        gate = threading.Barrier(n + 1)
        done = [0.0] * n
        workers = [
            threading.Thread(target=one, args=(approach, gate, done, i), daemon=True)
            for i in range(n)
        ]
        for worker in workers:
            worker.start()
        gate.wait()
        t0 = time.perf_counter()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return t0, done, sum(worker.is_alive() for worker in workers)

    try:
        approach = approach_cls(target, threads)
    except Exception as exc:
        result.update(errors=1, first_error=f"cannot build: {exc!r}")
        return result
    try:
        _, _, stuck = wave(approach, warm)
        time.sleep(0.05)  # the warm threads' ends are noticed (persistent mode drops theirs)
        before = monitor.status()["status"]["Connections"]
        with connect_delay(delay):
            t0, done, stuck2 = wave(approach, threads)
            # A connect started for the burst and still under way when it ended counts
            # too: give it the time to finish before counting.
            time.sleep(delay + 0.05)
        stuck += stuck2
        after = monitor.status()["status"]["Connections"]
    finally:
        approach.close()
    monitor.settle(baseline)
    finished = [t for t in done if t]
    result.update(
        opened=after - before,
        burst_ms=(max(finished) - t0) * 1000.0 if len(finished) == threads else None,
        errors=len(failures) + stuck,
        first_error=failures[0] if failures else None,
    )
    return result
