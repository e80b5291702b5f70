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
pool's lock and opened outside it (see ``ConnectionPool._fill_plan``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    """Runs ``ConnectionPool._maintain`` on a thread of its own, when woken or due."""

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
                failed = pool._maintain()
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
