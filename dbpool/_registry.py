"""The class-level pools of the facade: one per config name, made on first use."""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import inspect
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from ._session import _Session
from ._sql import _DIALECTS, _FORMAT
from .config import _ALIASES, _SECRET_MARKERS, POOL_OPTION_NAMES, _masked
from .connection import PooledConnection
from .errors import ConfigError, PoolClosed, PoolError
from .hosts import parse_hosts
from .pool import make_pool


class _Keeper:
    """Marks a thread that keeps its persistent-mode connection between statements."""

    __slots__ = ("__weakref__",)


# Options naming servers: equal when they name the same servers, however spelled.
_HOST_KEYS = ("host", "ip", "replicas")


class _PoolEntry:
    """One named config's pool, with what the facade keeps per thread for it."""

    def __init__(self, config_name: str, options: Mapping[str, Any]) -> None:
        self.config_name = config_name
        self.options = dict(options)
        self.pool = make_pool(config_name=config_name, **self.options)
        self.dialect = _DIALECTS.get(self.pool.settings.driver, _FORMAT)
        self.persistent = self.pool.mode == "persistent"
        self.closed = False
        # The session of the transaction block the running code is in (see pin()).
        self._pinned: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
            f"dbpool_transaction_{config_name}", default=None
        )
        # Sessions of blocks opened in a generator, by its frame (see pin()).
        self._generator_blocks: dict[FrameType, _Session] = {}
        # What a thread keeps between statements: its keeper mark, its remote connections.
        self.local = threading.local()
        self._lock = threading.Lock()
        # Threads that keep their connection; a thread that ends drops out by itself.
        self._keepers: weakref.WeakSet[_Keeper] = weakref.WeakSet()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # The stop() of each running async transaction worker, called when the pool closes.
        self.on_close: set[Callable[[], None]] = set()

    # A transaction block pins its session to the code that runs inside it: the statements
    # that thread runs in that context (contextvars), whatever object (ObjData() of a
    # helper, ObjDataThreadSafe) makes them. The thread alone is not enough: FastAPI runs
    # a sync generator dependency's entry and exit as two thread-pool calls, and the thread
    # that entered serves other requests meanwhile; each such call runs in its own copy of
    # the request's context, so those requests do not see the block. The context alone is
    # not enough either: asyncio.to_thread() copies it into another thread, which must not
    # use the block's connection at the same time. An exit may run on any thread: it ends
    # its own session, and a thread never again sees a session that has ended.
    # The code after a generator's yield runs in yet another call, with no trace of the
    # block in its context: a block opened in a generator is also found by that
    # generator's frame on the calling stack.
    def pinned(self) -> _Session | None:
        """The session of the transaction block the calling code is in, or None."""
        session = self._pinned.get()
        while session is not None and (session.ended or session.thread != threading.get_ident()):
            session = session.outer
        if session is None and self._generator_blocks:
            session = self._resumed_block()
        return session

    def _resumed_block(self) -> _Session | None:
        blocks = self._generator_blocks
        frame = sys._getframe(2)
        while frame is not None:
            session = blocks.get(frame)
            if session is not None and not session.ended:
                return session
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def pin(self, session: _Session, opener: FrameType | None) -> None:
        """Make ``session`` the transaction of the calling code, until ``unpin``.

        ``opener``: the frame the block was opened in, when that is known.
        """
        session.outer = self.pinned()
        session.thread = threading.get_ident()
        self._pinned.set(session)
        if opener is not None and opener.f_code.co_flags & inspect.CO_GENERATOR:
            session.opener = opener
            self._generator_blocks[opener] = session

    def unpin(self, session: _Session) -> None:
        """End the pin of ``session``: on any thread, in any context."""
        session.ended = True
        if session.opener is not None:
            if self._generator_blocks.get(session.opener) is session:
                del self._generator_blocks[session.opener]
            session.opener = None
        if self._pinned.get() is session:
            self._pinned.set(session.outer)

    # Persistent mode pins a connection to every thread that used one. Were every thread
    # to keep it, threads beyond max_size would wait for connections nobody gives back.
    # So at most max_size - 1 threads keep theirs between statements and any other
    # thread closes its own after each statement: at rest a slot is always free.
    def give_back(self, conn: PooledConnection) -> None:
        """Return a borrowed connection; in persistent mode keep it or free its slot."""
        self.pool.release(conn)
        if not self.persistent or getattr(self.local, "keeper", None) is not None:
            return
        with self._lock:
            if len(self._keepers) < self.pool.max_size - 1:
                keeper = _Keeper()
                self._keepers.add(keeper)
                self.local.keeper = keeper
                return
        self.pool.close_thread_connection()

    def release_thread(self) -> None:
        """Give back what the calling thread holds outside a transaction."""
        if self.pinned() is not None:
            raise PoolError(
                f"close_thread_connection() inside a transaction of config "
                f"{self.config_name!r}: leave the transaction block first"
            )
        self.give_back_remotes(None)
        self.local.__dict__.pop("keeper", None)
        self.pool.close_thread_connection()

    def lend_remote(self, owner: object) -> PooledConnection:
        """The calling thread's db_connect_remote() connection for ``owner``, kept."""
        remotes: weakref.WeakKeyDictionary[object, PooledConnection]
        remotes = self.local.__dict__.setdefault("remotes", weakref.WeakKeyDictionary())
        conn = remotes.get(owner)
        if conn is None or _given_back(conn):
            conn = remotes[owner] = self.pool.acquire()
        return conn

    def give_back_remotes(self, owner: object | None) -> None:
        """Give back what the calling thread holds from ``lend_remote`` (for ``owner``, or all)."""
        remotes = self.local.__dict__.get("remotes")
        if not remotes:
            return
        if owner is None:
            conns = list(remotes.values())
            remotes.clear()
        else:
            conn = remotes.pop(owner, None)
            conns = [] if conn is None else [conn]
        for conn in conns:
            conn.close()

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The worker threads of the async methods: no more than the pool's max_size."""
        with self._lock:
            if self.closed:
                raise PoolClosed(f"pool {self.pool._label} is closed")
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.pool.max_size, thread_name_prefix=f"dbpool-{self.config_name}"
                )
            return self._executor

    def check(self, options: Mapping[str, Any]) -> None:
        """Refuse options that differ from those this pool was made with."""
        differing = []
        for key, value in options.items():
            current = self._effective(key)
            if key in _HOST_KEYS and self._same_servers(key, value):
                continue
            if current is _MISSING or current != value:
                differing.append((key, value, current))
        if not differing:
            return
        parts = []
        for key, value, current in differing:
            if any(marker in key.lower() for marker in _SECRET_MARKERS):
                parts.append(f"{key} (differs)")
            elif current is _MISSING:
                parts.append(f"{key}={_shown(value)!r} (not set on the pool)")
            else:
                parts.append(f"{key}={_shown(value)!r} (the pool has {_shown(current)!r})")
        raise ConfigError(
            f"the pool of config {self.config_name!r} already exists with other options: "
            f"{', '.join(parts)}. All ObjDataThreadSafe instances of one config share one pool: "
            f"pass no options to use it, or call ObjDataThreadSafe.close_pool("
            f"{self.config_name!r}) first"
        )

    def _same_servers(self, key: str, value: Any) -> bool:
        """Whether a host or replica list names the servers the pool uses, in its order."""
        settings = self.pool.settings
        used = settings.replicas if key == "replicas" else settings.hosts
        try:
            given = parse_hosts(value, settings.params.get("port"))
        except ConfigError:
            return False
        return [a.key for a in given] == [a.key for a in used]

    def _effective(self, key: str) -> Any:
        if key in self.options:
            return self.options[key]
        settings = self.pool.settings
        if key in POOL_OPTION_NAMES:
            return getattr(settings.pool, key)
        if key == "driver":
            return settings.driver
        return settings.params.get(_ALIASES.get(key, key), _MISSING)

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's worker threads and locks.

        Only the forking thread exists in the child: the executor's workers, those of the
        async transactions and any thread that held a lock at the fork are gone.
        """
        self._lock = threading.Lock()
        self._executor = None
        self.on_close = set()
        self._keepers = weakref.WeakSet()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for stop in list(self.on_close):
            stop()
        self.pool.dispose()


_MISSING: Any = object()


def _opening_frame(frame: FrameType | None) -> FrameType | None:
    """The frame a `with` block was written in: ``frame`` or its caller, contextlib aside."""
    while frame is not None and frame.f_code.co_filename == contextlib.__file__:
        frame = frame.f_back
    return frame


def _shown(value: Any) -> Any:
    """An option's value fit for a message: secrets inside a dict (ssl's key_password) masked."""
    return _masked(value) if isinstance(value, Mapping) else value


class _Registry:
    """The class-level pools, one per config name, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _PoolEntry] = {}

    def get(self, config_name: str, options: Mapping[str, Any]) -> _PoolEntry:
        if not isinstance(config_name, str):
            raise ConfigError(f"config_name must be a string (got {type(config_name).__name__})")
        with self._lock:
            entry = self._entries.get(config_name)
            if entry is None:
                # Building a pool reads the config file but opens no connection.
                entry = _PoolEntry(config_name, options)
                self._entries[config_name] = entry
                return entry
        entry.check(options)
        return entry

    def find(self, config_name: str) -> _PoolEntry:
        with self._lock:
            entry = self._entries.get(config_name)
            names = sorted(self._entries)
        if entry is None:
            known = ", ".join(repr(name) for name in names) or "none"
            raise PoolError(
                f"no pool for config {config_name!r} yet (pools exist for: {known}); "
                "create an ObjDataThreadSafe for it first"
            )
        return entry

    def entries(self, config_name: str | None) -> list[_PoolEntry]:
        with self._lock:
            if config_name is None:
                return list(self._entries.values())
            entry = self._entries.get(config_name)
            return [] if entry is None else [entry]

    def pop(self, config_name: str | None) -> list[_PoolEntry]:
        with self._lock:
            if config_name is None:
                entries = list(self._entries.values())
                self._entries.clear()
                return entries
            entry = self._entries.pop(config_name, None)
            return [] if entry is None else [entry]

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry._after_fork()


_registry = _Registry()
os.register_at_fork(after_in_child=_registry._after_fork)


def _given_back(conn: PooledConnection) -> bool:
    try:
        conn.dbapi_connection  # noqa: B018 - raises once the connection was given back
    except PoolError:
        return True
    return False
