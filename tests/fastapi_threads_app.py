"""A FastAPI app whose sync generator dependencies hold a pooled connection or a transaction.

FastAPI runs such a dependency's code before and after its ``yield`` as two thread-pool
calls, on any two threads: what the dependency opens must be closed by the right block.
Started under uvicorn by tests/test_fastapi_threads.py; the table comes from APP_TABLE.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from dbpool import ObjData, ObjDataThreadSafe, PooledConnection, make_pool

TABLE = os.environ["APP_TABLE"]
INSERT = f"INSERT INTO {TABLE} (name) VALUES (%s)"

pool = make_pool()
db = ObjDataThreadSafe()


def get_conn() -> Iterator[PooledConnection]:
    with pool as conn:
        yield conn


def get_tx(n: int) -> Iterator[ObjDataThreadSafe]:
    with db.transaction():
        session = db.sql_get_value("SELECT CONNECTION_ID()")
        db.sql_execute(INSERT, (f"{n} before",))
        yield db
        # Resumed by another thread-pool call: still inside the block, on its connection.
        if db.sql_get_value("SELECT CONNECTION_ID()") != session:
            raise RuntimeError("the code after yield ran outside the transaction block")
        db.sql_execute(INSERT, (f"{n} after",))


app = FastAPI()


@app.get("/conn/{n}")
def with_conn(n: int, conn: Annotated[PooledConnection, Depends(get_conn)]) -> dict[str, Any]:
    data = ObjData(DB=conn)
    return {"n": int(data.sql_get_value("SELECT %s", (n,)))}


@app.post("/tx/{n}")
def with_tx(n: int, tx: Annotated[ObjDataThreadSafe, Depends(get_tx)]) -> dict[str, Any]:
    # No statement here: it would run outside the dependency's block (another thread-pool
    # call), on a second connection while the block holds one: with more requests than
    # connections, every block would wait for a second one that never comes free.
    return {"n": n}


@app.get("/stats")
def stats() -> dict[str, Any]:
    return {"pool": pool.get_stats(), "facade": db.pool.get_stats()}
