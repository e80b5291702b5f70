"""Sync generator dependencies under uvicorn: each block gives back its own connection."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pymysql
import pytest

from tests.fix_appserver import ROOT, AppServers

CONCURRENCY = 40  # anyio's thread pool: 40 threads, against pools of 3 connections
REQUESTS = 240
SETTLE_TIMEOUT = 10.0  # for the last dependency exits, run after their responses


async def load(base: str) -> tuple[list[tuple[str, int, httpx.Response]], dict[str, Any]]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY + 1)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as client:

        async def call(kind: str, n: int) -> tuple[str, int, httpx.Response]:
            async with gate:
                if kind == "conn":
                    return kind, n, await client.get(f"/conn/{n}")
                return kind, n, await client.post(f"/tx/{n}")

        answers = await asyncio.gather(
            *(call("conn" if n % 2 else "tx", n) for n in range(REQUESTS))
        )
        final = await settled_stats(client)
    return list(answers), final


async def settled_stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """The stats once every block has given its connection back, or the last seen after a bound.

    FastAPI runs a yield dependency's exit code after the response has been sent (the
    default "request" scope), so the last answers can reach the client while their
    blocks' exits still wait for a thread-pool thread: stats read at once may show a
    connection still in use that is given back a moment later. A block that never gives
    its connection back still shows in_use > 0 when the bound runs out.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        final: dict[str, Any] = (await client.get("/stats")).json()
        settled = all(final[name]["in_use"] == 0 for name in ("pool", "facade"))
        if settled or time.monotonic() > deadline:
            return final
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("driver", ["pymysql", "mysql-connector"])
def test_sync_generator_dependencies_under_uvicorn(
    driver: str,
    mysql_params: dict[str, Any],
    admin: pymysql.connections.Connection,
    app_servers: AppServers,
    dbpool_app_env: Callable[..., dict[str, str]],
) -> None:
    table = f"{mysql_params['database']}.deps_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, "
            "name VARCHAR(50) NOT NULL) ENGINE=InnoDB"
        )
    # Shared mode: persistent mode binds a connection to each of anyio's 40 threads.
    env = dbpool_app_env(
        {"APP_TABLE": table},
        driver=driver,
        pool={"mode": "shared", "size": 2, "max_overflow": 1, "timeout": 10},
    )
    try:
        with app_servers.uvicorn("fastapi_threads_app:app", app_dir=ROOT / "tests", env=env) as app:
            answers, final = asyncio.run(load(app.url))
        with admin.cursor() as cur:
            cur.execute(f"SELECT name FROM {table}")
            rows = sorted(row[0] for row in cur.fetchall())
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")

    log = app.output()
    failed = [
        (kind, n, r.status_code, r.text[:200]) for kind, n, r in answers if r.status_code != 200
    ]
    assert not failed, f"{len(failed)} failed, first: {failed[:3]}\n{log[-3000:]}"
    assert all(r.json() == {"n": n} for _, n, r in answers)
    tx_numbers = [n for kind, n, _ in answers if kind == "tx"]
    assert rows == sorted([f"{n} before" for n in tx_numbers] + [f"{n} after" for n in tx_numbers])
    for name in ("pool", "facade"):
        stats = final[name]
        assert stats["in_use"] == 0, (name, stats)
        assert stats["timeouts"] == 0, (name, stats)
        assert stats["acquired"] == stats["released"], (name, stats)
        assert stats["total_connections"] <= stats["max_size"] == 3
    assert final["pool"]["acquired"] == REQUESTS // 2
    assert "Traceback" not in log
