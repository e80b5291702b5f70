"""A throwaway MariaDB server for dbpool's tests and benchmarks.

``MariaDBServer`` initialises a fresh data directory with ``mariadb-install-db``
in a private temporary directory, starts ``mariadbd`` on a free loopback port
and creates a database and a user for the tests::

    with MariaDBServer() as server:
        conn = pymysql.connect(**server.params())

Nothing here needs pytest, so benchmarks can import it too.

What the server has:

* ``host`` ``127.0.0.1``, ``port`` a free port picked when first started,
* ``user`` ``dbpool`` (as ``'dbpool'@'127.0.0.1'`` and ``'dbpool'@'localhost'``)
  with a generated ``password`` that is easy to spot in logs,
* ``database`` ``dbpool_test``; the user has all privileges on it, plus PROCESS
  and CONNECTION ADMIN (see and KILL other users' connections),
* ``admin_connect()``: a PyMySQL connection as root over the unix socket, with
  autocommit on, for ``KILL CONNECTION``, ``SHOW STATUS``, ``SET GLOBAL``...

``restart()`` stops the server and starts it again on the same port with the
same data, for fault tests; ``restart(graceful=False)`` SIGKILLs it first, as a
crash would.

Using an existing server instead
--------------------------------
Set ``DBPOOL_TEST_MYSQL`` to ``user:password@host:port/database`` (or the URL
form ``mysql://user:password@host:port/database``, where user and password may
be percent-encoded; ``mariadb://`` and ``mysql+pymysql://`` work too).  The port
defaults to 3306 and the database to ``dbpool_test``.  Then nothing is started:
``start()`` only checks that the server answers, ``stop()`` does nothing, and
``admin_connect()`` logs in with the same credentials, so that user should have
PROCESS and CONNECTION ADMIN (or SUPER) for the fault tests.  Such a server
cannot be restarted: ``restart()`` and ``halt()`` raise ``RestartNotSupported``
(tests/fix_mariadb.py's ``restartable_mariadb`` fixture skips such tests).

The binaries are looked up on ``PATH`` and in the usual sbin directories
(``mariadbd``/``mysqld`` and ``mariadb-install-db``/``mysql_install_db``);
``find_binaries()`` raises ``MariaDBNotInstalled`` when they are missing.

When run as root (as in CI) both ``mariadb-install-db`` and ``mariadbd`` get
``--user=root``, since mariadbd refuses to run as root otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import pymysql

ENV_EXTERNAL = "DBPOOL_TEST_MYSQL"

HOST = "127.0.0.1"
USER = "dbpool"
DATABASE = "dbpool_test"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/libexec", "/usr/local/libexec")
_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")

# Small settings that make a test server start, run and stop quickly.
_SPEED_ARGS = (
    "--innodb-buffer-pool-size=64M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--innodb-buffer-pool-load-at-startup=0",
    "--skip-log-bin",
    "--max-connections=300",
    # The default is a day: a test whose DDL waits on a metadata lock held by a
    # leaked transaction fails in half a minute instead of hanging the run.
    "--lock-wait-timeout=30",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
)


class MariaDBError(RuntimeError):
    """The test server could not be set up, started or stopped."""


class MariaDBNotInstalled(MariaDBError):
    """mariadbd or mariadb-install-db is not installed."""


class RestartNotSupported(MariaDBError):
    """An external server (``DBPOOL_TEST_MYSQL``) cannot be restarted."""


def _which(names: tuple[str, ...]) -> str | None:
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_SBIN_DIRS)
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def find_binaries() -> tuple[str, str]:
    """Return the paths of (mariadbd, mariadb-install-db), or raise MariaDBNotInstalled."""
    server = _which(_SERVER_NAMES)
    install_db = _which(_INSTALL_DB_NAMES)
    if server is None or install_db is None:
        missing = [
            name
            for name, found in (("mariadbd", server), ("mariadb-install-db", install_db))
            if found is None
        ]
        raise MariaDBNotInstalled(
            f"{' and '.join(missing)} not found on PATH or in {', '.join(_SBIN_DIRS)}: "
            "install MariaDB (on Debian: apt-get install mariadb-server, or run "
            f"tools/test.sh, which does it), or set {ENV_EXTERNAL}="
            "user:password@host:port/database to use an existing server"
        )
    return server, install_db


def parse_external(spec: str) -> dict[str, Any]:
    """Parse ``[mysql://]user:password@host[:port][/database]`` into connect params."""
    text = spec.strip()
    is_url = "://" in text
    if is_url:
        text = text.split("://", 1)[1]
    creds, sep, location = text.rpartition("@")
    if not sep or not creds:
        raise ValueError(f"{ENV_EXTERNAL} must look like user:password@host:port/database")
    user, _, password = creds.partition(":")
    hostport, _, database = location.partition("/")
    database = database.split("?", 1)[0]
    host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if not host:
        raise ValueError(f"{ENV_EXTERNAL} has no host: expected user:password@host:port/database")
    try:
        port = int(port_text) if port_text else 3306
    except ValueError:
        raise ValueError(f"{ENV_EXTERNAL} has a bad port {port_text!r}") from None
    if is_url:
        user, password, database = unquote(user), unquote(password), unquote(database)
    return {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "database": database or DATABASE,
    }


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port, preferably outside the kernel's ephemeral range.

    A port from the ephemeral range (what binding port 0 gives) can be taken as
    the source port of some client connection while the server is down for a
    restart(), and then the server cannot bind it again.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low > 11000:
        rng = random.SystemRandom()
        for _ in range(50):
            port = rng.randrange(10000, low)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        return port


def _accepts(unix_socket: str) -> bool:
    """Whether something listens on the unix socket.

    Checked before PyMySQL tries, because PyMySQL leaks its socket (a
    ResourceWarning) when connecting to a unix socket fails.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(unix_socket)
        except OSError:
            return False
    return True


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


_DIR_PREFIX = "dbpool-mariadb-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_dirs(base: str) -> None:
    """Delete the directories of servers whose Python process was killed.

    Directories are named dbpool-mariadb-<owner pid>-<random>; one is stale when
    its owner is gone and no mariadbd still runs in it.
    """
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(_DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            owner = entry.name[len(_DIR_PREFIX) :].split("-", 1)[0]
            if not owner.isdigit() or _pid_alive(int(owner)):
                continue
            with contextlib.suppress(OSError, ValueError):
                server_pid = int(Path(entry.path, "mysqld.pid").read_text().strip())
                if _pid_alive(server_pid):
                    continue
            shutil.rmtree(entry.path, ignore_errors=True)


def _short_tempdir() -> str:
    """A new private directory whose socket path fits a unix socket's ~107 bytes."""
    base = tempfile.gettempdir()
    if len(os.path.join(base, f"{_DIR_PREFIX}1234567-xxxxxxxx", "mysqld.sock")) > 100:
        base = "/tmp"
    _sweep_stale_dirs(base)
    return tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=base)


_running: set[MariaDBServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class MariaDBServer:
    """A MariaDB server of its own for a test session, or an external one.

    ``external``: a ``DBPOOL_TEST_MYSQL``-style spec of a server to use instead
    of starting one; by default the environment variable is read, unless
    ``ignore_env`` is true.  ``port``: the port to start on (default: a free
    one).  ``extra_args``: more ``mariadbd`` options.
    """

    host: str
    port: int
    user: str
    password: str
    database: str

    def __init__(
        self,
        external: str | None = None,
        *,
        ignore_env: bool = False,
        port: int | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> None:
        if external is None and not ignore_env:
            external = os.environ.get(ENV_EXTERNAL) or None
        self.external = external is not None
        self.extra_args = tuple(extra_args)
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._base: Path | None = None
        self._started = False
        self._log_start = 0
        if external is not None:
            p = parse_external(external)
            self.host, self.port, self.user = p["host"], p["port"], p["user"]
            self.password, self.database = p["password"], p["database"]
        else:
            self.host = HOST
            self.port = port if port is not None else 0
            self.user = USER
            # Distinctive, so a test can check it never shows up in logs or reprs.
            self.password = f"dbpool-secret-{secrets.token_hex(8)}"
            self.database = DATABASE

    # -- public API -------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """Connect parameters for the test user: host, port, user, password, database."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }

    @property
    def socket_path(self) -> str | None:
        """The unix socket of a server started here (None for an external one)."""
        return None if self._base is None else str(self._base / "mysqld.sock")

    @property
    def error_log(self) -> Path | None:
        """The server's error log (None for an external server)."""
        return None if self._base is None else self._base / "error.log"

    @property
    def pid(self) -> int | None:
        """The mariadbd process id while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        if self.external:
            return self._started
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> MariaDBServer:
        """Start the server (or check an external one answers); returns self."""
        if self._started:
            return self
        if self.external:
            self._check_external()
            self._started = True
            return self
        server_bin, install_db = find_binaries()
        self._base = Path(_short_tempdir())
        try:
            self._install(install_db)
            for attempt in range(3):
                if not self._fixed_port:
                    self.port = free_port()
                try:
                    self._spawn(server_bin)
                    break
                except MariaDBError:
                    # Someone else may have taken the port between probe and bind.
                    if self._fixed_port or attempt == 2 or not self._port_clash():
                        raise
            self._setup_user()
        except BaseException:
            self._kill_process()
            self._remove_base()
            raise
        self._started = True
        with _running_lock:
            _running.add(self)
        return self

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL) and delete its data."""
        if self.external:
            self._started = False
            return
        try:
            self._stop_process(graceful=True)
        finally:
            self._remove_base()
            self._started = False
            with _running_lock:
                _running.discard(self)

    def restart(self, *, graceful: bool = True) -> None:
        """Stop the server and start it again on the same port with the same data.

        ``graceful=False`` SIGKILLs the server instead of shutting it down, so
        InnoDB does crash recovery on the way up.  Connections open before the
        restart are broken afterwards.
        """
        if self.external:
            raise RestartNotSupported(f"cannot restart the external server given by {ENV_EXTERNAL}")
        if not self._started or self._base is None:
            raise MariaDBError("the server is not started")
        self._stop_process(graceful=graceful)
        self._respawn()

    def halt(self, *, graceful: bool = True) -> None:
        """Stop the server but keep its data, so ``resume()`` can start it again.

        ``graceful=False`` SIGKILLs it, as a crash would. Connections to it break.
        """
        if self.external:
            self.restart()  # raises RestartNotSupported
        if not self._started or self._base is None:
            raise MariaDBError("the server is not started")
        self._stop_process(graceful=graceful)

    def resume(self) -> None:
        """Start a server stopped by ``halt()`` again, on the same port with the same data."""
        if self._base is None:
            raise MariaDBError("the server was never started")
        if self.running:
            return
        self._respawn()

    def _respawn(self) -> None:
        """Start the server again on its port and data directory."""
        server_bin, _ = find_binaries()
        deadline = time.monotonic() + 10
        while True:
            try:
                self._spawn(server_bin)
                return
            except MariaDBError:
                # Rare: a client socket holds the port for a moment; try again.
                if time.monotonic() > deadline or not self._port_clash():
                    raise
                time.sleep(0.2)

    def admin_connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A root PyMySQL connection (autocommit on); extra kwargs go to connect()."""
        if self.external:
            return pymysql.connect(**{**self.params(), "autocommit": True, **kwargs})
        if self.socket_path is None:
            raise MariaDBError("the server is not started")
        if not _accepts(self.socket_path):
            # Checked here because PyMySQL leaks its socket when this fails.
            raise pymysql.err.OperationalError(
                2002, f"Can't connect to the test server through {self.socket_path}: not running"
            )
        return pymysql.connect(
            **{"unix_socket": self.socket_path, "user": "root", "autocommit": True, **kwargs}
        )

    def error_log_tail(self, lines: int = 30) -> str:
        log = self.error_log
        if log is None or not log.exists():
            return "(no error log)"
        text = log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "external" if self.external else "local"
        return f"<MariaDBServer {kind} {self.user}@{self.host}:{self.port}/{self.database}>"

    # -- internals --------------------------------------------------------------

    def _check_external(self) -> None:
        try:
            conn = pymysql.connect(**self.params(), connect_timeout=10)
        except pymysql.err.MySQLError as exc:
            raise MariaDBError(
                f"cannot connect to the server given by {ENV_EXTERNAL} "
                f"({self.user}@{self.host}:{self.port}/{self.database}): {exc}"
            ) from exc
        conn.close()

    def _root_args(self) -> list[str]:
        return ["--user=root"] if _is_root() else []

    def _install(self, install_db: str) -> None:
        assert self._base is not None
        datadir = self._base / "data"
        (self._base / "tmp").mkdir()
        cmd = [
            install_db,
            "--no-defaults",  # must come first
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *self._root_args(),
        ]
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MariaDBError(f"{install_db} did not finish in {START_TIMEOUT:.0f} s") from exc
        if result.returncode != 0:
            out = result.stdout.decode(errors="replace").strip().splitlines()
            raise MariaDBError(
                f"{' '.join(cmd)} failed with exit code {result.returncode}:\n"
                + "\n".join(out[-30:])
            )

    def _spawn(self, server_bin: str) -> None:
        """Start mariadbd and wait until it accepts connections."""
        self._launch(server_bin)
        self._await_ready()

    def _server_args(self) -> tuple[str, ...]:
        """Options for this start of mariadbd beyond the common ones (subclasses add)."""
        return self.extra_args

    def _server_env(self) -> dict[str, str] | None:
        """The environment of mariadbd (None: this process's)."""
        return None

    def _command(self, server_bin: str) -> list[str]:
        """The mariadbd command line of this server."""
        assert self._base is not None
        base = self._base
        return [
            server_bin,
            "--no-defaults",  # must come first
            f"--datadir={base / 'data'}",
            f"--socket={base / 'mysqld.sock'}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            "--skip-name-resolve",
            f"--pid-file={base / 'mysqld.pid'}",
            f"--log-error={base / 'error.log'}",
            f"--tmpdir={base / 'tmp'}",
            *_SPEED_ARGS,
            *self._root_args(),
            *self._server_args(),
        ]

    def _launch(self, server_bin: str) -> None:
        """Start mariadbd; ``_await_ready()`` waits until it accepts connections."""
        assert self._base is not None
        base = self._base
        cmd = self._command(server_bin)
        # If this (main) thread dies without cleaning up, the kernel sends the
        # server SIGTERM, so a killed test run leaves no server behind.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        log = base / "error.log"
        self._log_start = log.stat().st_size if log.exists() else 0
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._server_env(),
            start_new_session=True,  # keep the terminal's Ctrl-C for pytest
        )

    def _await_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the launched mariadbd accepts root connections on its socket."""
        assert self._base is not None and self._proc is not None
        base = self._base
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise MariaDBError(
                    f"mariadbd exited with code {code} while starting on port {self.port}; "
                    f"end of {base / 'error.log'}:\n{self.error_log_tail()}"
                )
            if _accepts(str(base / "mysqld.sock")):
                try:
                    conn = self.admin_connect(connect_timeout=5, read_timeout=10)
                except pymysql.err.OperationalError as exc:
                    last_error = exc
                else:
                    conn.close()
                    return
            if time.monotonic() > deadline:
                self._kill_process()
                raise MariaDBError(
                    f"mariadbd did not accept connections within {timeout:.0f} s "
                    f"(last error: {last_error}); end of {base / 'error.log'}:\n"
                    f"{self.error_log_tail()}"
                )
            time.sleep(0.05)

    def _port_clash(self) -> bool:
        """Whether the last _spawn() failed because the port was taken."""
        log = self.error_log
        if log is None or not log.exists():
            return False
        with open(log, "rb") as f:
            f.seek(self._log_start)
            text = f.read().decode(errors="replace")
        return "Address already in use" in text or "Bind on TCP/IP port" in text

    def _setup_user(self) -> None:
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4")
                for host in ("127.0.0.1", "localhost"):
                    account = f"'{self.user}'@'{host}'"
                    cur.execute(f"CREATE USER {account} IDENTIFIED BY %s", (self.password,))
                    cur.execute(f"GRANT ALL PRIVILEGES ON `{self.database}`.* TO {account}")
                    cur.execute(f"GRANT PROCESS, CONNECTION ADMIN ON *.* TO {account}")
        finally:
            conn.close()

    def _stop_process(self, *, graceful: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if graceful:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=STOP_TIMEOUT)
            self._kill_process()
        self._proc = None

    def _kill_process(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()
        self._proc = None

    def _remove_base(self) -> None:
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
