"""Fork safety with real forks: a child never touches the parent's connections.

The server tells: CONNECTION_ID() in parent and child, and the parent's sessions
still listed (and usable) after the child used the pool, closed it and exited.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import traceback
from typing import Any

import pytest

from tests.faultkit import session_id, sessions

pytestmark = pytest.mark.faults


def test_os_fork_child_gets_its_own_connections(
    mysql_pool: Any, admin: Any, pool_mode: str, mysql_driver: str, mysql_params: dict[str, Any]
) -> None:
    pool = mysql_pool(size=2, max_overflow=1)
    lent = pool.acquire() if pool_mode == "shared" else None  # lent across the fork
    lent_id = session_id(lent) if lent is not None else None
    with pool as conn:
        idle_id = session_id(conn)  # stays idle in the pool (or with this thread)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 0
        try:
            os.close(read_end)
            ids = []
            for _ in range(3):
                with pool as conn:
                    ids.append(session_id(conn))
            if lent is not None:
                pool.release(lent)  # lent by the parent: must be left alone
            stats = pool.get_stats()
            pool.dispose()
            message = f"{ids[0]} {len(set(ids))} {stats['created']} {stats['acquired']}"
        except BaseException:
            message = "error " + traceback.format_exc().replace("\n", " | ")
            code = 1
        try:
            os.write(write_end, message.encode())
            os.close(write_end)
            del pool
            gc.collect()  # a pool dropped in the child must not close the parent's sockets
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report
    child_id, child_distinct, child_created, child_acquired = map(int, report.split())

    alive = set(sessions(admin, mysql_params["user"]))
    with pool as conn:
        idle_after = session_id(conn)
    lent_after = session_id(lent) if lent is not None else None
    if lent is not None:
        pool.release(lent)
    stats = pool.get_stats()
    print(
        f"\nfork/{pool_mode}/{mysql_driver}: parent_ids={idle_id},{lent_id} "
        f"child_id={child_id} child_created={child_created} "
        f"parent_ids_after={idle_after},{lent_after} "
        f"validation_failures={stats['validation_failures']}"
    )
    assert child_id not in (idle_id, lent_id)
    assert child_distinct == 1 and child_created == 1 and child_acquired == 3
    assert idle_id in alive and idle_after == idle_id
    assert lent_after == lent_id
    if lent_id is not None:
        assert lent_id in alive
    assert stats["validation_failures"] == 0


_inherited_pool: Any = None


def _child_work(_: int) -> tuple[int, int]:
    with _inherited_pool as conn:
        return os.getpid(), session_id(conn)


def test_multiprocessing_fork_workers(
    mysql_pool: Any, admin: Any, pool_mode: str, mysql_driver: str, mysql_params: dict[str, Any]
) -> None:
    global _inherited_pool
    pool = _inherited_pool = mysql_pool(size=2)
    with pool as conn:
        parent_id = session_id(conn)
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(2) as workers:
            results = workers.map(_child_work, range(8))
    finally:
        _inherited_pool = None
    alive = set(sessions(admin, mysql_params["user"]))
    with pool as conn:
        parent_after = session_id(conn)
    child_ids = {conn_id for _, conn_id in results}
    print(
        f"\nmultiprocessing-fork/{pool_mode}/{mysql_driver}: parent_id={parent_id} "
        f"worker_pids={len({pid for pid, _ in results})} worker_ids={sorted(child_ids)} "
        f"parent_id_after={parent_after}"
    )
    assert parent_id not in child_ids
    assert parent_id in alive
    assert parent_after == parent_id
