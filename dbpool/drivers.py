"""One small adapter per DB-API driver; nothing driver-specific lives elsewhere."""

from __future__ import annotations

import contextlib
import itertools
import select
import sqlite3
import ssl
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from .config import DRIVERS

# Errors that mean the login itself is wrong: retrying cannot help.
_ACCESS_DENIED = 1045
_DB_ACCESS_DENIED = 1044
_UNKNOWN_DATABASE = 1049
_PERMANENT_CODES = frozenset({_ACCESS_DENIED, _DB_ACCESS_DENIED, _UNKNOWN_DATABASE})

_COM_RESET_CONNECTION = 0x1F
# The server-status bit of an open transaction, the same in every MySQL protocol.
_SERVER_STATUS_IN_TRANS = 0x0001
_DEFAULT_CONNECT_TIMEOUT = 10.0


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

    def ping(self, raw: Any) -> None:
        """Make one round trip; raise the driver's error when the connection is dead."""
        raw.ping()

    def in_transaction(self, raw: Any) -> bool:
        """Whether the server reports an open transaction on this connection."""
        return bool(raw.in_transaction)

    def reset_session(self, raw: Any) -> None:
        """Drop all session state (variables, temporary tables, open transaction)."""
        raw.rollback()

    def close(self, raw: Any) -> None:
        """Close a raw connection, ignoring the errors of a connection already broken."""
        with contextlib.suppress(Exception):
            raw.close()

    def dispose(self) -> None:
        """Let go of anything the adapter keeps for its pool."""

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether a connect error is one that retrying cannot fix (bad login, unknown database)."""
        code = getattr(exc, "errno", None)
        if code is None and getattr(exc, "args", None):
            code = exc.args[0]
        return code in _PERMANENT_CODES

    def describe(self, params: Mapping[str, Any]) -> str:
        """A one-line description of the target, never with the password."""
        host = params.get("host", "127.0.0.1")
        port = params.get("port", 3306)
        user = params.get("user", "")
        database = params.get("database", "")
        return f"{self.name}://{user}@{host}:{port}/{database}"


def _probe_socket(sock: Any) -> bool:
    """Whether an idle MySQL socket looks usable: open, and nothing unasked to read."""
    if sock is None:
        return False
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return False
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    # Any event on an idle connection is an EOF, a reset or a kill notice.
    return not poller.poll(0)


def _mysql_kwargs(params: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
    kwargs = dict(params)
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("port", 3306)
    kwargs.setdefault("charset", "utf8mb4")
    kwargs.pop("path", None)
    connect_timeout = kwargs.pop("connect_timeout", _DEFAULT_CONNECT_TIMEOUT)
    if timeout is not None:
        # A connect never outlives the caller's deadline (drivers want at least a second's grain).
        connect_timeout = min(connect_timeout, max(timeout, 0.001))
    kwargs["connect_timeout"] = connect_timeout
    return kwargs


class PyMySQLDriver(Driver):
    """PyMySQL, the default."""

    name = "pymysql"

    def __init__(self) -> None:
        import pymysql
        import pymysql.connections

        self._pymysql = pymysql
        self.errors = (pymysql.err.Error,)
        self._connection_class = self._make_connection_class(pymysql.connections.Connection)

    @staticmethod
    def _make_connection_class(base: type[Any]) -> type[Any]:
        import pymysql.connections
        from pymysql.constants import SERVER_STATUS

        in_trans = SERVER_STATUS.SERVER_STATUS_IN_TRANS
        # PyMySQL builds a fresh TLS context for its "preferred" mode on every connect
        # (about 19 ms of CPU). One context per pool gives the same TLS for a fraction.
        lock = threading.Lock()
        cached: list[ssl.SSLContext] = []

        class Result(pymysql.connections.MySQLResult):  # type: ignore[misc]
            # PyMySQL reads the server status from OK packets only. The EOF that ends a
            # result set carries it too: a SELECT under autocommit=0 opens a transaction
            # that only this status reports.
            def _check_packet_is_eof(self, packet: Any) -> bool:
                if not packet.is_eof_packet():
                    return False
                eof = pymysql.connections.EOFPacketWrapper(packet)
                self.warning_count = eof.warning_count
                self.has_next = eof.has_next
                self.server_status = eof.server_status
                if self.connection is not None:
                    self.connection.server_status = eof.server_status
                return True

        class Connection(base):  # type: ignore[misc]
            def _create_ssl_ctx(self, sslp: Any) -> Any:
                if sslp:
                    return super()._create_ssl_ctx(sslp)
                with lock:
                    if not cached:
                        cached.append(super()._create_ssl_ctx(sslp))
                    return cached[0]

            def _read_query_result(self, unbuffered: bool = False) -> int:
                self._result = None
                result = Result(self)
                try:
                    if unbuffered:
                        result.init_unbuffered_query()
                    else:
                        result.read()
                except pymysql.MySQLError:
                    # An error packet carries no status, and a failed statement may
                    # have opened a transaction (and taken locks): assume it did.
                    status: int = getattr(self, "server_status", 0) or 0
                    self.server_status = status | in_trans
                    raise
                self._result = result
                if result.server_status is not None:
                    self.server_status = result.server_status
                return result.affected_rows  # type: ignore[no-any-return]

        return Connection

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        kwargs = _mysql_kwargs(params, timeout)
        return self._connection_class(**kwargs)

    def probe(self, raw: Any) -> bool | None:
        return _probe_socket(raw._sock)

    def ping(self, raw: Any) -> None:
        raw.ping(reconnect=False)

    def in_transaction(self, raw: Any) -> bool:
        # Exact for connections of this driver, which read the status of every reply.
        return bool((raw.server_status or 0) & _SERVER_STATUS_IN_TRANS)

    def reset_session(self, raw: Any) -> None:
        # COM_RESET_CONNECTION clears variables, temporary tables and transactions
        # without re-authenticating; PyMySQL has no public call for it.
        raw._execute_command(_COM_RESET_CONNECTION, b"")
        raw._read_ok_packet()
        if raw.autocommit_mode is not None:
            raw.autocommit(raw.autocommit_mode)


class MySQLConnectorDriver(Driver):
    """mysql-connector-python, always its pure-Python protocol unless told otherwise."""

    name = "mysql-connector"

    def __init__(self) -> None:
        try:
            import mysql.connector
        except ImportError as exc:
            from .errors import ConfigError

            raise ConfigError(
                "driver 'mysql-connector' needs mysql-connector-python: "
                "pip install 'dbpool[mysql-connector]'"
            ) from exc
        self._module = mysql.connector
        self.errors = (mysql.connector.Error,)
        self._connection_class = self._make_connection_class()

    def _make_connection_class(self) -> type[Any]:
        from mysql.connector.connection import MySQLConnection

        error = self._module.Error

        class Connection(MySQLConnection):
            # An error reply carries no server status, and a failed statement may have
            # opened a transaction (and taken locks): assume it did, so the pool rolls back.
            def cmd_query(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().cmd_query(*args, **kwargs)
                except error:
                    self._in_transaction = True
                    raise

            def cmd_stmt_execute(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().cmd_stmt_execute(*args, **kwargs)
                except error:
                    self._in_transaction = True
                    raise

        return Connection

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        kwargs = _mysql_kwargs(params, timeout)
        kwargs["connection_timeout"] = kwargs.pop("connect_timeout")
        if kwargs.setdefault("use_pure", True):
            kwargs.pop("use_pure")
            return self._connection_class(**kwargs)
        return self._module.connect(**kwargs)

    def probe(self, raw: Any) -> bool | None:
        if not hasattr(raw, "_socket"):
            return None  # the C extension keeps its socket out of reach
        return _probe_socket(getattr(raw._socket, "sock", None))

    def ping(self, raw: Any) -> None:
        raw.ping(reconnect=False)

    def reset_session(self, raw: Any) -> None:
        raw.cmd_reset_connection()


class SQLiteDriver(Driver):
    """The standard library's sqlite3: an embedded database file, no server."""

    name = "sqlite"
    errors = (sqlite3.Error,)
    _memory_ids = itertools.count()

    def __init__(self) -> None:
        self._memory_uri: str | None = None
        self._keeper: sqlite3.Connection | None = None

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        kwargs = dict(params)
        path = str(kwargs.pop("path"))
        for mysql_only in ("host", "port", "user", "password", "database", "charset"):
            kwargs.pop(mysql_only, None)
        kwargs.setdefault("timeout", 5.0 if timeout is None else max(timeout, 0.0))
        if path == ":memory:":
            # Each plain ":memory:" connection is a new empty database; a named
            # shared-cache one lets every connection of this pool see the same data.
            if self._memory_uri is None:
                self._memory_uri = f"file:dbpool-{id(self)}-{next(self._memory_ids)}"
                self._memory_uri += "?mode=memory&cache=shared"
                # The database lives while one connection is open: keep one for the pool.
                self._keeper = sqlite3.connect(self._memory_uri, uri=True,
                                               check_same_thread=False)
            path = self._memory_uri
            kwargs["uri"] = True
        # Pooled connections move between threads; the pool guarantees one user at a time.
        kwargs["check_same_thread"] = False
        return sqlite3.connect(path, **kwargs)

    def probe(self, raw: Any) -> bool | None:
        return True

    def ping(self, raw: Any) -> None:
        raw.execute("SELECT 1").close()

    def dispose(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()

    def reset_session(self, raw: Any) -> None:
        raw.rollback()

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc)


_DRIVER_CLASSES: dict[str, type[Driver]] = {
    PyMySQLDriver.name: PyMySQLDriver,
    MySQLConnectorDriver.name: MySQLConnectorDriver,
    SQLiteDriver.name: SQLiteDriver,
}
assert tuple(_DRIVER_CLASSES) == DRIVERS


def get_driver(driver: str | Driver) -> Driver:
    """The adapter for a driver name (a fresh instance: adapters hold per-pool caches)."""
    if isinstance(driver, Driver):
        return driver
    try:
        cls = _DRIVER_CLASSES[driver]
    except (KeyError, TypeError):
        valid = ", ".join(repr(name) for name in DRIVERS)
        raise ValueError(f"unknown driver {driver!r}; valid drivers: {valid}") from None
    return cls()
