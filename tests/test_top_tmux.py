"""``dbpool top`` in a real terminal (tmux) against the FastAPI example under uvicorn."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest

from tests.fix_appserver import EXAMPLES, AppServers

DBPOOL = str(Path(sys.executable).with_name("dbpool"))
SCREEN_TIMEOUT = 60.0


class Terminal:
    """A detached tmux session, 80x24 (the usual size), on a tmux server of its own."""

    def __init__(self, command: str) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (tools/test.sh installs it)")
        self.socket = f"dbpool-test-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", command)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first screen on which ``pattern`` appears, polled until SCREEN_TIMEOUT."""
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:
            screen = self.screen()
            found = re.search(pattern, screen, re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} never appeared; the screen:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30, check=False
        )


@pytest.fixture
def app(
    mysql_params: dict[str, Any],
    admin: pymysql.connections.Connection,
    app_servers: AppServers,
    dbpool_app_env: Callable[..., dict[str, str]],
) -> Iterator[str]:
    table = f"users_{uuid.uuid4().hex[:8]}"
    p = mysql_params
    env = dbpool_app_env(
        {"APP_USERS_TABLE": table}, pool={"size": 2, "max_overflow": 1, "timeout": 20}
    )
    try:
        with app_servers.uvicorn("fastapi_app:app", app_dir=EXAMPLES, env=env) as app:
            yield app.url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {p['database']}.{table}")


def watch_and_quit(app: str, key: str) -> None:
    """Run dbpool top on the app's endpoint, check what it shows, quit it with ``key``."""
    terminal = Terminal(f"{DBPOOL} top {app}/metrics; echo top-exited-$?; sleep 600")
    try:
        terminal.wait_for(r"^dbpool top +" + re.escape(f"{app}/metrics"))
        # A row of the app's pool with requests flowing: rate above 0, wait percentiles known.
        row = terminal.wait_for(
            r"^ primary +(?P<bar>[█▓░]+) +(?P<used>\d+)/(?P<idle>\d+)/3 +(?P<waiting>\d+) +"
            r"(?P<rate>\d+\.\d) +(?P<p50>[\d.]+ (?:µs|ms|s)) +(?P<p99>[\d.]+ (?:µs|ms|s)) +"
            r"(?P<timeouts>\d+\.\d) +(?P<failures>\d+\.\d)"
        )
        assert float(row["rate"]) > 0
        assert len(row["bar"]) >= 6
        assert int(row["used"]) + int(row["idle"]) <= 3
        assert float(row["timeouts"]) == 0 and float(row["failures"]) == 0
        screen = terminal.screen()
        assert "q or Ctrl-C: quit" in screen
        for header in ("pool", "connections", "used/", "wait", "p50", "p99", "req/s"):
            assert header in screen, header
        terminal.keys(key)
        terminal.wait_for(r"^top-exited-0$")
        screen = terminal.screen()
        assert "dbpool top" not in screen  # the alternate screen is gone
        assert "Traceback" not in screen
    finally:
        terminal.close()


def test_top_shows_the_running_pool_and_quits_on_q_or_ctrl_c(app: str) -> None:
    stop = threading.Event()
    answered = []

    def load() -> None:  # six clients at once against a pool of at most three connections
        with httpx.Client(base_url=app, timeout=30) as client:
            while not stop.is_set():
                answered.append(client.get("/users-count").status_code)

    clients = [threading.Thread(target=load) for _ in range(6)]
    for client in clients:
        client.start()
    try:
        watch_and_quit(app, "q")
        watch_and_quit(app, "C-c")  # Ctrl-C quits as well, quietly
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    assert answered and set(answered) == {200}
