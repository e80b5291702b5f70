"""Real topologies for the cluster tier: a replication pair, Galera, HAProxy.

A pytest plugin (loaded from conftest.py) in the manner of psycopg's
``fix_proxy.py``: the classes, their session fixtures and the rule that marks
their tests ``cluster`` (and ``mysql``, so the fast tier leaves them out) live
together.

* ``ReplicationPair``: two ``mariadbd`` with binary logs and GTIDs; the replica
  follows the primary with ``MASTER_USE_GTID=slave_pos`` and is ``read_only``.
  ``switchover()`` promotes the replica the way an operator does (old primary
  read-only, replica caught up, replica detached and writable, old primary
  re-pointed at the new one); ``reset()`` puts everything back.
* ``GaleraCluster``: three nodes on loopback, each with its own client, gcomm,
  IST and SST ports; node 1 bootstraps, the others join by rsync SST at once.
  A joiner's SST is received by rsync's daemon, which drops root for an
  unprivileged user: the nodes' directories are world-writable and mariadbd
  runs with ``UMASK=0666 UMASK_DIR=0777`` so that the files it receives are too.
  Failure detection is tuned down (suspect after 1.5 s) so a SIGKILLed node
  leaves the view in seconds, not the default 5-15.
* ``HAProxy``: TCP mode in front of the Galera nodes, checking each with a
  MySQL login, marking a node down within a second and shutting its sessions.

Every server and proxy is started on free loopback ports by the session
fixtures, reused by every test, and stopped (by pid) at the end. The function
fixtures ``replication``, ``galera`` and ``galera_proxy`` hand out the session
topology and restore it after each test (nodes up and synced, roles back,
replication running), so a destructive test leaves nothing behind.

Set ``DBPOOL_SKIP_CLUSTER=1`` (or ``DBPOOL_SKIP_MYSQL=1``) to skip these tests
on a machine without galera-4 or haproxy; otherwise their absence fails them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.mariadb import (
    HOST,
    START_TIMEOUT,
    MariaDBError,
    MariaDBServer,
    _running,
    _running_lock,
    find_binaries,
    free_port,
)

GALERA_LIBS = (
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
)
REPL_USER = "dbpool_repl"
CHECK_USER = "dbpool_check"  # HAProxy's mysql-check login: no password, no privileges
CLUSTER_TIMEOUT = 90.0

_CLUSTER_FIXTURES = ("replication_pair", "galera_cluster", "haproxy_galera")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if any(name in names for name in _CLUSTER_FIXTURES):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.mysql)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; raise naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise MariaDBError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def query(server: MariaDBServer, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement as root on ``server``; return its rows."""
    conn = server.admin_connect(connect_timeout=5, read_timeout=30)
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def query_dict(server: MariaDBServer, sql: str) -> dict[str, Any]:
    """The first row of ``sql`` as a dict (empty when there is none)."""
    conn = server.admin_connect(connect_timeout=5, read_timeout=30)
    with contextlib.closing(conn), conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return dict(row) if row else {}


def _signal_and_wait(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# -- replication ------------------------------------------------------------------


class ReplicationNode(MariaDBServer):
    """A MariaDB server with a binary log, GTIDs and a server id of its own."""

    def __init__(self, server_id: int, password: str) -> None:
        super().__init__(ignore_env=True)
        self.server_id = server_id
        self.password = password

    def _server_args(self) -> tuple[str, ...]:
        assert self._base is not None
        return (
            f"--server-id={self.server_id}",
            f"--log-bin={self._base / 'data' / 'binlog'}",
            f"--relay-log={self._base / 'data' / 'relay'}",
            "--log-slave-updates=ON",
            "--binlog-format=ROW",
            "--gtid-strict-mode=ON",
            "--sync-binlog=0",
            "--slave-net-timeout=5",
            *self.extra_args,
        )

    def _setup_user(self) -> None:
        super()._setup_user()
        with contextlib.closing(self.admin_connect()) as conn, conn.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                # To read its own replication lag (SHOW SLAVE STATUS) and GTID positions.
                cur.execute(f"GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO '{self.user}'@'{host}'")
            cur.execute(f"CREATE USER '{REPL_USER}'@'127.0.0.1' IDENTIFIED BY %s", (self.password,))
            cur.execute(f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'127.0.0.1'")
            # Both servers start from the same empty history.
            cur.execute("RESET MASTER")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ReplicationPair:
    """A primary and a replica with GTID replication, on loopback.

    Both servers have the same test user, password and database, so one pool
    configuration reaches either. ``primary`` and ``replica`` follow the roles
    (swapped by ``switchover()``); ``first`` and ``second`` are fixed.
    """

    def __init__(self) -> None:
        password = MariaDBServer(ignore_env=True).password
        self.first = ReplicationNode(1, password)
        self.second = ReplicationNode(2, password)
        self.primary = self.first
        self.replica = self.second
        self.demoted_at = self.promoted_at = 0.0

    def start(self) -> ReplicationPair:
        try:
            self.first.start()
            self.second.start()
            self.follow(self.second, self.first)
            self.wait_running()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in (self.second, self.first):
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> ReplicationPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def params(self) -> dict[str, Any]:
        """Connect parameters with ``host`` the list [primary, replica] as host:port."""
        params = self.primary.params()
        params["host"] = [self.primary.address, self.replica.address]
        del params["port"]
        return params

    # -- replication control -----------------------------------------------------

    @staticmethod
    def follow(replica: ReplicationNode, primary: ReplicationNode) -> None:
        """Make ``replica`` a read-only replica of ``primary`` from its own GTID position."""
        with contextlib.closing(replica.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("STOP SLAVE")
            cur.execute("RESET SLAVE ALL")
            cur.execute("SET GLOBAL read_only = ON")
            # Continue after the last transaction this server has, whoever wrote it.
            cur.execute("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, "
                "MASTER_DELAY=0",
                (primary.host, primary.port, REPL_USER, primary.password),
            )
            cur.execute("START SLAVE")

    def status(self) -> dict[str, Any]:
        """The replica's SHOW SLAVE STATUS."""
        return query_dict(self.replica, "SHOW SLAVE STATUS")

    def running(self) -> bool:
        status = self.status()
        return status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"

    def wait_running(self, timeout: float = 30.0) -> None:
        wait_for(self.running, timeout, "replication to run")

    def lag(self) -> int | None:
        """Seconds_Behind_Master (None when replication is stopped)."""
        value = self.status().get("Seconds_Behind_Master")
        return None if value is None else int(value)

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica has applied everything the primary has logged."""
        position = query(self.primary, "SELECT @@gtid_binlog_pos")[0][0]
        result = query(self.replica, "SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))
        if result[0][0] != 0:
            raise MariaDBError(
                f"the replica did not reach GTID {position} in {timeout:.0f} s: "
                f"{self.status().get('Last_SQL_Error')}"
            )

    def stop_replication(self) -> None:
        query(self.replica, "STOP SLAVE")

    def stop_sql_thread(self) -> None:
        """Keep receiving but stop applying: the replica falls behind."""
        query(self.replica, "STOP SLAVE SQL_THREAD")

    def start_replication(self) -> None:
        query(self.replica, "START SLAVE")
        self.wait_running()

    def set_delay(self, seconds: int) -> None:
        """Apply each transaction ``seconds`` after the primary committed it (MASTER_DELAY)."""
        with contextlib.closing(self.replica.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("STOP SLAVE")
            cur.execute("CHANGE MASTER TO MASTER_DELAY=%s", (seconds,))
            cur.execute("START SLAVE")
        self.wait_running()

    def switchover(self, timeout: float = 30.0) -> None:
        """Promote the replica; the old primary becomes its read-only replica.

        Connections to the old primary stay open: their writes now fail with 1290.
        Between ``demoted_at`` and ``promoted_at`` (``time.monotonic()`` values)
        no server takes writes.
        """
        old, new = self.primary, self.replica
        query(old, "SET GLOBAL read_only = ON")
        self.demoted_at = time.monotonic()
        self.wait_caught_up(timeout)
        with contextlib.closing(new.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("STOP SLAVE")
            cur.execute("RESET SLAVE ALL")
            cur.execute("SET GLOBAL read_only = OFF")
        self.promoted_at = time.monotonic()
        self.primary, self.replica = new, old
        self.follow(old, new)
        self.wait_running(timeout)

    def reset(self) -> None:
        """Back to the start: ``first`` primary, both running, replication on, no delay."""
        for server in (self.first, self.second):
            if not server.running:
                server.resume()
        if self.primary is not self.first:
            self.follow(self.replica, self.primary)  # a stopped or delayed replica
            self.wait_caught_up()
            self.switchover()
        query(self.first, "SET GLOBAL read_only = OFF")
        self.follow(self.second, self.first)
        self.wait_running()
        self.wait_caught_up()


# -- Galera -----------------------------------------------------------------------


def find_galera() -> str:
    """The path of libgalera_smm.so, or raise MariaDBError saying how to install it."""
    for path in (os.environ.get("DBPOOL_GALERA_LIB", ""), *GALERA_LIBS):
        if path and os.path.exists(path):
            return path
    raise MariaDBError(
        f"libgalera_smm.so not found in {', '.join(GALERA_LIBS)}: install "
        "galera-4 and rsync (tools/test.sh does), or set DBPOOL_SKIP_CLUSTER=1"
    )


def _rsync_owner() -> tuple[int, int] | None:
    """The user and group rsync's daemon drops to when started as root (nobody)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None  # it runs as this user: nothing to hand over
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def _open_up(path: Path) -> None:
    """Let rsync's daemon, running unprivileged, write and re-own what is in ``path``.

    chmod a+rwX, recursively; when root, also chown to nobody: rsync sets each
    directory's group as on the donor, which only the directory's owner may do.
    """
    owner = _rsync_owner()
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                child = os.path.join(root, name)
                mode = os.lstat(child).st_mode
                if not stat.S_ISLNK(mode):
                    extra = 0o777 if stat.S_ISDIR(mode) else 0o666
                    os.chmod(child, stat.S_IMODE(mode) | extra)
                    if owner is not None:
                        os.chown(child, *owner)
    os.chmod(path, 0o777)


class GaleraNode(MariaDBServer):
    """One node of a ``GaleraCluster``."""

    def __init__(self, index: int, password: str, provider: str) -> None:
        super().__init__(ignore_env=True)
        self.index = index
        self.name = f"node{index}"
        self.password = password
        self.provider = provider
        self.gcomm_port, self.ist_port, self.sst_port = free_ports(3)
        self.port = free_port()
        self._fixed_port = True
        self.cluster_address = ""
        self.bootstrap = False
        self._start_position: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _server_args(self) -> tuple[str, ...]:
        options = ";".join(
            (
                f"gmcast.listen_addr=tcp://{HOST}:{self.gcomm_port}",
                f"ist.recv_addr={HOST}:{self.ist_port}",
                f"base_port={self.gcomm_port}",
                "gcache.size=32M",
                # Notice a dead peer in about 2 s instead of 5-15.
                "evs.keepalive_period=PT0.3S",
                "evs.inactive_check_period=PT0.3S",
                "evs.suspect_timeout=PT1.5S",
                "evs.inactive_timeout=PT3S",
                "evs.install_timeout=PT3S",
                "gmcast.peer_timeout=PT2S",
                "pc.wait_prim_timeout=PT30S",
            )
        )
        args = [
            "--wsrep-on=ON",
            f"--wsrep-provider={self.provider}",
            "--wsrep-cluster-name=dbpool_test",
            f"--wsrep-cluster-address={self.cluster_address}",
            f"--wsrep-node-name={self.name}",
            f"--wsrep-node-address={HOST}",
            f"--wsrep-node-incoming-address={HOST}:{self.port}",
            f"--wsrep-sst-receive-address={HOST}:{self.sst_port}",
            "--wsrep-sst-method=rsync",
            f"--wsrep-provider-options={options}",
            "--binlog-format=ROW",
            "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2",
            "--innodb-log-file-size=16M",  # a smaller state transfer (the default is 96M)
            "--userstat=ON",  # connections per user: information_schema.USER_STATISTICS
            *self.extra_args,
        ]
        if self.bootstrap:
            args.append("--wsrep-new-cluster")
            self.bootstrap = False  # a restart joins the others
        if self._start_position is not None:
            args.append(f"--wsrep-start-position={self._start_position}")
            self._start_position = None
        return tuple(args)

    def _respawn(self) -> None:
        """Start again after ``halt()``; after a crash, from the position InnoDB recovers.

        Started directly (not by systemd's galera_recovery or mysqld_safe), a node
        that crashed knows no position (grastate.dat says seqno -1) and asks for
        a full state transfer; with the recovered one it gets only what it missed (IST).
        """
        assert self._base is not None
        grastate = self._base / "data" / "grastate.dat"
        if grastate.exists() and re.search(r"^seqno:\s+-1\s*$", grastate.read_text(), re.M):
            self._start_position = self._recover_position()
        _open_up(self._base)
        super()._respawn()

    def _recover_position(self) -> str | None:
        """Run ``mariadbd --wsrep-recover``; the uuid:seqno it finds, or None."""
        assert self._base is not None
        server_bin, _ = find_binaries()
        log = self._base / "recover.log"
        log.unlink(missing_ok=True)
        cmd = [*self._command(server_bin), "--wsrep-recover", f"--log-error={log}"]
        self._start_position = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self._server_env(),
                timeout=START_TIMEOUT,
                check=False,
            )
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(r"Recovered position:\s*([0-9a-f-]{36}:-?\d+)", text)
        return found.group(1) if found else None

    def last_transfer(self) -> str:
        """How the node got its state at its last start: "IST", "SST" or "none"."""
        log = self.error_log
        if log is None or not log.exists():
            return "none"
        with open(log, "rb") as f:
            f.seek(self._log_start)
            text = f.read().decode(errors="replace")
        # The server logs "SST received" after an IST too; the script's last line tells.
        if "SST completed on joiner" in text:
            return "SST"
        return "IST" if "IST received" in text else "none"

    def _server_env(self) -> dict[str, str]:
        return {**os.environ, "UMASK": "0666", "UMASK_DIR": "0777"}

    def launch(self, *, install: bool) -> None:
        """Make the directories (initialised when ``install``) and start mariadbd."""
        server_bin, install_db = find_binaries()
        self._base = Path(
            tempfile.mkdtemp(prefix=f"dbpool-mariadb-{os.getpid()}-galera-", dir="/tmp")
        )
        if install:
            self._install(install_db)
        else:
            (self._base / "tmp").mkdir()
            (self._base / "data").mkdir()
        _open_up(self._base)
        self._launch(server_bin)
        self._started = True
        with _running_lock:
            _running.add(self)

    def status(self) -> dict[str, str]:
        """The node's wsrep status variables (only the ones the tests look at)."""
        rows = query(
            self,
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', "
            "'wsrep_cluster_size', 'wsrep_local_state_comment', "
            "'wsrep_cluster_status', 'wsrep_connected')",
        )
        return {str(name): str(value) for name, value in rows}

    def synced(self, size: int) -> bool:
        try:
            status = self.status()
        except pymysql.err.MySQLError:
            return False
        return (
            status.get("wsrep_ready") == "ON"
            and status.get("wsrep_local_state_comment") == "Synced"
            and status.get("wsrep_cluster_status") == "Primary"
            and status.get("wsrep_cluster_size") == str(size)
        )

    def connections_made(self, user: str) -> int:
        """How many connections ``user`` has opened to this node since it started."""
        rows = query(
            self,
            "SELECT TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS WHERE USER = %s",
            (user,),
        )
        return int(rows[0][0]) if rows else 0

    def kill(self) -> None:
        """SIGKILL the node and wait until it is gone (its data stays for ``resume()``)."""
        self.halt(graceful=False)

    def isolate(self, on: bool = True) -> None:
        """Cut the node off the cluster's group communication (gmcast.isolate), or heal it."""
        query(self, "SET GLOBAL wsrep_provider_options = %s", (f"gmcast.isolate={1 if on else 0}",))


class GaleraCluster:
    """Three Galera nodes on loopback, all with the same test user and database."""

    def __init__(self, size: int = 3) -> None:
        provider = find_galera()
        if shutil.which("rsync") is None:
            raise MariaDBError(
                "rsync is not installed: Galera's SST needs it (tools/test.sh installs it)"
            )
        password = MariaDBServer(ignore_env=True).password
        self.nodes = [GaleraNode(i + 1, password, provider) for i in range(size)]
        address = "gcomm://" + ",".join(f"{HOST}:{n.gcomm_port}" for n in self.nodes)
        for node in self.nodes:
            node.cluster_address = address

    def start(self) -> GaleraCluster:
        first, *others = self.nodes
        try:
            first.bootstrap = True
            first.launch(install=True)
            first._await_ready(CLUSTER_TIMEOUT)
            first._setup_user()
            query(first, f"CREATE USER '{CHECK_USER}'@'127.0.0.1'")
            for node in others:  # both join at once; the donor serves one after the other
                node.launch(install=False)
            for node in others:
                node._await_ready(CLUSTER_TIMEOUT)
            self.wait_synced()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> GaleraCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def hosts(self) -> list[str]:
        return [node.address for node in self.nodes]

    def params(self) -> dict[str, Any]:
        """Connect parameters with ``host`` the list of every node as host:port."""
        params = self.nodes[0].params()
        params["host"] = self.hosts
        del params["port"]
        return params

    def admin_connect(self) -> pymysql.connections.Connection:
        """A root connection to the first node that is up and synced, reading causally.

        ``wsrep_sync_wait``: a read waits until the node has applied every
        transaction the cluster committed before it.
        """
        for node in self.nodes:
            if node.running and node.synced(int(node.status()["wsrep_cluster_size"])):
                return node.admin_connect(init_command="SET SESSION wsrep_sync_wait = 1")
        raise MariaDBError("no Galera node is up and synced")

    def wait_applied(self, sql: str, timeout: float = 30.0) -> None:
        """Wait until ``sql`` (say, a SELECT from a new table) runs on every running node."""
        for node in self.nodes:
            if not node.running:
                continue

            def runs(node: GaleraNode = node) -> bool:
                try:
                    query(node, sql)
                except pymysql.err.MySQLError:
                    return False
                return True

            wait_for(runs, timeout, f"{sql!r} to run on {node.name}")

    def size(self, node: GaleraNode) -> int:
        return int(node.status()["wsrep_cluster_size"])

    def wait_synced(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Wait until every node runs, is Synced and ready, and sees all the others."""
        n = len(self.nodes)
        wait_for(
            lambda: all(node.running and node.synced(n) for node in self.nodes),
            timeout,
            f"{n} Galera nodes to be synced",
        )

    def wait_size(
        self, size: int, nodes: list[GaleraNode], timeout: float = CLUSTER_TIMEOUT
    ) -> None:
        """Wait until each of ``nodes`` is Synced in a primary component of ``size``."""
        wait_for(
            lambda: all(node.synced(size) for node in nodes),
            timeout,
            f"a cluster of {size} on {', '.join(node.name for node in nodes)}",
        )

    def restore(self) -> None:
        """Every node running, healed and synced (after a destructive test)."""
        for node in self.nodes:
            if not node.running:
                node.resume()
            else:
                with contextlib.suppress(pymysql.err.MySQLError):
                    node.isolate(False)
        self.wait_synced()


# -- HAProxy ----------------------------------------------------------------------


class HAProxy:
    """HAProxy in TCP mode in front of some MariaDB servers, on a free loopback port.

    Each server is checked with a MySQL login every 200 ms; two failures mark it
    down and shut its sessions, two successes bring it back.
    """

    def __init__(self, servers: list[MariaDBServer]) -> None:
        binary = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if binary is None:
            raise MariaDBError(
                "haproxy is not installed (tools/test.sh installs it), or set DBPOOL_SKIP_CLUSTER=1"
            )
        self.binary = binary
        self.servers = servers
        self.host = HOST
        self.port = 0
        self._base: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def stats_socket(self) -> str:
        assert self._base is not None
        return str(self._base / "admin.sock")

    def _config(self) -> str:
        servers = "\n".join(
            f"    server s{i} {s.host}:{s.port} check inter 200 fall 2 rise 2 "
            "on-marked-down shutdown-sessions"
            for i, s in enumerate(self.servers, 1)
        )
        return f"""global
    stats socket {self.stats_socket} mode 600 level admin
    maxconn 2000

defaults
    mode tcp
    timeout connect 1s
    # A connect refused by a node not yet marked down goes to another node.
    retries 2
    option redispatch
    timeout client 1h
    timeout server 1h

listen mariadb
    bind {HOST}:{self.port}
    balance roundrobin
    option mysql-check user {CHECK_USER} post-41
{servers}
"""

    def start(self) -> HAProxy:
        self._base = Path(tempfile.mkdtemp(prefix=f"dbpool-haproxy-{os.getpid()}-", dir="/tmp"))
        try:
            for attempt in range(3):
                self.port = free_port()
                config = self._base / "haproxy.cfg"
                config.write_text(self._config())
                cmd = [self.binary, "-db", "-f", str(config)]
                # As for mariadbd: if this (main) thread dies, the kernel stops haproxy.
                setpriv = shutil.which("setpriv")
                if setpriv and threading.current_thread() is threading.main_thread():
                    cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
                with open(self._base / "haproxy.log", "wb") as log:
                    self._proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        start_new_session=True,
                    )
                try:
                    wait_for(self._listening, 10, "haproxy to listen")
                    break
                except MariaDBError:
                    if attempt == 2:
                        raise
                    self._terminate()
            self.wait_up(len(self.servers))
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            log = "" if self._base is None else (self._base / "haproxy.log").read_text()
            raise MariaDBError(f"haproxy exited while starting:\n{log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            return sock.connect_ex((HOST, self.port)) == 0 and os.path.exists(self.stats_socket)

    def _terminate(self) -> None:
        if self._proc is not None:
            _signal_and_wait(self._proc, signal.SIGTERM, 10)
            self._proc = None

    def stop(self) -> None:
        self._terminate()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self, line: str) -> str:
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.stats_socket)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Each server's check status, "UP" or "DOWN" (or a transition such as "UP 1/2")."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname", "").startswith("s"):
                states[f"{self._address(row['svname'])}"] = row["status"]
        return states

    def _address(self, name: str) -> str:
        server = self.servers[int(name[1:]) - 1]
        return f"{server.host}:{server.port}"

    def up(self) -> list[str]:
        return [address for address, status in self.states().items() if status == "UP"]

    def wait_up(self, count: int, timeout: float = 30.0) -> None:
        """Wait until exactly ``count`` servers are UP."""
        wait_for(lambda: len(self.up()) == count, timeout, f"{count} servers UP in haproxy")

    def params(self) -> dict[str, Any]:
        """Connect parameters through the proxy (one host for the pool)."""
        params = self.servers[0].params()
        params["host"], params["port"] = self.host, self.port
        return params


# -- fixtures ---------------------------------------------------------------------


def _require_cluster_tools() -> None:
    if os.environ.get("DBPOOL_SKIP_CLUSTER") == "1" or os.environ.get("DBPOOL_SKIP_MYSQL") == "1":
        pytest.skip("DBPOOL_SKIP_CLUSTER=1 or DBPOOL_SKIP_MYSQL=1")


@pytest.fixture(scope="session")
def replication_pair() -> Iterator[ReplicationPair]:
    """The session's primary and replica, started on first use."""
    _require_cluster_tools()
    with ReplicationPair() as pair:
        yield pair


@pytest.fixture(scope="session")
def galera_cluster() -> Iterator[GaleraCluster]:
    """The session's three-node Galera cluster, started on first use."""
    _require_cluster_tools()
    with GaleraCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def haproxy_galera(galera_cluster: GaleraCluster) -> Iterator[HAProxy]:
    """HAProxy in front of the session's Galera nodes."""
    with HAProxy(list(galera_cluster.nodes)) as proxy:
        yield proxy


@pytest.fixture
def replication(replication_pair: ReplicationPair) -> Iterator[ReplicationPair]:
    """The replication pair, put back as it was after the test."""
    yield replication_pair
    replication_pair.reset()


@pytest.fixture
def galera(galera_cluster: GaleraCluster) -> Iterator[GaleraCluster]:
    """The Galera cluster, every node up and synced again after the test."""
    yield galera_cluster
    galera_cluster.restore()


@pytest.fixture
def galera_proxy(haproxy_galera: HAProxy, galera: GaleraCluster) -> Iterator[HAProxy]:
    """HAProxy over the Galera cluster, every server UP again after the test."""
    yield haproxy_galera
    galera.restore()
    haproxy_galera.wait_up(len(galera.nodes))


__all__ = [
    "GaleraCluster",
    "GaleraNode",
    "HAProxy",
    "ReplicationNode",
    "ReplicationPair",
    "free_ports",
    "query",
]
