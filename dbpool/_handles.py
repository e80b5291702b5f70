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
from typing import Any, Protocol

from dbutils.persistent_db import PersistentDB
from dbutils.pooled_db import PooledDB

from .hosts import HostState


class _NeverRaised(Exception):
    """Stands for DBUtils' failover errors: we never let it fail over.

    DBUtils' failover re-executes a statement that failed on a dead connection, which
    may have run already. It only acts on these errors, raised by its own cursors, and
    no statement goes through them (a lent connection runs on the driver's own), so
    DBUtils never fails over, nor asks an ``isfatal`` callback.
    """


class _Handle:
    """The object DBUtils pools: a slot whose driver connection the pool may replace.

    The driver connection inside (``raw``) is opened, validated, reset and closed
    by the pool, outside every lock.
    """

    __slots__ = (
        "borrows",
        "close_on_release",
        "created",
        "dropped",
        "epoch",
        "expires",
        "factory",
        "host",
        "raw",
        "returned",
    )

    def __init__(self, factory: _HandleFactory) -> None:
        self.factory = factory
        self.raw: Any = None
        self.host: HostState | None = None  # the server of ``raw``, for a host list
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
            self.factory.dropped.append(self)


class _HandleFactory:
    """A DB-API-shaped module that makes empty handles, given to DBUtils as its creator.

    ``live`` holds every handle not yet dropped, which bounds the pool; ``dropped``
    queues the handles DBUtils let go, for the pool to close and forget.
    """

    threadsafety = 1
    OperationalError = InterfaceError = InternalError = _NeverRaised

    def __init__(self) -> None:
        self.dropped: deque[_Handle] = deque()
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


class _Store(Protocol):
    """Where a mode keeps the handles not lent out; every call is made under the pool lock."""

    @property
    def idle(self) -> int:
        """Handles kept idle that any thread may take."""
        ...

    @property
    def timeout_hint(self) -> str:
        """What a timeout message adds to explain where the connections are."""
        ...

    def owns_handle(self) -> bool:
        """Whether the calling thread has a handle of its own, to take without a free slot."""
        ...

    def full(self) -> bool:
        """Whether a handle given back now would be dropped rather than kept."""
        ...

    def take(self) -> tuple[Any, _Handle]:
        """A DBUtils token and its handle: an idle one, else a new one (no I/O)."""
        ...

    def put(self, token: Any, handle: _Handle) -> None:
        """Give a handle back to DBUtils, which keeps it or drops it."""
        ...

    def thread_handle(self) -> _Handle | None:
        """The handle bound to the calling thread, if the mode binds them."""
        ...

    def forget_thread(self) -> None:
        """Unbind the calling thread's handle, so that DBUtils drops it."""
        ...

    def close_idle(self) -> None:
        """Drop every idle handle (DBUtils calls their close(), which only queues them)."""
        ...


class _SharedStore:
    """Shared mode: DBUtils' PooledDB keeps the idle handles of all threads.

    PooledDB hands out idle connections first in, first out. That rotates
    work over every kept connection, so none idles long enough to meet the
    server's ``wait_timeout``; connections beyond ``size`` are closed at return.
    """

    timeout_hint = ""

    def __init__(self, factory: _HandleFactory, size: int) -> None:
        # reset=False: rollback happens in the pool, outside DBUtils' lock.
        # maxcached=size: a handle given back to a full pool is dropped, not kept.
        self._db = PooledDB(factory, maxcached=size, reset=False, **_DBUTILS_OPTIONS)
        self.size = size
        self.idle = 0  # PooledDB's idle list, counted: it has no cheap length

    def owns_handle(self) -> bool:
        return False

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

    def thread_handle(self) -> _Handle | None:
        return None

    def forget_thread(self) -> None:
        return None

    def close_idle(self) -> None:
        self._db.close()
        self.idle = 0


class _PersistentStore:
    """Persistent mode: DBUtils' PersistentDB keeps one handle per thread.

    DBUtils' thread-local finalizer drops the handle of a thread that ended.
    """

    idle = 0  # a thread's kept connection is not free for another thread
    timeout_hint = (
        ": in persistent mode each connection stays with its "
        "thread until the thread ends or calls close_thread_connection()"
    )

    def __init__(self, factory: _HandleFactory) -> None:
        # threading.local: DBUtils' default pure-Python local takes a lock on every access.
        self._db = PersistentDB(
            factory, closeable=True, threadlocal=threading.local, **_DBUTILS_OPTIONS
        )

    def owns_handle(self) -> bool:
        return hasattr(self._db.thread, "connection")

    def full(self) -> bool:
        return False

    def take(self) -> tuple[Any, _Handle]:
        steady = self._db.connection()
        return steady, steady.dbapi_connection

    def put(self, token: Any, handle: _Handle) -> None:
        return None  # the handle stays with its thread

    def thread_handle(self) -> _Handle | None:
        steady = getattr(self._db.thread, "connection", None)
        return None if steady is None else steady.dbapi_connection

    def forget_thread(self) -> None:
        steady = getattr(self._db.thread, "connection", None)
        if steady is not None:
            del self._db.thread.connection
            steady.close()  # DBUtils closes the handle, which queues it as dropped

    def close_idle(self) -> None:
        return None  # a kept handle is its thread's, idle or not


def make_store(mode: str, factory: _HandleFactory, size: int) -> _Store:
    """The store of ``mode`` ("shared" or "persistent"), already validated."""
    if mode == "persistent":
        return _PersistentStore(factory)
    return _SharedStore(factory, size)
