"""The class-level pools of the facade: one per config name, made on first use."""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from ._sql import _DIALECTS, _FORMAT
from .config import _ALIASES, _SECRET_MARKERS, POOL_OPTION_NAMES
from .connection import PooledConnection
from .errors import ConfigError, PoolClosed, PoolError
from .pool import make_pool


class _Keeper:
    """Marks a thread that keeps its persistent-mode connection between statements."""

    __slots__ = ("__weakref__",)


class _PoolEntry:
    """One named config's pool, with what the facade keeps per thread for it."""

    def __init__(self, config_name: str, options: Mapping[str, Any]) -> None:
        self.config_name = config_name
        self.options = dict(options)
        self.pool = make_pool(config_name=config_name, **self.options)
        self.dialect = _DIALECTS.get(self.pool.settings.driver, _FORMAT)
        self.persistent = self.pool.mode == "persistent"
        self.closed = False
        # The session a thread has pinned in `with obj.transaction():`, and its keeper mark.
        self.local = threading.local()
        self._lock = threading.Lock()
        # Threads that keep their connection; a thread that ends drops out by itself.
        self._keepers: weakref.WeakSet[_Keeper] = weakref.WeakSet()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

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
        if getattr(self.local, "session", None) is not None:
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
            if current is _MISSING or current != value:
                differing.append((key, value, current))
        if not differing:
            return
        parts = []
        for key, value, current in differing:
            if any(marker in key.lower() for marker in _SECRET_MARKERS):
                parts.append(f"{key} (differs)")
            elif current is _MISSING:
                parts.append(f"{key}={value!r} (not set on the pool)")
            else:
                parts.append(f"{key}={value!r} (the pool has {current!r})")
        raise ConfigError(
            f"the pool of config {self.config_name!r} already exists with other options: "
            f"{', '.join(parts)}. All ObjDataThreadSafe instances of one config share one pool: "
            f"pass no options to use it, or call ObjDataThreadSafe.close_pool("
            f"{self.config_name!r}) first"
        )

    def _effective(self, key: str) -> Any:
        if key in self.options:
            return self.options[key]
        settings = self.pool.settings
        if key in POOL_OPTION_NAMES:
            return getattr(settings.pool, key)
        if key == "driver":
            return settings.driver
        return settings.params.get(_ALIASES.get(key, key), _MISSING)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self.pool.dispose()


_MISSING: Any = object()


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


_registry = _Registry()


def _given_back(conn: PooledConnection) -> bool:
    try:
        conn.dbapi_connection  # noqa: B018 - raises once the connection was given back
    except PoolError:
        return True
    return False
