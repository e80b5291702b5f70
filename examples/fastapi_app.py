"""A small FastAPI service on dbpool's async methods, with one sync endpoint for comparison.

Run it (needs the ``examples`` extra: fastapi, uvicorn, prometheus_client)::

    uvicorn --app-dir examples fastapi_app:app --port 8000

The database comes from dbpool's usual config lookup: ``$DBPOOL_CONFIG``, else
``./config.yaml``, else the embedded SQLite database ``./dbpool.sqlite3``; the
password may come from ``$DBPOOL_PRIMARY_PASSWORD``. Pool size and mode are set
in the config entry's ``pool:`` section. ``APP_DB_CONFIG_NAME`` picks another
entry than ``primary`` and ``APP_USERS_TABLE`` another table than ``users``.

``/healthz`` answers 200 when the database makes a round trip within two
seconds, else 503; ``/metrics`` serves the pool's metrics (and the process's)
to Prometheus, and to ``dbpool top http://127.0.0.1:8000/metrics``.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import prometheus_client
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dbpool import ObjDataThreadSafe
from dbpool.metrics import PoolCollector

CONFIG_NAME = os.environ.get("APP_DB_CONFIG_NAME", "primary")
TABLE = os.environ.get("APP_USERS_TABLE", "users")
if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", TABLE):
    raise SystemExit(f"APP_USERS_TABLE must be a plain table name (got {TABLE!r})")

# One instance for the whole app: every request shares its class-level pool.
db = ObjDataThreadSafe(config_name=CONFIG_NAME)

_DUPLICATE_KEY = 1062  # MySQL's ER_DUP_ENTRY
HEALTH_TIMEOUT = 2.0

# Read from the pool's get_stats() at each scrape: nothing is counted per request.
prometheus_client.REGISTRY.register(PoolCollector(db.pool))


def _create_table_sql() -> str:
    if db.pool.settings.driver == "sqlite":
        key = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    else:
        key = "id INT AUTO_INCREMENT PRIMARY KEY"
    return (
        f"CREATE TABLE IF NOT EXISTS {TABLE} ({key}, name VARCHAR(100) NOT NULL, "
        "email VARCHAR(200) NOT NULL UNIQUE)"
    )


def _is_duplicate(exc: Exception) -> bool:
    code = getattr(exc, "errno", None)
    if code is None and exc.args:
        code = exc.args[0]
    return code == _DUPLICATE_KEY or "UNIQUE constraint failed" in str(exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await db.asql_execute(_create_table_sql())
    yield
    ObjDataThreadSafe.close_pool(CONFIG_NAME)


app = FastAPI(title="dbpool example", lifespan=lifespan)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=200)


@app.get("/users")
async def list_users(limit: int = 100) -> dict[str, Any]:
    rows = await db.asql_get_dicts(
        f"SELECT id, name, email FROM {TABLE} ORDER BY id LIMIT %s", (limit,)
    )
    return {"users": rows}


@app.get("/users/{user_id}")
async def get_user(user_id: int) -> dict[str, Any]:
    rows = await db.asql_get_dicts(f"SELECT id, name, email FROM {TABLE} WHERE id = %s", (user_id,))
    if not rows:
        raise HTTPException(status_code=404, detail=f"no user {user_id}")
    return rows[0]


@app.post("/users", status_code=201)
async def create_user(user: NewUser) -> dict[str, Any]:
    try:
        new_id = await db.asql_insert(
            f"INSERT INTO {TABLE} (name, email) VALUES (%s, %s)", (user.name, user.email)
        )
    except Exception as exc:
        if _is_duplicate(exc):
            raise HTTPException(status_code=409, detail="email already registered") from exc
        raise
    return {"id": new_id, "name": user.name, "email": user.email}


@app.post("/users/batch", status_code=201)
async def create_users(users: list[NewUser]) -> dict[str, Any]:
    """All or nothing: one transaction, rolled back if any user cannot be added."""
    ids = []
    try:
        async with db.atransaction():
            for user in users:
                ids.append(
                    await db.asql_insert(
                        f"INSERT INTO {TABLE} (name, email) VALUES (%s, %s)",
                        (user.name, user.email),
                    )
                )
    except Exception as exc:
        if _is_duplicate(exc):
            raise HTTPException(
                status_code=409, detail="an email is already registered; nothing was added"
            ) from exc
        raise
    return {"ids": ids}


@app.get("/users-count")
def count_users() -> dict[str, int]:
    """A sync endpoint: FastAPI runs it on its thread pool, and the blocking call is fine there."""
    return {"count": int(db.sql_get_value(f"SELECT COUNT(*) FROM {TABLE}"))}


@app.get("/stats")
async def pool_stats() -> dict[str, Any]:
    return ObjDataThreadSafe.get_pool_stats(CONFIG_NAME)


@app.get("/healthz")
async def healthz() -> JSONResponse:
    """200 when the database answers a round trip in time, 503 (with the reason) when not."""
    result = await run_in_threadpool(db.pool.check, timeout=HEALTH_TIMEOUT)
    return JSONResponse(result, status_code=200 if result["ok"] else 503)


@app.get("/metrics")
def metrics() -> Response:
    """The Prometheus exposition: the pool's metrics and the process's own."""
    return Response(
        prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )
