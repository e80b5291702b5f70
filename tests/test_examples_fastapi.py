"""examples/fastapi_app.py end to end: uvicorn in a subprocess, real HTTP, real MariaDB."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pymysql
import pytest

from tests.fix_appserver import EXAMPLES, AppServers

MAX_SIZE = 6  # the app's pool: size 4 + max_overflow 2
CONCURRENCY = 40

NAMES = ["plain", "O'Brien", "'; DROP TABLE users; --", "100%% sure", "naïve 🙂", 'say "hi"']


async def load(base: str) -> dict[str, Any]:
    """Over 200 requests, 40 at a time, with /stats sampled throughout."""
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY + 1)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                samples.append((await client.get("/stats")).json())
                await asyncio.sleep(0.05)

        async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
            async with gate:
                return await client.request(method, url, **kwargs)

        sampler = asyncio.create_task(sample())
        users = [
            {"name": f"{NAMES[i % len(NAMES)]} {i}", "email": f"user{i}@example.org"}
            for i in range(100)
        ]
        created = await asyncio.gather(*(call("POST", "/users", json=u) for u in users))
        assert [r.status_code for r in created] == [201] * 100
        by_id = {r.json()["id"]: r.json() for r in created}
        assert len(by_id) == 100

        ids = list(by_id)
        reads = []
        for i in range(120):
            if i % 3 == 0:
                reads.append(call("GET", f"/users/{ids[i % 100]}"))
            elif i % 3 == 1:
                reads.append(call("GET", "/users-count"))
            else:
                reads.append(call("GET", "/users", params={"limit": 5}))
        answers = await asyncio.gather(*reads)
        for i, response in enumerate(answers):
            assert response.status_code == 200, response.text
            body = response.json()
            if i % 3 == 0:
                assert body == by_id[ids[i % 100]]
            elif i % 3 == 1:
                assert body == {"count": 100}
            else:
                assert body["users"] == [by_id[k] for k in sorted(by_id)[:5]]

        missing = await call("GET", "/users/999999")
        assert missing.status_code == 404
        duplicate = await call("POST", "/users", json=users[0])
        assert duplicate.status_code == 409

        # A batch with one taken email adds nobody; a clean batch adds everyone.
        bad = [{"name": "new a", "email": "a@example.org"}, users[5]]
        assert (await call("POST", "/users/batch", json=bad)).status_code == 409
        assert (await call("GET", "/users-count")).json() == {"count": 100}
        good = [{"name": f"batch {i}", "email": f"batch{i}@example.org"} for i in range(3)]
        batch = await call("POST", "/users/batch", json=good)
        assert batch.status_code == 201
        assert len(batch.json()["ids"]) == 3
        assert (await call("GET", "/users-count")).json() == {"count": 103}

        stop.set()
        await sampler
        final = (await client.get("/stats")).json()
        return {"samples": samples, "final": final}


@pytest.mark.parametrize(
    ("driver", "mode"), [("pymysql", "shared"), ("mysql-connector", "persistent")]
)
def test_fastapi_example_over_http(
    driver: str,
    mode: str,
    mysql_params: dict[str, Any],
    admin: pymysql.connections.Connection,
    app_servers: AppServers,
    dbpool_app_env: Callable[..., dict[str, str]],
) -> None:
    table = f"users_{uuid.uuid4().hex[:8]}"
    p = mysql_params
    env = dbpool_app_env(
        {"APP_USERS_TABLE": table},
        driver=driver,
        pool={"mode": mode, "size": 4, "max_overflow": 2, "timeout": 20},
    )
    try:
        with app_servers.uvicorn("fastapi_app:app", app_dir=EXAMPLES, env=env) as app:
            result = asyncio.run(load(app.url))
        assert "Traceback" not in app.output()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {p['database']}.{table}")

    samples, final = result["samples"], result["final"]
    assert samples, "the stats endpoint was never sampled"
    assert max(s["total_connections"] for s in samples) <= MAX_SIZE
    assert max(s["in_use"] for s in samples) <= MAX_SIZE
    assert final["max_size"] == MAX_SIZE
    assert final["mode"] == mode
    assert final["timeouts"] == 0
    assert final["in_use"] == 0
    assert final["total_connections"] <= MAX_SIZE
    assert final["acquired"] == final["released"] >= 200
    assert p["password"] not in app.output()
