"""Server status, read by a separate process so that the benchmark's own process stays quiet.

Sampling the server from the measured process would take the GIL from its
worker threads (a status query every few milliseconds) and add its own CPU
time to theirs. The monitor is a child process with its own connection; the
benchmark asks it, over a pipe, for a status snapshot at the edges of a
measured window and sleeps in between. It is pinned with the server.

The peak of connections comes from the server itself when the account may run
``FLUSH STATUS`` (``Max_used_connections`` is then reset to the current count
at each mark); otherwise the monitor polls ``Threads_connected`` every 10 ms
between a mark and the next snapshot, in its own process.

Protocol: one JSON object per line each way. The parent writes the connect
parameters first (never on the command line, where ``ps`` would show the
password), then commands: ``status``, ``mark``, ``settle``, ``version``, ``quit``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL_INTERVAL = 0.01
# Server counters reported per request (beyond Questions and Connections).
COUNTERS = (
    "Com_admin_commands",
    "Com_select",
    "Com_update",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_set_option",
    "Com_do",
    "Com_show_status",
)
WANTED = frozenset(
    (
        *COUNTERS,
        "Questions",
        "Connections",
        "Threads_connected",
        "Aborted_clients",
        "Aborted_connects",
        "Max_used_connections",
    )
)


class Monitor:
    """The parent's side: a handle on the monitor process."""

    def __init__(self, params: dict[str, Any], cpus: list[int] | None = None) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.monitor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=root,
            env=env,
            text=True,
            bufsize=1,
        )
        if cpus and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self._proc.pid, set(cpus))
        reply = self._call(params)
        self.flush_status: bool = reply["flush_status"]

    def _call(self, message: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the status monitor ended (exit code {self._proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"status monitor: {reply['error']}")
        return reply

    def status(self) -> dict[str, Any]:
        """Counters now, ``queries``: the monitor's own queries so far, ``peak`` since the mark."""
        return self._call("status")  # type: ignore[no-any-return]

    def mark(self) -> int:
        """Start counting the peak of connections from now; the count now."""
        return int(self._call("mark")["threads"])

    def settle(self, baseline: int | None, timeout: float = 3.0) -> int:
        """Wait until the server is back to ``baseline`` connections (None: now); the count."""
        return int(self._call({"settle": baseline, "timeout": timeout})["threads"])

    def version(self) -> str:
        return str(self._call("version")["version"])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            self._call("quit")
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# -- the child ---------------------------------------------------------------------


class _Child:
    def __init__(self, params: dict[str, Any]) -> None:
        import pymysql

        self.conn = pymysql.connect(**{**params, "autocommit": True})
        self.cur = self.conn.cursor()
        self.queries = 0
        names = ", ".join(f"'{name}'" for name in sorted(WANTED))
        # The names spelled out: the whole SHOW GLOBAL STATUS is 500+ rows to parse.
        self.status_sql = f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"
        self.polling = False
        self.peak = 0
        try:
            self.run("FLUSH STATUS")
            self.flush_status = True
        except pymysql.err.MySQLError:
            self.flush_status = False

    def run(self, sql: str) -> list[Any]:
        self.queries += 1
        self.cur.execute(sql)
        return list(self.cur.fetchall())

    def threads(self) -> int:
        return int(self.run("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1])

    def status(self) -> dict[str, Any]:
        values = {name: int(value) for name, value in self.run(self.status_sql) if name in WANTED}
        if self.flush_status:
            peak = values["Max_used_connections"]
        else:
            peak = max(self.peak, values["Threads_connected"])
        return {"status": values, "queries": self.queries, "peak": peak}

    def mark(self) -> int:
        if self.flush_status:
            self.run("FLUSH STATUS")  # Max_used_connections := Threads_connected
            return self.threads()
        self.peak = self.threads()
        self.polling = True
        return self.peak

    def settle(self, baseline: int | None, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            now = self.threads()
            if baseline is None or now <= baseline or time.monotonic() > deadline:
                return now
            time.sleep(POLL_INTERVAL)

    def handle(self, command: Any) -> dict[str, Any]:
        if command == "status":
            return self.status()
        if command == "mark":
            return {"threads": self.mark()}
        if command == "version":
            return {"version": self.run("SELECT VERSION()")[0][0]}
        if isinstance(command, dict) and "settle" in command:
            return {"threads": self.settle(command["settle"], command["timeout"])}
        return {"error": f"unknown command {command!r}"}


def _main() -> None:
    child = _Child(json.loads(sys.stdin.readline()))
    print(json.dumps({"flush_status": child.flush_status}), flush=True)
    while True:
        if child.polling:
            child.peak = max(child.peak, child.threads())
            ready, _, _ = select.select([sys.stdin], [], [], POLL_INTERVAL)
            if not ready:
                continue
        line = sys.stdin.readline()
        if not line:
            break
        command = json.loads(line)
        if command == "quit":
            print(json.dumps({}), flush=True)
            break
        try:
            reply = child.handle(command)
        except Exception as exc:  # reported to the parent, which stops the run
            reply = {"error": repr(exc)}
        print(json.dumps(reply), flush=True)
    child.conn.close()


if __name__ == "__main__":
    _main()
