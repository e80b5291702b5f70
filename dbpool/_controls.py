"""What an application does with a running pool besides borrowing from it.

Close connections (the thread's own, the idle ones, all of them with a refill:
``drain()``), close the pool for good (``dispose()``), wait for its ``min_idle``
connections, change its bounds (``resize()``), listen to its events, read its
figures (``get_stats()``) and check its server (``check()``). Each is a method
of ConnectionPool; each takes the pool's lock for in-memory work only and does
its closing and connecting outside it. A pool with replicas passes each control
on to its pool of replicas.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from time import monotonic
from typing import TYPE_CHECKING, Any

from ._leaks import reclaim_collected, report_leaks
from ._maintenance import close_evicted, forget
from ._routing import MIN_PING_TIMEOUT, host_figures
from .errors import ConfigError, ConnectError, PoolClosed, PoolError, PoolTimeout

if TYPE_CHECKING:
    from .pool import ConnectionPool

log = logging.getLogger("dbpool")

_INF = float("inf")
#: The events of add_listener(), named as SQLAlchemy's pool events.
EVENTS: tuple[str, ...] = ("connect", "checkout", "checkin", "close")


def close_thread_connection(pool: ConnectionPool) -> None:
    """Persistent mode: close the calling thread's connection and free its slot.

    If the thread is still using it, it is closed when given back.
    Does nothing in shared mode, where connections are not bound to threads.
    """
    if pool._replicas is not None:
        pool._replicas.close_thread_connection()
    handle = pool._store.thread_handle()
    if handle is None:
        return
    with pool._lock:
        entry = pool._parked.pop(pool._my_key(), None)
        if entry is not None:
            pool._unpark(entry)  # not lent any more: closed below
        if handle.lent:
            handle.close_on_release = True
            return
    pool._store.forget_thread()
    pool._close_dropped()


def close_all(pool: ConnectionPool) -> None:
    """Close every idle connection now, and every lent one when it comes back.

    The pool stays usable and opens new connections as needed.
    """
    if pool._replicas is not None:
        pool._replicas.close_all()
    with pool._lock:
        pool._epoch += 1
        pool._unpark_all()  # parked connections are idle ones
        raws = [pool._take_raw(h) for h in pool._handles.live if not h.lent and h.raw]
        pool._stats.closed += len(raws)
        pool._store.close_idle()
        spares = pool._handles.spares
        while spares:
            pool._handles.live.discard(spares.pop())
        if pool._waiters:
            pool._cond.notify_all()
    for raw in raws:
        pool._close_raw(raw)
    pool._close_dropped()
    log.debug("closed %d idle connections of %s", len(raws), pool._label)


def drain(pool: ConnectionPool) -> None:
    """Replace every connection: close_all(), then open min_idle new ones in the background.

    Lent connections are closed when given back. For a server switch-over or
    rotated credentials: no connection made before the call is lent again.
    """
    pool.close_all()
    for each in (pool, pool._replicas):
        if each is not None and each.min_idle:
            each._maintainer.wake()


def dispose(pool: ConnectionPool) -> None:
    """Close the pool for good: waiters and later calls get PoolClosed."""
    if pool._replicas is not None:
        pool._replicas.dispose()
    with pool._lock:
        pool._closed = True
        pool._cond.notify_all()
    pool._maintainer.stop()
    pool.close_all()
    if not any(h.lent for h in list(pool._handles.live)):
        pool._finalizer()  # nothing lent out: let the driver go too


def wait(pool: ConnectionPool, timeout: float | None = None) -> None:
    """Block until ``min_idle`` connections are open, at most ``timeout`` seconds (None: ever).

    Raises the ConnectError of a failed connect at once (a refused login, an
    unreachable server), PoolTimeout when they are not open in time, and
    PoolClosed once the pool is disposed. With ``min_idle=0`` it returns at once.
    """
    from .pool import _WAIT_SLICE, _checked_timeout  # acquire()'s; pool.py imports this module

    deadline = None if timeout is None else monotonic() + _checked_timeout(timeout)
    with pool._cond:
        # Only a warm-up round that starts from now on reports its error: the wake below
        # starts one at once, even while the thread pauses after earlier failures.
        first_round = pool._maintainer.started + 1
    pool._maintainer.wake()
    with pool._cond:
        while True:
            if pool._closed:
                raise PoolClosed(f"pool {pool._label} is closed")
            error = pool._maintainer.error
            if pool._maintainer.error_round < first_round:
                error = None  # from a round begun before this call
            if isinstance(error, PoolError):
                raise type(error)(str(error)) from error
            if error is not None:
                raise ConnectError(pool._connect_failure(error, None)) from error
            # Connections made since the last close_all() or drain() only.
            epoch = pool._epoch
            live = pool._handles.live
            opened = sum(1 for h in live if h.raw is not None and h.epoch == epoch)
            if opened >= pool.min_idle:
                return
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                raise PoolTimeout(
                    f"pool {pool._label} opened {opened} of its {pool.min_idle} min_idle "
                    f"connections within {timeout:.1f}s"
                )
            pool._cond.wait(_WAIT_SLICE if remaining is None else min(remaining, _WAIT_SLICE))


def resize(pool: ConnectionPool, size: int | None = None, max_overflow: int | None = None) -> None:
    """Change ``size`` and ``max_overflow`` while the pool runs.

    Growing lets waiting callers take the new slots at once; shrinking closes idle
    connections beyond the new ``size`` now, and lent ones above the new bound
    when they come back. Waiters keep their deadlines. Bad values raise ConfigError.
    """
    changes: dict[str, Any] = {}
    if size is not None:
        changes["size"] = size
    if max_overflow is not None:
        changes["max_overflow"] = max_overflow
    try:
        options = replace(pool.settings.pool, **changes)  # checked as at construction
    except ConfigError as exc:
        raise ConfigError(f"resize(): {exc}") from None
    with pool._lock:  # critical section: in-memory state only
        pool.settings = replace(pool.settings, pool=options)
        pool.size = options.size
        pool.max_size = options.max_size
        pool._store.resize(pool.size)
        pool._unpark_all()
        evicted = pool._store.evict(lambda handle: True, keep=pool.size)
        forget(pool, evicted)
        pool._cond.notify_all()  # grown: waiters may take the new slots
    close_evicted(pool, evicted, "overflow")
    log.debug("resized %s to size %d, max %d", pool._label, pool.size, pool.max_size)
    if pool._replicas is not None:
        pool._replicas.resize(size, max_overflow)  # the same options, other hosts


def add_listener(pool: ConnectionPool, event: str, fn: Callable[[Any], object]) -> None:
    """Call ``fn(driver_connection)`` on ``event``, outside the pool's lock.

    Events: "connect" (a new connection, after its session set-up), "checkout"
    (lent by acquire()), "checkin" (given back, after its reset; not for one
    being closed), "close" (closed by the pool). What a "connect" or
    "checkout" listener raises goes up to the acquire() caller, the connection
    closed ("connect", counted as a connect failure) or given back
    ("checkout"); what a "checkin" or "close" listener raises is logged and
    ignored, since giving back and closing cannot fail.
    """
    if event not in EVENTS:
        valid = ", ".join(repr(e) for e in EVENTS)
        raise ValueError(f"unknown pool event {event!r}; valid events: {valid}")
    if not callable(fn):
        raise TypeError(f"a listener must be callable (got {type(fn).__name__})")
    with pool._lock:
        pool._listeners[event] = (*pool._listeners[event], fn)
    if pool._replicas is not None:
        pool._replicas.add_listener(event, fn)


def remove_listener(pool: ConnectionPool, event: str, fn: Callable[[Any], object]) -> None:
    """Stop calling ``fn`` on ``event``; a listener not added raises ValueError."""
    with pool._lock:
        listeners = list(pool._listeners.get(event, ()))
        listeners.remove(fn)
        pool._listeners[event] = tuple(listeners)
    if pool._replicas is not None:
        pool._replicas.remove_listener(event, fn)


def get_stats(pool: ConnectionPool) -> dict[str, Any]:
    """Counters and current figures; see the README for each key."""
    if pool._collected:
        reclaim_collected(pool)
    if pool._handles.dropped:
        pool._close_dropped()  # connections of threads that ended since the last call
    if pool._leak_threshold is not None:
        report_leaks(pool)
    with pool._lock:
        pool._fold_tallies()
        stats = pool._stats.snapshot()
        handles = list(pool._handles.live)
        in_use = sum(h.borrowers() for h in handles)
        waiting = len(pool._waiters)
        # Parked connections (see ConnectionPool._park) are idle. list() first: a claim
        # may pop one at any moment, without the lock.
        parked = {id(entry[1]) for entry in list(pool._parked.values())}
    open_count = sum(1 for h in handles if h.raw is not None)
    idle = sum(1 for h in handles if h.raw is not None and (not h.lent or id(h) in parked))
    stats.update(
        name=pool.name,
        total_connections=open_count,
        pool_size=idle,
        max_size=pool.max_size,
        in_use=in_use,
        waiting=waiting,
        size=pool.size,
        min_idle=pool.min_idle,
        mode=pool.mode,
        hosts=host_figures(pool, handles, parked),
    )
    if pool._replicas is not None:
        replica_stats = pool._replicas.get_stats()
        stats["hosts"].update(replica_stats.pop("hosts"))
        stats["replicas"] = replica_stats
    return stats


def check(pool: ConnectionPool, timeout: float = 5.0) -> dict[str, Any]:
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
        raise ValueError(f"check(): timeout must be a positive number of seconds (got {timeout!r})")
    deadline = monotonic() + timeout
    latency: float | None = None
    error: str | None = None
    params = pool._params
    host, port = params.get("host"), params.get("port")
    if pool.settings.driver == "sqlite":
        host = params.get("path")
    elif pool._hosts is not None and pool.settings.hosts:
        first = pool.settings.hosts[0]
        host, port = first.host, first.port
    try:
        # One retry: a connection the server dropped is replaced rather than reported.
        conn = pool.acquire(timeout=timeout, max_retries=1)
    except Exception as exc:  # a down server, a full pool, a closed pool: all are answers
        error = pool._scrub(exc) or type(exc).__name__
    else:
        handle = conn._lease[0][1]
        if handle.host is not None:
            host, port = handle.host.address.host, handle.host.address.port
        try:
            limit = max(deadline - monotonic(), MIN_PING_TIMEOUT)
            started = monotonic()
            with pool._driver.bounded(conn._raw, limit):
                pool._driver.ping(conn._raw)
            latency = monotonic() - started
        except Exception as exc:
            error = f"the server did not answer: {pool._scrub(exc) or type(exc).__name__}"
            pool._retire(handle, "broken")
        finally:
            pool.release(conn)
    with pool._lock:
        in_use = sum(h.borrowers() for h in pool._handles.live)
        waiting = len(pool._waiters)
    return {
        "ok": error is None,
        "latency_s": latency,
        "error": error,
        "in_use": in_use,
        "waiting": waiting,
        "name": pool.name,
        "host": host,
        "port": port,
        "database": params.get("database"),
    }
