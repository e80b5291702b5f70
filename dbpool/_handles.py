"""The DBUtils adapter: the handles DBUtils pools, and the two stores built on them.

DBUtils holds handles, never connections. PooledDB and PersistentDB are given a
fake DB-API module whose connect() makes an empty ``_Handle`` (no I/O); the pool
fills a handle with a driver connection, validates, resets and empties it itself,
outside every lock, because DBUtils would connect, ping and roll back under its own.
DBUtils drops a handle by calling its close(), which only queues it: the pool closes
the connection inside later, outside any lock, and frees its slot.
The lock order is pool -> DBUtils: the stores' take() and put() run under the pool's
lock, and nothing here takes the pool's lock.
A borrowed handle belongs to its borrower: between checkout and checkin only the
borrowing thread touches its connection and timestamps, without a lock.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from dbutils.persistent_db import PersistentDB
from dbutils.pooled_db import PooledDB


class _NeverRaised(Exception):
    """Stands for DBUtils' failover errors: we never let it fail over.

    DBUtils' failover re-executes a statement that failed on a dead connection, which
    may have run already. It only acts on these errors, raised by its own cursors, and
    no statement goes through them (a lent connection runs on the driver's own), so
    DBUtils never fails over, nor asks an ``isfatal`` callback.
    """


class _Handle:
    """The object DBUtils pools: a slot whose driver connection dbpool may replace.

    DBUtils keeps these as if they were DB-API connections. The driver
    connection inside (``raw``) is opened, validated, reset and closed by the
    pool outside every lock, which DBUtils' own steady connections cannot do.
    """

    __slots__ = (
        "borrows",
        "close_on_release",
        "created",
        "dropped",
        "epoch",
        "expires",
        "raw",
        "returned",
        "slots",
    )

    def __init__(self, slots: _Slots) -> None:
        self.slots = slots
        self.raw: Any = None
        self.created = 0.0
        self.expires = float("inf")
        self.returned = 0.0
        self.epoch = -1
        self.borrows = 0
        self.dropped = False
        self.close_on_release = False

    def close(self) -> None:
        """Called by DBUtils when it lets the slot go (under its lock, or in ``__del__``)."""
        if not self.dropped:
            self.dropped = True
            # deque.append is atomic: no lock, so this is safe wherever DBUtils calls it.
            self.slots.graveyard.append(self)


class _Slots:
    """A DB-API-shaped factory of empty handles, given to DBUtils as its creator."""

    threadsafety = 1
    OperationalError = InterfaceError = InternalError = _NeverRaised

    def __init__(self) -> None:
        self.graveyard: deque[_Handle] = deque()
        self.live: set[_Handle] = set()

    def connect(self) -> _Handle:
        # Called by DBUtils while the pool lock is held: no I/O here.
        handle = _Handle(self)
        self.live.add(handle)
        return handle


_DBUTILS_OPTIONS: dict[str, Any] = {
    "ping": 0,  # validation happens outside DBUtils' lock
    "failures": _NeverRaised,
}


class _SharedStore:
    """Shared mode: DBUtils' PooledDB keeps the idle handles of all threads.

    PooledDB hands out idle connections first in, first out. That rotates
    work over every kept connection, so none idles long enough to meet the
    server's ``wait_timeout``; connections beyond ``size`` are closed at return.
    """

    thread_affine = False

    def __init__(self, slots: _Slots, size: int) -> None:
        # reset=False: rollback happens in the pool, outside DBUtils' lock.
        # maxcached=size: a handle given back to a full pool is dropped, not kept.
        self._db = PooledDB(slots, maxcached=size, reset=False, **_DBUTILS_OPTIONS)
        self.size = size
        self.idle = 0

    def ready(self) -> bool:
        return self.idle > 0

    def full(self) -> bool:
        return self.idle >= self.size

    def take(self) -> tuple[Any, _Handle]:
        token = self._db.connection(shareable=False)
        if self.idle:
            self.idle -= 1
        return token, token.dbapi_connection

    def put(self, token: Any, handle: _Handle) -> None:
        token.close()
        if not handle.dropped:
            self.idle += 1

    def thread_handle(self) -> None:
        return None

    def forget_thread(self) -> None:
        return None

    def close_idle(self) -> None:
        self._db.close()
        self.idle = 0


class _PersistentStore:
    """Persistent mode: DBUtils' PersistentDB keeps one handle per thread."""

    thread_affine = True

    def __init__(self, slots: _Slots) -> None:
        # threading.local: DBUtils' default pure-Python local takes a lock on every access.
        self._db = PersistentDB(slots, closeable=True, threadlocal=threading.local,
                                **_DBUTILS_OPTIONS)

    def ready(self) -> bool:
        return hasattr(self._db.thread, "connection")

    def full(self) -> bool:
        return False

    def take(self) -> tuple[Any, _Handle]:
        steady = self._db.connection()
        return steady, steady.dbapi_connection

    def put(self, token: Any, handle: _Handle) -> None:
        return None

    @property
    def idle(self) -> int:
        return 0  # a thread's kept connection is not free for another thread

    def thread_handle(self) -> _Handle | None:
        steady = getattr(self._db.thread, "connection", None)
        return None if steady is None else steady.dbapi_connection

    def forget_thread(self) -> None:
        steady = getattr(self._db.thread, "connection", None)
        if steady is not None:
            del self._db.thread.connection
            steady.close()  # DBUtils closes the handle, which frees the slot

    def close_idle(self) -> None:
        return None
