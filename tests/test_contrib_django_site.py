"""examples/django_site end to end: gunicorn --threads 16, real HTTP, the server's own count."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("django")
pytest.importorskip("gunicorn")

SITE = Path(__file__).resolve().parent.parent / "examples" / "django_site"
ROOT = SITE.parent.parent
READY_TIMEOUT = 60.0
POOL_SIZE, POOL_OVERFLOW = 4, 2
THREADS = 16  # gunicorn --threads: more threads than connections
OWNERS = 32
NOTES_PER_OWNER = 8
CONCURRENCY = 32


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_env(mysql_params: dict[str, Any]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SITE), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "site_config.settings",
        "SITE_DB_HOST": mysql_params["host"],
        "SITE_DB_PORT": str(mysql_params["port"]),
        "SITE_DB_USER": mysql_params["user"],
        "SITE_DB_PASSWORD": mysql_params["password"],
        "SITE_DB_NAME": mysql_params["database"],
        "SITE_POOL_SIZE": str(POOL_SIZE),
        "SITE_POOL_MAX_OVERFLOW": str(POOL_OVERFLOW),
    }


@contextlib.contextmanager
def running_site(env: dict[str, str], log: Path) -> Iterator[str]:
    """gunicorn serving the site; yields its base URL once it answers; always stopped by pid."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--chdir",
        str(SITE),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        str(THREADS),
        "--log-level",
        "warning",
        "site_config.wsgi:application",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=SITE, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/stats/", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the site did not answer within {READY_TIMEOUT}s:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _threads_connected(admin: Any) -> int:
    with admin.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return int(cur.fetchone()[1])


async def _owner_session(
    client: httpx.AsyncClient, limit: asyncio.Semaphore, owner: int, problems: list[str]
) -> None:
    """One owner's notes, added one after another, then read back."""
    sent = []
    for n in range(NOTES_PER_OWNER):
        text = f"note {n} of {owner}: O'Brien 100% naïve"
        async with limit:
            reply = await client.post("/notes/", json={"owner": owner, "text": text})
        body = reply.json() if reply.status_code == 200 else reply.text
        sent.append(text)
        if (
            reply.status_code != 200
            or body["text"] != text
            or body["owner"] != owner
            or body["count"] != n + 1
        ):
            problems.append(f"POST owner {owner} note {n}: {reply.status_code} {body}")
    async with limit:
        reply = await client.get(f"/notes/{owner}/")
    if reply.status_code != 200 or reply.json() != {"owner": owner, "texts": sent}:
        problems.append(f"GET owner {owner}: {reply.status_code} {reply.text[:200]}")


async def _load(base: str) -> list[str]:
    problems: list[str] = []
    limit = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as client:
        await asyncio.gather(
            *(_owner_session(client, limit, owner, problems) for owner in range(OWNERS))
        )
    return problems


def test_gunicorn_threads_stay_within_the_pool(
    mysql_params: dict[str, Any], admin: Any, tmp_path: Path
) -> None:
    env = site_env(mysql_params)
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{mysql_params['database']}`.notes_note")
        cur.execute(f"DROP TABLE IF EXISTS `{mysql_params['database']}`.django_migrations")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=SITE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    baseline = _threads_connected(admin)
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _threads_connected(admin))

    with running_site(env, tmp_path / "gunicorn.log") as base:
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            problems = asyncio.run(_load(base))
        finally:
            done.set()
            watcher.join()
        stats = httpx.get(f"{base}/stats/", timeout=10.0).json()
    requests = OWNERS * (NOTES_PER_OWNER + 1)
    print(
        f"{requests} requests, {CONCURRENCY} at a time, gunicorn --threads {THREADS}: "
        f"server connections peaked at {peak[0] - baseline} (pool bound "
        f"{POOL_SIZE + POOL_OVERFLOW}); pool stats {stats}"
    )
    assert not problems, problems[:5]
    assert 0 < peak[0] - baseline <= POOL_SIZE + POOL_OVERFLOW
    assert stats["max_size"] == POOL_SIZE + POOL_OVERFLOW
    assert stats["total_connections"] <= stats["max_size"]
    assert stats["timeouts"] == 0
    assert stats["in_use"] == 0  # every request gave its connection back
    assert stats["acquired"] >= requests
    with admin.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{mysql_params['database']}`.notes_note")
        assert cur.fetchone()[0] == OWNERS * NOTES_PER_OWNER
