"""The connection pool: one interface, two DBUtils strategies (shared and persistent)."""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import threading
import traceback
import weakref
from collections import deque
from time import monotonic, sleep
from types import FrameType, TracebackType
from typing import Any

from ._handles import _Handle, _HandleFactory, _Store, make_store
from .config import MODES, Settings, load_settings, scrub_secrets
from .connection import PooledConnection
from .drivers import Driver, get_driver
from .errors import (
    ConfigError,
    ConnectError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    ValidationError,
)
from .hosts import (
    Address,
    HostList,
    HostsFailed,
    HostState,
    error_verdict,
    galera_not_ready,
    replica_lag_problem,
    server_read_only,
)
from .stats import PoolStats

__all__ = ["ConnectionPool", "PooledConnection", "get_global_pool", "make_pool"]

log = logging.getLogger("dbpool")
_INF = float("inf")

# Longest single sleep of a waiter, so that slots freed outside any call
# (a thread that ended while holding a persistent connection) are noticed.
_WAIT_SLICE = 0.05
# Connections opened together should not all expire in the same second.
_RECYCLE_JITTER = 0.05
# Frames of the acquiring stack kept for a leak warning.
_LEAK_STACK_DEPTH = 12
# Pause between two failed connects, so a refusing server is not hammered.
_CONNECT_BACKOFF = 0.05
# The least time a validation ping gets, even when the acquire deadline is closer.
_MIN_PING_TIMEOUT = 0.05
# Longest pause between two looks for connections held past leak_threshold.
_LEAK_SCAN_INTERVAL = 1.0
# The counter each retire reason adds to, besides "closed".
_RETIRE_COUNTERS = {
    "recycled": "recycled",
    "overflow": "closed_overflow",
    "broken": "closed_broken",
    "lost": "closed_broken",
    "read_only": "closed_read_only",
    "not_ready": "closed_not_ready",
    "lagging": "closed_lagging",
    "stale": "closed_stale",
}
# Retire reasons that say the server itself can no longer do its job: its host is denied.
_HOST_UNUSABLE = {
    "read_only": "the server is read-only",
    "not_ready": "the Galera node is not ready",
    "lagging": "the replica lags",
}


class ConnectionPool:
    """A bounded pool of validated connections, shared by threads or bound to them.

    size: connections kept idle; max_overflow: extra ones allowed under load,
    closed when given back to a full pool. timeout: seconds ``acquire`` waits.
    recycle: seconds after which a connection is replaced (0: never).
    driver: "pymysql", "mysql-connector" or "sqlite". config_name: the entry of
    the YAML config to use; ``config``: its path. mode: "shared" (one pool for
    all threads, on DBUtils' PooledDB) or "persistent" (a connection per
    thread, on PersistentDB). pre_ping, ping_interval: validation at checkout.
    ping_timeout: seconds the validation ping and the reset at return may wait.
    reset: "rollback" or "session" at return. leak_threshold: seconds after which
    a connection not given back is reported. host_order, host_deny_seconds,
    galera_check, replica_fallback, replica_max_lag: how a host list and its
    replicas are used (see the README's "Many servers"). name: the pool's name
    in stats, logs and metrics (default: the config name, or for a server
    given in code host:port/database). Other keywords are
    connection parameters (host, which may be a list, replicas, port, user,
    password, database, charset, path, ...) that override the config entry.
    Options not given come from the entry's ``pool:`` section, then from the
    defaults.
    """

    _replicas: ConnectionPool | None  # the pool of readonly connections, if any
    name: str  # in stats, logs and metrics; see _default_name

    def __init__(
        self,
        size: int | None = None,
        config_name: str = "primary",
        timeout: float | None = None,
        max_overflow: int | None = None,
        recycle: float | None = None,
        driver: str | Driver | None = None,
        *,
        config: str | None = None,
        mode: str | None = None,
        pre_ping: bool | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        reset: str | None = None,
        leak_threshold: float | None = None,
        host_order: str | None = None,
        host_deny_seconds: float | None = None,
        galera_check: bool | None = None,
        replica_fallback: bool | None = None,
        replica_max_lag: float | None = None,
        causal_reads: bool | None = None,
        name: str | None = None,
        **params: Any,
    ) -> None:
        given = {
            "size": size,
            "timeout": timeout,
            "max_overflow": max_overflow,
            "recycle": recycle,
            "mode": mode,
            "pre_ping": pre_ping,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "reset": reset,
            "leak_threshold": leak_threshold,
            "host_order": host_order,
            "host_deny_seconds": host_deny_seconds,
            "galera_check": galera_check,
            "replica_fallback": replica_fallback,
            "replica_max_lag": replica_max_lag,
            "causal_reads": causal_reads,
        }
        pool_options = {key: value for key, value in given.items() if value is not None}
        custom = driver if isinstance(driver, Driver) else None
        driver_name = "pymysql" if isinstance(driver, Driver) else driver
        settings = load_settings(
            config_name,
            config=config,
            driver=driver_name,
            pool_options=pool_options,
            params=params,
        )
        driver_object = custom or get_driver(settings.driver)
        if len(settings.hosts) > 1 and custom is None:
            target = settings.describe()
        else:
            target = driver_object.describe(settings.params)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string (got {name!r})")
        # The name in stats, logs and metrics; messages show the target as well.
        pool_name = name or _default_name(settings, bool(params) and not custom)
        self._setup(settings, driver_object, "primary", f"{pool_name!r} ({target})")
        self.name = pool_name
        if settings.replicas:
            # Replica connections are a pool of their own: the same options, other hosts.
            replicas = ",".join(address.key for address in settings.replicas)
            replica_pool = ConnectionPool.__new__(ConnectionPool)
            replica_pool._setup(
                settings,
                custom or get_driver(settings.driver),
                "replica",
                f"replicas of {pool_name!r} ({replicas})",
            )
            replica_pool.name = f"{pool_name} replicas"
            self._replicas = replica_pool

    def _setup(self, settings: Settings, driver: Driver, role: str, name: str) -> None:
        """Set up a pool of the primaries (``role`` "primary") or of the replicas."""
        self.settings: Settings = settings
        options = settings.pool
        self._driver = driver
        self._probe = self._driver.probe  # bound once: called at every checkout
        self._driver.check(self.settings.params)
        self._needs_reset = self._driver.needs_reset
        # What a failed connect, ping or reset raises: the driver's errors and the OS's.
        self._driver_errors: tuple[type[BaseException], ...] = (OSError, *self._driver.errors)
        self._params = dict(settings.params)
        self.mode = options.mode
        self.size = options.size
        self.max_size = options.max_size
        self.timeout = options.timeout
        self.recycle = options.recycle
        self._label = name  # the pool's name and target, for messages
        self._role = role
        addresses = settings.hosts if role == "primary" else settings.replicas
        self._hosts: HostList | None = None
        if addresses:
            self._hosts = HostList(
                addresses,
                role=role,
                order=options.host_order,
                deny_seconds=options.host_deny_seconds,
                owner=name,
                give_up_when_denied=role == "replica" and options.replica_fallback,
            )
        # A lone primary gets the parameters exactly as given; list members get theirs aimed.
        self._aim = role == "replica" or len(addresses) > 1
        self._galera_check = options.galera_check
        self._max_lag = options.replica_max_lag if role == "replica" else None
        # Of several primaries, a new connection must reach a writable one: after a
        # switchover the old primary accepts connections but refuses writes.
        self._needs_writable = role == "primary" and len(addresses) > 1
        # Whether a new connection is asked about its server before it is lent.
        self._vets = self._galera_check or self._max_lag is not None or self._needs_writable
        self._replica_fallback = options.replica_fallback
        # Replica reads wait for the thread's last write (MariaDB GTIDs); see _caught_up.
        self._causal = options.causal_reads and role == "primary" and bool(settings.replicas)
        self._replicas = None
        self._pre_ping = options.pre_ping
        self._ping_interval = options.ping_interval
        self._reset_session = options.reset == "session"
        self._ping_timeout = options.ping_timeout
        self._leak_threshold = options.leak_threshold
        self._next_leak_scan = 0.0

        self._epoch = 0  # close_all() moves it on; older connections are replaced
        self._closed = False
        self._start_fresh()
        _live_pools.add(self)
        log.debug(
            "created %s pool %s (size %d, max %d)", self.mode, self._label, self.size, self.max_size
        )

    def _start_fresh(self) -> None:
        """Set up the state that belongs to one process: lock, slots, counters."""
        self._pid = os.getpid()
        # One lock guards the pool's in-memory state; the condition shares it. Plain
        # `with self._lock` is a C call, `with self._cond` a Python one: the hot path uses the lock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._handles = _HandleFactory()
        self._store: _Store = make_store(self.mode, self._handles, self.size)
        # causal_reads: each thread's last write (GTID) and the replicas that applied it.
        self._last_write = threading.local()
        self._stats = PoolStats(getattr(self, "_stats", None))  # listeners carry over
        # Counter bumps of the I/O paths (connect, close, failed validation), queued without
        # a lock and added to the stats in the next critical section (see _fold_tallies).
        self._tallies: deque[str] = deque()
        self._in_use = 0  # lent connections (acquired - released - reclaimed)
        self._waiting = 0
        # The open `with pool as conn` blocks: (frame of the with, thread, connection).
        self._blocks: list[tuple[FrameType, int, PooledConnection]] = []
        self._blocks_lock = threading.Lock()
        # Leases of connections garbage-collected without release, for _reclaim_collected().
        self._collected: deque[tuple[Any, _Handle, float, str | None]] = deque()
        # Lent connections, watched only when leak_threshold is set.
        self._lent: weakref.WeakSet[PooledConnection] = weakref.WeakSet()
        # A pool dropped without dispose() still closes its connections.
        self._finalizer = weakref.finalize(self, _close_connections, self._handles, self._driver)

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's connections without touching their sockets.

        The child shares those sockets with the parent; any byte sent, even the
        COM_QUIT of a close(), would end or corrupt the parent's sessions. The
        child starts over with no connections, fresh counters and a fresh lock
        (another thread may have held the old one at the fork).
        """
        self._finalizer.detach()
        handles = set(self._handles.live) | set(self._handles.dropped)
        handles.update(lease[1] for lease in self._collected)
        for handle in handles:
            raw, handle.raw = handle.raw, None
            if raw is not None:
                self._driver.abandon(raw)
        self._driver.after_fork()
        if self._hosts is not None:
            self._hosts.after_fork()
        self._start_fresh()

    # -- lending -----------------------------------------------------------

    def acquire(
        self, timeout: float | None = None, max_retries: int = 3, *, readonly: bool = False
    ) -> PooledConnection:
        """A validated connection, waiting at most ``timeout`` seconds (None: the pool's).

        A connection that fails validation is closed and replaced, up to
        ``max_retries`` times. Raises PoolTimeout when none is free in time.
        ``readonly``: a connection to a replica, when the config lists ``replicas``.
        """
        if max_retries.__class__ is not int or max_retries < 0:
            _check_retries(max_retries)
        if timeout is None:
            timeout = self.timeout
        elif timeout.__class__ is not float or not 0.0 <= timeout < _INF:
            timeout = _checked_timeout(timeout)
        start = monotonic()
        if readonly and self._replicas is not None:
            try:
                reader = self._replicas.acquire(timeout, max_retries)
            except (ConnectError, ValidationError) as exc:
                if not self._replica_fallback:
                    raise
                log.debug(
                    "no replica of %s is usable; reading from a primary: %s", self._label, exc
                )
            else:
                if not self._causal or self._caught_up(reader, start + timeout):
                    return reader
                self._replicas.release(reader)
                if not self._replica_fallback:
                    raise PoolTimeout(
                        f"no replica of pool {self._label} applied this thread's last write "
                        f"({self._last_write.gtid}) within {timeout:.1f}s"
                    )
            timeout = max(0.0, start + timeout - monotonic())
        if self._collected:
            self._reclaim_collected()
        if self._handles.dropped:
            self._close_dropped()
        token, handle = self._checkout(start + timeout, timeout)
        # The common case, decided with no I/O but a look at the socket: a current
        # connection seen alive moments ago, or one lent to this very thread already.
        now = monotonic()
        if not (
            self._is_current(handle, now)
            and (handle.borrows > 1 or not self._pre_ping or self._seen_alive(handle, now))
        ):
            try:
                self._make_ready(handle, start + timeout, max_retries)
                if self._closed:
                    raise PoolClosed(f"pool {self._label} was closed while connecting")
            except BaseException:
                self._checkin(token, handle, failed=True)
                raise
            now = monotonic()
        waited = now - start
        self._stats.record_wait(waited)  # needs no lock (see PoolStats)
        if self._leak_threshold is None:
            conn = PooledConnection(self, token, handle, now, None, waited)
        else:
            origin = "".join(traceback.format_stack(limit=_LEAK_STACK_DEPTH)[:-1])
            conn = PooledConnection(self, token, handle, now, origin, waited)
            with self._lock:
                self._lent.add(conn)
            self._report_leaks()
        log.debug("acquired a connection from %s", self._label)
        return conn

    def connection(
        self, timeout: float | None = None, *, readonly: bool = False
    ) -> PooledConnection:
        """Like ``acquire()``; the connection is also a context manager that gives itself back."""
        return self.acquire(timeout, readonly=readonly)

    def release(self, conn: PooledConnection | None) -> None:
        """Give a connection back, rolling back any open transaction first.

        ``release(None)`` and releasing twice do nothing.
        """
        if conn is None:
            return
        if self._is_readonly(conn):
            assert self._replicas is not None
            self._replicas.release(conn)
            return
        if conn.__class__ is not PooledConnection or conn._pool is not self:
            raise PoolError(
                f"release() got {conn!r}, which is not a connection of pool {self._label}"
            )
        try:
            # list.pop is atomic, so two racing releases cannot both get the lease.
            token, handle = conn._lease.pop()
        except IndexError:
            log.debug("ignored a second release of a connection of %s", self._label)
            return
        conn._raw = None
        if handle.factory is not self._handles:
            log.debug("ignored the release of a connection from before os.fork()")
            return
        self._checkin(token, handle, failed=False, since=conn._since, waited=conn._waited)
        log.debug("released a connection to %s", self._label)
        if self._leak_threshold is not None:
            with self._lock:
                self._lent.discard(conn)
            held = handle.returned - conn._since
            if held > self._leak_threshold and not conn._reported:
                log.warning(
                    "a connection of %s was held for %.1fs (leak_threshold %.1fs); "
                    "it was acquired at:\n%s",
                    self._label,
                    held,
                    self._leak_threshold,
                    conn._origin,
                )

    def _is_readonly(self, conn: PooledConnection) -> bool:
        """Whether ``conn`` came from this pool's replicas."""
        return self._replicas is not None and getattr(conn, "_pool", None) is self._replicas

    # `with pool as conn` calls __enter__ and __exit__ on the pool itself, so the pool must
    # tell which block an exit ends. The thread cannot: FastAPI runs a sync generator
    # dependency's entry and exit as two thread-pool calls, on any two threads, and a
    # thread may meanwhile enter another request's block. The frame can: a `with`
    # statement calls both from the frame it is written in (a generator's frame stays the
    # same object whichever thread resumes it), and blocks in one frame nest. So an exit
    # ends the innermost block entered from its own frame; only an exit called from
    # another frame (contextlib.ExitStack and other helpers) ends the innermost block
    # entered on its thread.

    def __enter__(self) -> PooledConnection:
        conn = self.acquire()
        block = (sys._getframe(1), threading.get_ident(), conn)
        with self._blocks_lock:
            self._blocks.append(block)
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(self._end_block(sys._getframe(1)))

    def _end_block(self, frame: FrameType) -> PooledConnection:
        """The connection of the `with pool` block that an exit called from ``frame`` ends."""
        thread = threading.get_ident()
        with self._blocks_lock:
            blocks = self._blocks
            for i in range(len(blocks) - 1, -1, -1):
                if blocks[i][0] is frame:
                    return blocks.pop(i)[2]
            for i in range(len(blocks) - 1, -1, -1):
                if blocks[i][1] == thread:
                    return blocks.pop(i)[2]
        raise PoolError(
            f"pool.__exit__() without a matching pool.__enter__() on pool {self._label}"
        )

    def close_thread_connection(self) -> None:
        """Persistent mode: close the calling thread's connection and free its slot.

        If the thread is still using it, it is closed when given back.
        Does nothing in shared mode, where connections are not bound to threads.
        """
        if self._replicas is not None:
            self._replicas.close_thread_connection()
        handle = self._store.thread_handle()
        if handle is None:
            return
        with self._lock:
            if handle.borrows:
                handle.close_on_release = True
                return
        self._store.forget_thread()
        self._close_dropped()

    def close_all(self) -> None:
        """Close every idle connection now, and every lent one when it comes back.

        The pool stays usable and opens new connections as needed.
        """
        if self._replicas is not None:
            self._replicas.close_all()
        with self._lock:
            self._epoch += 1
            raws = [self._take_raw(h) for h in self._handles.live if not h.borrows and h.raw]
            self._stats.closed += len(raws)
            self._store.close_idle()
        for raw in raws:
            self._driver.close(raw)
        self._close_dropped()
        log.debug("closed %d idle connections of %s", len(raws), self._label)

    def dispose(self) -> None:
        """Close the pool for good: waiters and later calls get PoolClosed."""
        if self._replicas is not None:
            self._replicas.dispose()
        with self._lock:
            self._closed = True
            self._cond.notify_all()
        self.close_all()
        if not any(h.borrows for h in list(self._handles.live)):
            self._finalizer()  # nothing lent out: let the driver go too

    def get_stats(self) -> dict[str, Any]:
        """Counters and current figures; see the README for each key."""
        if self._collected:
            self._reclaim_collected()
        if self._handles.dropped:
            self._close_dropped()  # connections of threads that ended since the last call
        if self._leak_threshold is not None:
            self._report_leaks()
        with self._lock:
            self._fold_tallies()
            stats = self._stats.snapshot()
            handles = list(self._handles.live)
            in_use = self._in_use
            waiting = self._waiting
        open_count = sum(1 for h in handles if h.raw is not None)
        idle = sum(1 for h in handles if h.raw is not None and not h.borrows)
        stats.update(
            name=self.name,
            total_connections=open_count,
            pool_size=idle,
            max_size=self.max_size,
            in_use=in_use,
            waiting=waiting,
            size=self.size,
            mode=self.mode,
            hosts=self._host_figures(handles),
        )
        if self._replicas is not None:
            replica_stats = self._replicas.get_stats()
            stats["hosts"].update(replica_stats.pop("hosts"))
            stats["replicas"] = replica_stats
        return stats

    def _host_figures(self, handles: list[_Handle]) -> dict[str, dict[str, Any]]:
        """``get_stats()["hosts"]``: each host's connections and deny state."""
        if self._hosts is None:
            return {}
        figures: dict[str, dict[str, Any]] = {}
        for key, values in self._hosts.figures().items():
            figures[key] = {"role": values.pop("role"), "open": 0, "in_use": 0, **values}
        for handle in handles:
            host = handle.host
            if handle.raw is not None and host is not None and host.key in figures:
                figures[host.key]["open"] += 1
                if handle.borrows:
                    figures[host.key]["in_use"] += 1
        return figures

    def check(self, timeout: float = 5.0) -> dict[str, Any]:
        """One round trip to the server on an idle (or new) connection; never raises for it.

        Returns ``ok``, ``latency_s`` (the round trip, None when it failed),
        ``error`` (None, or what went wrong), ``in_use`` and ``waiting`` (after
        the check), and the ``name``, ``host``, ``port`` and ``database`` checked
        (with a host list, the host of the connection used, or the first one).
        Takes at most about ``timeout`` seconds, connecting included.
        """
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (0 < timeout < _INF)
        ):
            raise ValueError(
                f"check(): timeout must be a positive number of seconds (got {timeout!r})"
            )
        deadline = monotonic() + timeout
        latency: float | None = None
        error: str | None = None
        params = self._params
        host, port = params.get("host"), params.get("port")
        if self.settings.driver == "sqlite":
            host = params.get("path")
        elif self._hosts is not None and self.settings.hosts:
            first = self.settings.hosts[0]
            host, port = first.host, first.port
        try:
            # One retry: a connection the server dropped is replaced rather than reported.
            conn = self.acquire(timeout=timeout, max_retries=1)
        except Exception as exc:  # a down server, a full pool, a closed pool: all are answers
            error = self._scrub(exc) or type(exc).__name__
        else:
            handle = conn._lease[0][1]
            if handle.host is not None:
                host, port = handle.host.address.host, handle.host.address.port
            try:
                limit = max(deadline - monotonic(), _MIN_PING_TIMEOUT)
                started = monotonic()
                with self._driver.bounded(conn._raw, limit):
                    self._driver.ping(conn._raw)
                latency = monotonic() - started
            except Exception as exc:
                error = f"the server did not answer: {self._scrub(exc) or type(exc).__name__}"
                self._retire(handle, "broken")
            finally:
                self.release(conn)
        with self._lock:
            in_use, waiting = self._in_use, self._waiting
        return {
            "ok": error is None,
            "latency_s": latency,
            "error": error,
            "in_use": in_use,
            "waiting": waiting,
            "name": self.name,
            "host": host,
            "port": port,
            "database": params.get("database"),
        }

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool {self.mode} {self._label} size={self.size} max_size={self.max_size}>"
        )

    # -- the critical sections ---------------------------------------------

    def _checkout(self, deadline: float, timeout: float) -> tuple[Any, _Handle]:
        """Take a handle from DBUtils, waiting for a free slot until ``deadline``."""
        store = self._store
        # Once in line (counted in _waiting from its first wait until it leaves), a thread
        # may take whatever frees up.
        queued = False
        try:
            while True:
                with self._lock:  # critical section: decide only (take, wait or give up)
                    if self._closed:
                        raise PoolClosed(f"pool {self._label} is closed")
                    # Waiting threads go first: a newcomer takes a connection only when there
                    # is one for every waiter too, or a busy pool starves its waiters.
                    free = store.idle + self.max_size - len(self._handles.live)
                    if store.owns_handle() or free > (0 if queued else self._waiting):
                        if queued:
                            queued = False
                            self._waiting -= 1
                        token, handle = store.take()
                        handle.borrows += 1
                        # Counted as lent from here; a checkout whose connect or check fails
                        # is taken off both counts again in _checkin(failed=True).
                        self._in_use += 1
                        self._stats.acquired += 1
                        self._stats.requests += 1
                        return token, handle
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        if queued:
                            queued = False
                            self._waiting -= 1  # before the message, which counts the others
                        self._stats.timeouts += 1
                        self._stats.requests += 1
                        raise PoolTimeout(self._timeout_message(timeout))
                    if not queued:
                        queued = True
                        self._waiting += 1
                    self._cond.wait(min(remaining, _WAIT_SLICE))
                # Outside the critical section: close what went away, which frees slots.
                if self._collected:
                    self._reclaim_collected()
                if self._handles.dropped:
                    self._close_dropped()
        finally:
            if queued:  # left the line otherwise: the pool was closed, or the wait interrupted
                with self._lock:
                    self._waiting -= 1

    def _checkin(
        self,
        token: Any,
        handle: _Handle,
        *,
        failed: bool,
        since: float | None = None,
        waited: float = 0.0,
    ) -> None:
        """Reset a handle's connection outside the lock, then hand it back to DBUtils.

        ``since``: when it was lent (None: it never was) and ``waited``, how long
        its acquire() took: the histograms count both here.
        """
        raw = handle.raw
        now = monotonic()
        if raw is not None and handle.borrows == 1:
            reason = self._retire_reason(handle, failed, now)
            if self._causal and reason not in _HOST_UNUSABLE and reason not in ("broken", "lost"):
                self._note_last_write(raw)  # before a reset or close ends the session
            if reason is not None:
                self._retire(handle, reason)
            elif self._reset_session or self._needs_reset(raw):
                try:
                    # The reset is bounded like a ping: a silent server must not hold a release.
                    with self._driver.bounded(raw, self._ping_timeout):
                        self._driver.discard_pending(raw, self._ping_timeout)
                        if self._reset_session:
                            self._driver.reset_session(raw)
                        else:
                            self._driver.rollback(raw)
                except self._driver_errors as exc:
                    log.debug("reset failed on a connection of %s: %s", self._label, exc)
                    self._retire(handle, "broken")
                now = monotonic()
        handle.returned = now
        with self._lock:  # critical section
            if self._tallies:
                self._fold_tallies()
            self._in_use -= 1
            if failed:
                self._stats.acquired -= 1
            else:
                self._stats.released += 1
            if since is not None:
                self._stats.returned(waited, now - since)
            handle.borrows -= 1
            self._store.put(token, handle)
            if self._waiting:
                self._cond.notify()
        if since is not None and self._stats.listeners:
            self._stats.tell_returned(waited, now - since)
        if handle.close_on_release and not handle.borrows:
            handle.close_on_release = False
            self._store.forget_thread()
        if self._handles.dropped:
            self._close_dropped()
        if self._closed and not any(h.borrows for h in list(self._handles.live)):
            self._finalizer()  # the last connection lent before dispose() is back

    # -- the reuse rule ------------------------------------------------------
    #
    # A connection is reused when it is current (open, not made before the last
    # close_all(), not past its recycle time, the pool not closed, its server not found
    # unable to do its job since it was opened) and, with pre_ping, seen alive (given
    # back less than ping_interval ago, its socket clean, no check of its replica's lag
    # due), else pinged.

    def _stale_reason(self, handle: _Handle, now: float) -> str | None:
        """Why an open connection is no longer current, or None.

        "closed", "recycled", or "stale" when its host was found unable to do its job
        after the connection was opened (see HostList.unusable).
        """
        if self._closed or handle.epoch != self._epoch:
            return "closed"
        if now >= handle.expires:
            return "recycled"
        host = handle.host
        if host is not None and handle.created <= host.stale_before:
            return "stale"
        return None

    def _is_current(self, handle: _Handle, now: float) -> bool:
        """Whether the handle holds a connection that may be reused, validation aside."""
        return handle.raw is not None and self._stale_reason(handle, now) is None

    def _seen_alive(self, handle: _Handle, now: float) -> bool:
        """Whether a connection needs no ping: back moments ago, and its socket looks fine."""
        return (
            now - handle.returned < self._ping_interval
            and (self._max_lag is None or not self._host_check_due(handle, now))
            and self._probe(handle.raw) is True
        )

    def _host_check_due(self, handle: _Handle, now: float) -> bool:
        """Whether the replica of this connection is due for its lag check (unclaimed)."""
        host = handle.host
        return (
            self._max_lag is not None
            and host is not None
            and now - host.checked_at >= self._ping_interval
        )

    def _retire_reason(self, handle: _Handle, failed: bool, now: float) -> str | None:
        """Why a connection given back must be closed rather than kept, or None."""
        if failed:
            return "broken"
        # The last statement's error: the server is read-only, not ready, or gone. A
        # replica is read-only by design: a write there is the caller's mistake.
        code = self._driver.statement_error(handle.raw)
        if code is not None:
            verdict = error_verdict(code)
            if verdict is not None and not (verdict == "read_only" and self._role == "replica"):
                return verdict
        reason = self._stale_reason(handle, now)
        # An unlocked read of full(): a stale answer at worst keeps or closes one connection
        # too many, and DBUtils drops a handle given back to a full pool in any case.
        if reason is None and self._store.full():
            reason = "overflow"
        return reason

    def _timeout_message(self, timeout: float) -> str:
        held = len(self._handles.live)
        spread = ""
        if self._hosts is not None and len(self._hosts) > 1:
            counts: dict[str, int] = {}
            for handle in self._handles.live:
                if handle.raw is not None and handle.host is not None:
                    counts[handle.host.key] = counts.get(handle.host.key, 0) + 1
            spread = "".join(f"; {key}: {count}" for key, count in counts.items())
        text = (
            f"Connection pool timeout after {timeout:.1f}s "
            f"({held}/{self.max_size} connections in use, {self._waiting} waiting{spread})"
        )
        return f"{text} in pool {self._label}{self._store.timeout_hint}"

    # -- I/O outside the lock ------------------------------------------------

    def _make_ready(self, handle: _Handle, deadline: float, max_retries: int) -> None:
        """Give the handle a live connection: reuse, validate, or (re)open it."""
        if handle.borrows > 1 and handle.raw is not None:
            return  # persistent mode, lent again to the same thread: it is in use right now
        failures = 0
        while True:
            if handle.raw is not None:
                reason = self._stale_reason(handle, monotonic())
                if reason is not None:
                    self._retire(handle, reason)
            if handle.raw is None:
                try:
                    self._open(handle, deadline)
                    return
                except ConnectError:
                    raise
                except (HostsFailed, *self._driver_errors) as exc:  # type: ignore[misc]
                    failures += 1
                    # Primaries that answer but cannot take writes now (a switchover in
                    # progress, a cluster without quorum) are waited for until the deadline.
                    waiting = (
                        self._role == "primary"
                        and isinstance(exc, HostsFailed)
                        and exc.refused_by_vet
                    )
                    if (failures > max_retries and not waiting) or monotonic() >= deadline:
                        raise ConnectError(self._connect_failure(exc, failures)) from _cause(exc)
                    pause = (
                        _CONNECT_BACKOFF * min(2 ** (failures - 1), 10)
                        if waiting
                        else _CONNECT_BACKOFF
                    )
                    sleep(min(pause, max(0.0, deadline - monotonic())))
                    continue
            if not self._pre_ping:
                return
            problem = self._check(handle, deadline)
            if problem is None:
                return
            reason, why = problem
            failures += 1
            self._tallies.append("validation_failures")
            log.debug(
                "a connection of %s failed validation (%s); replacing it",
                self._label,
                why or reason,
            )
            self._retire(handle, reason, why)
            if failures > max_retries:
                raise ValidationError(
                    f"no valid connection from {self._label} after {failures} attempts"
                )

    def _check(self, handle: _Handle, deadline: float) -> tuple[str, str | None] | None:
        """Check a connection: a socket look when it was used moments ago, else a ping.

        None when it may be lent, else why not: (retire reason, what was seen). The
        real ping asks a Galera node whether it is ready (``galera_check``) and a
        replica how far it lags (``replica_max_lag``, once per ``ping_interval`` per
        host). It waits at most ``ping_timeout``, and no longer than the acquire
        deadline allows (but long enough for a healthy server to answer).
        """
        raw = handle.raw
        now = monotonic()
        if self._seen_alive(handle, now):
            return None
        if self._probe(raw) is False:
            return "broken", None  # closed by the server: no ping can help
        host = handle.host
        lag_due = (
            self._max_lag is not None
            and host is not None
            and self._hosts is not None
            and self._hosts.due_for_check(host, self._ping_interval)
        )
        limit = max(min(self._ping_timeout, deadline - now), _MIN_PING_TIMEOUT)
        try:
            with self._driver.bounded(raw, limit):
                if self._galera_check:
                    why = galera_not_ready(raw)
                    if why is not None:
                        return "not_ready", why
                else:
                    self._driver.ping(raw)
                if lag_due and self._max_lag is not None:
                    why = replica_lag_problem(raw, self._max_lag, self._driver.errors)
                    if why is not None:
                        return "lagging", why
        except Exception:
            if error_verdict(self._driver.statement_error(raw)) == "not_ready":
                return "not_ready", None
            return "broken", None
        return None

    def _open(self, handle: _Handle, deadline: float) -> None:
        started = monotonic()
        remaining = deadline - started
        host: HostState | None = None
        try:
            if self._hosts is None:
                raw = self._driver.connect(self._params, timeout=max(remaining, 0.0))
            else:
                raw, host = self._hosts.connect(
                    self._connect_to,
                    deadline,
                    is_permanent=self._driver.is_permanent,
                    describe_error=self._explain,
                    errors=self._driver_errors,
                    vet=(lambda raw, state: self._vet(raw, state, deadline))
                    if self._vets
                    else None,
                )
        except HostsFailed as exc:
            self._tallies.extend(["connect_failures"] * exc.tried)
            if not exc.retryable:
                raise ConnectError(self._connect_failure(exc, None)) from _cause(exc)
            raise
        except self._driver_errors as exc:
            self._tallies.append("connect_failures")
            if self._driver.is_permanent(exc):
                raise ConnectError(self._connect_failure(exc, None)) from exc
            raise
        except (TypeError, AttributeError, ValueError) as exc:
            # How the drivers reject an unknown or ill-typed connection parameter.
            raise ConfigError(
                f"the {self.settings.driver} driver rejected the connection parameters "
                f"of pool {self._label}: {self._scrub(exc)}"
            ) from exc
        now = monotonic()
        handle.raw = raw
        handle.host = host
        handle.created = handle.returned = now
        handle.epoch = self._epoch
        if self.recycle:
            handle.expires = now + self.recycle * (1.0 - random.uniform(0.0, _RECYCLE_JITTER))
        self._tallies.append("created")
        self._stats.record_connect(now - started)  # needs no lock (see PoolStats)
        if host is None:
            log.debug("opened a connection to %s", self._label)
        else:
            log.debug("opened a connection to %s host %s of %s", host.role, host.key, self._label)

    def _vet(self, raw: Any, host: HostState, deadline: float) -> str | None:
        """Why a new connection's server cannot do this pool's job, or None; closes it if so.

        Galera nodes must be ready (``galera_check``), one of several primaries must
        take writes, a replica must not lag (``replica_max_lag``; asked once per
        ``ping_interval`` per host, and again whenever the host is denied).
        """
        hosts = self._hosts
        assert hosts is not None
        lag_due = self._max_lag is not None and (
            hosts.is_denied(host) or hosts.due_for_check(host, self._ping_interval)
        )
        why: str | None = None
        reason = ""
        limit = max(min(self._ping_timeout, deadline - monotonic()), _MIN_PING_TIMEOUT)
        try:
            with self._driver.bounded(raw, limit):
                if self._galera_check:
                    why, reason = galera_not_ready(raw), "not_ready"
                if why is None and self._needs_writable and server_read_only(raw):
                    why, reason = "read_only is ON", "read_only"
                if why is None and lag_due and self._max_lag is not None:
                    why = replica_lag_problem(raw, self._max_lag, self._driver.errors)
                    reason = "lagging"
        except BaseException:
            self._driver.close(raw)
            raise
        if why is None:
            return None
        self._driver.close(raw)
        self._tallies.extend(("created", "closed", _RETIRE_COUNTERS[reason]))
        log.debug(
            "closed a new connection of %s to %s (%s): %s", self._label, host.key, reason, why
        )
        return why

    # -- causal reads ---------------------------------------------------------
    #
    # A primary connection given back tells its session's last GTID (@@last_gtid,
    # MariaDB), kept per thread. The thread's next replica connection waits for that
    # GTID (MASTER_GTID_WAIT) within the acquire deadline before it is lent; one that
    # does not catch up in time is given back and the read goes to a primary.

    def _note_last_write(self, raw: Any) -> None:
        """Keep, for the calling thread, the GTID of the last write of this session."""
        try:
            with self._driver.bounded(raw, self._ping_timeout):
                self._driver.discard_pending(raw, self._ping_timeout)  # a result left unread
                cur = raw.cursor()
                try:
                    cur.execute("SELECT @@last_gtid")
                    rows = cur.fetchall()
                finally:
                    cur.close()
        except self._driver_errors as exc:
            log.debug(
                "causal_reads: cannot read @@last_gtid from %s (MariaDB only): %s", self._label, exc
            )
            return
        gtid = str(rows[0][0] or "") if rows else ""
        if gtid and gtid != getattr(self._last_write, "gtid", None):
            self._last_write.gtid = gtid
            self._last_write.seen = {}  # replicas known to have applied it: none yet

    def _caught_up(self, reader: PooledConnection, deadline: float) -> bool:
        """Whether the replica of ``reader`` applied the thread's last write by ``deadline``."""
        gtid = getattr(self._last_write, "gtid", None)
        if gtid is None:
            return True
        raw = reader.dbapi_connection
        key = reader._lease[-1][1].host if reader._lease else None
        seen: dict[Any, str] = self._last_write.seen
        if key is not None and seen.get(key) == gtid:
            return True
        seconds = max(0.0, deadline - monotonic())
        try:
            with self._driver.bounded(raw, seconds + self._ping_timeout):
                cur = raw.cursor()
                try:
                    cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (gtid, seconds))
                    rows = cur.fetchall()
                finally:
                    cur.close()
        except self._driver_errors as exc:
            log.debug("causal_reads: MASTER_GTID_WAIT failed on %s: %s", self._label, exc)
            rows = []
        done = bool(rows) and rows[0][0] == 0
        with self._lock:
            self._stats.causal_waits += 1
            if not done:
                self._stats.causal_timeouts += 1
        if done and key is not None:
            seen[key] = gtid
        return done

    def _connect_to(self, address: Address, seconds: float) -> Any:
        params = address.apply(self._params) if self._aim else self._params
        return self._driver.connect(params, timeout=seconds)

    def _retire(self, handle: _Handle, reason: str, why: str | None = None) -> None:
        """Close a handle's connection; the handle itself stays to be refilled or dropped.

        A reason that says the server cannot do its job denies its host too.
        """
        raw = handle.raw
        host = handle.host
        if reason in _HOST_UNUSABLE and host is not None and self._hosts is not None:
            if why is None:
                code = self._driver.statement_error(raw)
                why = f"a statement failed with error {code} ({_HOST_UNUSABLE[reason]})"
            self._hosts.unusable(host, why)
        handle.raw = None
        handle.expires = float("inf")
        if raw is not None:
            self._driver.close(raw)
            self._tallies.append("closed")
        counter = _RETIRE_COUNTERS.get(reason)
        if counter is not None:
            self._tallies.append(counter)
        if host is None:
            log.debug("closed a connection of %s (%s)", self._label, reason)
        else:
            log.debug("closed a connection of %s to %s (%s)", self._label, host.key, reason)

    def _fold_tallies(self) -> None:
        """Add the queued counter bumps to the stats; called with the lock held."""
        tallies, stats = self._tallies, self._stats
        while tallies:
            name = tallies.popleft()
            setattr(stats, name, getattr(stats, name) + 1)

    @staticmethod
    def _take_raw(handle: _Handle) -> Any:
        raw, handle.raw = handle.raw, None
        return raw

    def _close_dropped(self) -> None:
        """Close the connections of the handles DBUtils let go, and free their slots."""
        queue = self._handles.dropped
        dead: list[_Handle] = []
        while queue:
            try:
                dead.append(queue.popleft())
            except IndexError:
                break
        if not dead:
            return
        with self._lock:
            raws = [raw for raw in map(self._take_raw, dead) if raw is not None]
            for handle in dead:
                self._handles.live.discard(handle)
            self._stats.closed += len(raws)
            if self._waiting:
                self._cond.notify(len(dead))
        for raw in raws:
            self._driver.close(raw)

    def _connect_failure(self, exc: BaseException, attempts: int | None) -> str:
        text = f"cannot connect to {self._label}"
        if attempts is not None:
            text += f" after {attempts} attempts"
        if isinstance(exc, HostsFailed):
            return f"{text}: {exc.describe()}"
        return f"{text}: {self._explain(exc)}"

    def _explain(self, exc: BaseException) -> str:
        """A connect error in plain words, then the driver's own (password blanked)."""
        text = self._scrub(exc) or type(exc).__name__
        cause = self._driver.explain(exc)
        return f"{cause}: {text}" if cause else text

    def _reclaim_collected(self) -> None:
        """Close the connections garbage-collected without release, and free their slots.

        What such a connection was doing is unknown (a half-read result, an open
        transaction), so it is closed rather than reused.
        """
        collected = self._collected
        while collected:
            try:
                token, handle, since, origin = collected.popleft()
            except IndexError:
                break
            if handle.factory is not self._handles:
                continue  # lent before os.fork(): the parent's business
            with self._lock:  # critical section: decide and detach under the lock
                raw = None
                if handle.borrows == 1:  # else the owning thread uses it again right now
                    raw, handle.raw = handle.raw, None
                    handle.expires = float("inf")
                handle.borrows -= 1
                self._in_use -= 1
                self._stats.reclaimed += 1
                if raw is not None:
                    self._stats.closed += 1
                self._store.put(token, handle)
                if self._waiting:
                    self._cond.notify()
            if raw is not None:
                self._driver.close(raw)
            held = monotonic() - since
            if origin is None:
                origin = "(set leak_threshold to record where connections are acquired)\n"
            log.warning(
                "a connection of %s was garbage-collected after %.1fs without being "
                "given back; its slot is reclaimed and it is closed; it was acquired "
                "at:\n%s",
                self._label,
                held,
                origin,
            )

    def _report_leaks(self) -> None:
        """Warn, once each, about connections held past ``leak_threshold`` and not back yet."""
        threshold = self._leak_threshold
        now = monotonic()
        if threshold is None or now < self._next_leak_scan:
            return
        self._next_leak_scan = now + min(threshold, _LEAK_SCAN_INTERVAL)
        with self._lock:  # critical section: in-memory scan only
            late = [c for c in self._lent if not c._reported and now - c._since > threshold]
            for conn in late:
                conn._reported = True
            self._stats.leaks_reported += len(late)
        for conn in late:
            log.warning(
                "a connection of %s has been held for %.1fs and is not back yet "
                "(leak_threshold %.1fs); it was acquired at:\n%s",
                self._label,
                now - conn._since,
                threshold,
                conn._origin,
            )

    def _scrub(self, exc: BaseException) -> str:
        """An error's text with the password blanked, should a driver ever echo it."""
        return scrub_secrets(str(exc), self._params)


def _check_retries(max_retries: Any) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):
        raise TypeError(f"acquire(): max_retries must be an integer (got {max_retries!r})")
    if max_retries < 0:
        raise ValueError(f"acquire(): max_retries cannot be negative (got {max_retries})")


def _checked_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"acquire(): timeout must be a number of seconds or None (got {timeout!r})")
    if not math.isfinite(timeout):
        raise ValueError(f"acquire(): timeout must be a finite number of seconds (got {timeout})")
    if timeout < 0:
        raise ValueError(f"acquire(): timeout cannot be negative (got {timeout})")
    return float(timeout)


def _cause(exc: BaseException) -> BaseException:
    """The driver's error behind a failed connect, to chain a ConnectError to."""
    if isinstance(exc, HostsFailed) and exc.last is not None:
        return exc.last
    return exc


def _default_name(settings: Settings, from_arguments: bool) -> str:
    """The config name, or for a pool given its server in code, host:port/database (or the file)."""
    if settings.source is not None or not from_arguments:
        return settings.config_name
    params = settings.params
    if settings.driver == "sqlite":
        return str(params.get("path") or settings.config_name)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 3306}/{params.get('database') or ''}"


_live_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        if pool._pid != os.getpid():
            pool._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_connections(handles: _HandleFactory, driver: Driver) -> None:
    for handle in list(handles.live):
        raw, handle.raw = handle.raw, None
        if raw is not None:
            driver.close(raw)
    driver.dispose()


def make_pool(mode: str | None = None, **options: Any) -> ConnectionPool:
    """A ConnectionPool in ``mode`` "shared" (PooledDB) or "persistent" (PersistentDB).

    Without ``mode``, the config entry's ``pool: mode`` applies, else "shared".
    """
    if mode is not None and mode not in MODES:
        # Checked again by PoolOptions; here the message speaks of make_pool's argument.
        valid = ", ".join(repr(m) for m in MODES)
        raise ConfigError(f"unknown pool mode {mode!r}; valid modes: {valid}")
    return ConnectionPool(mode=mode, **options)


_global_pool: ConnectionPool | None = None
_global_lock = threading.Lock()


def get_global_pool(
    size: int | None = None,
    config_name: str = "primary",
    timeout: float | None = None,
    max_overflow: int | None = None,
    recycle: float | None = None,
    driver: str | None = None,
) -> ConnectionPool:
    """The process-wide pool, made by the first call; later calls return it whatever they pass.

    Options left out come from the config entry, then from the defaults
    (size 10, timeout 30, max_overflow 5, recycle 3600; driver pymysql, or the
    embedded SQLite database when there is no config file at all).
    """
    global _global_pool
    pool = _global_pool
    if pool is None:
        with _global_lock:
            pool = _global_pool
            if pool is None:
                pool = _global_pool = ConnectionPool(
                    size=size,
                    config_name=config_name,
                    timeout=timeout,
                    max_overflow=max_overflow,
                    recycle=recycle,
                    driver=driver,
                )
    return pool
