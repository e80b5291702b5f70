"""The driver adapter interface, the registry of drivers, and SQLite's adapter.

The MySQL adapters (PyMySQL, mysql-connector-python) live in ``_mysql.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .errors import ConfigError


class _Bound(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...


class _NoBound:
    """The bound of a driver that cannot bound a single call."""

    def __enter__(self) -> object:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NO_BOUND = _NoBound()
# Connections inherited from a parent process that the driver cannot drop without
# touching their socket: kept referenced so that no finalizer ever runs on them.
_inherited: list[Any] = []


class Driver:
    """What the pool needs to know about one DB-API module.

    Subclasses open connections from neutral parameters (``host``, ``port``,
    ``user``, ``password``, ``database``, ``charset``, ``path`` and driver
    extras) and answer a few questions about a raw connection without the
    pool having to know which module made it.
    """

    name: ClassVar[str]
    #: The driver's base exception class(es): anything it raises.
    errors: tuple[type[BaseException], ...] = ()

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        """Open a raw connection, giving up after ``timeout`` seconds when the driver allows."""
        raise NotImplementedError

    def probe(self, raw: Any) -> bool | None:
        """Check an idle connection without a round trip.

        False: the server closed it or sent something unasked (a kill notice);
        True: nothing wrong seen; None: this driver cannot tell.
        """
        return None

    def is_closed(self, raw: Any) -> bool:
        """Whether the driver itself reports the connection closed, without any I/O.

        True after the application or the driver closed it (PyMySQL closes a
        connection whose read or write failed); False when open or unknown.
        """
        return False

    def ping(self, raw: Any) -> None:
        """Make one round trip; raise the driver's error when the connection is dead."""
        raw.ping()

    def in_transaction(self, raw: Any) -> bool:
        """Whether the server reports an open transaction on this connection."""
        return bool(raw.in_transaction)

    def needs_reset(self, raw: Any) -> bool:
        """Whether a connection given back needs more than nothing to be like new.

        Answered from what the connection already knows, without a round trip: an
        open transaction, a result left unread, autocommit switched by the borrower.
        """
        return self.in_transaction(raw)

    def discard_pending(self, raw: Any, seconds: float) -> None:
        """Read and drop a result the borrower left unread, giving up after ``seconds``.

        Raises the driver's error (or ``TimeoutError``) when it cannot: the
        connection must then be closed.
        """

    def rollback(self, raw: Any) -> None:
        """End what a borrower left: its open transaction, and autocommit if switched."""
        raw.rollback()

    def command_in_flight(self, raw: Any) -> bool:
        """Whether a command was sent on ``raw`` and its reply not read to the end.

        So it is after an exception (a signal handler's) cut a statement between its
        send and its last read: the connection is out of step with its server, and
        only closing it is safe. The MySQL adapters' connection classes keep this mark.
        """
        return False

    def settled(self, raw: Any) -> bool:
        """Whether a connection given back may be kept as it is, answered without I/O.

        True when it is open, no reply is left half read, no statement failed on it,
        and nothing needs a reset (see ``needs_reset``). The pool then keeps it with no
        further look; otherwise it decides at length what the connection needs.
        """
        return not (
            self.command_in_flight(raw)
            or self.statement_error(raw) is not None
            or self.is_closed(raw)
            or self.needs_reset(raw)
        )

    def statement_error(self, raw: Any) -> Any:
        """The error code of the last statement that failed on ``raw``, or None.

        The MySQL adapters' connection classes note it as the error goes by, so the
        pool can tell at return whether the server can still do its job.
        """
        return getattr(raw, "dbpool_error", None)

    def reset_session(self, raw: Any) -> None:
        """Drop all session state (variables, temporary tables, open transaction)."""
        raw.rollback()

    @classmethod
    def parameters(cls) -> frozenset[str] | None:
        """The keywords this driver's connect() takes besides the neutral ones; None: any."""
        return None

    def check(self, params: Mapping[str, Any]) -> None:
        """Refuse, with a ConfigError, parameters this driver cannot use (at pool creation)."""

    def close(self, raw: Any) -> None:
        """Close a raw connection, ignoring the errors of a connection already broken."""
        with contextlib.suppress(Exception):
            raw.close()

    def bounded(self, raw: Any, seconds: float) -> _Bound:
        """A context in which each read or write on ``raw`` waits at most ``seconds``.

        Used around the pool's own round trips (validation ping, reset at return),
        which must stay short even when statements may run for minutes.
        """
        return _NO_BOUND

    def abandon(self, raw: Any) -> None:
        """Let go of a connection inherited across ``os.fork()`` without a byte on the wire.

        Closing it the usual way would end the parent's session (COM_QUIT).
        """
        _inherited.append(raw)

    def after_fork(self) -> None:
        """Reset what the adapter shares between threads, in a freshly forked child."""

    def explain(self, exc: BaseException) -> str | None:
        """A plain-words cause of a connect error, when one is known."""
        if isinstance(exc, TimeoutError):
            return "the server did not answer in time"
        return None

    def dispose(self) -> None:
        """Let go of anything the adapter keeps for its pool."""

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether a connect error is one that retrying cannot fix (bad login, unknown database)."""
        return False

    def describe(self, params: Mapping[str, Any]) -> str:
        """A one-line description of the target, never with the password."""
        return describe(self.name, params)


def describe(driver: str, params: Mapping[str, Any]) -> str:
    """A URL-like summary of a connection target for messages and logs, without the password."""
    if driver == "sqlite":
        path = str(params.get("path", ""))
        return f"sqlite://{path}" if path.startswith("/") else f"sqlite:///{path}"
    host = str(params.get("host", ""))
    netloc = f"[{host}]" if ":" in host else host
    if params.get("user"):
        netloc = f"{params['user']}@{netloc}"
    if params.get("port") is not None:
        netloc = f"{netloc}:{params['port']}"
    return f"{driver}://{netloc}/{params.get('database') or ''}"


# SQLite's "memdb" VFS with named databases shared between connections (3.36+).
_MEMDB = sqlite3.sqlite_version_info >= (3, 36, 0)


class SQLiteDriver(Driver):
    """The standard library's sqlite3: an embedded database file, no server."""

    name = "sqlite"
    errors = (sqlite3.Error,)
    _memory_ids = itertools.count()

    def __init__(self) -> None:
        self._memory_uri: str | None = None
        self._keeper: sqlite3.Connection | None = None
        self._memory_dir: tuple[str, int] | None = None  # (directory, pid that made it)

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        kwargs = dict(params)
        path = str(kwargs.pop("path"))
        for mysql_only in ("host", "port", "user", "password", "database", "charset"):
            kwargs.pop(mysql_only, None)
        kwargs.setdefault("timeout", 5.0 if timeout is None else max(timeout, 0.0))
        if path == ":memory:":
            # Each plain ":memory:" connection is a new empty database. The pool's
            # connections share one private, named database on SQLite's "memdb" VFS,
            # which locks like a file (a writer makes others wait up to the busy
            # timeout), not a shared-cache one, whose table locks fail at once
            # ("database table is locked") under any overlap.
            if self._memory_uri is None:
                self._memory_uri = self._private_database()
            path = self._memory_uri
            kwargs["uri"] = True
        # Pooled connections move between threads; the pool guarantees one user at a time.
        kwargs["check_same_thread"] = False
        return sqlite3.connect(path, **kwargs)

    def _private_database(self) -> str:
        """The URI of a new database private to this pool, for ":memory:"."""
        if _MEMDB:
            name = f"/dbpool-{os.getpid()}-{id(self)}-{next(self._memory_ids)}"
            uri = f"file:{name}?vfs=memdb"
            # The database lives while one connection is open: keep one for the pool.
            self._keeper = sqlite3.connect(uri, uri=True, check_same_thread=False)
            return uri
        # An SQLite without memdb: a file of our own, deleted with the pool.
        self._memory_dir = (tempfile.mkdtemp(prefix="dbpool-memory-"), os.getpid())
        return Path(self._memory_dir[0], "memory.sqlite3").as_uri()

    def probe(self, raw: Any) -> bool | None:
        return True

    def ping(self, raw: Any) -> None:
        raw.execute("SELECT 1").close()

    def dispose(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()
        directory, self._memory_dir = self._memory_dir, None
        if directory is not None and directory[1] == os.getpid():  # not a forked child's
            shutil.rmtree(directory[0], ignore_errors=True)

    def reset_session(self, raw: Any) -> None:
        raw.rollback()

    def is_closed(self, raw: Any) -> bool:
        try:
            raw.in_transaction  # noqa: B018 - raises once the connection is closed
        except sqlite3.ProgrammingError:
            return True
        return False

    @classmethod
    def parameters(cls) -> frozenset[str] | None:
        return _SQLITE_PARAMETERS

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc)


# sqlite3.connect()'s keywords (a built-in: no signature to read).
_SQLITE_PARAMETERS = frozenset(
    {
        "timeout",
        "detect_types",
        "isolation_level",
        "check_same_thread",
        "factory",
        "cached_statements",
        "uri",
        "autocommit",
    }
)

# The MySQL adapters build on Driver, defined above.
from ._mysql import MySQLConnectorDriver, PyMySQLDriver  # noqa: E402

_DRIVER_CLASSES: dict[str, type[Driver]] = {
    cls.name: cls for cls in (PyMySQLDriver, MySQLConnectorDriver, SQLiteDriver)
}
#: The driver names, in the order messages list them.
DRIVERS: tuple[str, ...] = tuple(_DRIVER_CLASSES)


def connect_parameters(driver: str) -> frozenset[str] | None:
    """The connect() keywords of the named driver (None: unknown, so any is accepted)."""
    cls = _DRIVER_CLASSES.get(driver)
    return None if cls is None else cls.parameters()


def get_driver(driver: str | Driver) -> Driver:
    """The adapter for a driver name (a fresh instance: adapters hold per-pool caches)."""
    if isinstance(driver, Driver):
        return driver
    cls = _DRIVER_CLASSES.get(driver) if isinstance(driver, str) else None
    if cls is None:
        valid = ", ".join(repr(name) for name in DRIVERS)
        raise ConfigError(f"unknown driver {driver!r}; valid drivers: {valid}")
    return cls()
