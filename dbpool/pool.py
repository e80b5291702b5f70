"""The connection pool: its state, checkout and return, over two DBUtils strategies.

One interface for both modes (shared, on PooledDB; persistent, on PersistentDB), whose
handles and stores are in _handles.py. The rest of the pool lives beside this module:
what an application asks of a running pool besides borrowing (close, drain, dispose,
wait, resize, listeners, figures, check) in _controls.py; which servers connections
may use (host checks, replica and causal reads) in _routing.py; leak watching in
_leaks.py; the min_idle and max_idle upkeep in _maintenance.py.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import sys
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic, sleep
from types import TracebackType
from typing import Any, Literal, ParamSpec, overload

from . import _controls, _leaks, _maintenance, _routing
from ._controls import EVENTS
from ._handles import _Handle, _HandleFactory, _Store, make_store
from ._leaks import STACK_DEPTH as _LEAK_STACK_DEPTH
from ._maintenance import Maintainer
from ._routing import HOST_UNUSABLE as _HOST_UNUSABLE
from ._routing import MIN_PING_TIMEOUT as _MIN_PING_TIMEOUT
from .config import Settings, load_settings, scrub_secrets
from .connection import PooledConnection
from .drivers import Driver, connect_parameters, get_driver
from .errors import (
    ConfigError,
    ConnectError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    TooManyRequests,
    ValidationError,
)
from .hosts import (
    HostList,
    HostsFailed,
    HostState,
    error_verdict,
)
from .stats import RETIRE_COUNTERS as _RETIRE_COUNTERS
from .stats import PoolStats

__all__ = ["ConnectionPool", "PooledConnection", "get_global_pool", "make_pool"]

log = logging.getLogger("dbpool")
_INF = float("inf")
_DEBUG = logging.DEBUG
# Whether the hot path's debug lines are wanted, at the cost of one dict look-up: a
# logger keeps its isEnabledFor() answers in its ``_cache`` dict, which logging empties
# (the same dict, for every logger) whenever a level or logging.disable() changes. So an
# answer found there is current, and a missing one is asked for again. Where a logging
# module keeps no such dict, nothing is ever found and isEnabledFor() always decides.
_log_answers: dict[int, bool] = getattr(log, "_cache", {})

# Longest single sleep of a waiter, so that slots freed outside any call
# (a thread that ended while holding a persistent connection) are noticed.
_WAIT_SLICE = 0.05
# Returns queued for the histograms by threads that keep their connection (see _park):
# when this many wait, the thread that queued the last one takes the lock to count them.
_RETURNS_BATCH = 256
# Connections opened together should not all expire in the same second.
_RECYCLE_JITTER = 0.05
# Pause between two failed connects, so a refusing server is not hammered.
_CONNECT_BACKOFF = 0.05
# Growth while connections are lent (shared mode, see _should_grow): more than one
# connection is opened at once only after this long without any connection coming back.
_GROW_QUIET = 0.05


class _Waiter:
    """Marks a thread waiting in acquire() (see ConnectionPool._checkout)."""

    __slots__ = ("__weakref__",)


class _ThreadKey(threading.local):
    """A thread's key in a pool's ``_parked``: each thread gets an object of its own."""

    def __init__(self) -> None:
        self.key = _Waiter()


class _BlockExit:
    """The exit of one `with pool` statement: it gives back that block's connection."""

    __slots__ = ("conn", "opener", "pool")

    def __init__(self, pool: ConnectionPool, opener: tuple[int, int]) -> None:
        self.pool = pool
        self.opener = opener  # (id, instruction) of the frame of the `with` statement
        self.conn: PooledConnection | None = None

    def __call__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self.conn
        if conn is None:
            self.pool.release(self.pool._end_block())
            return
        # Kept until release() took it: a release cut at its first instruction leaves it
        # here, for __del__ to hand to the pool once the statement drops this exit.
        self.pool.release(conn)
        self.conn = None

    def __del__(self) -> None:
        # Dropped by its `with` statement with the connection still in it: the exit was
        # cut at its start. The connection is closed and its slot freed at the pool's
        # next call, even while the borrower still holds it (in persistent mode its
        # thread's next acquire would otherwise take it as a nested borrow).
        conn = self.conn
        if conn is not None:
            conn._raw = None
            conn._abandon()


def _exit_block(
    pool: ConnectionPool,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """``ConnectionPool.__exit__`` called on the class (contextlib.ExitStack does)."""
    pool.release(pool._end_block())


class _WithExit:
    """``ConnectionPool.__exit__``: a new _BlockExit each time a `with` statement looks it up.

    A `with` statement looks up ``__exit__`` and then calls ``__enter__``, in the same
    instruction of its frame and with nothing run between: ``__enter__`` recognizes the
    exit looked up for it by that frame and instruction, and puts the connection in it.
    """

    @overload
    def __get__(self, pool: None, owner: type[Any]) -> Callable[..., None]: ...

    @overload
    def __get__(self, pool: ConnectionPool, owner: type[Any]) -> _BlockExit: ...

    def __get__(
        self, pool: ConnectionPool | None, owner: type[Any]
    ) -> _BlockExit | Callable[..., None]:
        if pool is None:
            return _exit_block
        caller = sys._getframe(1)
        exit = _BlockExit(pool, (id(caller), caller.f_lasti))
        pool._with_exit.pending = exit
        return exit


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
    a connection not given back is reported. min_idle: connections kept open
    and idle ahead of demand; wait: make the constructor wait for them.
    max_idle: seconds after which an idle connection above min_idle is closed.
    order: "fifo" or "lifo" lending of idle connections. max_waiting: callers
    allowed to wait at once (0: any). max_usage: lends after which a connection
    is closed (0: no limit). init_sql, configure: the session set-up after each
    connect and session reset. host_order, host_deny_seconds, galera_check,
    replica_fallback, replica_max_lag: how a host list and its replicas are
    used (see the README's "Many servers"). name: the pool's name in stats,
    logs and metrics (default: the config name, or host:port/database for a
    server given in code). Other keywords are connection
    parameters (host, which may be a list, replicas, port, user, password,
    database, charset, path, url, ...) that override the config entry. Options
    not given come from the entry's ``pool:`` section, then from the defaults.
    ``config=False`` reads no config file.
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
        config: str | os.PathLike[str] | Literal[False] | None = None,
        mode: str | None = None,
        pre_ping: bool | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        reset: str | None = None,
        leak_threshold: float | None = None,
        min_idle: int | None = None,
        max_idle: float | None = None,
        order: str | None = None,
        max_waiting: int | None = None,
        max_usage: int | None = None,
        init_sql: list[str] | tuple[str, ...] | None = None,
        configure: Callable[[Any], object] | str | None = None,
        wait: bool | None = None,
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
            "min_idle": min_idle,
            "max_idle": max_idle,
            "order": order,
            "max_waiting": max_waiting,
            "max_usage": max_usage,
            "init_sql": init_sql,
            "configure": configure,
            "wait": wait,
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
            parameters=connect_parameters if custom is None else lambda _: custom.parameters(),
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
        if settings.pool.wait:
            try:
                self.wait(self.timeout)  # the primaries' min_idle connections
            except BaseException:
                self.dispose()
                raise

    def _setup(self, settings: Settings, driver: Driver, role: str, name: str) -> None:
        """Set up a pool of the primaries (``role`` "primary") or of the replicas."""
        self.settings: Settings = settings
        options = settings.pool
        self._driver = driver
        self._probe = self._driver.probe  # bound once: called at every checkout
        self._settled = self._driver.settled  # and at every return
        self._driver.check(self.settings.params)
        self._needs_reset = self._driver.needs_reset
        # What a failed connect, ping or reset raises: the driver's errors and the OS's.
        self._driver_errors: tuple[type[BaseException], ...] = (OSError, *self._driver.errors)
        # What a connect made for the pool itself may raise: those, and our own errors.
        self._failures: tuple[type[BaseException], ...] = (PoolError, *self._driver_errors)
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
            # A host found unusable: its idle connections are closed at once.
            self._hosts.on_unusable = _maintenance.stale_sweeper(self)
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
        # Whether a connection given back clean may wait for its thread (see _park): not
        # when every return does I/O (a session reset) or notes the thread's last write.
        self._parking = not self._reset_session and not self._causal
        self._lifo = options.order == "lifo"
        self._ping_timeout = options.ping_timeout
        self._leak_threshold = options.leak_threshold
        self._next_leak_scan = 0.0
        self.min_idle = options.min_idle
        self._max_idle = options.max_idle
        self._max_waiting = options.max_waiting
        self._max_usage = options.max_usage
        self._init_sql = options.init_sql
        self._configure = options.configure
        self._password = self._params.get("password")
        self._last_password: str | None = None  # the provider's last answer, to blank it
        # The listeners of each event, a tuple replaced whole (read without the lock).
        self._listeners: dict[str, tuple[Callable[[Any], object], ...]] = {e: () for e in EVENTS}

        self._binds_threads = self.mode == "persistent"
        self._epoch = 0  # close_all() moves it on; older connections are replaced
        self._closed = False
        self._start_fresh()
        _live_pools.add(self)
        log.debug(
            "created %s pool %s (size %d, max %d)", self.mode, self._label, self.size, self.max_size
        )
        if self.min_idle or self._max_idle:
            self._maintainer.wake()

    def _start_fresh(self) -> None:
        """Set up the state that belongs to one process: lock, slots, counters."""
        self._pid = os.getpid()
        # One lock guards the pool's in-memory state; the condition shares it. Plain
        # `with self._lock` is a C call, `with self._cond` a Python one: the hot path uses the lock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._handles = _HandleFactory()
        lifo = self.settings.pool.order == "lifo"
        self._store: _Store = make_store(self.mode, self._handles, self.size, lifo)
        self._idle_list = self._store.idle_list
        # causal_reads: each thread's last write (GTID) and the replicas that applied it.
        self._last_write = threading.local()
        self._stats = PoolStats(getattr(self, "_stats", None))  # listeners carry over
        self._recent_waits = self._stats.wait_recorder()
        self._queued_returns = self._stats.queued_returns
        # Connections given back clean, each kept for the thread that gave it back, by
        # that thread's key (see _park); the key lives in a thread-local.
        self._parked: dict[object, tuple[Any, _Handle]] = {}
        self._thread_key = _ThreadKey()
        # The threads whose parked connection another thread took (shared mode): more
        # threads are at work than connections open, so the next of them to miss its own
        # starts a connect in the background (see _checkout).
        self._robbed: weakref.WeakSet[object] = weakref.WeakSet()
        # Counter bumps of the I/O paths (connect, close, failed validation), queued without
        # a lock and added to the stats in the next critical section (see _fold_tallies).
        self._tallies: deque[str] = deque()
        # The threads waiting in acquire(), by a marker each (see _checkout).
        self._waiters: weakref.WeakSet[_Waiter] = weakref.WeakSet()
        # Its underlying set, for the hot path's "anyone waiting?": a WeakSet has no
        # __bool__, and its __len__ is a Python call. The set may still hold a marker whose
        # thread is gone until WeakSet drops it, so a yes may be stale: at worst one
        # needless notify, or one connection kept beyond size until its next return.
        self._waiting: set[Any] = self._waiters.data  # type: ignore[attr-defined]
        # Growth while connections are lent (shared mode, see _should_grow).
        self._growers = 0  # background threads opening connections for waiters
        self._filling = 0  # the handles they hold while they connect
        self._grow_failed = False  # a background connect failed: waiters connect themselves
        self._last_return = 0.0  # when a connection last came back
        # The open `with pool as conn` blocks: (frame of the with, thread, connection).
        # The `with pool` exit looked up for the block being entered (see __enter__).
        self._with_exit = threading.local()
        # The blocks entered by a direct call of __enter__: (thread, connection).
        self._blocks: list[tuple[int, PooledConnection]] = []
        self._blocks_lock = threading.Lock()
        # Leases of connections garbage-collected without release, for _reclaim_collected().
        self._collected: deque[tuple[Any, _Handle, float, str | None]] = deque()
        # Lent connections, watched only when leak_threshold is set.
        self._lent: weakref.WeakSet[PooledConnection] = weakref.WeakSet()
        # A pool dropped without dispose() still closes its connections.
        self._finalizer = weakref.finalize(self, _close_connections, self._handles, self._driver)
        # Opens connections ahead of demand and closes those idle too long (min_idle,
        # max_idle), in a thread of its own started on first need.
        self._maintainer = Maintainer(self)

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
        if self.min_idle or self._max_idle:
            self._maintainer.wake()  # the child's own connections, opened ahead again

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
        origin = None
        if self._leak_threshold is not None:
            origin = "".join(traceback.format_stack(limit=_LEAK_STACK_DEPTH)[:-1])
        conn = PooledConnection(self, origin)
        # Checkout is one unit: from the moment _checkout() puts the slot's lease into
        # `conn`, whatever is raised (a failed connect, an exception from a signal
        # handler) gives the slot back through _give_back().
        try:
            # The connection this thread gave back, if it is still parked (see _park): the
            # claim is a dict.pop without the lock, one step under the GIL, so of this
            # thread and one moving parked connections back to the store (under the
            # lock) only one gets the entry.
            entry = self._parked.pop(self._thread_key.key, None) if self._parked else None
            if entry is not None:
                lease = conn._lease
                handle = entry[1]
                handle.owners.append(lease)  # empty until the append below
                # The lease is conn's from here, counted in the same step (no call between
                # the counts and the append, so neither a signal handler nor another
                # thread runs there): the except below gives it back, and uncounts it.
                self._stats.requests += 1
                self._stats.acquired += 1
                lease.append(entry)
                if self._closed:
                    raise PoolClosed(f"pool {self._label} is closed")
                nested = False
            else:
                handle, nested, abandoned = self._checkout(conn, start + timeout, timeout)
                if abandoned:
                    self._retire(handle, "broken")
            # The common case, decided with no I/O but a look at the socket: a current
            # connection seen alive moments ago, or one lent to this very thread already.
            now = monotonic()
            raw = handle.raw
            host = handle.host
            # _is_current() (with _stale_reason()) and _seen_alive(), spelled out: this
            # runs at every checkout.
            if not (
                nested
                or (
                    raw is not None
                    and not self._closed
                    and handle.epoch == self._epoch
                    and now < handle.expires
                    and (host is None or handle.created > host.stale_before)
                    and (
                        not self._pre_ping
                        or (
                            now - handle.returned < self._ping_interval
                            and (self._max_lag is None or not self._host_check_due(handle, now))
                            and self._probe(raw) is True
                        )
                    )
                )
            ):
                self._make_ready(handle, start + timeout, max_retries)
                if self._closed:
                    raise PoolClosed(f"pool {self._label} was closed while connecting")
                now = monotonic()
                raw = handle.raw
            conn._since = now
            conn._raw = raw
        except BaseException:
            self._give_back(conn, failed=True)
            raise
        handle.uses += 1
        if self._listeners["checkout"]:
            try:
                self._notify("checkout", handle.raw, propagate=True)
            except BaseException:
                self._give_back(conn, failed=False)  # given back as it is, then raised
                raise
        conn._waited = waited = now - start
        self._recent_waits(waited)  # PoolStats.record_wait: needs no lock (see PoolStats)
        if self._leak_threshold is not None:
            with self._lock:
                self._lent.add(conn)
            self._report_leaks()
        if _log_answers.get(_DEBUG, True) and log.isEnabledFor(_DEBUG):
            log.debug("acquired a connection from %s", self._label)
        return conn

    def connection(
        self, timeout: float | None = None, *, readonly: bool = False
    ) -> PooledConnection:
        """Like ``acquire()``; the connection is also a context manager that gives itself back."""
        return self.acquire(timeout, readonly=readonly)

    def release(self, conn: PooledConnection | None, discard: bool = False) -> None:
        """Give a connection back, rolling back any open transaction first.

        ``discard=True`` closes it instead, for a connection the application knows
        is bad; its slot is freed. ``release(None)`` and releasing twice do nothing.
        """
        # type(), not conn.__class__: PooledConnection has a __getattr__, which makes
        # every attribute read of it slower, so this path reads each at most once.
        if type(conn) is PooledConnection and conn._pool is self:
            # The lease leaves `conn` and is counted before any call (see _give_back), so
            # an exception from a signal handler can cut a release short only at its very
            # first instruction, before the test above.
            conn._raw = None
            lease = conn._lease
            if not lease:
                log.debug("ignored a second release of a connection of %s", self._label)
                return
            token, handle = lease[-1]
            del lease[-1]
            if handle.factory is not self._handles:
                log.debug("ignored the release of a connection from before os.fork()")
                return
            self._stats.released += 1
            since, waited = conn._since, conn._waited
            if discard:
                handle.discard = True  # closed at its last return (persistent mode may nest)
            if discard or not self._park(token, handle, lease, since, waited):
                self._checkin(token, handle, failed=False, since=since, waited=waited)
        elif conn is None:
            return
        elif self._is_readonly(conn):
            assert self._replicas is not None
            self._replicas.release(conn, discard)
            return
        else:
            raise PoolError(
                f"release() got {conn!r}, which is not a connection of pool {self._label}"
            )
        if _log_answers.get(_DEBUG, True) and log.isEnabledFor(_DEBUG):
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

    def _give_back(
        self, conn: PooledConnection, *, failed: bool, discard: bool = False
    ) -> _Handle | None:
        """Return one unit: take the lease out of ``conn``, then reset and put back its handle.

        Returns the handle, or None when there was nothing to give back.
        """
        conn._raw = None
        lease = conn._lease
        if not lease:
            if not failed:
                log.debug("ignored a second release of a connection of %s", self._label)
            return None
        # The lease leaves `conn` and is counted in one step: from the test above to the
        # counts there is no call, so neither a signal handler nor another thread runs in
        # between (two racing releases cannot both get it, nor the lease go uncounted).
        token, handle = lease[-1]
        del lease[-1]
        if handle.factory is not self._handles:
            log.debug("ignored the release of a connection from before os.fork()")
            return None
        if failed:
            self._stats.acquired -= 1
        else:
            self._stats.released += 1
        if discard:
            handle.discard = True  # closed at its last return (persistent mode may nest)
        elif not failed and self._park(token, handle, lease, conn._since, conn._waited):
            return handle
        self._checkin(
            token,
            handle,
            failed=failed,
            since=None if failed else conn._since,
            waited=conn._waited,
        )
        return handle

    def _is_readonly(self, conn: PooledConnection) -> bool:
        """Whether ``conn`` came from this pool's replicas."""
        return self._replicas is not None and getattr(conn, "_pool", None) is self._replicas

    # `with pool as conn` calls __enter__ and __exit__ on the pool itself, so the pool must
    # tell which block an exit ends. The thread cannot: FastAPI runs a sync generator
    # dependency's entry and exit as two thread-pool calls, on any two threads. So each
    # `with` statement gets an exit of its own (see _WithExit), which the statement keeps
    # until its block ends and which holds the block's connection. Whatever thread runs
    # it, it gives back its own block's connection; and an exit cut short before it has
    # (an exception from a signal handler at its start) is dropped with the statement,
    # so the connection, once nothing else holds it, is reclaimed by the pool (see
    # PooledConnection.__del__). Only a direct call of __enter__ (contextlib.ExitStack
    # and other helpers) registers its block by thread, for a direct call of __exit__.

    __exit__ = _WithExit()

    def __enter__(self) -> PooledConnection:
        caller = sys._getframe(1)
        exit = self._with_exit.__dict__.pop("pending", None)
        if exit is not None and exit.opener != (id(caller), caller.f_lasti):
            exit = None  # looked up elsewhere, not by this `with` statement
        conn = self.acquire()
        if exit is not None:
            exit.conn = conn
            return conn
        try:
            block = (threading.get_ident(), conn)
            with self._blocks_lock:
                self._blocks.append(block)
        except BaseException:
            # Cut short before the block began, so its __exit__ will not run.
            with self._blocks_lock:
                self._blocks[:] = [b for b in self._blocks if b[1] is not conn]
            self.release(conn)
            raise
        return conn

    def _end_block(self) -> PooledConnection:
        """The connection of the innermost block entered by a direct call on this thread."""
        thread = threading.get_ident()
        with self._blocks_lock:
            blocks = self._blocks
            for i in range(len(blocks) - 1, -1, -1):
                if blocks[i][0] == thread:
                    return blocks.pop(i)[1]
        raise PoolError(f"pool.__exit__() without a matching pool.__enter__() on {self._label}")

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool {self.mode} {self._label} size={self.size} max_size={self.max_size}>"
        )

    # -- the rest of the pool, each concept in its module ---------------------

    # Controls of a running pool (_controls.py).
    close_thread_connection = _controls.close_thread_connection
    close_all = _controls.close_all
    drain = _controls.drain
    dispose = _controls.dispose
    wait = _controls.wait
    resize = _controls.resize
    add_listener = _controls.add_listener
    remove_listener = _controls.remove_listener
    get_stats = _controls.get_stats
    check = _controls.check
    # Which servers connections may use: host checks, replicas, causal reads (_routing.py).
    _check = _routing.check_connection
    _vet = _routing.vet
    _host_check_due = _routing.host_check_due
    _connect_to = _routing.connect_to
    _caught_up = _routing.caught_up
    _note_last_write = _routing.note_last_write
    # Leak watching (_leaks.py).
    _report_leaks = _leaks.report_leaks
    _reclaim_collected = _leaks.reclaim_collected
    # min_idle upkeep, looked at by checkout (_maintenance.py).
    _wants_more_idle = _maintenance.wants_more_idle

    # -- the critical sections ---------------------------------------------

    def _checkout(
        self, conn: PooledConnection, deadline: float, timeout: float
    ) -> tuple[_Handle, bool, bool]:
        """Take a handle into ``conn``'s lease, waiting for a free slot until ``deadline``.

        Returns the handle, whether it is lent to this thread already (a nested borrow,
        persistent mode only), and whether it was abandoned: its last return was cut
        short, so its connection is in an unknown state and must be closed.
        """
        store = self._store
        # Once in line (in _waiters from its first wait until it leaves), a thread may take
        # whatever frees up. The marker is referenced only from this frame: should the
        # finally below be cut short, it leaves the line when the frame goes.
        waiter: _Waiter | None = None
        since = 0.0  # when this thread started waiting
        try:
            while True:
                with self._lock:  # critical section: decide only (take, wait or give up)
                    if self._closed:
                        raise PoolClosed(f"pool {self._label} is closed")
                    # Waiting threads go first: a newcomer takes a connection only when there
                    # is one for every waiter too, or a busy pool starves its waiters. With
                    # no idle one, a new one only when it need not wait for one to come back.
                    handles = self._handles
                    # Connections parked for other threads are free for this one too.
                    parked = 0 if self._binds_threads else len(self._parked)
                    idle = store.idle + len(handles.spares) + parked
                    ahead = 0 if waiter or not self._waiting else len(self._waiters)
                    room = self.max_size - len(handles.live)
                    if self._robbed and waiter is None:
                        me = self._my_key()
                        if me in self._robbed:
                            self._robbed.discard(me)
                            if room > self._growers and not self._grow_failed:
                                self._start_grower()  # for whoever needs it first
                    if (
                        store.owns_handle()
                        or idle > ahead
                        or (idle + room > ahead and not self._wait_for_return())
                    ):
                        if parked and not store.idle and not handles.spares:
                            # Only parked ones are left: take one (the others stay with
                            # their threads), and let its thread know (see _robbed). Each
                            # step is one C call: the owner may claim it in between.
                            robbed = next(iter(self._parked), None)
                            entry = self._parked.pop(robbed, None)
                            if entry is None:  # claimed by its thread meanwhile: decide again
                                continue
                            self._robbed.add(robbed)
                            self._unpark(entry)  # into the store, for store.take() below
                        if waiter is not None:
                            self._waiters.discard(waiter)
                            waiter = None
                        token, handle = store.take()
                        if self.min_idle and self._wants_more_idle():
                            self._maintainer.wake()  # a non-blocking set(): the lock is held
                        nested = self._binds_threads and handle.lent and handle.borrowers() > 0
                        abandoned = handle.lent and not nested
                        lease = conn._lease
                        handle.lent = True
                        handle.owners.append(lease)  # empty until the append below
                        # The lease is conn's from here, counted in the same step (no call
                        # between the counts and the append, so no signal handler runs
                        # there): acquire() gives it back, and uncounts it, on any error.
                        self._stats.requests += 1
                        self._stats.acquired += 1
                        lease.append((token, handle))
                        return handle, nested, abandoned
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        if waiter is not None:
                            self._waiters.discard(waiter)  # before the message counts the others
                            waiter = None
                        self._stats.timeouts += 1
                        self._stats.requests += 1
                        raise PoolTimeout(self._timeout_message(timeout))
                    if waiter is None:
                        if self._max_waiting and len(self._waiters) >= self._max_waiting:
                            self._stats.requests_rejected += 1
                            raise TooManyRequests(self._too_many_message())
                        waiter = _Waiter()
                        self._waiters.add(waiter)
                        since = monotonic()
                        if self._parked and not self._binds_threads:
                            # Parked without the lock after the look above, by a thread
                            # that did not see this one waiting yet (see _park): decide again.
                            continue
                    if room > self._growers and self._should_grow(since):
                        self._start_grower()
                    self._cond.wait(min(remaining, _WAIT_SLICE))
                # Outside the critical section: close what went away, which frees slots.
                if self._collected:
                    self._reclaim_collected()
                if self._handles.dropped:
                    self._close_dropped()
        finally:
            if waiter is not None:  # the pool was closed, or the wait interrupted
                with self._lock:
                    self._waiters.discard(waiter)

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

        One unit whatever is raised: a reset cut short (an exception from a signal
        handler while rolling back) closes the connection as broken, and the handle
        goes back in any case before the exception goes on. ``since``: when it was
        lent (None: it never was) and ``waited``, how long its acquire() took: the
        histograms count both here.
        """
        settled = False
        used = 0.0
        try:
            raw = handle.raw
            now = monotonic()
            if raw is not None and not handle.borrowers():
                reason = self._retire_reason(handle, failed, now)
                if (
                    self._causal
                    and reason not in _HOST_UNUSABLE
                    and reason
                    not in (
                        "broken",
                        "lost",
                    )
                ):
                    self._note_last_write(raw)  # before a reset or close ends the session
                if reason is not None:
                    self._retire(handle, reason)
                elif self._reset_session or self._needs_reset(raw):
                    try:
                        # The reset is bounded like a ping: a silent server must not hold a
                        # release.
                        with self._driver.bounded(raw, self._ping_timeout):
                            self._driver.discard_pending(raw, self._ping_timeout)
                            if self._reset_session:
                                self._driver.reset_session(raw)
                            else:
                                self._driver.rollback(raw)
                    except self._driver_errors as exc:
                        log.debug("reset failed on a connection of %s: %s", self._label, exc)
                        self._retire(handle, "broken")
                    else:
                        if self._reset_session and (self._init_sql or self._configure):
                            self._set_up_again(handle)
                    now = monotonic()
                if self._listeners["checkin"] and handle.raw is not None:
                    self._notify("checkin", handle.raw)  # errors logged, never raised
            handle.returned = self._last_return = now  # the latter read without a lock: a hint
            settled = True
        except BaseException:
            # What the connection was doing is unknown: never lend it again.
            self._retire(handle, "broken")
            raise
        finally:
            with self._lock:  # critical section
                if self._tallies:
                    self._fold_tallies()
                if since is not None:
                    used = (handle.returned if settled else monotonic()) - since
                    self._stats.returned(waited, used)
                if not handle.borrowers():
                    # Still marked lent only if the reset and the close both were cut short:
                    # then it is dropped, and its connection closed.
                    handle.lent = not settled and handle.raw is not None
                    # Overflow is decided here, under the lock, from the open connections
                    # kept idle; and a connection is never closed while a thread waits:
                    # it is kept for that thread (an empty handle is dropped, which frees
                    # its slot for the waiter to open one).
                    keep = handle.raw is not None and not handle.lent
                    if keep and not self._waiting and self._kept_enough():
                        keep = False
                        self._stats.closed_overflow += 1
                    self._store.put(token, handle, keep)
                if self._waiting:
                    self._cond.notify()
            if since is not None and self._stats.listeners:
                self._stats.tell_returned(waited, used)
            if handle.close_on_release and not handle.lent:
                handle.close_on_release = False
                self._drop_thread_handle(handle)
            if self._handles.dropped:
                self._close_dropped()
            if self._closed and not any(h.lent for h in list(self._handles.live)):
                self._finalizer()  # the last connection lent before dispose() is back

    # -- the thread's own connection ---------------------------------------
    #
    # A thread that gives back a clean connection and takes one again soon after, the
    # pattern of a request loop, gets the same connection back without DBUtils' round
    # trip (HikariCP's ConcurrentBag keeps a thread-local list for this). At its return
    # a connection that needs nothing (no reset, no close, nobody waiting, the pool not
    # over size) is "parked": it stays taken from the store and marked lent, with no
    # borrower, in ``_parked`` under its thread's key. That thread's next checkout
    # claims it there. Every other party that wants idle connections first moves the
    # parked ones back into the store (``_unpark_all``): a thread that finds no
    # connection of its own (shared mode), close_all(), resize() and the max_idle
    # eviction. The owner parks (in _park) and claims (in acquire()) without the lock, by
    # a dict store and a dict.pop; everyone else takes entries under the lock, by pop or
    # popitem too: each is one step under the GIL, so an entry is had by one party only,
    # and only its owner adds one under its key. Since a parked handle stays marked lent, no code
    # that looks for idle handles takes it unawares. A park or a claim cut short by an
    # exception loses the entry like any checkout cut short: the handle is still marked
    # lent with no borrower, so it is closed, never lent as it is.
    # In persistent mode an entry holds no DBUtils token: the thread-local DBUtils keeps
    # is what drops the handle when its thread ends (then _close_dropped forgets the entry).

    def _my_key(self) -> object:
        """The calling thread's key in ``_parked``: an object of its own, never reused."""
        return self._thread_key.key

    def _park(
        self, token: Any, handle: _Handle, lease: list[Any], since: float, waited: float
    ) -> bool:
        """Keep a clean connection given back for its thread; False: _checkin must put it back.

        ``lease``, ``since``, ``waited``: those of the PooledConnection given back.
        Decided without I/O: anything to reset, close or note at the return takes the
        long way, as do returns while threads wait (the connection is theirs).
        """
        raw = handle.raw
        owners = handle.owners
        if (
            raw is None
            or not self._parking
            or handle.close_on_release
            or handle.discard
            or self._listeners["checkin"]
            # Lent once, by conn alone (whose lease is empty now); else see borrowers().
            or len(owners) != 1
            or owners[0] is not lease
            or not self._settled(raw)
        ):
            return False
        now = monotonic()
        host = handle.host
        parked = self._parked
        key = self._thread_key.key  # _my_key()
        if (
            # _stale_reason() spelled out (this runs at every return), and max_usage.
            handle.epoch != self._epoch
            or now >= handle.expires
            or (host is not None and handle.created <= host.stale_before)
            or (self._max_usage and handle.uses >= self._max_usage)
            # Read without the lock; see below for a thread that starts waiting, or a
            # dispose(), right after this look.
            or self._waiting
            or self._closed
            # _kept_enough() inline: size connections idle already (shared mode). A stale
            # read here keeps at most one connection per returning thread beyond size,
            # closed as overflow at a later return.
            or (self._idle_list is not None and len(self._idle_list) + len(parked) >= self.size)
        ):
            return False
        if key in parked:
            # The thread gave back two: it keeps the one its next checkout should get, in
            # the pool's order (LIFO: the one given back last); the other goes back.
            if not self._lifo:
                return False
            with self._lock:  # critical section: the other one back to the store
                if self._waiting or self._closed:
                    return False
                entry = parked.pop(key, None)
                if entry is not None:
                    self._unpark(entry)
        # Parked without the lock: only this thread adds an entry under its key, and
        # every other party takes entries by a pop, one step under the GIL.
        owners.clear()
        handle.returned = self._last_return = now
        parked[key] = (None if self._binds_threads else token, handle)
        # A thread that started waiting, or a dispose() that moved the parked connections
        # away, between the look above and the entry: each of them writes its mark (in
        # _waiters, _closed) before it looks at _parked, and this thread wrote its entry
        # before it looks at the marks, so one of the two sees the other. Seen here: the
        # connection takes the long way, unless another party took it meanwhile.
        if self._waiting or self._closed:
            with self._lock:
                if parked.pop(key, None) is not None:
                    return False
        used = now - since
        queued = self._queued_returns  # into the histograms at the next absorb()
        queued.append((waited, used))
        if len(queued) >= _RETURNS_BATCH:
            with self._lock:  # critical section: the counters and histograms
                if self._tallies:
                    self._fold_tallies()
                self._stats.absorb()
        if self._stats.listeners:
            self._stats.tell_returned(waited, used)
        return True

    def _unpark(self, entry: tuple[Any, _Handle]) -> None:
        """Put a parked connection back into the store, idle; called with the lock held.

        Nobody waits for it: in shared mode a thread takes a parked connection rather
        than wait, and _park takes back one parked as a thread began to wait; in
        persistent mode a waiter wants a slot, which a thread's own connection never
        frees.
        """
        token, handle = entry
        handle.lent = False
        self._store.put(token, handle)

    def _unpark_all(self) -> None:
        """Put every parked connection back into the store; called with the lock held."""
        parked = self._parked
        while parked:
            try:
                _, entry = parked.popitem()
            except KeyError:  # its thread claimed the last one meanwhile (no lock there)
                return
            self._unpark(entry)

    def _kept_enough(self) -> bool:
        """Whether ``size`` connections wait idle already (shared mode); lock held."""
        return not self._binds_threads and self._store.idle + len(self._parked) >= self.size

    # -- growth: a waiter takes whichever comes first, a returned connection or a new one --
    #
    # In shared mode a thread that finds no idle connection while others are lent does
    # not connect itself: it waits in line, and a background thread opens a connection
    # for the line, which goes to whoever is first when it is ready. That thread keeps
    # opening them one at a time as long as threads wait; more open at once only when no
    # connection has come back for _GROW_QUIET (the lent ones are held long), up to one
    # per waiter. A burst that the returning connections serve (HikariCP's spike) thus
    # opens one or two connections, not one per thread, and no waiter waits for a connect
    # when a connection comes back sooner. A thread connects itself when nothing is lent
    # (nothing can come back) or when a background connect failed (so that the error
    # reaches a caller), as persistent mode always does: there a connection is its
    # thread's.

    def _wait_for_return(self) -> bool:
        """Whether a thread with no idle connection should wait rather than connect; lock held."""
        if self._binds_threads or self._grow_failed:
            return False
        handles = self._handles
        idle = self._store.idle + len(handles.spares)
        return len(handles.live) - idle - self._filling > 0  # lent ones

    def _should_grow(self, since: float) -> bool:
        """Whether a thread waiting since ``since`` starts another background connect."""
        if self._binds_threads or self._grow_failed or self._growers >= len(self._waiters):
            return False
        if self._growers == 0:
            return True
        return monotonic() - max(self._last_return, since) > _GROW_QUIET

    def _start_grower(self) -> None:
        """Start a background thread that opens connections for the waiters; lock held."""
        self._growers += 1
        try:
            threading.Thread(target=self._grow, name="dbpool-grow", daemon=True).start()
        except BaseException:
            self._growers -= 1
            raise

    def _grow(self) -> None:
        """Open connections, one at a time, while threads wait and none is idle.

        The first is opened even when the thread that asked for it was served by a
        returning connection meanwhile: threads that keep running into each other
        (more at work than connections open) then end up with one connection each.
        """
        store = self._store
        first = True
        try:
            while True:
                with self._lock:  # critical section: decide, and take an empty slot
                    if (
                        self._closed
                        or len(self._handles.live) >= self.max_size
                        or not (
                            first
                            or (
                                self._waiters
                                and not store.idle  # the line takes those first
                                and not self._handles.spares
                            )
                        )
                    ):
                        return
                    first = False
                    if store.idle or self._handles.spares:
                        # The store would lend an idle one: open a spare instead.
                        token, handle = None, self._handles.reserve()
                    else:
                        token, handle = store.take()  # a new, empty handle
                    handle.lent = True  # not idle while it is filled: close_all() leaves it
                    self._filling += 1
                failed = False
                try:
                    if handle.raw is None:
                        self._open(handle, monotonic() + self.timeout)
                except BaseException as exc:
                    failed = True
                    log.debug("opening a connection to %s failed: %s", self._label, exc)
                handle.returned = monotonic()
                with self._lock:  # critical section: the new connection goes to the line
                    self._filling -= 1
                    if self._tallies:
                        self._fold_tallies()
                    handle.lent = False
                    closed = self._closed
                    # Kept only open: an empty handle is dropped, which frees its slot.
                    keep = handle.raw is not None and not closed
                    if token is not None:
                        store.put(token, handle, keep)
                    elif keep:
                        self._handles.spares.append(handle)
                    else:
                        self._handles.live.discard(handle)
                    if failed:
                        self._grow_failed = True  # waiters connect themselves, and see why
                        self._cond.notify_all()
                    else:
                        self._cond.notify()
                if token is None and not keep and handle.raw is not None:
                    self._retire(handle, "closed")  # a spare opened while the pool closed
                if self._handles.dropped:
                    self._close_dropped()
                if closed:
                    if not any(h.lent for h in list(self._handles.live)):
                        self._finalizer()  # disposed while connecting: nobody is to have it
                    return
                if failed:
                    return
        finally:
            with self._lock:
                self._growers -= 1

    def _drop_thread_handle(self, handle: _Handle) -> None:
        """Persistent mode: close a thread's connection and free its slot, from any thread."""
        if self._store.thread_handle() is handle:
            self._store.forget_thread()
        else:
            # Given back by another thread: its owner gets a new handle at its next acquire.
            handle.close()

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

    def _retire_reason(self, handle: _Handle, failed: bool, now: float) -> str | None:
        """Why a connection given back must be closed rather than kept, or None."""
        if failed or self._driver.command_in_flight(handle.raw):
            # A reply not read to its end (a statement cut by an exception between its
            # send and its last read): the connection is out of step with its server.
            return "broken"
        # The last statement's error: the server is read-only, not ready, or gone. A
        # replica is read-only by design: a write there is the caller's mistake.
        code = self._driver.statement_error(handle.raw)
        if code is not None:
            verdict = error_verdict(code)
            if verdict is not None and not (verdict == "read_only" and self._role == "replica"):
                return verdict
        if self._driver.is_closed(handle.raw):
            return "broken"  # closed by the borrower, or by the driver after an I/O error
        if handle.discard:
            return "discarded"
        reason = self._stale_reason(handle, now)
        if reason is None and self._max_usage and handle.uses >= self._max_usage:
            reason = "usage"
        # Overflow is decided at the put, under the lock (see _checkin).
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
            f"({held}/{self.max_size} connections in use, {len(self._waiters)} waiting{spread})"
        )
        return f"{text} in pool {self._label}{self._store.timeout_hint}"

    # -- I/O outside the lock ------------------------------------------------

    def _make_ready(self, handle: _Handle, deadline: float, max_retries: int) -> None:
        """Give the handle a live connection: reuse, validate, or (re)open it."""
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

    def _open(self, handle: _Handle, deadline: float) -> None:
        """Connect, set the session up, tell the "connect" listeners; fill the handle."""
        started = monotonic()
        params = self._params
        if callable(self._password):
            params = {**params, "password": self._call_password_provider()}
        remaining = deadline - monotonic()
        host: HostState | None = None
        try:
            if self._hosts is None:
                raw = self._driver.connect(params, timeout=max(remaining, 0.0))
            else:
                raw, host = self._hosts.connect(
                    lambda address, seconds: self._connect_to(address, seconds, params),
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
        try:
            if self._init_sql or self._configure:
                self._set_up(raw, deadline)
            if self._listeners["connect"]:
                self._notify("connect", raw, propagate=True)
        except BaseException:
            # A connection that could not be set up counts as a connect that failed.
            self._driver.close(raw)
            self._tallies.append("connect_failures")
            raise
        now = monotonic()
        handle.raw = raw
        handle.host = host
        handle.created = handle.returned = now
        handle.uses = 0
        handle.discard = False
        handle.epoch = self._epoch
        if self.recycle:
            handle.expires = now + self.recycle * (1.0 - random.uniform(0.0, _RECYCLE_JITTER))
        self._tallies.append("created")
        self._stats.record_connect(monotonic() - started)  # needs no lock (see PoolStats)
        self._grow_failed = False  # the server answers again: waiters may wait for growth
        if host is None:
            log.debug("opened a connection to %s", self._label)
        else:
            log.debug("opened a connection to %s host %s of %s", host.role, host.key, self._label)

    def _call_password_provider(self) -> str:
        """The password for the next connect, from the function given as ``password``."""
        provider = self._password
        assert callable(provider)
        try:
            password = provider()
        except Exception as exc:
            self._tallies.append("connect_failures")
            # The type only: the provider's message may quote a secret.
            raise ConnectError(
                f"the password provider of pool {self._label} failed ({type(exc).__name__})"
            ) from exc
        if not isinstance(password, str):
            self._tallies.append("connect_failures")
            raise ConnectError(
                f"the password provider of pool {self._label} returned "
                f"{type(password).__name__}, not str"
            )
        self._last_password = password  # blanked from error messages
        return password

    def _set_up(self, raw: Any, deadline: float) -> None:
        """Run init_sql, then configure, on a new or reset connection (no lock held).

        A driver error that retrying cannot fix (a syntax error, an unknown variable)
        and any error of ``configure`` are a ConnectError at once; other driver
        errors go up to be retried like a failed connect.
        """
        limit = max(deadline - monotonic(), _MIN_PING_TIMEOUT)
        try:
            with self._driver.bounded(raw, limit):
                if self._init_sql:
                    cur = raw.cursor()
                    try:
                        for statement in self._init_sql:
                            cur.execute(statement)
                    finally:
                        cur.close()
                if self._configure is not None:
                    self._configure(raw)
                if self._driver.in_transaction(raw):
                    raw.commit()  # what the set-up did stays, whoever borrows next
        except self._driver_errors as exc:
            if self._driver.is_permanent(exc):
                raise ConnectError(
                    f"the session set-up (init_sql, configure) of pool {self._label} failed: "
                    f"{self._scrub(exc)}"
                ) from exc
            raise
        except Exception as exc:
            raise ConnectError(
                f"configure of pool {self._label} failed: {type(exc).__name__}: {self._scrub(exc)}"
            ) from exc

    def _set_up_again(self, handle: _Handle) -> None:
        """After a session reset at return: the set-up again, or the connection closed."""
        try:
            self._set_up(handle.raw, monotonic() + self._ping_timeout)
        except self._failures as exc:
            log.warning(
                "the session set-up failed after a reset on a connection of %s; closing it: %s",
                self._label,
                exc,
            )
            self._tallies.append("connect_failures")
            self._retire(handle, "broken")

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
        # Counted before the close's I/O: from here on the connection is not open.
        if raw is not None:
            self._tallies.append("closed")
        counter = _RETIRE_COUNTERS.get(reason)
        if counter is not None:
            self._tallies.append(counter)
        if raw is not None:
            self._close_raw(raw)
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
            parked = self._parked
            if parked:  # a persistent thread ended with its connection parked
                for key, entry in list(parked.items()):  # list(): see _checkout's claim
                    if entry[1].dropped:
                        parked.pop(key, None)
            self._stats.closed += len(raws)
            if self._waiters:
                self._cond.notify(len(dead))
        for raw in raws:
            self._close_raw(raw)

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

    def _scrub(self, exc: BaseException) -> str:
        """An error's text with the password blanked, should a driver ever echo it."""
        params = self._params
        if self._last_password is not None:
            params = {**params, "password": self._last_password}
        return scrub_secrets(str(exc), params)

    def _too_many_message(self) -> str:
        return (
            f"pool {self._label} has {len(self._waiters)} callers waiting already "
            f"(max_waiting {self._max_waiting}; {len(self._handles.live)}/{self.max_size} "
            "connections in use)"
        )

    # -- listeners -----------------------------------------------------------

    def _notify(self, event: str, raw: Any, *, propagate: bool = False) -> None:
        """Call the listeners of ``event`` (no lock held); see add_listener() for errors."""
        for fn in self._listeners[event]:
            try:
                fn(raw)
            except Exception:
                if propagate:
                    raise
                log.warning(
                    "a %r listener of %s raised; ignored", event, self._label, exc_info=True
                )

    def _close_raw(self, raw: Any) -> None:
        """Close a driver connection (no lock held), telling the "close" listeners first."""
        if self._listeners["close"]:
            self._notify("close", raw)
        self._driver.close(raw)


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
    """The config name, or host:port/database for a MySQL server given in code alone."""
    if settings.source is not None or not from_arguments or settings.driver == "sqlite":
        return settings.config_name
    params = settings.params
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


def make_pool(
    mode: str | None = None,
    *,
    size: int | None = None,
    config_name: str = "primary",
    timeout: float | None = None,
    max_overflow: int | None = None,
    recycle: float | None = None,
    driver: str | Driver | None = None,
    config: str | os.PathLike[str] | Literal[False] | None = None,
    pre_ping: bool | None = None,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    reset: str | None = None,
    leak_threshold: float | None = None,
    min_idle: int | None = None,
    max_idle: float | None = None,
    order: str | None = None,
    max_waiting: int | None = None,
    max_usage: int | None = None,
    init_sql: list[str] | tuple[str, ...] | None = None,
    configure: Callable[[Any], object] | str | None = None,
    wait: bool | None = None,
    host_order: str | None = None,
    host_deny_seconds: float | None = None,
    galera_check: bool | None = None,
    replica_fallback: bool | None = None,
    replica_max_lag: float | None = None,
    causal_reads: bool | None = None,
    **params: Any,
) -> ConnectionPool:
    """A ConnectionPool in ``mode`` "shared" (PooledDB) or "persistent" (PersistentDB).

    Without ``mode``, the config entry's ``pool: mode`` applies, else "shared".
    The other arguments are ConnectionPool's.
    """
    return ConnectionPool(
        size,
        config_name,
        timeout,
        max_overflow,
        recycle,
        driver,
        config=config,
        mode=mode,
        pre_ping=pre_ping,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        reset=reset,
        leak_threshold=leak_threshold,
        min_idle=min_idle,
        max_idle=max_idle,
        order=order,
        max_waiting=max_waiting,
        max_usage=max_usage,
        init_sql=init_sql,
        configure=configure,
        wait=wait,
        host_order=host_order,
        host_deny_seconds=host_deny_seconds,
        galera_check=galera_check,
        replica_fallback=replica_fallback,
        replica_max_lag=replica_max_lag,
        causal_reads=causal_reads,
        **params,
    )


_P = ParamSpec("_P")


def _same_parameters(
    model: Callable[_P, ConnectionPool],
) -> Callable[[Callable[..., ConnectionPool]], Callable[_P, ConnectionPool]]:
    """Give the decorated function the parameters of ``model``, for help() and type checkers.

    For a function that passes its arguments on to ``model``, unchanged: the parameters
    are then written once, where they take effect.
    """

    def derive(fn: Callable[..., ConnectionPool]) -> Callable[_P, ConnectionPool]:
        signature = inspect.signature(model).replace(return_annotation=ConnectionPool.__name__)
        fn.__signature__ = signature  # type: ignore[attr-defined]
        return fn

    return derive


_global_pool: ConnectionPool | None = None
_global_lock = threading.Lock()


@_same_parameters(ConnectionPool)
def get_global_pool(*args: Any, **options: Any) -> ConnectionPool:
    """The process-wide pool, made by the first call; later calls return it whatever they pass.

    Once that pool is disposed of, the next call makes a new one from its own arguments.

    It takes ConnectionPool's arguments. Options left out come from the config entry,
    then from the defaults (size 10, timeout 30, max_overflow 5, recycle 3600; driver
    pymysql, or the embedded SQLite database when there is no config file at all).
    """
    global _global_pool
    pool = _global_pool
    if pool is None or pool._closed:
        with _global_lock:
            pool = _global_pool
            if pool is None or pool._closed:
                pool = _global_pool = ConnectionPool(*args, **options)
    return pool
