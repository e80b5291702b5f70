"""Simulated network costs, patched into both drivers' socket layers.

Loopback has almost no latency, so a pool's extra round trips look cheap on
it. ``round_trip_delay(seconds)`` makes the first read after each write sleep,
which is what one round trip over a real network costs; the first read of a
new connection (the server's greeting) sleeps too, standing for the TCP
handshake. ``connect_delay(seconds)`` makes every connect sleep before it
opens its socket. Both patch the driver classes, so they apply to every
approach alike, including pools that subclass PyMySQL's connection; a
connection marked with ``exempt()`` (the benchmark's own admin connection) is
left alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql.connections

_EXEMPT = "_bench_exempt"
_SENT = "_bench_sent"
_CONNECTING = "_bench_connecting"


def exempt(conn: Any) -> Any:
    """Mark a PyMySQL connection as free of simulated delays; returns it."""
    setattr(conn, _EXEMPT, True)
    return conn


def _connector_socket_class() -> type[Any] | None:
    try:
        from mysql.connector.network import MySQLSocket
    except ImportError:
        return None
    return MySQLSocket


def _connector_connection_class() -> type[Any] | None:
    try:
        from mysql.connector.connection import MySQLConnection
    except ImportError:
        return None
    return MySQLConnection


def _pymysql_classes_with_connect() -> list[type[Any]]:
    """PyMySQL's connection class and every subclass with a connect() of its own.

    pymysql-pool's subclass copies the public methods of PyMySQL's class when it
    is imported, so patching the base alone would miss it. Importing it here
    first keeps its copies unpatched.
    """
    with contextlib.suppress(ImportError):
        import pymysqlpool  # noqa: F401
    found = []
    todo: list[type[Any]] = [pymysql.connections.Connection]
    while todo:
        cls = todo.pop()
        if "connect" in cls.__dict__:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


class _Patches:
    """Method replacements that are undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[type[Any], str, Any]] = []

    def replace(self, cls: type[Any], name: str, make: Callable[[Any], Any]) -> None:
        original = cls.__dict__[name]
        self._undo.append((cls, name, original))
        setattr(cls, name, make(original))

    def undo(self) -> None:
        while self._undo:
            cls, name, original = self._undo.pop()
            setattr(cls, name, original)


@contextlib.contextmanager
def round_trip_delay(seconds: float) -> Iterator[None]:
    """Within the block, every round trip of both drivers takes ``seconds`` longer."""
    if seconds <= 0:
        yield
        return
    sleep = time.sleep
    patches = _Patches()

    def pymysql_write(original: Any) -> Any:
        def _write_bytes(self: Any, data: bytes) -> None:
            self.__dict__[_SENT] = True
            original(self, data)

        return _write_bytes

    def pymysql_read(original: Any) -> Any:
        def _read_bytes(self: Any, num_bytes: int) -> bytes:
            state = self.__dict__
            if state.get(_SENT, True) and not state.get(_EXEMPT):
                state[_SENT] = False
                sleep(seconds)
            return original(self, num_bytes)  # type: ignore[no-any-return]

        return _read_bytes

    def connector_send(original: Any) -> Any:
        def send(self: Any, *args: Any, **kwargs: Any) -> None:
            self.__dict__[_SENT] = True
            original(self, *args, **kwargs)

        return send

    def connector_recv(original: Any) -> Any:
        def recv(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = self.__dict__
            if state.get(_SENT, True):
                state[_SENT] = False
                sleep(seconds)
            return original(self, *args, **kwargs)

        return recv

    base = pymysql.connections.Connection
    patches.replace(base, "_write_bytes", pymysql_write)
    patches.replace(base, "_read_bytes", pymysql_read)
    sock_class = _connector_socket_class()
    if sock_class is not None:
        patches.replace(sock_class, "send", connector_send)
        patches.replace(sock_class, "recv", connector_recv)
    try:
        yield
    finally:
        patches.undo()


@contextlib.contextmanager
def connect_delay(seconds: float) -> Iterator[None]:
    """Within the block, opening a connection with either driver takes ``seconds`` longer."""
    if seconds <= 0:
        yield
        return
    sleep = time.sleep
    patches = _Patches()

    def pymysql_connect(original: Any) -> Any:
        def connect(self: Any, sock: Any = None) -> None:
            state = self.__dict__
            if state.get(_EXEMPT) or state.get(_CONNECTING):
                original(self, sock)  # a subclass's connect() calling its base's
                return
            state[_CONNECTING] = True
            try:
                sleep(seconds)
                original(self, sock)
            finally:
                del state[_CONNECTING]

        return connect

    def connector_open(original: Any) -> Any:
        def _open_connection(self: Any) -> None:
            sleep(seconds)
            original(self)

        return _open_connection

    for cls in _pymysql_classes_with_connect():
        patches.replace(cls, "connect", pymysql_connect)
    conn_class = _connector_connection_class()
    if conn_class is not None:
        patches.replace(conn_class, "_open_connection", connector_open)
    try:
        yield
    finally:
        patches.undo()
