"""The server's own count of connections, sampled from a separate process.

``Threads_connected`` is read every ``INTERVAL`` seconds by a child process
(``python -m dbpool.advisor.sampler``) over its own connection, so the polling
never competes for the GIL with the threads being measured. The parent talks
to it over pipes, one line per command: ``reset`` starts a new peak from the
current count, ``peak`` returns the highest count since, ``now`` the current
one. The child exits when its stdin closes, so it cannot outlive the bench.
The connection settings travel as the config file's path and entry name, never
on the command line, where other users could read a password.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from typing import IO, Any

INTERVAL = 0.01
_REPLY_TIMEOUT = 15.0


class SamplerError(RuntimeError):
    """The sampling process could not start or stopped answering."""


class ServerSampler:
    """The parent's end: a child process that watches the server's connection count."""

    def __init__(self, config: str | None, config_name: str) -> None:
        self.failed: str | None = None  # why sampling stopped, once it has
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dbpool.advisor.sampler"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._replies: queue.Queue[str | None] = queue.Queue()
        # A blocked read releases the GIL: this thread costs the measured ones nothing.
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name="dbpool-bench-sampler", daemon=True
        )
        self._reader.start()
        self._send(json.dumps({"config": config, "config_name": config_name}))
        ready = self._reply().split()
        if not ready or ready[0] != "ready":
            self.close()
            raise SamplerError(" ".join(ready[1:]) or "the sampling process did not start")
        self.baseline = int(ready[1])
        self.max_connections = int(ready[2])

    def _read(self, stream: IO[str] | None) -> None:
        if stream is not None:
            for line in stream:
                self._replies.put(line.strip())
        self._replies.put(None)

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is None:
            raise SamplerError("the sampling process has no input pipe")
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except OSError as exc:
            raise SamplerError(f"the sampling process stopped: {exc}") from exc

    def _reply(self) -> str:
        try:
            line = self._replies.get(timeout=_REPLY_TIMEOUT)
        except queue.Empty:
            raise SamplerError(
                f"the sampling process did not answer in {_REPLY_TIMEOUT:.0f}s"
            ) from None
        if line is None:
            raise SamplerError("the sampling process ended")
        if line.startswith("error "):
            raise SamplerError(line[len("error ") :])
        return line

    def _ask(self, command: str) -> list[int]:
        self._send(command)
        return [int(part) for part in self._reply().split()]

    def reset(self) -> int:
        """Start a new peak; the current count."""
        return self._ask("reset")[0]

    def peak(self) -> int:
        """The highest count since the last reset."""
        return self._ask("peak")[0]

    def now(self) -> int:
        return self._ask("now")[0]

    def settle(self, baseline: int, timeout: float = 3.0) -> int:
        """Wait until the server is back to ``baseline`` connections; the last count seen."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.now()
            if count <= baseline or time.monotonic() > deadline:
                return count
            time.sleep(0.02)

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):  # the child may be gone already
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _child() -> int:
    """The sampling process: read commands from stdin, answer on stdout."""
    from dbpool import make_pool

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    settings: dict[str, Any] = json.loads(sys.stdin.readline() or "{}")
    try:
        pool = make_pool(
            "shared",
            config=settings.get("config"),
            config_name=settings.get("config_name", "primary"),
            size=1,
            max_overflow=0,
        )
        conn = pool.acquire()
        cur = conn.cursor()
        cur.execute("SELECT @@max_connections")
        max_connections = int(cur.fetchall()[0][0])
    except Exception as exc:  # PoolError, or a driver's error: they have no common base
        say(f"error cannot connect to sample the server: {_one_line(exc)}")
        return 1

    def sample() -> int:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return int(cur.fetchall()[0][1])

    commands: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        current = peak = sample()
        say(f"ready {current} {max_connections}")
        while True:
            try:
                command = commands.get(timeout=INTERVAL)
            except queue.Empty:
                command = ""
            current = sample()
            peak = max(peak, current)
            if command is None:
                break
            if command == "reset":
                peak = current
                say(str(current))
            elif command == "peak":
                say(str(peak))
            elif command == "now":
                say(str(current))
    except Exception as exc:
        say(f"error sampling the server failed: {_one_line(exc)}")
        return 1
    finally:
        pool.release(conn)
        pool.dispose()
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


if __name__ == "__main__":
    sys.exit(_child())
