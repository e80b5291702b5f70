"""The facade when threads swap, tasks outlive their blocks, processes fork: no server needed."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import signal
import sqlite3
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dbpool import ConfigError, ObjData, ObjDataThreadSafe, PoolClosed, PoolError, make_pool

INSERT = "INSERT INTO items (name) VALUES (%s)"


def make_db(mode: str = "shared", **options: Any) -> ObjDataThreadSafe:
    db = ObjDataThreadSafe(mode=mode, path="./facade.sqlite3", **options)
    db.sql_execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
    return db


def committed_names(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM items ORDER BY id")]
    finally:
        conn.close()


def finish(gen: Iterator[Any]) -> None:
    """Run a generator dependency's code after its yield, as FastAPI does."""
    with contextlib.suppress(StopIteration):
        next(gen)
    assert getattr(gen, "gi_frame", None) is None  # ran to its end


# -- option mismatch: nested secrets --------------------------------------------------


def test_option_mismatch_masks_nested_secrets() -> None:
    ObjDataThreadSafe(path="./x.sqlite3", ssl={"ca": "/ca.pem", "key_password": "first-s3cret"})
    with pytest.raises(ConfigError) as info:
        ObjDataThreadSafe(
            path="./x.sqlite3", ssl={"ca": "/ca.pem", "key_password": "second-s3cret"}
        )
    text = str(info.value)
    assert "first-s3cret" not in text
    assert "second-s3cret" not in text
    assert "ssl=" in text and "'***'" in text and "/ca.pem" in text
    with pytest.raises(ConfigError) as info:
        ObjDataThreadSafe(
            path="./x.sqlite3", ssl={"ca": "/other.pem", "key_password": "first-s3cret"}
        )
    assert "first-s3cret" not in str(info.value)
    assert "/other.pem" in str(info.value)


# -- ObjData(): the transaction of the thread --------------------------------------------


def test_objdata_helpers_join_the_callers_transaction(cwd: Path) -> None:
    make_db(size=2, max_overflow=0, timeout=2)

    def helper(name: str) -> int:
        # The old interface's style: a helper makes its own ObjData().
        ObjData().sql_execute(INSERT, (name,))
        return int(ObjData().sql_get_value("SELECT COUNT(*) FROM items"))

    caller = ObjData()
    with pytest.raises(KeyError), caller.transaction():
        caller.sql_execute(INSERT, ("caller",))
        assert helper("helper") == 2  # sees the caller's uncommitted row: the same transaction
        assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 1
        raise KeyError
    assert committed_names(cwd / "facade.sqlite3") == []  # the helper's row went with it

    with caller.transaction():
        caller.sql_execute(INSERT, ("caller",))
        helper("helper")
        # Another thread is not part of this thread's transaction.
        with ThreadPoolExecutor(1) as other:
            assert (
                other.submit(lambda: ObjData().sql_get_value("SELECT COUNT(*) FROM items")).result(
                    10
                )
                == 0
            )
    assert committed_names(cwd / "facade.sqlite3") == ["caller", "helper"]
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


def test_objdata_and_objdatathreadsafe_share_the_threads_transaction(cwd: Path) -> None:
    db = make_db(size=2)
    with pytest.raises(KeyError), db.transaction():
        db.sql_execute(INSERT, ("outer",))
        ObjData().sql_execute(INSERT, ("helper",))
        raise KeyError
    assert committed_names(cwd / "facade.sqlite3") == []


# -- `with pool as conn` and transaction() whose exit runs on another thread -------------


def test_with_pool_exit_on_another_thread_gives_back_its_own(pool_mode: str) -> None:
    pool = make_pool(mode=pool_mode, path="./pool.sqlite3", size=2, max_overflow=0, timeout=2)

    def dependency() -> Iterator[Any]:
        with pool as conn:
            yield conn

    try:
        with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:
            first, second = dependency(), dependency()
            conn1 = a.submit(next, first).result(10)
            conn2 = a.submit(next, second).result(10)
            # The first block ends on the thread both were entered on ...
            a.submit(finish, first).result(10)
            with pytest.raises(PoolError, match="given back"):
                conn1.cursor()
            assert conn2.cursor().execute("SELECT 2").fetchall() == [(2,)]  # still its own
            # ... and the second on another thread.
            b.submit(finish, second).result(10)
            with pytest.raises(PoolError, match="given back"):
                conn2.cursor()
            assert pool.get_stats()["in_use"] == 0
            # Many more blocks than connections, each ending on another thread: no leak.
            for _ in range(10):
                gen = dependency()
                a.submit(next, gen).result(10)
                b.submit(finish, gen).result(10)
            stats = pool.get_stats()
            assert stats["in_use"] == 0
            assert stats["timeouts"] == 0
            assert stats["acquired"] == stats["released"]
            # Plain nesting on one thread still gives back innermost first.
            with pool as outer:
                with pool as inner:
                    assert inner.cursor().execute("SELECT 1").fetchall() == [(1,)]
                assert outer.cursor().execute("SELECT 1").fetchall() == [(1,)]
            assert pool.get_stats()["in_use"] == 0
            with contextlib.ExitStack() as stack:
                held = stack.enter_context(pool)
                assert held.cursor().execute("SELECT 3").fetchall() == [(3,)]
            assert pool.get_stats()["in_use"] == 0
    finally:
        pool.dispose()


def in_threadpool(executor: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
    """Run ``fn`` as anyio's to_thread.run_sync does: on a worker, in a copy of our context."""
    return executor.submit(contextvars.copy_context().run, fn, *args).result(10)


def test_transaction_exit_on_another_thread(cwd: Path, pool_mode: str) -> None:
    db = make_db(pool_mode, size=2, max_overflow=0, timeout=2)

    def dependency(name: str) -> Iterator[ObjDataThreadSafe]:
        with db.transaction():
            # A table of the block's own connection (SQLite keeps TEMP tables per connection).
            db.sql_execute(f"CREATE TEMP TABLE mark_{name} (x INTEGER)")
            if name == "first":
                db.sql_execute(INSERT, (name,))
            yield db
            # Resumed on another thread: still inside the block, on its connection.
            assert db.sql_get_value(f"SELECT COUNT(*) FROM temp.mark_{name}") == 0
            if name != "first":  # SQLite: one writer at a time, so after the first ends
                db.sql_execute(INSERT, (name,))

    count = "SELECT COUNT(*) FROM items"
    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:
        first = dependency("first")
        in_threadpool(a, next, first)
        if pool_mode == "shared":
            # Thread A serves another request while the first block is open: not inside it.
            # (Persistent mode lends A its one connection, which the open block holds.)
            assert in_threadpool(a, db.sql_get_value, count) == 0
        second = dependency("second")
        in_threadpool(a, next, second)
        in_threadpool(b, finish, first)  # the first ends on B, the second still open
        assert committed_names(cwd / "facade.sqlite3") == ["first"]
        in_threadpool(b, finish, second)
        assert committed_names(cwd / "facade.sqlite3") == ["first", "second"]
        # Neither thread is left pinned to a finished transaction.
        assert in_threadpool(a, db.sql_execute, INSERT, ("after a",)) == 1
        assert in_threadpool(b, db.sql_execute, INSERT, ("after b",)) == 1
        # A plain thread (no context copies) is inside its block until the block ends.
        with db.transaction():
            db.sql_execute(INSERT, ("plain",))
            assert db.sql_get_value(count) == 5
            assert in_threadpool(a, db.sql_get_value, count) == 4  # another thread: not in it
    assert committed_names(cwd / "facade.sqlite3") == [
        "first",
        "second",
        "after a",
        "after b",
        "plain",
    ]
    assert db.pool.get_stats()["in_use"] == 0


# -- async transactions whose worker stopped -------------------------------------------


def test_a_task_outliving_its_async_transaction_fails_at_once(cwd: Path) -> None:
    db = make_db(size=2, max_overflow=0)

    async def main() -> None:
        go = asyncio.Event()

        async def late() -> Any:
            await go.wait()
            return await db.asql_execute(INSERT, ("late",))

        async with db.atransaction():
            await db.asql_execute(INSERT, ("in",))
            task = asyncio.create_task(late())
        go.set()
        with pytest.raises(PoolError, match=r"transaction block .* has ended"):
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert committed_names(cwd / "facade.sqlite3") == ["in"]
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


def test_close_pool_ends_an_open_async_transaction(cwd: Path) -> None:
    db = make_db(size=2, max_overflow=0)

    async def main() -> None:
        inside = asyncio.Event()
        release = asyncio.Event()

        async def request() -> None:
            async with db.atransaction():
                await db.asql_execute(INSERT, ("doomed",))
                inside.set()
                await release.wait()
                await db.asql_execute(INSERT, ("after close",))

        task = asyncio.create_task(request())
        await asyncio.wait_for(inside.wait(), 10)
        ObjDataThreadSafe.close_pool()
        release.set()
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert committed_names(cwd / "facade.sqlite3") == []


def test_cancelling_an_async_transaction_after_close_pool_ends_it(cwd: Path) -> None:
    db = make_db(size=2, max_overflow=0)

    async def main() -> None:
        inside = asyncio.Event()

        async def request() -> None:
            async with db.atransaction():
                await db.asql_execute(INSERT, ("doomed",))
                inside.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(request())
        await asyncio.wait_for(inside.wait(), 10)
        ObjDataThreadSafe.close_pool()
        await asyncio.sleep(1.0)  # the old worker noticed the closed pool only by polling
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)  # graceful shutdown's wait: must not hang
        # And a plain async call queued on the closed pool says so.
        with pytest.raises(PoolClosed):
            await db.asql_get_value("SELECT 1")

    asyncio.run(main())
    assert committed_names(cwd / "facade.sqlite3") == []


# -- concurrent nested async blocks ----------------------------------------------------


def test_concurrent_nested_async_blocks_keep_their_work(cwd: Path, pool_mode: str) -> None:
    db = make_db(pool_mode, size=2, max_overflow=0)

    async def main() -> None:
        async def step(i: int) -> None:
            async with db.atransaction():
                await db.asql_execute(INSERT, (f"step {i}",))
                await asyncio.sleep(0)
                await db.asql_execute(INSERT, (f"step {i} again",))
                if i % 3 == 0:
                    raise KeyError(i)

        async def sibling(i: int) -> None:
            await asyncio.sleep(0)
            await db.asql_execute(INSERT, (f"plain {i}",))

        async with db.atransaction():
            await db.asql_execute(INSERT, ("outer",))
            results = await asyncio.gather(
                *(step(i) for i in range(6)),
                *(sibling(i) for i in range(3)),
                return_exceptions=True,
            )
            assert [type(r) for r in results[:6]] == [KeyError, type(None), type(None)] * 2

    asyncio.run(main())
    expected = {"outer"} | {f"plain {i}" for i in range(3)}
    for i in (1, 2, 4, 5):
        expected |= {f"step {i}", f"step {i} again"}
    names = committed_names(cwd / "facade.sqlite3")
    assert sorted(names) == sorted(expected)
    assert ObjDataThreadSafe.get_pool_stats()["in_use"] == 0


# -- fork ---------------------------------------------------------------------------


def test_async_methods_work_in_a_forked_child(cwd: Path) -> None:
    db = make_db(size=2, max_overflow=0)

    async def use() -> int:
        async with db.atransaction():
            await db.asql_execute(INSERT, ("tx",))
        return int(await db.asql_get_value("SELECT COUNT(*) FROM items"))

    assert asyncio.run(use()) == 1  # the parent's workers and locks exist now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads alive
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(20)  # never hang the suite
            code = 0 if asyncio.run(use()) == 2 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the async methods")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert asyncio.run(use()) == 3


def test_close_pool_fails_queued_async_calls_with_pool_closed(cwd: Path) -> None:
    db = make_db(size=1, max_overflow=0)  # one worker thread

    async def main() -> None:
        inside = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with db.atransaction():  # takes the only worker
                await db.asql_execute(INSERT, ("held",))
                inside.set()
                await release.wait()

        held = asyncio.create_task(holder())
        await asyncio.wait_for(inside.wait(), 10)
        queued = asyncio.create_task(db.asql_get_value("SELECT 1"))  # waits for a worker
        await asyncio.sleep(0)
        ObjDataThreadSafe.close_pool()
        # Not a CancelledError the task never asked for: the reason.
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(queued, 10)
        release.set()
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(held, 10)

    asyncio.run(main())
    assert committed_names(cwd / "facade.sqlite3") == []
