"""The worker threads behind the facade's async methods."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from ._registry import _PoolEntry
from .errors import PoolClosed, PoolError

log = logging.getLogger("dbpool.facade")

_T = TypeVar("_T")

# How often the thread of an async transaction looks whether its event loop is gone.
_ABANDON_POLL = 0.5

# The async transaction each task is in, per pool, and the innermost block of it the task
# is in: statements of the task go to it. The default is never mutated, only replaced.
_ASYNC_TX: contextvars.ContextVar[dict[_PoolEntry, tuple[_TxThread, _Level]]]
_ASYNC_TX = contextvars.ContextVar(
    "dbpool_async_transactions",
    default={},  # noqa: B039
)


async def run(entry: _PoolEntry, call: Callable[[], _T]) -> _T:
    """Run ``call`` on a worker thread: the task's transaction thread when it is in one."""
    current = _ASYNC_TX.get().get(entry)
    if current is not None:
        tx, level = current
        while not level.free.is_set():
            await level.free.wait()  # a nested block of another task is open in this one
        return await tx.submit(call)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(entry.executor(), call)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if entry.closed and task is not None and not task.cancelling():
            # Not this task's cancellation: close_pool() dropped the queued call.
            raise PoolClosed(f"pool {entry.pool._label} was closed before the call ran") from None
        raise


class _Level:
    """An open block of an async transaction, as seen by the blocks nested in it.

    Tasks share a transaction (asyncio.gather inside the block), and a nested block is a
    savepoint of the one connection: were two open at once, one's ROLLBACK TO SAVEPOINT
    would undo the other's work, and a statement of the enclosing block run meanwhile
    would go with it. So the blocks nested directly in one block take turns (``turn``),
    and the statements of that block wait while one is open (``free``).
    """

    __slots__ = ("free", "turn")

    def __init__(self) -> None:
        self.turn = asyncio.Lock()
        self.free = asyncio.Event()
        self.free.set()


@contextlib.asynccontextmanager
async def transaction(
    entry: _PoolEntry, block: contextlib.AbstractContextManager[Any]
) -> AsyncIterator[None]:
    """Run the transaction ``block`` on one worker thread, with the task's statements in it."""
    active = _ASYNC_TX.get()
    current = active.get(entry)
    if current is None:
        tx, parent = _TxThread(asyncio.get_running_loop(), entry), None
    else:
        tx, parent = current
        await parent.turn.acquire()
        parent.free.clear()
    token = _ASYNC_TX.set({**active, entry: (tx, _Level())})
    try:
        await tx.submit(functools.partial(tx.enter, block))
        try:
            yield
        except BaseException as exc:
            try:
                # Shielded: a task cancelled again must still wait for its rollback.
                await asyncio.shield(tx.submit(functools.partial(tx.exit, block, exc)))
            except PoolError:
                if not tx.ended:
                    raise
                # The worker stopped (close_pool) and rolled the block back itself.
            raise
        await tx.submit(functools.partial(tx.exit, block, None))
    finally:
        _ASYNC_TX.reset(token)
        if parent is None:
            tx.stop()
        else:
            # The exit is queued by now: statements let through run after it.
            parent.free.set()
            parent.turn.release()


_BLOCK_ENDED = (
    "the async transaction block this task was started in has ended: a task that "
    "outlives the block must not use it (start it outside the block, or await it inside)"
)


class _TxThread:
    """Runs the statements of one async transaction, in order, on one worker thread.

    Once the worker stops (the block ended, the pool was closed, the loop is gone), every
    call queued or submitted later fails at once, with the reason: none waits for ever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, entry: _PoolEntry) -> None:
        self._loop = loop
        self._entry = entry
        self._open: list[contextlib.AbstractContextManager[Any]] = []  # used by the worker only
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._calls = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._why_ended: str | None = None  # set once, under the lock
        self._closed_pool = False
        entry.on_close.add(self._pool_closed)
        try:
            work = entry.executor().submit(self._serve)
        except BaseException:
            entry.on_close.discard(self._pool_closed)
            raise
        work.add_done_callback(self._never_started)

    @property
    def ended(self) -> bool:
        return self._why_ended is not None

    def submit(self, call: Callable[[], _T]) -> asyncio.Future[_T]:
        """Queue ``call``; queued at once, so calls run in the order they were submitted."""
        future: asyncio.Future[_T] = self._loop.create_future()
        with self._lock:
            if self._why_ended is None:
                self._calls.put((call, future))
                return future
        future.set_exception(self._error())
        return future

    def stop(self) -> None:
        """Let the worker roll back what is still open and end."""
        with self._lock:
            if self._why_ended is None:
                self._calls.put(None)

    def _pool_closed(self) -> None:
        self._closed_pool = True
        self.stop()

    def _never_started(self, work: concurrent.futures.Future[None]) -> None:
        if work.cancelled():  # by close_pool(), before a thread took it
            self._closed_pool = True
            self._finish(None)

    def _error(self) -> PoolError:
        if self._closed_pool:
            return PoolClosed(
                f"pool {self._entry.pool._label} was closed during an async transaction, "
                "which was rolled back"
            )
        return PoolError(self._why_ended or _BLOCK_ENDED)

    def enter(self, block: contextlib.AbstractContextManager[Any]) -> None:
        """On the worker: open a transaction block."""
        block.__enter__()
        self._open.append(block)

    def exit(
        self, block: contextlib.AbstractContextManager[Any], exc: BaseException | None
    ) -> None:
        """On the worker: close the innermost block, with the exception that ended it."""
        if self._open and self._open[-1] is block:
            self._open.pop()
        if exc is None:
            block.__exit__(None, None, None)
        else:
            block.__exit__(type(exc), exc, exc.__traceback__)

    def _serve(self) -> None:
        why = None
        try:
            why = self._serve_calls()
        finally:
            self._unwind()
            self._finish(why)

    def _serve_calls(self) -> str | None:
        while True:
            try:
                item = self._calls.get(timeout=_ABANDON_POLL)
            except queue.Empty:
                if self._loop.is_closed() or self._entry.closed:
                    if self._open:
                        log.warning(
                            "an async transaction on config %r lost its event loop "
                            "or pool; rolling it back",
                            self._entry.config_name,
                        )
                    self._closed_pool = self._entry.closed
                    return "the event loop of the async transaction is closed"
                continue
            if item is None:
                return None  # open blocks left are those of a task cancelled early
            call, future = item
            try:
                result = call()
            except BaseException as exc:
                self._settle(future, None, exc)
            else:
                self._settle(future, result, None)

    def _finish(self, why: str | None) -> None:
        """Refuse further calls, and fail those still queued."""
        self._entry.on_close.discard(self._pool_closed)
        with self._lock:
            if self._why_ended is None:
                self._why_ended = why or _BLOCK_ENDED
        while True:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._settle(item[1], None, self._error())

    def _settle(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if future.done():
                return  # the awaiting task was cancelled
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(settle)

    def _unwind(self) -> None:
        """Roll back the blocks still open, innermost first, and give the connection back."""
        while self._open:
            block = self._open.pop()
            abandoned = PoolError("the async transaction block was abandoned")
            try:
                block.__exit__(PoolError, abandoned, None)
            except Exception as exc:
                log.debug("closing an abandoned transaction block: %s", exc)
