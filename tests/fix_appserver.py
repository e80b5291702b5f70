"""Plugin: web applications under uvicorn or gunicorn, each on a free loopback port.

The ``app_servers`` fixture starts them::

    with app_servers.uvicorn("fastapi_app:app", app_dir=EXAMPLES, env=variables) as app:
        httpx.get(f"{app.url}/stats")

A server is started in a subprocess listening on 127.0.0.1 only, its output
going to a log file under the test's temporary directory; ``uvicorn()`` and
``gunicorn()`` return once the ``ready`` path answers 200, or fail the test
with the log when the process exits or does not answer in time. Leaving the
``with`` block stops it (SIGTERM to its pid, SIGKILL after a bound); whatever a
test left running is stopped the same way when the test ends. Only the
processes started here are ever signalled.

``app_env(variables, path)`` is the environment such a process (or another
subprocess of the same app, such as ``manage.py migrate``) runs with: this
one's, the given variables, and the repository root with ``path`` on PYTHONPATH.
The ``dbpool_app_env`` fixture adds what an app that reads its pool from
``DBPOOL_CONFIG`` needs to reach the test server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.mariadb import HOST, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0  # after SIGTERM; then SIGKILL
KILL_TIMEOUT = 5.0
_POLL = 0.1


def app_env(variables: Mapping[str, str], path: Sequence[Path] = ()) -> dict[str, str]:
    """This process's environment with ``variables``, and ``path`` then the repository on
    PYTHONPATH (so the app imports this checkout's dbpool)."""
    entries = [*map(str, path), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, **variables, "PYTHONPATH": os.pathsep.join(filter(None, entries))}


class AppServer:
    """One app server process on ``127.0.0.1:port``, started and stopped by its pid."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        ready: str,
        timeout: float,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = log
        self._env = dict(env)
        self._cwd = cwd
        self._ready = ready
        self._timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AppServer:
        """Start the process; return once ``ready`` answers 200 (the test fails otherwise)."""
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                self.command, env=self._env, cwd=self._cwd, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        name = self.name
        deadline = time.monotonic() + self._timeout
        while True:
            if self._proc.poll() is not None:
                pytest.fail(f"{name} exited with {self._proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}{self._ready}", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{name} did not answer on {self._ready} within {self._timeout}s:\n"
                    f"{self.output()}"
                )
            time.sleep(_POLL)

    def output(self) -> str:
        """What the server has written so far (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; waits for the process to end."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(KILL_TIMEOUT)

    def __enter__(self) -> AppServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class AppServers:
    """Starts app servers for one test; stops those still running at its end."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: list[AppServer] = []

    def uvicorn(
        self,
        app: str,
        *,
        app_dir: Path,
        env: Mapping[str, str],
        ready: str = "/stats",
        log: str = "uvicorn.log",
        timeout: float = READY_TIMEOUT,
    ) -> AppServer:
        """``app`` ("module:attribute") from ``app_dir`` under uvicorn, running."""
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(app_dir),
            app,
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        return self._start("uvicorn", command, port, env, self._logs, log, ready, timeout)

    def gunicorn(
        self,
        app: str,
        *,
        chdir: Path,
        env: Mapping[str, str],
        threads: int,
        workers: int = 1,
        ready: str = "/stats/",
        log: str = "gunicorn.log",
        timeout: float = READY_TIMEOUT,
    ) -> AppServer:
        """WSGI ``app`` ("module:attribute") from ``chdir`` under gunicorn's threaded
        workers, running."""
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(chdir),
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            app,
        ]
        return self._start("gunicorn", command, port, env, chdir, log, ready, timeout)

    def _start(
        self,
        name: str,
        command: list[str],
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log: str,
        ready: str,
        timeout: float,
    ) -> AppServer:
        server = AppServer(
            name,
            command,
            port=port,
            env=env,
            cwd=cwd,
            log=self._logs / log,
            ready=ready,
            timeout=timeout,
        )
        self._started.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self._started:
            server.stop()


@pytest.fixture
def app_servers(tmp_path: Path) -> Iterator[AppServers]:
    """Starts uvicorn or gunicorn apps on free loopback ports; stops them after the test."""
    servers = AppServers(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def dbpool_app_env(
    mysql_config: Callable[..., Path], mysql_params: dict[str, Any]
) -> Callable[..., dict[str, str]]:
    """``env(variables, **options)``: app_env(variables) with DBPOOL_CONFIG, a config file
    whose ``primary`` entry is the test server (with ``options``), and the password in
    DBPOOL_PRIMARY_PASSWORD rather than in the file."""

    def env(variables: Mapping[str, str], **options: Any) -> dict[str, str]:
        config = mysql_config(password=False, **options)
        return app_env(
            {
                "DBPOOL_CONFIG": str(config),
                "DBPOOL_PRIMARY_PASSWORD": mysql_params["password"],
                **variables,
            }
        )

    return env
