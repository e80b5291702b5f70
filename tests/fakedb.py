"""A fake DB-API driver with no I/O, for fast tests of the pool's own logic."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any

from dbpool import ConnectionPool, Driver, make_pool


class FakeError(Exception):
    """The fake driver's base error."""


class FakeOperationalError(FakeError):
    pass


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    def execute(self, sql: str, params: Any = None) -> int:
        conn = self.conn
        conn.check()
        conn.statements.append(sql)
        server = conn.driver.server(conn.host)
        upper = sql.upper()
        write = upper.startswith(("INSERT", "UPDATE", "DELETE", "CREATE", "DROP"))
        failure: tuple[int, str] | None = None
        if conn.fail_next is not None:
            failure, conn.fail_next = conn.fail_next, None
        elif server.not_ready and not upper.startswith("SHOW"):
            failure = (1047, "WSREP has not yet prepared node for application use")
        elif server.read_only and write:
            failure = (1290, "The MariaDB server is running with the --read-only option")
        if failure is not None:
            # What dbpool's driver subclasses do: note the failed statement's error code.
            conn.dbpool_error = failure[0]
            if failure[0] in (2013, 2006):
                conn.killed = True
            raise FakeOperationalError(*failure)
        if upper.startswith(("INSERT", "UPDATE", "DELETE", "BEGIN")):
            conn.in_transaction = True
        if write:
            server.gtid += 1
            conn.last_gtid = f"0-1-{server.gtid}"
        self.description = [("1",)]
        self.rows = [(1,)]
        self.rowcount = 1
        if upper == "SELECT @@SERVER_ID":
            self.rows = [(server.server_id,)]
        elif upper == "SELECT @@LAST_GTID":
            self.rows = [(conn.last_gtid,)]
        elif upper.startswith("SELECT MASTER_GTID_WAIT("):
            server.checks.append(sql)
            wanted = int(str(params[0]).rsplit("-", 1)[1])
            self.rows = [(0 if server.gtid >= wanted else -1,)]
        elif upper == "SELECT @@GLOBAL.READ_ONLY":
            server.checks.append(sql)
            self.rows = [(int(server.read_only),)]
        elif upper.startswith("SHOW GLOBAL STATUS LIKE 'WSREP_READY'"):
            server.checks.append(sql)
            self.rows = [("wsrep_ready", "OFF" if server.not_ready else "ON")]
        elif upper.startswith(("SHOW REPLICA STATUS", "SHOW SLAVE STATUS")):
            server.checks.append(sql)
            self.description = [
                ("Slave_IO_Running",),
                ("Slave_SQL_Running",),
                ("Seconds_Behind_Master",),
            ]
            running = "No" if server.lag is None else "Yes"
            self.rows = [(running, running, server.lag)]
        elif upper.startswith("SELECT") and isinstance(params, (tuple, list)) and params:
            self.rows = [tuple(params)]  # "SELECT %s" gives back its value, as a server would
        return 1

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def close(self) -> None:
        pass


class FakeServer:
    """The state of one fake server, by ``host:port``."""

    def __init__(self, server_id: int) -> None:
        self.server_id = server_id
        self.down = False
        self.read_only = False
        self.not_ready = False
        self.lag: int | None = 0  # None: replication stopped
        self.gtid = 0  # the sequence number of the last transaction it wrote or applied
        self.checks: list[str] = []  # health queries received


class FakeConnection:
    ids = itertools.count(1)

    def __init__(self, driver: FakeDriver, host: str = "fake:3306") -> None:
        self.id = next(self.ids)
        self.driver = driver
        self.host = host  # the server's host:port
        self.fail_next: tuple[int, str] | None = None  # the next statement's error
        self.dbpool_error: int | None = None
        self.last_gtid = ""
        self.closed = False
        self.killed = False
        self.in_transaction = False
        self.rollbacks = 0
        self.pings = 0
        self.statements: list[str] = []
        self.user: threading.Thread | None = None

    def check(self) -> None:
        if self.closed:
            raise FakeOperationalError("connection closed")
        if self.killed:
            raise FakeOperationalError("connection was killed")

    def cursor(self) -> FakeCursor:
        self.check()
        return FakeCursor(self)

    def commit(self) -> None:
        self.check()
        self.in_transaction = False

    def rollback(self) -> None:
        self.check()
        self.rollbacks += 1
        self.in_transaction = False

    def ping(self) -> None:
        self.pings += 1
        self.check()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self.driver.lock:
                self.driver.open.discard(self)


class FakeDriver(Driver):
    """Connections that live in memory; `connect_delay` makes each connect slow."""

    name = "fake"
    errors = (FakeError,)

    def __init__(
        self, connect_delay: float = 0.0, fail_connects: int = 0, permanent: bool = False
    ) -> None:
        self.connect_delay = connect_delay
        self.fail_connects = fail_connects
        self.permanent = permanent
        self.lock = threading.Lock()
        self.open: set[FakeConnection] = set()
        self.connects = 0
        self.probes = 0
        self.servers: dict[str, FakeServer] = {}
        self.timeouts: list[float | None] = []  # the timeout of each connect

    def server(self, key: str) -> FakeServer:
        """The fake server at ``host:port``, made on first mention."""
        with self.lock:
            if key not in self.servers:
                self.servers[key] = FakeServer(len(self.servers) + 1)
            return self.servers[key]

    def on(self, key: str) -> list[FakeConnection]:
        """The open connections to ``host:port``."""
        with self.lock:
            return [conn for conn in self.open if conn.host == key]

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> FakeConnection:
        if self.connect_delay:
            time.sleep(self.connect_delay)
        key = f"{params.get('host', 'fake')}:{params.get('port', 3306)}"
        server = self.server(key)
        with self.lock:
            self.connects += 1
            self.timeouts.append(timeout)
            if self.fail_connects:
                self.fail_connects -= 1
                raise FakeOperationalError("Access denied" if self.permanent else "refused")
            if server.down:
                raise FakeOperationalError(2003, f"Can't connect to server on {key}")
            conn = FakeConnection(self, key)
            self.open.add(conn)
        return conn

    def probe(self, raw: Any) -> bool | None:
        self.probes += 1
        return not (raw.killed or raw.closed)

    def ping(self, raw: Any) -> None:
        raw.ping()

    def is_permanent(self, exc: BaseException) -> bool:
        return "Access denied" in str(exc)

    def describe(self, params: Mapping[str, Any]) -> str:
        return "fake://"


def small_pool(pools: list[ConnectionPool], driver: FakeDriver, mode: str, **options: Any) -> Any:
    """A pool of at most two connections over ``driver``, disposed of with ``pools``."""
    options.setdefault("size", 2)
    options.setdefault("max_overflow", 0)
    pool = make_pool(mode=mode, driver=driver, **options)
    pools.append(pool)
    return pool
