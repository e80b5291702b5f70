"""One measured cell of ``dbpool bench``: a pool, a thread count, the workload, a time window.

Worker threads loop: take a connection, run one request, give it back, think.
They start together, run a warm-up (connections opened, caches warm), then a
measured window marked by a flag they read on every loop; the main thread only
sleeps meanwhile. Each worker keeps its own lists of latencies and waits, so no
lock is shared between them beyond the pool's own. The client's CPU time per
request is the process's CPU time over the window divided by the requests; the
server's connection count comes from the sampling process (see sampler.py).
``measure`` is that loop and its window, for any pool behind ``Lender``; the
repository's benchmarks (benchmarks/runner.py) measure with it too.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import make_pool
from ..config import Settings
from .sampler import SamplerError, ServerSampler
from .workload import Request, Workload

try:
    import resource
except ImportError:  # Windows has no resource module, so no context switch counts
    resource = None  # type: ignore[assignment]


def _context_switches() -> int | None:
    """The process's context switches so far, voluntary and forced; None where unknown."""
    if resource is None:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


JOIN_TIMEOUT = 60.0
SETTLE_TIMEOUT = 1.0
# Pause after a failed checkout, so a refusing server or a timing-out pool is not spun on.
_ERROR_PAUSE = 0.01


@dataclass(frozen=True)
class Target:
    """The server and pool options every contender uses."""

    settings: Settings
    read_only: bool = True

    @property
    def size(self) -> int:
        return self.settings.pool.size

    @property
    def max_size(self) -> int:
        return self.settings.pool.max_size

    def driver_connect(self) -> Callable[[], Any]:
        """A function opening a raw connection of the config's driver (for other pools)."""
        params = dict(self.settings.params)
        if self.settings.driver == "mysql-connector":
            import mysql.connector

            return lambda: mysql.connector.connect(use_pure=True, **params)
        import pymysql

        return lambda: pymysql.connect(**params)


class Contender:
    """A way to get connections, built per cell and closed at its end."""

    key = ""
    label = ""
    thread_affine = False

    def __init__(self, target: Target, threads: int) -> None:
        self.target = target
        self.threads = threads

    @classmethod
    def bound(cls, target: Target, threads: int) -> int:
        """The most connections it may open with ``threads`` threads."""
        return max(target.max_size, threads) if cls.thread_affine else target.max_size

    def checkout(self) -> tuple[Any, Any]:
        """A (token, DB-API connection) pair; the token goes back to ``checkin``."""
        raise NotImplementedError

    def checkin(self, token: Any) -> None:
        raise NotImplementedError

    def thread_end(self) -> None:
        """Called by each worker thread when it stops."""

    def opened(self) -> int | None:
        """Connections opened so far, when the pool counts them."""
        return None

    def close(self) -> None:
        raise NotImplementedError


class DbpoolMode(Contender):
    """dbpool in one mode, with the config's pool options.

    Persistent mode keeps one connection per thread: with more threads than
    ``max_size`` the extra threads would only wait for ``PoolTimeout``, so the
    bound is raised to the thread count for the cell, and the advice says so.
    """

    mode = ""

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        options: dict[str, Any] = {}
        if self.bound(target, threads) > target.max_size:
            options["max_overflow"] = threads - target.size
        self.pool = make_pool(
            self.mode,
            config=target.settings.source,
            config_name=target.settings.config_name,
            **options,
        )

    def checkout(self) -> tuple[Any, Any]:
        conn = self.pool.acquire()
        return conn, conn

    def checkin(self, token: Any) -> None:
        self.pool.release(token)

    def thread_end(self) -> None:
        self.pool.close_thread_connection()

    def opened(self) -> int | None:
        return int(self.pool.get_stats()["created"])

    def close(self) -> None:
        self.pool.dispose()


class Shared(DbpoolMode):
    key = "shared"
    label = "dbpool shared"
    mode = "shared"


class Persistent(DbpoolMode):
    key = "persistent"
    label = "dbpool persistent"
    mode = "persistent"
    thread_affine = True


class SQLAlchemyQueuePool(Contender):
    key = "sqlalchemy"
    label = "SQLAlchemy QueuePool"

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from sqlalchemy import create_engine

        options = target.settings.pool
        dialect = (
            "mysql+mysqlconnector://"
            if target.settings.driver == "mysql-connector"
            else "mysql+pymysql://"
        )
        # The engine's pool at the DB-API level: no SQL layer, the dialect only pings.
        self.engine = create_engine(
            dialect,
            creator=target.driver_connect(),
            pool_size=options.size,
            max_overflow=options.max_overflow,
            pool_timeout=options.timeout,
            pool_recycle=int(options.recycle) or -1,
            pool_pre_ping=options.pre_ping,
        )

    def checkout(self) -> tuple[Any, Any]:
        conn = self.engine.pool.connect()
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def close(self) -> None:
        self.engine.dispose()


class DBUtilsPooledDB(Contender):
    key = "dbutils"
    label = "DBUtils PooledDB"

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from dbutils.pooled_db import PooledDB

        connect = target.driver_connect()
        options = target.settings.pool
        self.db = PooledDB(
            connect,
            maxcached=options.size,
            maxconnections=options.max_size,
            blocking=True,
            ping=1 if options.pre_ping else 0,
        )

    def checkout(self) -> tuple[Any, Any]:
        conn = self.db.connection(shareable=False)
        return conn, conn

    def checkin(self, token: Any) -> None:
        token.close()

    def close(self) -> None:
        self.db.close()


class DBUtilsPersistentDB(Contender):
    key = "dbutils-persistent"
    label = "DBUtils PersistentDB"
    thread_affine = True

    def __init__(self, target: Target, threads: int) -> None:
        super().__init__(target, threads)
        from dbutils.persistent_db import PersistentDB

        self.db = PersistentDB(
            target.driver_connect(), closeable=False, ping=1 if target.settings.pool.pre_ping else 0
        )
        self._lock = threading.Lock()
        self._kept: list[Any] = []

    @classmethod
    def bound(cls, target: Target, threads: int) -> int:
        return threads  # PersistentDB has no bound of its own

    def checkout(self) -> tuple[Any, Any]:
        conn = self.db.connection()
        return conn, conn

    def checkin(self, token: Any) -> None:
        return None  # the connection stays with its thread

    def thread_end(self) -> None:
        conn = getattr(self.db.thread, "connection", None)
        if conn is not None:
            with self._lock:
                self._kept.append(conn)

    def close(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
        for conn in kept:
            conn._close()


MODES: tuple[type[Contender], ...] = (Shared, Persistent)
OTHERS: dict[str, type[Contender]] = {
    cls.key: cls for cls in (SQLAlchemyQueuePool, DBUtilsPooledDB, DBUtilsPersistentDB)
}
# The package each of the other pools needs, for a clear message when it is missing.
OTHER_PACKAGES = {"sqlalchemy": "SQLAlchemy", "dbutils": None, "dbutils-persistent": None}


def execute(conn: Any, request: Request, rng: random.Random, read_only: bool) -> None:
    """Run one request: its statement, or its transaction, fetching every row.

    A transaction, or a request that writes, ends with a commit. A read alone does
    not: with autocommit off its transaction is rolled back when the connection
    goes back to the pool, as in an application that only reads.
    """
    cur = conn.cursor()
    try:
        if request.transaction:
            # READ ONLY: the server itself refuses a write inside the transaction.
            cur.execute("START TRANSACTION READ ONLY" if read_only else "START TRANSACTION")
        for statement in request.statements:
            cur.execute(statement.sql, statement.arguments(rng))
            if cur.description is not None:
                cur.fetchall()
        if request.transaction or request.writes:
            conn.commit()
    finally:
        cur.close()


class Lender(Protocol):
    """What the measuring loop borrows from: a pool under test, behind one small interface."""

    def checkout(self) -> tuple[Any, Any]:
        """A (token, DB-API connection) pair; the token goes back to ``checkin``."""
        ...

    def checkin(self, token: Any) -> None: ...

    def thread_end(self) -> None:
        """Called by each worker thread when it stops."""
        ...


@dataclass
class Window:
    """What the workers measured in one window.

    A request counts when it started (its checkout) inside the window and went
    through checkout, its work and checkin without an error; its latency runs
    from the checkout call to the end of checkin, its wait to the end of checkout.
    """

    latencies: list[float]  # seconds, one per request
    waits: list[float]
    seconds: float  # the window's wall-clock length
    cpu_seconds: float  # this process's CPU time (every thread) over the window
    errors: int  # failed checkouts, requests and checkins; and worker threads that hung
    first_error: str | None
    stuck: int  # worker threads still running JOIN_TIMEOUT after the stop
    at_start: Any = None  # what the ``at_start`` and ``at_end`` readings returned
    at_end: Any = None
    served: list[int] = field(default_factory=list)  # the requests of each worker thread
    switches: int | None = None  # the process's context switches over the window

    @property
    def switches_per_request(self) -> float | None:
        """Context switches per request, over every thread of the process.

        A thread that blocks (on I/O, or waiting for a connection) gives up the CPU,
        and each switch costs kernel time.
        """
        if self.switches is None or not self.requests:
            return None
        return self.switches / self.requests

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Requests per second of the window."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        """The process's CPU microseconds over the window, per request."""
        return self.cpu_seconds / self.requests * 1e6 if self.requests else None


@dataclass
class _Flags:
    recording: bool = False
    stop: bool = False


@dataclass
class _Worker:
    latencies: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _work(
    lender: Lender,
    request: Callable[[Any, random.Random], None],
    think: float,
    flags: _Flags,
    worker: _Worker,
    seed: int,
    start: threading.Barrier,
) -> None:
    rng = random.Random(seed)
    clock = time.perf_counter
    latencies, waits = worker.latencies, worker.waits
    checkout, checkin = lender.checkout, lender.checkin
    try:
        start.wait()
        while not flags.stop:
            recording = flags.recording
            t0 = clock()
            try:
                token, conn = checkout()
            except Exception as exc:
                if recording:
                    worker.failed(exc)
                time.sleep(_ERROR_PAUSE)
                continue
            t1 = clock()
            ok = True
            try:
                request(conn, rng)
            except Exception as exc:
                ok = False
                if recording:
                    worker.failed(exc)
            finally:
                try:
                    checkin(token)
                except Exception as exc:
                    ok = False
                    if recording:
                        worker.failed(exc)
            if recording and ok:
                latencies.append(clock() - t0)
                waits.append(t1 - t0)
            if think:
                time.sleep(think * rng.uniform(0.5, 1.5))
    except Exception as exc:  # the start barrier broke
        worker.failed(exc)
    finally:
        try:
            lender.thread_end()
        except Exception as exc:
            worker.failed(exc)


def measure(
    lender: Lender,
    request: Callable[[Any, random.Random], None],
    *,
    threads: int,
    warmup: float,
    duration: float,
    seed: int,
    think: float = 0.0,
    at_start: Callable[[], Any] | None = None,
    at_end: Callable[[], Any] | None = None,
    wrap: Callable[[Callable[..., None]], Callable[..., None]] | None = None,
    join_timeout: float = JOIN_TIMEOUT,
) -> Window:
    """``threads`` workers loop on ``lender``: take a connection, run ``request(conn, rng)``,
    give it back, think (``think`` seconds, 0.5 to 1.5 times, at random).

    They start together and run ``warmup`` seconds, then a window of ``duration``
    seconds that they record; this thread only sleeps meanwhile. ``at_start``
    runs just before the window opens and ``at_end`` just after it closes, outside
    both clocks (for readings of the server). ``wrap`` wraps each worker's
    function (a profiler). Each worker gets its own ``random.Random(seed + i)``.
    The workers are stopped and joined (up to ``join_timeout`` in all) before it
    returns or raises; the lender is left open.
    """
    flags = _Flags()
    workers = [_Worker() for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    run = _work if wrap is None else wrap(_work)
    pool_threads = [
        threading.Thread(
            target=run,
            name=f"dbpool-bench-{i}",
            daemon=True,
            args=(lender, request, think, flags, w, seed + i, start),
        )
        for i, w in enumerate(workers)
    ]
    try:
        for thread in pool_threads:
            thread.start()
        start.wait()
        time.sleep(warmup)
        reading_a = at_start() if at_start is not None else None
        cpu_a = time.process_time()
        switches_a = _context_switches()
        flags.recording = True
        t_a = time.perf_counter()
        time.sleep(duration)
        flags.recording = False
        t_b = time.perf_counter()
        cpu_b = time.process_time()
        switches_b = _context_switches()
        reading_b = at_end() if at_end is not None else None
    finally:
        flags.stop = True
        if start.n_waiting and not start.broken:
            start.abort()
        deadline = time.monotonic() + join_timeout
        for thread in pool_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in pool_threads)

    first_error = next((w.first_error for w in workers if w.first_error), None)
    if stuck:
        first_error = f"{stuck} worker threads did not stop in {join_timeout:.0f}s; " + (
            first_error or ""
        )
    return Window(
        latencies=[x for w in workers for x in w.latencies],
        waits=[x for w in workers for x in w.waits],
        seconds=t_b - t_a,
        cpu_seconds=cpu_b - cpu_a,
        errors=sum(w.errors for w in workers) + stuck,
        first_error=first_error,
        stuck=stuck,
        at_start=reading_a,
        at_end=reading_b,
        served=[len(w.latencies) for w in workers],
        switches=None if switches_a is None or switches_b is None else switches_b - switches_a,
    )


def percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values`` in seconds, as milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[rank] * 1000.0


def run_cell(
    cls: type[Contender],
    target: Target,
    workload: Workload,
    sampler: ServerSampler | None,
    *,
    threads: int,
    warmup: float,
    duration: float,
    seed: int,
) -> dict[str, Any]:
    """Run one cell and return its figures (one row of the JSON ``cells`` list)."""
    result: dict[str, Any] = {
        "contender": cls.key,
        "threads": threads,
        "bound": cls.bound(target, threads),
    }
    baseline = _sampled(sampler, _settle)
    try:
        contender = cls(target, threads)
    except Exception as exc:
        result.update(
            requests=0,
            errors=1,
            throughput=0.0,
            first_error=f"cannot build the pool: {type(exc).__name__}: {exc}",
        )
        return result
    read_only = target.read_only

    def request(conn: Any, rng: random.Random) -> None:
        execute(conn, workload.pick(rng), rng, read_only)

    try:
        _sampled(sampler, lambda s: s.reset())
        window = measure(
            contender,
            request,
            threads=threads,
            warmup=warmup,
            duration=duration,
            seed=seed,
            think=workload.think_ms / 1000.0,
        )
    finally:
        peak = _sampled(sampler, lambda s: s.peak())
        opened = contender.opened()
        try:
            contender.close()
        except Exception as exc:
            result["close_error"] = f"{type(exc).__name__}: {exc}"

    first_error = window.first_error
    if not window.requests and not window.errors:
        first_error = (
            f"no request started and finished in the {window.seconds:.2f}s window "
            "(a statement waiting on a lock, or a window too short?)"
        )
    result.update(
        requests=window.requests,
        errors=window.errors,
        first_error=first_error,
        window_s=window.seconds,
        throughput=window.throughput,
        p50_ms=percentile_ms(window.latencies, 50),
        p99_ms=percentile_ms(window.latencies, 99),
        wait_p99_ms=percentile_ms(window.waits, 99),
        server_connections=(None if peak is None or baseline is None else max(0, peak - baseline)),
        opened=opened,
        client_cpu_us=window.cpu_us_per_request,
    )
    return result


def _settle(sampler: ServerSampler) -> int:
    """Wait for the last cell's connections to go; the count a new cell starts from.

    Other clients of a busy server come and go too, so the wait is short and the
    count it ends on becomes the next cell's reference.
    """
    sampler.baseline = sampler.settle(sampler.baseline, timeout=SETTLE_TIMEOUT)
    return sampler.baseline


def _sampled(sampler: ServerSampler | None, ask: Callable[[ServerSampler], int]) -> int | None:
    """Ask the sampler; None (and no more sampling) once it has failed."""
    if sampler is None or sampler.failed is not None:
        return None
    try:
        return ask(sampler)
    except SamplerError as exc:
        sampler.failed = str(exc)
        return None


def plan_bound(classes: list[type[Contender]], target: Target, threads: list[int]) -> int:
    """The most connections any cell may hold, and so the most the run may hold at once.

    No pool lends more connections than there are threads to use them.
    """
    return max(min(cls.bound(target, t), t) for cls in classes for t in threads)


def settings_summary(settings: Settings) -> Mapping[str, Any]:
    options = settings.pool
    return {
        "size": options.size,
        "max_overflow": options.max_overflow,
        "max_size": options.max_size,
        "timeout": options.timeout,
        "pre_ping": options.pre_ping,
        "reset": options.reset,
    }
