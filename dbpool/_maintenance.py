"""The pool's maintenance thread: connections opened ahead of demand, idle ones closed.

Why a thread: ``min_idle`` connections must be opened when nobody calls the pool
(at start, after a drain, after a burst took the spares), and connections idle
past ``max_idle`` must close even when no caller comes to notice them; a caller
must never pay for either. So one daemon thread per pool, started on first need,
sleeps until woken (a checkout that took one of the last idle connections, a
drain, ``wait()``) or until the next idle connection may have aged out. It holds
the pool through a weak reference only, so a pool dropped without ``dispose()``
is still collected, and the thread ends soon after.
Connects of one top-up run in parallel, each on its slot reserved under the
pool's lock and opened outside it (see ``fill_plan`` below).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from .stats import RETIRE_COUNTERS

if TYPE_CHECKING:
    from ._handles import _Handle
    from .hosts import HostState
    from .pool import ConnectionPool

log = logging.getLogger("dbpool")

# Longest sleep between two looks at a pool that may have been dropped.
_IDLE_WAKE = 1.0
# The pause after a failed top-up, doubled at each further failure up to the maximum.
_RETRY_FIRST = 0.1
_RETRY_MAX = 5.0
# Bounds on the pause between two looks for connections idle past max_idle.
_EVICT_MIN = 0.05
_EVICT_MAX = 30.0


class Maintainer:
    """Runs ``maintain`` (below) on a thread of its own, when woken or due."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = weakref.ref(pool)
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self._retry = 0.0  # the pause before the next try after failures, 0: none pending
        #: Connects in flight for min_idle; read and changed under the pool's lock.
        self.opening = 0
        #: The error of the last top-up, None after one that succeeded.
        self.error: BaseException | None = None
        #: Top-up rounds begun, and the one that set ``error``; under the pool's lock.
        self.started = 0
        self.error_round = 0

    def wake(self) -> None:
        """Have the thread look at the pool now (cheap: safe under the pool's lock)."""
        if self._thread is None:
            self._start()
        self._event.set()

    def stop(self) -> None:
        self._stopped = True
        self._event.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopped:
                return
            thread = threading.Thread(target=self._run, name="dbpool-maintenance", daemon=True)
            self._thread = thread
            thread.start()

    def _run(self) -> None:
        while not self._stopped:
            pool = self._pool()
            if pool is None:
                return
            try:
                failed = maintain(pool)
            except Exception:  # never let the thread die: the next wake tries again
                log.exception("the maintenance of %s failed", pool.name)
                failed = True
            if failed:
                self._retry = min(max(self._retry * 2, _RETRY_FIRST), _RETRY_MAX)
            else:
                self._retry = 0.0
            pause = _IDLE_WAKE
            if pool._max_idle:
                pause = min(max(pool._max_idle / 2, _EVICT_MIN), _EVICT_MAX)
            if self._retry:
                pause = min(pause, self._retry)
            del pool  # sleep without keeping the pool alive
            self._event.wait(pause)
            self._event.clear()


# -- the rounds, run on the Maintainer's thread (and the checkout's look at min_idle) --


def idle_count(pool: ConnectionPool) -> int:
    """Connections any caller could take now; called with the lock held."""
    parked = 0 if pool._binds_threads else len(pool._parked)  # see ConnectionPool._park
    return pool._store.idle + len(pool._handles.spares) + parked


def wants_more_idle(pool: ConnectionPool) -> bool:
    """Whether min_idle wants another connection and there is room for it (lock held)."""
    opening = pool._maintainer.opening
    return idle_count(pool) + opening < pool.min_idle and len(pool._handles.live) < pool.max_size


def evict_idle(pool: ConnectionPool) -> None:
    """Close idle connections unused for max_idle seconds, keeping min_idle of them."""
    cutoff = monotonic() - pool._max_idle

    def stale(handle: _Handle) -> bool:
        return handle.returned <= cutoff

    with pool._lock:  # critical section: pick and detach, no I/O
        pool._unpark_all()  # parked connections age like any idle one
        evicted = pool._store.evict(stale, keep=pool.min_idle)
        keep = max(pool.min_idle - pool._store.idle, 0)
        spares = pool._handles.spares
        # Spares are in the order made: the oldest first.
        while len(spares) > keep and stale(spares[0]):
            evicted.append(spares.popleft())
        raws = detach(pool, evicted, stale)
    close_detached(pool, evicted, raws, "idle")


def stale_sweeper(pool: ConnectionPool) -> Callable[[HostState], None]:
    """``HostList.on_unusable`` for ``pool``: retire_stale(), holding the pool weakly."""
    ref = weakref.ref(pool)

    def sweep(host: HostState) -> None:
        owner = ref()
        if owner is not None:
            retire_stale(owner, host)

    return sweep


def retire_stale(pool: ConnectionPool, host: HostState) -> None:
    """Close the idle connections to a server just found unable to do its job, at once.

    A host found read-only, not ready or lagging makes the connections opened to it
    before stale (HostList.unusable); checkout retires such a connection when it comes
    to take it. But a thread that keeps claiming the connection it gave back (see
    ConnectionPool._park) never comes to the other idle ones, which would hold
    sessions on the denied server until ``max_idle``. Called by the host list, without
    the pool's lock (a statement's error at return, a new connection vetted out).
    """

    def stale(handle: _Handle) -> bool:
        return handle.host is host and handle.created <= host.stale_before

    with pool._lock:  # critical section: pick and detach, no I/O
        parked = pool._parked
        # list(): the owners claim and park entries without the lock. A pop that finds
        # the key may get a connection parked again since the list was made: back to
        # the store it goes too, stale or not, which is harmless (it stays idle).
        for key, entry in list(parked.items()):
            if stale(entry[1]) and parked.pop(key, None) is not None:
                pool._unpark(entry)
        evicted = pool._store.evict(stale, keep=0)
        spares = pool._handles.spares
        for handle in [handle for handle in spares if stale(handle)]:
            spares.remove(handle)
            evicted.append(handle)
        raws = detach(pool, evicted, stale)
    close_detached(pool, evicted, raws, "stale")


def detach(
    pool: ConnectionPool, evicted: list[_Handle], stale: Callable[[_Handle], bool]
) -> list[Any]:
    """Forget the handles taken out, and take the stale connections threads keep (lock held).

    In persistent mode a thread's own idle connection is closed too; its slot stays
    with the thread. Returns those connections, for close_detached().
    """
    forget(pool, evicted)
    raws = []
    if pool.mode == "persistent":
        spares = pool._handles.spares
        raws = [
            pool._take_raw(h)
            for h in pool._handles.live
            if not h.lent and h.raw is not None and h not in spares and stale(h)
        ]
    if pool._waiters and evicted:
        pool._cond.notify(len(evicted))
    return raws


def close_detached(
    pool: ConnectionPool, evicted: list[_Handle], raws: list[Any], reason: str
) -> None:
    """Close what detach() left: the handles taken out, and the threads' connections."""
    close_evicted(pool, evicted, reason)
    for raw in raws:
        pool._tallies.append("closed")  # before the close's I/O, as _retire counts
        pool._tallies.append(RETIRE_COUNTERS[reason])
        pool._close_raw(raw)


def forget(pool: ConnectionPool, handles: list[_Handle]) -> None:
    """Drop handles taken from the store or the spares; called with the lock held."""
    for handle in handles:
        pool._handles.live.discard(handle)


def close_evicted(pool: ConnectionPool, handles: list[_Handle], reason: str) -> None:
    """Close the connections of handles taken out of the pool (no lock held)."""
    for handle in handles:
        if handle.raw is not None:
            pool._retire(handle, reason)


def fill_plan(pool: ConnectionPool) -> tuple[list[_Handle], int]:
    """Reserve the slots of the connections min_idle still wants (under the lock)."""
    with pool._lock:  # critical section: count and reserve, no I/O
        if pool._closed:
            return [], 0
        live = pool._handles.live
        if pool.mode == "persistent":
            idle = len(pool._handles.spares)  # a thread's own connection is not for others
        else:
            # Handles whose connection was closed at return wait empty among the idle
            # ones: take them out, so that their slots take connections opened now.
            forget(pool, pool._store.evict(lambda handle: handle.raw is None, keep=0))
            idle = sum(1 for h in live if not h.lent and h.raw is not None)
            idle += len(pool._parked)  # idle, though marked lent (see ConnectionPool._park)
        wanted = pool.min_idle - idle - pool._maintainer.opening
        room = pool.max_size - len(pool._handles.live)
        handles = [pool._handles.reserve() for _ in range(max(min(wanted, room), 0))]
        pool._maintainer.opening += len(handles)
        if handles:
            pool._maintainer.started += 1
        return handles, pool._maintainer.started


def fill(pool: ConnectionPool, handle: _Handle) -> BaseException | None:
    """Open one connection ahead of demand on a reserved slot (no lock held)."""
    error: BaseException | None = None
    try:
        pool._open(handle, monotonic() + pool.timeout)
    except Exception as exc:  # a listener's error too: the slot must be given back
        error = exc
    with pool._lock:  # critical section: hand the connection over, or the slot back
        pool._maintainer.opening -= 1
        kept = handle.raw is not None and not pool._closed
        if kept:
            pool._handles.spares.append(handle)
        else:
            pool._handles.live.discard(handle)
        pool._cond.notify_all()  # a waiter may take it; wait() may be done
    if not kept and handle.raw is not None:  # the pool was disposed meanwhile
        pool._retire(handle, "closed")
    return error


def maintain(pool: ConnectionPool) -> bool:
    """One round of the maintenance thread; whether a connect failed."""
    if pool._max_idle:
        evict_idle(pool)
    if not pool.min_idle:
        return False
    handles, round_number = fill_plan(pool)
    if not handles:
        return False
    errors: list[BaseException | None] = [None] * len(handles)

    def fill_slot(index: int) -> None:
        errors[index] = fill(pool, handles[index])

    # In parallel: a cold start costs one connect, not min_idle of them.
    helpers = [
        threading.Thread(target=fill_slot, args=(i,), name="dbpool-connect", daemon=True)
        for i in range(1, len(handles))
    ]
    for helper in helpers:
        helper.start()
    fill_slot(0)
    for helper in helpers:
        helper.join()
    error = next((e for e in errors if e is not None), None)
    with pool._lock:
        first = error is not None and pool._maintainer.error is None
        pool._maintainer.error = error
        pool._maintainer.error_round = round_number
        pool._cond.notify_all()
    if error is not None and not pool._closed:
        # A warning when the trouble starts; the retries that follow are logged at debug.
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "could not open the min_idle connections of %s (retrying): %s",
            pool._label,
            error,
        )
    return error is not None
