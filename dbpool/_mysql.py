"""The MySQL/MariaDB adapters: PyMySQL and mysql-connector-python, on one base."""

from __future__ import annotations

import _socket
import contextlib
import importlib.metadata
import inspect
import math
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from .drivers import _NO_BOUND, Driver, _Bound
from .errors import ConfigError

# Errors that mean the login itself is wrong: retrying cannot help.
_ACCESS_DENIED = 1045
_DB_ACCESS_DENIED = 1044
_UNKNOWN_DATABASE = 1049
_LOGIN_CODES = frozenset({_ACCESS_DENIED, _DB_ACCESS_DENIED, _UNKNOWN_DATABASE})
# Errors of the statements a connect runs for the pool (init_command, sql_mode): a
# mistake in them fails every connect the same way. Syntax error, unknown variable,
# wrong value or type for one, unknown time zone, missing privilege, unknown table,
# column or function.
_SETUP_CODES = frozenset({1064, 1149, 1193, 1231, 1232, 1298, 1227, 1146, 1054, 1305})
_PERMANENT_CODES = _LOGIN_CODES | _SETUP_CODES

_TOO_MANY_CONNECTIONS = 1040
_LOST_CONNECTION = 2013
_CANNOT_CONNECT = 2003

_COM_RESET_CONNECTION = 0x1F
# Client-side error codes (CR_*): a reply that was not read to its end, or none at all.
# Any other code came in an error reply from the server, which ends its command.
_CLIENT_ERRORS = range(2000, 3000)
# The server-status bits of an open transaction and of autocommit, the same in every
# MySQL protocol; every OK and EOF packet carries them.
_SERVER_STATUS_IN_TRANS = 0x0001
_SERVER_STATUS_AUTOCOMMIT = 0x0002
# Every wait on the server is bounded by default, so that a dead or silent server
# never holds a thread forever: connecting (the TCP connect and the login
# handshake), and every read and write of a statement. 0 or None lifts a bound.
_DEFAULT_CONNECT_TIMEOUT = 10.0
_DEFAULT_READ_TIMEOUT = 300.0
_DEFAULT_WRITE_TIMEOUT = 300.0


def _error_code(exc: BaseException) -> Any:
    code = getattr(exc, "errno", None)
    if code is None and getattr(exc, "args", None):
        code = exc.args[0]
    return code


_TLS_VERIFY_WORDS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")


def _tls_verification_failed(exc: BaseException) -> bool:
    """Whether a connect error comes from a server certificate that failed verification.

    PyMySQL wraps the ``ssl`` error in a "cannot connect" error (keeping it as
    ``original_exception``); mysql-connector keeps only its text.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if any(words in str(current) for words in _TLS_VERIFY_WORDS):
            return True
        original = getattr(current, "original_exception", None)
        current = (
            original
            if isinstance(original, BaseException)
            else current.__cause__ or current.__context__
        )
    return False


def _drop_socket(sock: Any) -> None:
    """Close our descriptor of an inherited socket: no shutdown, no TLS alert, no COM_QUIT.

    The parent still holds the same connection, so the kernel sends nothing either.
    """
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.close(sock.detach())


# Linux's TCP_INFO: its first byte is the connection's state.
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_TCP_ESTABLISHED = 1
_TCP_FAMILIES = frozenset((int(socket.AF_INET), int(socket.AF_INET6)))
_IPPROTO_TCP = socket.IPPROTO_TCP
# The C getter of a socket's family, which returns a plain int: ``socket.family`` is a
# Python property that builds an AddressFamily enum on every call, on the checkout path.
_raw_family = _socket.socket.family.__get__


def _reads_tcp_info(sock: Any) -> bool:
    """Whether ``sock`` is a TCP socket whose TCP_INFO this system can read."""
    try:
        family = _raw_family(sock)
    except TypeError:  # not a socket.socket
        return False
    return _TCP_INFO is not None and family in _TCP_FAMILIES


def _probe_socket(sock: Any) -> bool:
    """Whether an idle MySQL socket looks usable: open, and nothing unasked to read."""
    if sock is None:
        return False
    try:
        family = _raw_family(sock)
    except TypeError:  # not a socket.socket: ask it the slow way
        family = sock.family
    if _TCP_INFO is not None and family in _TCP_FAMILIES:
        # The kernel's view of the connection, read without giving up the GIL (poll()
        # gives it up, and under load waits to get it back). A server that closed or
        # reset the connection (a kill, wait_timeout, a restart) has moved it out of
        # ESTABLISHED; its farewell packet, if any, comes with the close.
        try:
            return bool(sock.getsockopt(_IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_ESTABLISHED)
        except OSError:
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


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class _TimeoutBound:
    """Lowers a connection's read and write timeouts for a while, then restores them.

    ``names`` are the two attributes the driver reads its timeouts from.
    """

    __slots__ = ("_names", "_raw", "_saved", "_seconds")

    def __init__(self, raw: Any, seconds: float, names: tuple[str, str]) -> None:
        self._raw = raw
        self._seconds = seconds
        self._names = names
        self._saved: tuple[Any, ...] = ()

    def __enter__(self) -> object:
        raw = self._raw
        self._saved = tuple(getattr(raw, name) for name in self._names)
        for name, value in zip(self._names, self._saved, strict=True):
            setattr(raw, name, _min(value, self._seconds))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in zip(self._names, self._saved, strict=True):
            setattr(self._raw, name, value)


# -- PyMySQL: blocking sockets under the kernel's timeouts ------------------------------
#
# A socket given a Python timeout is non-blocking: every recv() and send() on it is
# preceded by a poll(), and each of the two calls gives up the GIL and takes it back. A
# statement thus costs two more system calls and, with threads, two more hand-offs of
# the GIL than on a blocking socket. The same bound is kept by the kernel instead: on a
# blocking socket, SO_RCVTIMEO and SO_SNDTIMEO make a recv() or send() that waits longer
# fail with EAGAIN, each call bounded as a Python timeout bounds it (except that a call
# restarted after a signal handler ran waits anew, where Python counts the time left).
# So a connection whose read and write timeouts are one value gets them as kernel
# timeouts on a blocking socket (plain sockets only: a TLS socket keeps its Python
# timeout), its reader turns the kernel's EAGAIN into the TimeoutError a Python timeout
# raises (PyMySQL then closes the connection the same way, "Lost connection ... (timed
# out)"), and PyMySQL is told its timeout is set, so it leaves the socket's mode alone.
# A lower bound for a while (bounded()) still goes through PyMySQL: it gives the socket
# that Python timeout, and the socket goes back to blocking once the bound is lifted.


class _KernelTimedReader(socket.SocketIO):
    """The reader of a blocking socket under SO_RCVTIMEO (see above)."""

    def readinto(self, b: Any) -> int | None:
        try:
            return self._sock.recv_into(b)  # type: ignore[attr-defined,no-any-return]
        except BlockingIOError:
            # EAGAIN on a blocking socket: SO_RCVTIMEO ran out. (socket.SocketIO would
            # return None, which PyMySQL cannot take.)
            raise TimeoutError("timed out") from None


def _timeval(seconds: float) -> bytes:
    """``seconds`` as a struct timeval, at least a microsecond (zero would mean no bound)."""
    whole = int(seconds)
    micro = max(round((seconds - whole) * 1_000_000), 0 if whole else 1)
    return struct.pack("@ll", whole, micro)


def _use_kernel_timeouts(raw: Any) -> None:
    """Put a PyMySQL connection's plain socket in blocking mode under kernel timeouts."""
    sock, seconds = raw._sock, raw._read_timeout
    if type(sock) is not socket.socket or seconds is None or seconds != raw._write_timeout:
        return  # TLS, or no bound, or two bounds: the socket keeps its Python timeout
    if not hasattr(raw, "_current_timeout"):
        return  # an older PyMySQL, which sets the timeout before every packet
    value = _timeval(seconds)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except OSError:
        return  # a system without them: the Python timeout stays
    # The reader first: a blocking read must never meet socket.SocketIO's None. Cut
    # anywhere before the last step, the socket keeps its Python timeout (only slower).
    raw._rfile.raw.__class__ = _KernelTimedReader
    raw.dbpool_kernel_sock = sock
    _block(raw)


def _block(raw: Any) -> None:
    """Back to a blocking socket, the kernel's timeouts bounding it (see above)."""
    raw._sock.settimeout(None)
    # What PyMySQL compares its read and write timeouts with before each packet.
    raw._current_timeout = raw._read_timeout


class _PyMySQLBound(_TimeoutBound):
    """A lower bound for a while, after which a socket under kernel timeouts blocks again."""

    __slots__ = ()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        raw = self._raw
        if (
            # Still the socket set up so (a reconnect of PyMySQL's own makes another).
            raw._sock is raw.dbpool_kernel_sock is not None
            and raw._current_timeout != raw._read_timeout  # PyMySQL applied the bound
        ):
            _block(raw)


# The least a read or write of a connect past its deadline waits: the driver's own
# timeout then ends the connect, with the driver's own error.
_EXPIRED = 0.001


def _time_left(deadline: float) -> float:
    """Seconds left until ``deadline`` (monotonic), at least ``_EXPIRED``."""
    return max(deadline - time.monotonic(), _EXPIRED)


def _whole_seconds(value: float | None) -> int | None:
    return None if value is None else max(1, math.ceil(value))


class _MySQLDriver(Driver):
    """What the MySQL drivers share: error codes, connect arguments, socket probe, bounds."""

    #: The connection's attributes holding its read and write timeouts.
    _timeout_attributes: ClassVar[tuple[str, str]]

    def _socket(self, raw: Any) -> Any:
        """The raw connection's socket object (None once closed)."""
        raise NotImplementedError

    @staticmethod
    def _connect_kwargs(params: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        """The driver's connect() arguments: MySQL defaults, and every wait bounded."""
        kwargs = dict(params)
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 3306)
        kwargs.setdefault("charset", "utf8mb4")
        kwargs.pop("path", None)
        connect_timeout = kwargs.pop("connect_timeout", _DEFAULT_CONNECT_TIMEOUT) or None
        # connect_timeout bounds the whole connect: the TCP connect, the greeting, the
        # login and the statements run at connect (see the drivers' connect()).
        if timeout is not None:
            # A connect never outlives the caller's deadline.
            limit = max(timeout, 0.001)
            connect_timeout = limit if connect_timeout is None else min(connect_timeout, limit)
        kwargs["connect_timeout"] = connect_timeout
        kwargs["read_timeout"] = kwargs.get("read_timeout", _DEFAULT_READ_TIMEOUT) or None
        kwargs["write_timeout"] = kwargs.get("write_timeout", _DEFAULT_WRITE_TIMEOUT) or None
        return kwargs

    def probe(self, raw: Any) -> bool | None:
        return _probe_socket(self._socket(raw))

    def bounded(self, raw: Any, seconds: float) -> _Bound:
        return _TimeoutBound(raw, seconds, self._timeout_attributes)

    def explain(self, exc: BaseException) -> str | None:
        code = _error_code(exc)
        if _tls_verification_failed(exc):
            return (
                "TLS certificate verification failed: the server's certificate is not "
                "signed by the CA given in ssl_ca (or, with ssl_verify_identity, is not "
                "made out to the host connected to)"
            )
        if code in _SETUP_CODES:
            return (
                "a statement run at connect failed (check init_command and sql_mode; not retried)"
            )
        if code == _TOO_MANY_CONNECTIONS:
            return "the server has no free connection slot (max_connections reached)"
        if code == _LOST_CONNECTION or isinstance(exc, TimeoutError):
            return "the server did not answer in time"
        if code == _CANNOT_CONNECT:
            return "the server cannot be reached"
        return None

    def is_permanent(self, exc: BaseException) -> bool:
        # A bad login or unknown database, a mistake in init_command or sql_mode, a
        # server certificate that fails verification.
        return _error_code(exc) in _PERMANENT_CODES or _tls_verification_failed(exc)


# The PyMySQL internals PyMySQLDriver overrides or calls, by the class that has them.
_PYMYSQL_INTERNALS = {
    "Connection": (
        "_create_ssl_ctx",
        "_execute_command",
        "_force_close",
        "_read_bytes",
        "_read_ok_packet",
        "_read_packet",
        "_read_query_result",
        "_write_bytes",
    ),
    "MySQLResult": ("_check_packet_is_eof", "init_unbuffered_query", "read"),
    "EOFPacketWrapper": (),
}


def _check_pymysql(pymysql: Any) -> None:
    """Fail at once, naming the version, if this PyMySQL lacks an internal the driver builds on."""
    missing = []
    for class_name, attributes in _PYMYSQL_INTERNALS.items():
        cls = getattr(pymysql.connections, class_name, None)
        if cls is None:
            missing.append(f"connections.{class_name}")
            continue
        missing.extend(f"{class_name}.{name}" for name in attributes if not hasattr(cls, name))
    if missing:
        try:
            version = importlib.metadata.version("PyMySQL")
        except importlib.metadata.PackageNotFoundError:
            version = ".".join(str(part) for part in pymysql.VERSION[:3])
        raise ConfigError(
            f"PyMySQL {version} has no {', '.join(missing)}, which dbpool's pymysql driver "
            "builds on: install a PyMySQL release dbpool supports (see its requirements), "
            "or use driver 'mysql-connector'"
        )


class PyMySQLDriver(_MySQLDriver):
    """PyMySQL, the default."""

    @classmethod
    def parameters(cls) -> frozenset[str] | None:
        import pymysql.connections

        signature = inspect.signature(pymysql.connections.Connection.__init__)
        return frozenset(name for name in signature.parameters if name != "self")

    name: ClassVar[str] = "pymysql"
    _timeout_attributes = ("_read_timeout", "_write_timeout")

    def __init__(self) -> None:
        import pymysql
        import pymysql.connections

        _check_pymysql(pymysql)
        self._pymysql = pymysql
        # The class bound at the package's top level, not pymysql.err.Error: emulating
        # MySQLdb (as Django's backend does) can rebind pymysql.err to a second copy of
        # the module, whose classes PyMySQL's connections never raise.
        self.errors = (pymysql.Error,)
        self._connection_class = self._make_connection_class(pymysql.connections.Connection)

    @staticmethod
    def _make_connection_class(base: type[Any]) -> type[Any]:
        import pymysql.connections

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
            # While it connects, the time left until this deadline (monotonic) bounds
            # each read and write, so the whole connect ends by it; None afterwards.
            dbpool_deadline: float | None = None

            # Set before a command is sent, cleared once its reply is read to the end
            # (see Driver.command_in_flight). Replies read by other calls (a
            # set_character_set() or show_warnings() of the borrower) leave it set: the
            # connection is then closed at return, never lent out of step.
            dbpool_in_flight = False
            dbpool_error: Any = None  # the error code of the last failed statement
            dbpool_tcp = False  # over TCP where TCP_INFO can be read (see probe())
            # The server status bits a clean return shows (see settled()): no open
            # transaction and, once dbpool_autocommit is known, the pool's autocommit.
            dbpool_status_mask = _SERVER_STATUS_IN_TRANS
            dbpool_status_clean = 0
            # The socket given kernel timeouts, blocking (see _use_kernel_timeouts).
            dbpool_kernel_sock: Any = None

            def __init__(self, *, dbpool_deadline: float | None = None, **kwargs: Any) -> None:
                self.dbpool_deadline = dbpool_deadline
                if dbpool_deadline is not None:
                    # Only the connect's reads are armed: an instance attribute, dropped
                    # once connected, so that no statement pays for it.
                    self._read_bytes = self._armed_read_bytes
                try:
                    super().__init__(**kwargs)  # connects
                finally:
                    self.dbpool_deadline = None
                    self.__dict__.pop("_read_bytes", None)
                self.dbpool_in_flight = False  # the connect read every reply it asked for
                self.dbpool_tcp = _reads_tcp_info(self._sock)

            def _arm(self, deadline: float) -> None:
                # PyMySQL sets the socket's timeout from these when they change.
                left = _time_left(deadline)
                self._read_timeout = self._write_timeout = left
                self._sock.settimeout(left)
                self._current_timeout = left

            # A read or write cut midway by an exception from a signal handler leaves a
            # packet half read or half sent: close, as PyMySQL does on a socket error,
            # so that the connection fails cleanly instead of reading out of step. The
            # guard is around a whole packet (a header and a body: two reads, and the
            # moment between them), once per packet rather than once per read.
            # These run for every packet: the base class's method is looked up on it at
            # each call (it may be patched, as the benchmark's latency does), rather
            # than through super(), which builds an object per call on Python 3.11.
            def _read_packet(self, packet_type: Any = pymysql.connections.MysqlPacket) -> Any:
                try:
                    return base._read_packet(self, packet_type)
                except Exception:
                    raise
                except BaseException:
                    self._force_close()
                    raise

            def _armed_read_bytes(self, num_bytes: int) -> Any:
                # The reads of a connect: each waits only the time left until its deadline.
                if self.dbpool_deadline is not None:
                    self._arm(self.dbpool_deadline)
                return base._read_bytes(self, num_bytes)

            def _write_bytes(self, data: bytes) -> None:
                if self.dbpool_deadline is not None:
                    self._arm(self.dbpool_deadline)
                try:
                    base._write_bytes(self, data)
                except Exception:
                    raise
                except BaseException:
                    self._force_close()
                    raise

            def _create_ssl_ctx(self, sslp: Any) -> Any:
                if sslp:
                    return super()._create_ssl_ctx(sslp)
                with lock:
                    if not cached:
                        cached.append(super()._create_ssl_ctx(sslp))
                    return cached[0]

            # The error code of a failed command is noted for the pool
            # (see Driver.statement_error), whether it failed sending or reading.
            def _execute_command(self, command: int, sql: Any) -> Any:
                self.dbpool_in_flight = True
                try:
                    return base._execute_command(self, command, sql)
                except pymysql.MySQLError as exc:
                    self.dbpool_error = exc.args[0] if exc.args else None
                    raise

            def _read_ok_packet(self) -> Any:
                try:
                    ok = base._read_ok_packet(self)
                except pymysql.MySQLError as exc:
                    if _server_error(exc):
                        self.dbpool_in_flight = False
                    raise
                self.dbpool_in_flight = False
                return ok

            def _read_query_result(self, unbuffered: bool = False) -> int:
                self._result = None
                result = Result(self)
                try:
                    if unbuffered:
                        result.init_unbuffered_query()
                    else:
                        result.read()
                except pymysql.MySQLError as exc:
                    # An error packet carries no status, and a failed statement may
                    # have opened a transaction (and taken locks): assume it did.
                    status: int = getattr(self, "server_status", 0) or 0
                    self.server_status = status | _SERVER_STATUS_IN_TRANS
                    self.dbpool_error = exc.args[0] if exc.args else None
                    if _server_error(exc):
                        self.dbpool_in_flight = False
                    raise
                # Read to the end, or (unbuffered) up to the rows, which _pending() tracks.
                self.dbpool_in_flight = False
                self._result = result
                if result.server_status is not None:
                    self.server_status = result.server_status
                return result.affected_rows  # type: ignore[no-any-return]

        return Connection

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        kwargs = self._connect_kwargs(params, timeout)
        read_timeout, write_timeout = kwargs["read_timeout"], kwargs["write_timeout"]
        # PyMySQL reads the login handshake with the read timeout: bound it by the
        # connect timeout, so a server that accepts but never answers cannot hold us.
        connect_timeout = kwargs["connect_timeout"]
        kwargs["read_timeout"] = _min(read_timeout, connect_timeout)
        kwargs["write_timeout"] = _min(write_timeout, connect_timeout)
        deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
        raw = self._connection_class(dbpool_deadline=deadline, **kwargs)
        raw._read_timeout, raw._write_timeout = read_timeout, write_timeout
        _use_kernel_timeouts(raw)
        raw.dbpool_autocommit = wanted = raw.autocommit_mode  # what a session reset goes back to
        if wanted is not None:
            raw.dbpool_status_mask = _SERVER_STATUS_IN_TRANS | _SERVER_STATUS_AUTOCOMMIT
            raw.dbpool_status_clean = _SERVER_STATUS_AUTOCOMMIT if wanted else 0
        return raw

    def bounded(self, raw: Any, seconds: float) -> _Bound:
        return _PyMySQLBound(raw, seconds, self._timeout_attributes)

    def _socket(self, raw: Any) -> Any:
        return raw._sock

    def probe(self, raw: Any) -> bool | None:
        # Called at every checkout: the TCP_INFO look inline, for a connection known to
        # be over TCP since its connect (a socket keeps its family).
        sock = raw._sock
        if raw.dbpool_tcp and sock is not None:
            try:
                return bool(sock.getsockopt(_IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_ESTABLISHED)
            except OSError:
                return False
        return _probe_socket(sock)

    def is_closed(self, raw: Any) -> bool:
        # PyMySQL drops its socket on close() and after any failed read or write.
        return raw._sock is None

    def ping(self, raw: Any) -> None:
        raw.ping(reconnect=False)

    def abandon(self, raw: Any) -> None:
        sock, raw._sock, raw._rfile = raw._sock, None, None
        raw._closed = True
        _drop_socket(sock)

    def after_fork(self) -> None:
        import pymysql.connections

        # The TLS context cache has a lock, which another thread may have held at the fork.
        self._connection_class = self._make_connection_class(pymysql.connections.Connection)

    def command_in_flight(self, raw: Any) -> bool:
        return bool(raw.dbpool_in_flight)

    def in_transaction(self, raw: Any) -> bool:
        # Exact for connections of this driver, which read the status of every reply.
        return bool((raw.server_status or 0) & _SERVER_STATUS_IN_TRANS)

    def needs_reset(self, raw: Any) -> bool:
        # The first packet of an unbuffered result carries no status: a SELECT ... FOR
        # UPDATE read partly may hold a transaction and its locks that nothing reports yet.
        return not _status_clean(raw) or _pending(raw._result)

    def settled(self, raw: Any) -> bool:
        # Driver.settled's questions asked inline (is_closed, command_in_flight,
        # statement_error, needs_reset): this runs at every return. The status test is
        # _status_clean(), inline.
        result = raw._result
        return (
            raw._sock is not None
            and not raw.dbpool_in_flight
            and raw.dbpool_error is None
            and (raw.server_status or 0) & raw.dbpool_status_mask == raw.dbpool_status_clean
            and (result is None or not (result.unbuffered_active or result.has_next))
        )

    def discard_pending(self, raw: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        result = raw._result
        while _pending(result):
            # The server sends the whole result whatever we do: read it to its end.
            if time.monotonic() > deadline:
                raise TimeoutError(f"an unread result was not drained within {seconds}s")
            if not result.unbuffered_active:  # more result sets follow (a CALL)
                raw.next_result(unbuffered=True)
                result = raw._result
            elif result._check_packet_is_eof(raw._read_packet()):
                result.unbuffered_active = False
                result.connection = None

    def close(self, raw: Any) -> None:
        result = raw._result
        if result is not None and result.unbuffered_active:
            # Its rows will never be read: keep the result's finalizer (and the cursor's
            # close()) from reading the closed socket.
            result.unbuffered_active = False
        super().close(raw)

    def rollback(self, raw: Any) -> None:
        if self.in_transaction(raw):
            raw.rollback()
        # After the rollback: switching autocommit on commits an open transaction.
        if _autocommit_switched(raw):
            raw.autocommit(raw.dbpool_autocommit)

    def reset_session(self, raw: Any) -> None:
        # COM_RESET_CONNECTION clears variables, temporary tables and transactions
        # without re-authenticating; PyMySQL has no public call for it.
        raw._execute_command(_COM_RESET_CONNECTION, b"")
        raw._read_ok_packet()
        # It also clears what PyMySQL set up at connect: set it up again, as its
        # connect() does (sql_mode, init_command, then autocommit).
        if raw.sql_mode is not None or raw.init_command is not None:
            cur = raw.cursor()
            try:
                if raw.sql_mode is not None:
                    cur.execute("SET sql_mode=%s", (raw.sql_mode,))
                if raw.init_command is not None:
                    cur.execute(raw.init_command)
            finally:
                cur.close()
            if raw.init_command is not None:
                raw.commit()
        # The reset gives the server's default autocommit; go back to the pool's
        # setting (not to whatever the last borrower switched to).
        if raw.dbpool_autocommit is not None:
            raw.autocommit(raw.dbpool_autocommit)


def _server_error(exc: BaseException) -> bool:
    """Whether a driver error came in the server's error reply (which ends its command)."""
    code = _error_code(exc)
    return isinstance(code, int) and code not in _CLIENT_ERRORS


def _pending(result: Any) -> bool:
    """Whether a PyMySQL result still has rows, or result sets after it, on the wire."""
    return result is not None and bool(result.unbuffered_active or result.has_next)


def _status_clean(raw: Any) -> bool:
    """No open transaction, and the pool's autocommit if it has one (masks set at connect)."""
    return bool((raw.server_status or 0) & raw.dbpool_status_mask == raw.dbpool_status_clean)


def _autocommit_switched(raw: Any) -> bool:
    """Whether the server reports an autocommit other than the pool's (PyMySQL)."""
    wanted = raw.dbpool_autocommit
    on = bool((raw.server_status or 0) & _SERVER_STATUS_AUTOCOMMIT)
    return wanted is not None and on != bool(wanted)


class MySQLConnectorDriver(_MySQLDriver):
    """mysql-connector-python, always its pure-Python protocol unless told otherwise."""

    @classmethod
    def parameters(cls) -> frozenset[str] | None:
        try:
            from mysql.connector.constants import DEFAULT_CONFIGURATION
        except ImportError:
            return None  # not installed: making the driver says so
        return frozenset(DEFAULT_CONFIGURATION) | {
            "connection_timeout",
            "option_files",
            "option_groups",
            "failover",
            "pool_name",
            "pool_size",
            "pool_reset_session",
        }

    name: ClassVar[str] = "mysql-connector"
    _timeout_attributes = ("read_timeout", "write_timeout")

    def __init__(self) -> None:
        try:
            import mysql.connector
        except ImportError as exc:
            raise ConfigError(
                "driver 'mysql-connector' needs mysql-connector-python: "
                "pip install 'dbpool-dbutils[mysql-connector]'"
            ) from exc
        self._module = mysql.connector
        self.errors = (mysql.connector.Error,)
        # The errors of a read or write that timed out (not in every release).
        self._timeouts: tuple[type[BaseException], ...] = tuple(
            getattr(mysql.connector.errors, name)
            for name in ("ConnectionTimeoutError", "ReadTimeoutError", "WriteTimeoutError")
            if hasattr(mysql.connector.errors, name)
        )
        self._connection_class = self._make_connection_class()

    def _make_connection_class(self) -> type[Any]:
        from mysql.connector.connection import MySQLConnection

        error = self._module.Error

        class Connection(MySQLConnection):
            dbpool_status: int | None = None  # the server status of the last reply
            # While it connects, the time left until this deadline (monotonic) bounds
            # each read and write, so the whole connect ends by it; None afterwards.
            dbpool_deadline: float | None = None

            # Set before a command is sent, cleared once its reply is read to the end,
            # or up to the rows, which unread_result tracks (see
            # Driver.command_in_flight). Replies read by other calls leave it set: the
            # connection is then closed at return, never lent out of step.
            dbpool_in_flight = False

            def __init__(self, *, dbpool_deadline: float | None = None, **kwargs: Any) -> None:
                self.dbpool_deadline = dbpool_deadline
                try:
                    super().__init__(**kwargs)  # connects
                finally:
                    self.dbpool_deadline = None
                self.dbpool_in_flight = False  # the connect read every reply it asked for

            def _get_connection(self) -> Any:
                network = super()._get_connection()
                if self.dbpool_deadline is not None:
                    _bound_by_deadline(network, self.dbpool_deadline)
                return network

            def _send_cmd(self, *args: Any, **kwargs: Any) -> Any:
                self.dbpool_in_flight = True
                packet = super()._send_cmd(*args, **kwargs)
                if packet is None:  # a command the server does not answer
                    self.dbpool_in_flight = False
                return packet

            def _handle_ok(self, *args: Any, **kwargs: Any) -> Any:
                return self._read_reply(super()._handle_ok, args, kwargs)

            def _handle_result(self, *args: Any, **kwargs: Any) -> Any:
                return self._read_reply(super()._handle_result, args, kwargs)

            def _handle_binary_result(self, *args: Any, **kwargs: Any) -> Any:
                result = self._read_reply(super()._handle_binary_result, args, kwargs)
                if isinstance(result, tuple):  # rows follow, read by get_rows()
                    self.dbpool_in_flight = True
                return result

            def cmd_stmt_prepare(self, *args: Any, **kwargs: Any) -> Any:
                result = super().cmd_stmt_prepare(*args, **kwargs)
                self.dbpool_in_flight = False
                return result

            def get_rows(self, *args: Any, **kwargs: Any) -> Any:
                rows = super().get_rows(*args, **kwargs)
                if not self.unread_result:
                    self.dbpool_in_flight = False
                return rows

            def get_row(self, *args: Any, **kwargs: Any) -> Any:
                row = super().get_row(*args, **kwargs)
                if not self.unread_result:
                    self.dbpool_in_flight = False
                return row

            def _read_reply(self, method: Any, args: Any, kwargs: Any) -> Any:
                try:
                    result = method(*args, **kwargs)
                except error as exc:
                    # The server's error reply ends its command; a client-side error
                    # (no SQLSTATE) may come from a reply read partly.
                    if exc.sqlstate is not None:
                        self.dbpool_in_flight = False
                    raise
                self.dbpool_in_flight = False
                return result

            def _handle_server_status(self, flags: int) -> None:
                super()._handle_server_status(flags)
                self.dbpool_status = flags

            # An error reply carries no server status, and a failed statement may have
            # opened a transaction (and taken locks): assume it did, so the pool rolls back.
            # Its error code is noted for the pool (see Driver.statement_error).
            def cmd_query(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().cmd_query(*args, **kwargs)
                except error as exc:
                    self._in_transaction = True
                    self.dbpool_error = exc.errno
                    raise

            def cmd_stmt_execute(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().cmd_stmt_execute(*args, **kwargs)
                except error as exc:
                    self._in_transaction = True
                    self.dbpool_error = exc.errno
                    raise

        return Connection

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        kwargs = self._connect_kwargs(params, timeout)
        # mysql-connector bounds the handshake by connection_timeout itself, and
        # takes read and write timeouts in whole seconds only.
        kwargs["connection_timeout"] = kwargs.pop("connect_timeout")
        kwargs["read_timeout"] = _whole_seconds(kwargs["read_timeout"])
        kwargs["write_timeout"] = _whole_seconds(kwargs["write_timeout"])
        connect_timeout = kwargs["connection_timeout"]
        raw: Any
        if kwargs.setdefault("use_pure", True):
            kwargs.pop("use_pure")
            deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
            raw = self._connection_class(dbpool_deadline=deadline, **kwargs)
            _unbind_deadline(raw._socket)
        else:
            # The C extension bounds each read of the connect by connection_timeout.
            raw = self._module.connect(**kwargs)
        raw.dbpool_autocommit = getattr(raw, "_autocommit", None)
        if hasattr(raw, "_socket"):
            _close_on_transport_error(raw._socket)
        return raw

    def explain(self, exc: BaseException) -> str | None:
        if isinstance(exc, self._timeouts):
            return "the server did not answer in time"
        return super().explain(exc)

    def bounded(self, raw: Any, seconds: float) -> _Bound:
        if not hasattr(raw, "_socket"):
            return _NO_BOUND  # the C extension has no per-call timeout to change
        # mysql-connector takes whole seconds only.
        return super().bounded(raw, _whole_seconds(seconds) or 1)

    def abandon(self, raw: Any) -> None:
        network = getattr(raw, "_socket", None)
        if network is None:
            # The C extension: nothing to detach, so keep it from ever being finalized.
            super().abandon(raw)
            return
        sock, network.sock = network.sock, None
        _drop_socket(sock)

    def probe(self, raw: Any) -> bool | None:
        if not hasattr(raw, "_socket"):
            return None  # the C extension keeps its socket out of reach
        return super().probe(raw)

    def _socket(self, raw: Any) -> Any:
        return getattr(raw._socket, "sock", None)

    def is_closed(self, raw: Any) -> bool:
        network = getattr(raw, "_socket", None)
        if network is None:
            return False  # the C extension keeps its socket out of reach
        # close() closes the socket but keeps the object; a transport error drops it.
        sock = network.sock
        return sock is None or sock.fileno() < 0

    def ping(self, raw: Any) -> None:
        raw.ping(reconnect=False)

    def check(self, params: Mapping[str, Any]) -> None:
        if params.get("use_pure", True) is False and not getattr(self._module, "HAVE_CEXT", False):
            raise ConfigError(
                "use_pure=False asks for mysql-connector's C extension, which is not "
                "available here (not installed, or it cannot load); leave use_pure out "
                "to use the pure-Python protocol"
            )

    def command_in_flight(self, raw: Any) -> bool:
        # The C extension's connections keep no mark.
        return bool(getattr(raw, "dbpool_in_flight", False))

    def needs_reset(self, raw: Any) -> bool:
        return bool(
            raw.in_transaction
            or raw.unread_result
            or getattr(raw, "_have_next_result", False)
            or _connector_autocommit_switched(raw)
        )

    def discard_pending(self, raw: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while raw.unread_result:
            if time.monotonic() > deadline:
                raise TimeoutError(f"an unread result was not drained within {seconds}s")
            raw.get_rows(count=_DRAIN_BATCH)
        if getattr(raw, "_have_next_result", False):
            # More result sets follow (a CALL): rare enough to close the connection instead.
            raise self._module.InterfaceError("unread result sets left at return")

    def rollback(self, raw: Any) -> None:
        if raw.in_transaction:
            raw.rollback()
        # After the rollback: switching autocommit on commits an open transaction.
        if _connector_autocommit_switched(raw):
            raw.autocommit = raw.dbpool_autocommit

    def reset_session(self, raw: Any) -> None:
        # The reset re-applies the connection's autocommit flag, which the last borrower
        # may have switched: go back to the pool's setting.
        if raw.dbpool_autocommit is not None:
            raw._autocommit = raw.dbpool_autocommit
        # It reports failure by returning False, not by raising.
        if not raw.cmd_reset_connection():
            raise self._module.OperationalError("COM_RESET_CONNECTION failed")


# Rows read per call while draining an unread mysql-connector result.
_DRAIN_BATCH = 1000


def _connector_autocommit_switched(raw: Any) -> bool:
    """Whether the server reports an autocommit other than the pool's (mysql-connector).

    The C extension's connections keep no status: they are never seen as switched.
    """
    wanted = raw.dbpool_autocommit
    status = getattr(raw, "dbpool_status", None)
    if wanted is None or status is None:
        return False
    return bool(status & _SERVER_STATUS_AUTOCOMMIT) != bool(wanted)


def _bound_by_deadline(network: Any, deadline: float) -> None:
    """Make each read and write of a connecting mysql-connector socket wait only the time left.

    mysql-connector leaves the socket's timeout alone while ``_connection_timeout`` is
    set; the statements it runs after the login are bounded the same way.
    """

    def arm() -> None:
        left = _time_left(deadline)
        network._connection_timeout = left
        if network.sock is not None:
            # A socket closed by a failed connect: the driver's call says so itself.
            with contextlib.suppress(OSError):
                network.sock.settimeout(left)

    def recv(*args: Any, **kwargs: Any) -> Any:
        arm()
        return type(network).recv(network, *args, **kwargs)

    def send(*args: Any, **kwargs: Any) -> Any:
        arm()
        return type(network).send(network, *args, **kwargs)

    network.recv, network.send = recv, send


def _unbind_deadline(network: Any) -> None:
    """Undo ``_bound_by_deadline`` once connected: statements get their own timeouts."""
    del network.recv, network.send
    network.set_connection_timeout(None)


def _close_on_transport_error(network: Any) -> None:
    """Make a mysql-connector socket close itself when a read or write fails midway.

    mysql-connector keeps the connection open after a read timeout; the late
    answer then arrives as the answer to the next command, and every later result
    is off by one. PyMySQL closes the connection instead: do the same, so that
    the next use fails cleanly and the pool replaces the connection.
    """
    recv, send = network.recv, network.send

    # BaseException: an exception from a signal handler cuts a packet midway too.
    def guarded_recv(*args: Any, **kwargs: Any) -> Any:
        try:
            return recv(*args, **kwargs)
        except BaseException:
            network.close_connection()
            network.sock = None
            raise

    def guarded_send(*args: Any, **kwargs: Any) -> Any:
        try:
            return send(*args, **kwargs)
        except BaseException:
            network.close_connection()
            network.sock = None
            raise

    network.recv, network.send = guarded_recv, guarded_send
