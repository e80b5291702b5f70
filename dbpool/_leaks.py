"""Leak watching: connections held too long, and connections never given back.

With ``leak_threshold`` set, ``acquire()`` records the borrower's stack in the
connection and the pool keeps the lent connections in a weak set. A scan, run
at most once a second from ``acquire()`` and ``get_stats()``, warns once about
each connection held past the threshold; ``release()`` warns about one given
back after it. Whatever the threshold, a connection garbage-collected without
release queues its lease (``PooledConnection.__del__``): the pool's next call
closes it, frees its slot and says where it was acquired, if it knows. All of
it runs in the pool's callers' threads, the lock held for in-memory work only.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import ConnectionPool

log = logging.getLogger("dbpool")

# Frames of the acquiring stack kept for a leak warning.
STACK_DEPTH = 12
# Longest pause between two looks for connections held past leak_threshold.
_SCAN_INTERVAL = 1.0


def report_leaks(pool: ConnectionPool) -> None:
    """Warn, once each, about connections held past ``leak_threshold`` and not back yet."""
    threshold = pool._leak_threshold
    now = monotonic()
    if threshold is None or now < pool._next_leak_scan:
        return
    pool._next_leak_scan = now + min(threshold, _SCAN_INTERVAL)
    with pool._lock:  # critical section: in-memory scan only
        late = [c for c in pool._lent if not c._reported and now - c._since > threshold]
        for conn in late:
            conn._reported = True
        pool._stats.leaks_reported += len(late)
    for conn in late:
        log.warning(
            "a connection of %s has been held for %.1fs and is not back yet "
            "(leak_threshold %.1fs); it was acquired at:\n%s",
            pool._label,
            now - conn._since,
            threshold,
            conn._origin,
        )


def reclaim_collected(pool: ConnectionPool) -> None:
    """Close the connections garbage-collected without release, and free their slots.

    What such a connection was doing is unknown (a half-read result, an open
    transaction), so it is closed rather than reused.
    """
    collected = pool._collected
    while collected:
        try:
            token, handle, since, origin = collected.popleft()
        except IndexError:
            break
        if handle.factory is not pool._handles:
            continue  # lent before os.fork(): the parent's business
        with pool._lock:  # critical section: decide and detach under the lock
            raw = None
            if not handle.borrowers():  # else the owning thread uses it again right now
                raw, handle.raw = handle.raw, None
                handle.expires = float("inf")
                handle.lent = False
                pool._store.put(token, handle, keep=False)
            if raw is not None:  # counted in ``reclaimed`` when it was collected
                pool._stats.closed += 1
            if pool._waiters:
                pool._cond.notify()
        if raw is not None:
            pool._close_raw(raw)
        held = monotonic() - since
        if origin is None:
            origin = "(set leak_threshold to record where connections are acquired)\n"
        log.warning(
            "a connection of %s was garbage-collected after %.1fs without being "
            "given back; its slot is reclaimed and it is closed; it was acquired "
            "at:\n%s",
            pool._label,
            held,
            origin,
        )
