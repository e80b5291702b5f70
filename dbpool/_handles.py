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
Connections opened ahead of demand (``min_idle``) wait as "spares": handles already
counted as live and filled, which the factory hands to DBUtils before making an
empty one. Shared mode's idle order (FIFO or LIFO) and the closing of connections
idle too long reach into PooledDB's idle list, under PooledDB's own lock.

Checkout and return must survive an exception raised anywhere, even by a signal
handler between two bytecodes. So a handle says itself whether it is lent: ``lent``
is set when it is taken and cleared only when it is put back with its connection
reset (or closed); ``owners`` holds the lease list of each PooledConnection lending
it, which is emptied at the very start of its return. A handle taken while still
marked lent and with no owner left is one whose last return was cut short: its
connection is in an unknown state and is closed, never lent as it is. Only
persistent mode may lend a handle that has owners, to the same thread again.
The same holds inside DBUtils: PooledDB's lock is one whose acquire and release are
C calls (``_DBUtilsLock``), so that no exception can fall between taking it and the
block that gives it back, and put() takes a token's connection out of the token
before giving it to DBUtils, so that a token dropped later has nothing to give twice.
"""

from __future__ import annotations

import _thread
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from dbutils.persistent_db import PersistentDB
from dbutils.pooled_db import PooledDB

from .errors import ConfigError
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
        "__weakref__",
        "close_on_release",
        "created",
        "discard",
        "dropped",
        "epoch",
        "expires",
        "factory",
        "host",
        "lent",
        "owners",
        "raw",
        "returned",
        "uses",
    )

    def __init__(self, factory: _HandleFactory) -> None:
        self.factory = factory
        self.raw: Any = None
        self.host: HostState | None = None  # the server of ``raw``, for a host list
        self.created = 0.0
        self.expires = float("inf")
        self.returned = 0.0
        self.epoch = -1
        self.lent = False  # taken from the store and not yet put back
        self.owners: list[list[Any]] = []  # the lease lists of the connections lending it
        self.dropped = False
        self.close_on_release = False
        self.uses = 0  # times lent since its connection was opened
        self.discard = False  # the application asked to close it when given back

    def close(self) -> None:
        """Called by DBUtils when it lets the slot go (under its lock, or in ``__del__``)."""
        if not self.dropped:
            self.dropped = True
            # deque.append is atomic: no lock, so this is safe wherever DBUtils calls it.
            self.factory.dropped.append(self)

    # A handle nothing holds any more was let go without its close() having run (an
    # exception from a signal handler in a DBUtils finalizer): it is dropped all the
    # same, so its slot is freed (``live`` holds handles weakly) and its connection closed.
    __del__ = close

    def borrowers(self) -> int:
        """How many PooledConnections lend it now (a lease list empties when its return starts)."""
        owners = self.owners
        if owners and not all(owners):
            owners[:] = [lease for lease in owners if lease]
        return len(owners)


class _HandleFactory:
    """A DB-API-shaped module that makes empty handles, given to DBUtils as its creator.

    ``live`` holds every handle not yet dropped, which bounds the pool; ``dropped``
    queues the handles DBUtils let go, for the pool to close and forget. ``live`` holds
    them weakly: a handle is kept by DBUtils, a lease, or these queues, and one that
    none of them holds is lost to the pool (see ``_Handle.__del__``).
    """

    threadsafety = 1
    OperationalError = InterfaceError = InternalError = _NeverRaised

    def __init__(self) -> None:
        self.dropped: deque[_Handle] = deque()
        self.live: weakref.WeakSet[_Handle] = weakref.WeakSet()
        # Handles opened ahead of demand, handed out before new empty ones.
        self.spares: deque[_Handle] = deque()

    def connect(self) -> _Handle:
        # Called by DBUtils while the pool lock is held: no I/O here.
        if self.spares:
            return self.spares.pop()  # the newest: the older ones are closer to max_idle
        return self.reserve()

    def reserve(self) -> _Handle:
        """A new empty handle counted as live, for the pool to fill (under the pool lock)."""
        handle = _Handle(self)
        self.live.add(handle)
        return handle


class _DBUtilsLock(_thread.RLock):  # type: ignore[misc]  # final only in the stubs
    """PooledDB's lock in place of its Condition: entered and left in C, with no Python frame.

    A signal handler runs only between bytecodes of Python code. Condition's __enter__ and
    __exit__ are Python functions, so a handler that raises right after the acquire, or
    right before the release, leaves the lock held and every other thread waiting on it
    for good; the C methods of an RLock leave no such point. Reentrant, because DBUtils
    gives a dropped token's connection back (in its ``__del__``) in whatever thread drops
    it, even one inside the lock already. Nothing ever waits on it: PooledDB waits only
    for ``maxconnections``, which the pool leaves unbounded, so notifying is a no-op.
    """

    def notify(self, n: int = 1) -> None:
        return None

    def notify_all(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> bool:
        raise RuntimeError("nothing waits on PooledDB's lock in dbpool")


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

    @property
    def idle_list(self) -> list[Any] | None:
        """The list of idle handles any thread may take (its len() is ``idle``); None if none."""
        ...

    def owns_handle(self) -> bool:
        """Whether the calling thread has a handle of its own, to take without a free slot."""
        ...

    def full(self) -> bool:
        """Whether ``size`` open connections wait idle already (called under the pool lock)."""
        ...

    def take(self) -> tuple[Any, _Handle]:
        """A DBUtils token and its handle: an idle one, else a new one (no I/O)."""
        ...

    def put(self, token: Any, handle: _Handle, keep: bool = True) -> None:
        """Give a handle back to DBUtils: kept idle, or (``keep`` false) dropped."""
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

    def evict(self, stale: Callable[[_Handle], bool], keep: int) -> list[_Handle]:
        """Take out of the store the idle handles ``stale`` picks, oldest first, keeping ``keep``.

        The handles returned are no longer the store's: the pool closes and forgets them.
        """
        ...

    def resize(self, size: int) -> None:
        """Keep at most ``size`` handles idle from now on."""
        ...


class _SharedStore:
    """Shared mode: DBUtils' PooledDB keeps the idle handles of all threads.

    PooledDB hands out idle connections first in, first out. That rotates
    work over every kept connection, so none idles long enough to meet the
    server's ``wait_timeout``; connections beyond ``size`` are closed at return.
    """

    timeout_hint = ""

    def __init__(self, factory: _HandleFactory, size: int, lifo: bool = False) -> None:
        # reset=False: rollback happens in the pool, outside DBUtils' lock.
        # maxcached=0 (no bound): the pool decides under its lock what is kept (see put).
        self._db = PooledDB(factory, maxcached=0, reset=False, **_DBUTILS_OPTIONS)
        if not isinstance(getattr(self._db, "_idle_cache", None), list) or not isinstance(
            getattr(self._db, "_lock", None), threading.Condition
        ):
            # LIFO order, max_idle and resize() work on PooledDB's idle list and lock.
            raise ConfigError(
                "this DBUtils has no PooledDB._idle_cache and _lock, which dbpool's shared mode "
                "builds on: install a DBUtils release dbpool supports (see its requirements)"
            )
        self._db._lock = _DBUtilsLock()  # nothing has taken it yet: no connection is made
        self.size = size
        # PooledDB's own list, read rather than counted: DBUtils takes a handle back by
        # itself when a token is garbage-collected (a checkout cut short), uncounted.
        # Also read without the lock, for its length (ConnectionPool._park).
        self.idle_list: list[Any] = self._db._idle_cache
        # PooledDB lends from the front of its idle list and appends at the back (FIFO);
        # LIFO moves each handle given back to the front, so it is lent next.
        self._lifo = lifo

    @property
    def idle(self) -> int:
        return len(self.idle_list)

    def owns_handle(self) -> bool:
        return False

    def full(self) -> bool:
        return self.idle >= self.size

    def take(self) -> tuple[Any, _Handle]:
        token = self._db.connection(shareable=False)
        # The token's own SteadyDB connection rather than the token's attribute proxy, a
        # Python __getattr__ on every checkout (DBUtils sets _con in its constructor).
        return token, token._con.dbapi_connection

    def put(self, token: Any, handle: _Handle, keep: bool = True) -> None:
        # Out of the token first, in one statement with no call in it (no signal handler
        # runs there): the token, should it be dropped later, gives nothing back again.
        # DBUtils' token.close() clears it only after giving it back, and one cut between
        # the two would put the handle in the idle list twice, to be lent twice.
        steady, token._con = token._con, None
        if steady is None:
            return
        if keep:
            # What PooledDB.cache() does with our options (no reset, no bound, nobody to
            # notify), in one critical section entered and left in C.
            db = self._db
            with db._lock:
                db._connections -= 1
                if self._lifo:
                    self.idle_list.insert(0, steady)  # lent next
                else:
                    self.idle_list.append(steady)
            return
        # Dropped, not cached: only open connections wait in PooledDB's idle list.
        steady.close()  # DBUtils closes the handle, which queues it as dropped

    def thread_handle(self) -> _Handle | None:
        return None

    def forget_thread(self) -> None:
        return None

    def close_idle(self) -> None:
        self._db.close()

    def evict(self, stale: Callable[[_Handle], bool], keep: int) -> list[_Handle]:
        db = self._db
        taken: list[_Handle] = []
        with db._lock:
            cache = db._idle_cache
            # The oldest given back are at the back in LIFO order, at the front in FIFO.
            for steady in sorted(cache, key=lambda s: s.dbapi_connection.returned):
                if len(cache) <= keep:
                    break
                handle = steady.dbapi_connection
                if stale(handle):
                    cache.remove(steady)
                    handle.dropped = True  # DBUtils' finalizer of `steady` must not queue it
                    taken.append(handle)
        return taken

    def resize(self, size: int) -> None:
        self.size = size  # full() reads it; PooledDB itself keeps any number


class _PersistentStore:
    """Persistent mode: DBUtils' PersistentDB keeps one handle per thread.

    DBUtils' thread-local finalizer drops the handle of a thread that ended.
    """

    idle = 0  # a thread's kept connection is not free for another thread
    idle_list = None
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
        handle = self.thread_handle()
        return handle is not None and not handle.dropped

    def full(self) -> bool:
        return False

    def take(self) -> tuple[Any, _Handle]:
        steady = self._db.connection()
        if steady.dbapi_connection.dropped:
            # Closed for this thread by another one (a close_thread_connection() honoured
            # at a return made elsewhere): unbind it, and bind a new handle.
            self.forget_thread()
            steady = self._db.connection()
        return steady, steady.dbapi_connection

    def put(self, token: Any, handle: _Handle, keep: bool = True) -> None:
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

    def evict(self, stale: Callable[[_Handle], bool], keep: int) -> list[_Handle]:
        return []  # the pool closes idle connections of threads, keeping their handles

    def resize(self, size: int) -> None:
        return None


def make_store(mode: str, factory: _HandleFactory, size: int, lifo: bool = False) -> _Store:
    """The store of ``mode`` ("shared" or "persistent"), already validated."""
    if mode == "persistent":
        return _PersistentStore(factory)
    return _SharedStore(factory, size, lifo)
