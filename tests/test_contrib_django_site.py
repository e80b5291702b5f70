"""examples/django_site end to end: gunicorn --threads 16, real HTTP, the server's own count."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fix_appserver import EXAMPLES, AppServers, app_env

pytest.importorskip("django")
pytest.importorskip("gunicorn")

SITE = EXAMPLES / "django_site"
READY_TIMEOUT = 60.0
POOL_SIZE, POOL_OVERFLOW = 4, 2
THREADS = 16  # gunicorn --threads: more threads than connections
OWNERS = 32
NOTES_PER_OWNER = 8
CONCURRENCY = 32


def site_env(mysql_params: dict[str, Any], closed_ids: Path | None = None) -> dict[str, str]:
    variables = {
        "DJANGO_SETTINGS_MODULE": "site_config.settings",
        "SITE_DB_HOST": mysql_params["host"],
        "SITE_DB_PORT": str(mysql_params["port"]),
        "SITE_DB_USER": mysql_params["user"],
        "SITE_DB_PASSWORD": mysql_params["password"],
        "SITE_DB_NAME": mysql_params["database"],
        "SITE_POOL_SIZE": str(POOL_SIZE),
        "SITE_POOL_MAX_OVERFLOW": str(POOL_OVERFLOW),
    }
    if closed_ids is not None:
        variables["SITE_CLOSED_IDS"] = str(closed_ids)
    return app_env(variables, path=[SITE])


def _session_ids(admin: Any) -> set[int]:
    """The ids of the server's sessions now."""
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {int(row[0]) for row in cur.fetchall()}


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


def _closed_ids(path: Path) -> set[int]:
    """Thread ids of the sessions the site's pool has closed (tests/django_site_closes.py)."""
    try:
        return {int(line) for line in path.read_text(encoding="ascii").split()}
    except FileNotFoundError:
        return set()


def test_gunicorn_threads_stay_within_the_pool(
    mysql_params: dict[str, Any], admin: Any, app_servers: AppServers, tmp_path: Path
) -> None:
    closed_ids = tmp_path / "closed-ids"
    env = site_env(mysql_params, closed_ids)
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

    # Sessions opened since (the app's): those of migrate or earlier tests that end
    # meanwhile do not count, nor those the pool has closed that the server still lists.
    baseline = _session_ids(admin)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            # Listed, then not closed by the pool after the listing: all of them were
            # the pool's at once.
            listed = _session_ids(admin) - baseline
            peak[0] = max(peak[0], len(listed - _closed_ids(closed_ids)))

    with app_servers.gunicorn(
        "tests.django_site_closes:application",
        chdir=SITE,
        env=env,
        threads=THREADS,
        ready="/stats/",
        timeout=READY_TIMEOUT,
    ) as site:
        base = site.url
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
        f"server connections peaked at {peak[0]} (pool bound "
        f"{POOL_SIZE + POOL_OVERFLOW}); {len(_closed_ids(closed_ids))} closed by the pool; "
        f"pool stats {stats}"
    )
    assert not problems, problems[:5]
    assert 0 < peak[0] <= POOL_SIZE + POOL_OVERFLOW
    assert stats["max_size"] == POOL_SIZE + POOL_OVERFLOW
    assert stats["total_connections"] <= stats["max_size"]
    assert stats["timeouts"] == 0
    assert stats["in_use"] == 0  # every request gave its connection back
    assert stats["acquired"] >= requests
    with admin.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{mysql_params['database']}`.notes_note")
        assert cur.fetchone()[0] == OWNERS * NOTES_PER_OWNER
