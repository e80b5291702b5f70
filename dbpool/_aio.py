"""The worker threads behind the facade's async methods."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import queue
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from ._registry import _PoolEntry
from .errors import PoolError

log = logging.getLogger("dbpool.facade")

_T = TypeVar("_T")

# How often the thread of an async transaction looks whether its event loop is gone.
_ABANDON_POLL = 0.5

# The async transaction each task is in, per pool: statements of the task go to it.
# The default is never mutated, only replaced.
_ASYNC_TX: contextvars.ContextVar[dict[_PoolEntry, _TxThread]] = contextvars.ContextVar(
    "dbpool_async_transactions",
    default={},  # noqa: B039
)


async def run(entry: _PoolEntry, call: Callable[[], _T]) -> _T:
    """Run ``call`` on a worker thread: the task's transaction thread when it is in one."""
    tx = _ASYNC_TX.get().get(entry)
    if tx is not None:
        return await tx.submit(call)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(entry.executor(), call)


@contextlib.asynccontextmanager
async def transaction(
    entry: _PoolEntry, block: contextlib.AbstractContextManager[Any]
) -> AsyncIterator[None]:
    """Run the transaction ``block`` on one worker thread, with the task's statements in it."""
    active = _ASYNC_TX.get()
    tx = active.get(entry)
    token = None
    if tx is None:
        tx = _TxThread(asyncio.get_running_loop(), entry)
        token = _ASYNC_TX.set({**active, entry: tx})
    try:
        await tx.submit(functools.partial(tx.enter, block))
        try:
            yield
        except BaseException as exc:
            # Shielded: a task cancelled again must still wait for its rollback.
            await asyncio.shield(tx.submit(functools.partial(tx.exit, block, exc)))
            raise
        await tx.submit(functools.partial(tx.exit, block, None))
    finally:
        if token is not None:
            tx.stop()
            _ASYNC_TX.reset(token)


class _TxThread:
    """Runs the statements of one async transaction, in order, on one worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, entry: _PoolEntry) -> None:
        self._loop = loop
        self._entry = entry
        self._open: list[contextlib.AbstractContextManager[Any]] = []  # used by the worker only
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._calls = queue.SimpleQueue()
        entry.executor().submit(self._serve)

    def submit(self, call: Callable[[], _T]) -> asyncio.Future[_T]:
        """Queue ``call``; queued at once, so calls run in the order they were submitted."""
        future: asyncio.Future[_T] = self._loop.create_future()
        self._calls.put((call, future))
        return future

    def stop(self) -> None:
        self._calls.put(None)

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
                    self._unwind()
                    return
                continue
            if item is None:
                self._unwind()  # a block its task left without closing it (cancelled early)
                return
            call, future = item
            try:
                result = call()
            except BaseException as exc:
                self._settle(future, None, exc)
            else:
                self._settle(future, result, None)

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
