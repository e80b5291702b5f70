"""Checkout and return are interrupt-safe: an exception raised at any point leaves the pool whole.

A signal handler that raises (Ctrl-C, SystemExit from SIGTERM, a soft time limit) may
interrupt the pool between any two bytecodes. These tests raise at every step of
checkout and return, over a fake driver, in both modes, then check the pool's
invariants: nothing counted as in use once every block has ended, a fresh acquire
gets a working connection with no transaction left from before, no slot lost, no
connection lent twice.
"""

from __future__ import annotations

import copy
import gc
import linecache
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from dbutils import steady_db
from dbutils.persistent_db import PersistentDB
from dbutils.pooled_db import PooledDB, PooledDedicatedDBConnection

from dbpool import ConnectionPool, PoolClosed, PooledConnection, PoolError
from dbpool._handles import (
    _DBUtilsLock,
    _Handle,
    _HandleFactory,
    _PersistentStore,
    _SharedStore,
)
from dbpool.pool import _BlockExit, _WithExit
from tests.fakedb import FakeConnection, FakeDriver, FakeOperationalError, small_pool

MODES = ["shared", "persistent"]
FAULTS = [KeyboardInterrupt, SystemExit, RuntimeError]


class Injected(BaseException):
    """The fault the tests raise (a BaseException, like KeyboardInterrupt)."""


@pytest.fixture(autouse=True)
def _young_heap() -> Iterator[None]:
    """The garbage collections of a test look only at the objects made during it.

    The tests collect garbage several times per case, to run the finalizers of the
    connections a fault left behind. A full collection walks every object of the test
    session (about 70 ms once some thousand cases are collected); what one case makes
    takes well under a millisecond. Frozen objects (gc.freeze) are left out of every
    collection, and everything a case makes is made after the freeze.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


class RollbackFaultDriver(FakeDriver):
    """Its connections' rollback raises ``fault`` once, after closing the socket, as PyMySQL's."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: type[BaseException] | None = None

    def connect(self, params: Any, timeout: float | None) -> FakeConnection:
        conn = super().connect(params, timeout)
        original = conn.rollback

        def rollback() -> None:
            fault, self.fault = self.fault, None
            if fault is not None:
                conn.closed = True  # the socket is gone midway through the rollback
                raise fault("interrupted during the rollback")
            original()

        conn.rollback = rollback  # type: ignore[method-assign]
        return conn


def new_pool(pools: list[ConnectionPool], driver: FakeDriver, mode: str, **options: Any) -> Any:
    return small_pool(pools, driver, mode, **{"timeout": 0.5, **options})


def check_invariants(pool: ConnectionPool, driver: FakeDriver) -> None:
    """Nothing in use; every slot can be had at once; each lent connection works and is clean."""
    gc.collect()
    stats = pool.get_stats()
    assert stats["in_use"] == 0, stats
    n = pool.max_size if pool.mode == "shared" else 1
    conns = [pool.acquire(timeout=0.5) for _ in range(n)]
    try:
        raws = [c.dbapi_connection for c in conns]
        assert len({id(raw) for raw in raws}) == n, "a connection was lent twice"
        for raw in raws:
            assert not raw.closed, "a closed connection was lent"
            assert not raw.in_transaction, "a borrower inherited an open transaction"
            raw.cursor().execute("SELECT 1")
    finally:
        for c in conns:
            pool.release(c)
    if pool.mode == "persistent":
        # Another thread gets a slot of its own too.
        def other() -> None:
            with pool as conn:
                conn.cursor().execute("SELECT 1")

        worker = threading.Thread(target=other)
        worker.start()
        worker.join(5)
    assert pool.get_stats()["in_use"] == 0


# -- item 1: an interrupt during the reset at return -------------------------------


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("mode", MODES)
def test_interrupt_during_reset_retires_the_connection(
    pools: list[ConnectionPool], mode: str, fault: type[BaseException]
) -> None:
    driver = RollbackFaultDriver()
    pool = new_pool(pools, driver, mode)
    conn = pool.acquire()
    raw = conn.dbapi_connection
    conn.cursor().execute("INSERT INTO t VALUES (1)")
    driver.fault = fault
    with pytest.raises(fault):
        pool.release(conn)
    assert raw.closed
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["closed_broken"] == 1
    # Every later borrower gets a working connection, checked and reset as usual.
    for _ in range(5):
        with pool as again:
            assert again.dbapi_connection is not raw
            again.cursor().execute("INSERT INTO t VALUES (2)")
    check_invariants(pool, driver)


@pytest.mark.parametrize("mode", MODES)
def test_interrupt_during_reset_in_with_block(pools: list[ConnectionPool], mode: str) -> None:
    driver = RollbackFaultDriver()
    pool = new_pool(pools, driver, mode)
    driver.fault = KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), pool as conn:
        conn.cursor().execute("INSERT INTO t VALUES (1)")
    check_invariants(pool, driver)


# -- item 2: faults at each step of checkout and return ----------------------------


class StepFaultDriver(FakeDriver):
    """Raises ``fault`` once at the named step of the pool's calls into the driver."""

    def __init__(self) -> None:
        super().__init__()
        self.step: str | None = None
        self.fault: type[BaseException] = Injected

    def hit(self, step: str) -> None:
        if self.step == step:
            self.step = None
            raise self.fault(f"injected at {step}")

    def connect(self, params: Any, timeout: float | None) -> FakeConnection:
        self.hit("connect")
        conn = super().connect(params, timeout)
        self.hit("after connect")
        return conn

    def probe(self, raw: Any) -> bool | None:
        self.hit("probe")
        return super().probe(raw)

    def ping(self, raw: Any) -> None:
        self.hit("ping")
        super().ping(raw)

    def in_transaction(self, raw: Any) -> bool:
        self.hit("in_transaction")
        return bool(raw.in_transaction)

    def close(self, raw: Any) -> None:
        self.hit("close")
        super().close(raw)


STEPS = ["connect", "after connect", "probe", "ping", "in_transaction", "close"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("mode", MODES)
def test_fault_at_each_driver_step(pools: list[ConnectionPool], mode: str, step: str) -> None:
    driver = StepFaultDriver()
    pool = new_pool(pools, driver, mode, recycle=0, ping_interval=0)
    for round_ in range(4):
        driver.step = step
        try:
            with pool as conn:
                conn.cursor().execute(f"INSERT INTO t VALUES ({round_})")
                if round_ == 2:
                    conn.dbapi_connection.killed = True  # the next checkout must replace it
        except (Injected, FakeOperationalError):
            pass
    driver.step = None
    check_invariants(pool, driver)


# -- every line of checkout and return, by sys.settrace -----------------------------


def _functions() -> list[Callable[..., Any]]:
    return [
        ConnectionPool.acquire,
        ConnectionPool._checkout,
        ConnectionPool._checkin,
        ConnectionPool._give_back,
        ConnectionPool._park,  # a clean return kept for its thread
        ConnectionPool._unpark,  # a parked one taken by another thread
        ConnectionPool.release,
        ConnectionPool.__enter__,
        _WithExit.__get__,  # the `with` statement looks up its exit
        _BlockExit.__call__,  # the `with` statement's __exit__
        PooledConnection.__init__,
    ]


def _lines(fn: Callable[..., Any]) -> list[int]:
    code = fn.__code__
    return sorted(
        {line for _, _, line in code.co_lines() if line is not None and line > code.co_firstlineno}
    )


class LineInjector:
    """Raises ``fault`` when the traced thread reaches line ``line`` of ``code`` (the nth time).

    ``line`` None: when a call of ``code`` returns, after the last call it made (a signal
    handler runs there too), the nth time.

    A ``with`` line is seen again when its block ends, right before the call of
    ``__exit__``: no signal handler can run there (CPython runs them after a call
    or a backward jump), so the injector only raises at its first visit.
    """

    def __init__(
        self, code: Any, line: int | None, fault: type[BaseException], nth: int = 1
    ) -> None:
        self.code = code
        self.line = line
        self.fault = fault
        self.nth = nth
        self.fired = False
        self.seen: dict[int, bool] = {}
        source = "" if line is None else linecache.getline(code.co_filename, line).strip()
        self.is_with = source.startswith("with ")

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.fired or frame.f_code is not self.code:
            return None
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.fired:
            return None
        if self.line is None and event == "return":
            self.nth -= 1
            if self.nth == 0:
                self.fired = True
                raise self.fault("injected at a return")
        elif event == "line" and frame.f_lineno == self.line:
            if self.is_with and self.seen.get(id(frame)):
                return self._local
            self.seen[id(frame)] = True
            self.nth -= 1
            if self.nth == 0:
                self.fired = True
                raise self.fault(f"injected at line {self.line}")
        return self._local

    def __enter__(self) -> LineInjector:
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)


# Lines a trace function reaches but a signal handler cannot: CPython runs handlers
# after a call or a backward jump, and these follow neither (a return after a
# completed try, a statement of a finally reached by the normal path).
_TRACE_ONLY = {
    ("__enter__", "return conn"),
}


def _injection_points() -> Iterator[Any]:
    for fn in _functions():
        for line in _lines(fn):
            offset = line - fn.__code__.co_firstlineno
            key = (fn.__name__, linecache.getline(fn.__code__.co_filename, line).strip())
            marks: list[Any] = []
            if key in _TRACE_ONLY:
                marks.append(pytest.mark.skip(reason="no signal handler runs at this line"))
            yield pytest.param(fn, line, id=f"{fn.__qualname__}:{offset}", marks=marks)


def _borrow_cycle(pool: ConnectionPool, round_: int) -> None:
    with pool as conn:
        conn.cursor().execute("SELECT 1")  # given back clean: parked for this thread
    with pool.connection() as conn:
        conn.cursor().execute("SELECT 1")  # claimed again, and parked again
    if pool.mode == "shared":
        # Another thread takes the parked one (the pool has two connections at most).
        def other() -> None:
            try:
                # A short wait: a slot lost to an earlier fault comes back only with the
                # garbage, and the thread then gives up (the check at the end collects it).
                with pool.connection(timeout=0.1) as a, pool.connection(timeout=0.1) as b:
                    a.cursor().execute("SELECT 1")
                    b.cursor().execute("SELECT 1")
            except PoolError:
                pass

        # A daemon: a fault injected into the threading module's own code (a lock left
        # held in Thread.start()) must not keep the interpreter from exiting.
        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        thread.join(5)
    with pool as conn:
        conn.cursor().execute(f"INSERT INTO t VALUES ({round_})")  # an open transaction
    conn2 = pool.acquire()
    try:
        conn2.cursor().execute("UPDATE t SET x = 1")
        if round_ == 1:
            conn2.dbapi_connection.killed = True  # the next checkout replaces it
    finally:
        pool.release(conn2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fn", "line"), list(_injection_points()))
def test_fault_at_every_line_of_checkout_and_return(
    pools: list[ConnectionPool], mode: str, fn: Any, line: int
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode, ping_interval=0, leak_threshold=60)
    fired = 0
    for round_ in range(3):
        for nth in (1, 2):
            injector = LineInjector(fn.__code__, line, Injected, nth)
            try:
                with injector:
                    _borrow_cycle(pool, round_)
            except Injected:
                pass
            fired += injector.fired
    # Also as a nested borrow in persistent mode (the same thread borrows twice).
    injector = LineInjector(fn.__code__, line, Injected)
    try:
        with pool as outer:
            outer.cursor().execute("INSERT INTO t VALUES (9)")
            with injector:
                _borrow_cycle(pool, 9)
    except Injected:
        pass
    check_invariants(pool, driver)
    if not fired and not injector.fired:
        pytest.skip("a line this scenario does not run in this mode")


# -- inside DBUtils: the calls the stores make into PooledDB and PersistentDB ---------
#
# A signal handler may raise inside DBUtils' own code too, even between the acquire of
# PooledDB's lock and the block that releases it. Every line of those calls, and every
# return from them, gets the fault; then another thread must still borrow at once (a
# lock left held makes it wait for good, and with it every thread behind the pool lock).


def _dbutils_functions() -> list[Callable[..., Any]]:
    return [
        PooledDB.connection,
        PooledDB.cache,
        PooledDB.steady_connection,
        PooledDedicatedDBConnection.__init__,
        PooledDedicatedDBConnection.close,
        PersistentDB.connection,
        PersistentDB.steady_connection,
        steady_db.connect,
        steady_db.SteadyDBConnection.__init__,
        steady_db.SteadyDBConnection._create,
        steady_db.SteadyDBConnection._ping_check,
        steady_db.SteadyDBConnection.threadsafety,
        steady_db.SteadyDBConnection.close,
        steady_db.SteadyDBConnection._close,
        steady_db.SteadyDBConnection._reset,
        # PooledDB's lock (the pool puts _DBUtilsLock in place of its Condition)
        _DBUtilsLock.notify,
        _DBUtilsLock.notify_all,
        # the stores' side of those calls
        _SharedStore.take,
        _SharedStore.put,
        _PersistentStore.take,
        _PersistentStore.put,
        _HandleFactory.connect,
        _HandleFactory.reserve,
    ]


# As _TRACE_ONLY: the `try` right after PooledDB's `with self._lock` and its `while`
# loop is a NOP, reached by a forward jump, that CPython leaves out of the with-block's
# exception range; a trace function raising there skips __exit__, a signal handler
# cannot run there.
_TRACE_ONLY_DBUTILS = {
    ("connection", "try:  # first try to get it from the idle cache"),
}


def _dbutils_injection_points() -> Iterator[Any]:
    for fn in _dbutils_functions():
        name = fn.__qualname__
        for line in [*_lines(fn), None]:  # None: at its return
            where = "return" if line is None else str(line - fn.__code__.co_firstlineno)
            marks: list[Any] = []
            if line is not None:
                source = linecache.getline(fn.__code__.co_filename, line).strip()
                if (fn.__name__, source) in _TRACE_ONLY_DBUTILS:
                    marks.append(pytest.mark.skip(reason="no signal handler runs at this line"))
            yield pytest.param(fn, line, id=f"{name}:{where}", marks=marks)


def _reaches(code: Any, line: int | None, action: Callable[[], object]) -> bool:
    """Whether ``action`` runs line ``line`` of ``code`` (None: returns from it)."""
    seen: list[bool] = []

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if (event == "return") if line is None else (event == "line" and frame.f_lineno == line):
            seen.append(True)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    sys.settrace(tracer)
    try:
        action()
    finally:
        sys.settrace(None)
    return bool(seen)


def _borrow_elsewhere(pool: ConnectionPool) -> str | None:
    """Borrow and give back on another thread; what went wrong, or None."""
    outcome: list[str] = []

    def other() -> None:
        try:
            with pool as conn:
                conn.cursor().execute("SELECT 1")
            outcome.append("ok")
        except BaseException as exc:  # reported to the test thread
            outcome.append(repr(exc))

    worker = threading.Thread(target=other, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():
        # Let the stuck thread go, so that the pool can be disposed of after the test.
        lock = getattr(getattr(pool._store, "_db", None), "_lock", None)
        while lock is not None and lock._is_owned():
            lock.release()
        worker.join(5)
        return "another thread waits for good (DBUtils' lock was left held)"
    return None if outcome == ["ok"] else outcome[0]


@pytest.mark.exhaustive
@pytest.mark.parametrize("mode", ["shared", "shared-lifo", "persistent"])
@pytest.mark.parametrize(("fn", "line"), list(_dbutils_injection_points()))
def test_fault_inside_dbutils_leaves_the_pool_usable(
    pools: list[ConnectionPool], mode: str, fn: Any, line: int | None
) -> None:
    driver = FakeDriver()
    mode, _, order = mode.partition("-")
    pool = new_pool(pools, driver, mode, ping_interval=0, order=order or "fifo")
    if not _reaches(fn.__code__, line, lambda: _borrow_cycle(pool, 0)):
        pytest.skip("a point this mode does not reach")
    for round_ in range(2):
        for nth in (1, 2):
            try:
                with LineInjector(fn.__code__, line, Injected, nth):
                    _borrow_cycle(pool, round_)
            except Injected:
                pass
            gc.collect()
            problem = _borrow_elsewhere(pool)
            assert problem is None, problem
    check_invariants(pool, driver)


# -- a second fault while the first one's clean-up runs ------------------------------


def _cleanup_functions() -> list[Callable[..., Any]]:
    return [
        ConnectionPool._give_back,
        ConnectionPool._checkin,
        ConnectionPool._retire,
        ConnectionPool._fold_tallies,
        _Handle.borrowers,
        _SharedStore.put,
        _SharedStore.full,
        _PersistentStore.put,
        PooledConnection.__del__,
        PooledConnection._abandon,
        ConnectionPool._reclaim_collected,
    ]


# The lines between taking a lease out of its connection and counting it: they follow
# neither a call nor a backward jump, so no signal handler runs there (that is the point).
_TRACE_ONLY_CLEANUP = {
    ("_give_back", "del lease[-1]"),
    ("_give_back", "if handle.factory is not self._handles:"),
    ("_give_back", "if failed:"),
    ("_give_back", "self._stats.acquired -= 1"),
    ("_give_back", "self._stats.released += 1"),
    ("_abandon", "del lease[-1]"),
    ("_abandon", "pool = self._pool"),
    ("_abandon", "if item[1].factory is pool._handles:  # else lent before os.fork()"),
    ("_abandon", "pool._stats.reclaimed += 1"),
}


def _cleanup_points() -> Iterator[Any]:
    for fn in _cleanup_functions():
        for line in [*_lines(fn), None]:
            where = "return" if line is None else str(line - fn.__code__.co_firstlineno)
            marks: list[Any] = []
            if line is not None:
                source = linecache.getline(fn.__code__.co_filename, line).strip()
                if (fn.__name__, source) in _TRACE_ONLY_CLEANUP:
                    marks.append(pytest.mark.skip(reason="no signal handler runs at this line"))
            yield pytest.param(fn, line, id=f"{fn.__qualname__}:{where}", marks=marks)


def _counted_in_use(pool: ConnectionPool) -> None:
    stats = pool.get_stats()
    counted = stats["acquired"] - stats["released"] - stats["reclaimed"]
    assert counted == stats["in_use"], stats


class FirstFaultDriver(FakeDriver):
    """Its socket check raises ``Injected`` while ``armed``: a checkout cut before lending."""

    armed = False

    def probe(self, raw: Any) -> bool | None:
        if self.armed:
            raise Injected("injected in the check before lending")
        return super().probe(raw)


# A signal handler's exception inside a finalizer is printed and dropped by Python.
@pytest.mark.exhaustive
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("first", ["check", "listener"])
@pytest.mark.parametrize(("fn", "line"), list(_cleanup_points()))
def test_second_fault_during_the_clean_up_keeps_the_counts(
    pools: list[ConnectionPool], mode: str, first: str, fn: Any, line: int | None
) -> None:
    # The first fault: in the check before lending (the checkout fails and gives its slot
    # back), or in a checkout listener (the connection is given back as it is). The
    # second lands in that clean-up. A trace function that raises is removed, so the
    # first comes from the driver or the listener, the second from the trace function.
    driver = FirstFaultDriver()
    pool = new_pool(pools, driver, mode, ping_interval=0)

    def listener(raw: Any) -> None:
        if driver.armed:
            raise Injected("injected in a checkout listener")

    if first == "listener":
        pool.add_listener("checkout", listener)

    def faulty_checkout() -> None:
        driver.armed = True
        try:
            pool.release(pool.acquire())
        except Injected:
            pass
        finally:
            driver.armed = False
        gc.collect()
        pool.get_stats()

    _borrow_cycle(pool, 0)
    if not _reaches(fn.__code__, line, faulty_checkout):
        pytest.skip("a point this clean-up does not reach")
    fired = 0
    for round_ in range(2):
        for nth in (1, 2):
            _borrow_cycle(pool, round_)  # leaves a connection to check at the next acquire
            injector = LineInjector(fn.__code__, line, Injected, nth)
            try:
                with injector:
                    faulty_checkout()
            except Injected:
                pass
            fired += injector.fired
            gc.collect()
            _counted_in_use(pool)
    assert fired
    check_invariants(pool, driver)
    _counted_in_use(pool)


# -- a release cut short while the borrower still holds the connection ----------------


def _release_points() -> Iterator[Any]:
    fn = ConnectionPool.release
    lines = _lines(fn)
    first = lines[0]
    sources = {line: linecache.getline(fn.__code__.co_filename, line).strip() for line in lines}
    # From the first test to the call of _checkin, release() makes no call of its own (only
    # a log call, followed by a return): no signal handler runs on those lines.
    checkin = [line for line in lines if sources[line].startswith("self._checkin(")]
    for line in lines:
        source = sources[line]
        for mode in MODES:
            marks: list[Any] = []
            if checkin and first < line < checkin[0]:
                marks.append(pytest.mark.skip(reason="no signal handler runs at this line"))
            if line == first and mode == "persistent":
                # Nothing of release() has run, and in persistent mode the thread's next
                # acquire is a nested borrow of the same connection for as long as the
                # borrower holds it: that is all the pool can see.
                marks.append(
                    pytest.mark.xfail(
                        strict=True, reason="an exception at release()'s first instruction"
                    )
                )
            if source.startswith(("log.", "return")):
                marks.append(pytest.mark.skip(reason="after the lease left the connection"))
            offset = line - fn.__code__.co_firstlineno
            yield pytest.param(line, mode, id=f"release:{offset}-{mode}", marks=marks)


@pytest.mark.parametrize(("line", "mode"), list(_release_points()))
def test_release_cut_short_while_the_connection_is_still_held(
    pools: list[ConnectionPool], line: int, mode: str
) -> None:
    # As `conn = pool.acquire()` in a loop whose previous round's release was cut: the
    # variable still holds the last connection when the next acquire runs.
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode, ping_interval=0)
    conn = pool.acquire()
    conn.cursor().execute("INSERT INTO t VALUES (1)")  # an open transaction
    if not _reaches(ConnectionPool.release.__code__, line, lambda: pool.release(pool.acquire())):
        pytest.skip("a line this release does not run")
    injector = LineInjector(ConnectionPool.release.__code__, line, Injected)
    try:
        with injector:
            pool.release(conn)
    except Injected:
        pass
    assert injector.fired
    again = pool.acquire()
    try:
        assert not again.dbapi_connection.in_transaction, "inherited an abandoned transaction"
        again.cursor().execute("SELECT 1")
    finally:
        pool.release(again)
    del conn
    check_invariants(pool, driver)


@pytest.mark.parametrize("mode", MODES)
def test_with_block_whose_release_is_cut_at_its_start(
    pools: list[ConnectionPool], mode: str
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode)
    first = _lines(ConnectionPool.release)[0]
    try:
        with LineInjector(ConnectionPool.release.__code__, first, Injected):  # noqa: SIM117
            with pool as held:
                held.cursor().execute("INSERT INTO t VALUES (1)")  # an open transaction
    except Injected:
        pass
    # `held` still refers to the connection, and in persistent mode the same thread's
    # next borrow would be a nested one: the exit hands it to the pool all the same.
    with pool as again:
        assert not again.dbapi_connection.in_transaction, "inherited an abandoned transaction"
        again.cursor().execute("SELECT 1")
    with pytest.raises(PoolError):
        held.cursor()
    check_invariants(pool, driver)


# -- item 15: __getattr__ and half-built connections --------------------------------


def test_copy_of_a_connection_is_refused_clearly(pools: list[ConnectionPool]) -> None:
    pool = new_pool(pools, FakeDriver(), "shared")
    with pool as conn:
        with pytest.raises(TypeError, match="cannot be copied"):
            copy.copy(conn)
        with pytest.raises(TypeError, match="cannot be copied"):
            copy.deepcopy(conn)
    assert pool.get_stats()["in_use"] == 0


def test_half_built_connection_has_no_recursion(
    pools: list[ConnectionPool], recwarn: pytest.WarningsRecorder
) -> None:
    pool = new_pool(pools, FakeDriver(), "shared")
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        half = PooledConnection.__new__(PooledConnection)
        with pytest.raises(AttributeError):
            half.cursor()
        with pytest.raises(AttributeError):
            half.autocommit  # noqa: B018
        del half
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == []
    check_invariants(pool, pool._driver)


# -- item 11: close_thread_connection() and a return from another thread ------------


def test_return_from_another_thread_closes_the_owners_connection(
    pools: list[ConnectionPool],
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "persistent", size=3)
    owner_conn = pool.acquire()
    owner_raw = owner_conn.dbapi_connection
    pool.close_thread_connection()  # in use: closed when given back
    result: dict[str, Any] = {}

    def other() -> None:
        with pool as mine:
            result["raw"] = mine.dbapi_connection
            pool.release(owner_conn)  # the owner's connection, given back by this thread
            result["after"] = mine.dbapi_connection
            mine.cursor().execute("SELECT 1")
            result["same"] = pool.acquire()
            result["same_raw"] = result["same"].dbapi_connection
            pool.release(result["same"])

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(5)
    assert owner_raw.closed, "the owner's connection stays open"
    assert not result["raw"].closed, "the returning thread's own connection was closed"
    assert result["same_raw"] is result["raw"]
    # The owner's slot is free again: the owner gets a fresh connection.
    with pool as again:
        assert again.dbapi_connection is not owner_raw
        again.cursor().execute("SELECT 1")
    stats = pool.get_stats()
    assert stats["in_use"] == 0


# -- get_global_pool() after dispose() ------------------------------------------------


def test_global_pool_after_dispose_is_a_new_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbpool.pool as pool_module

    monkeypatch.setattr(pool_module, "_global_pool", None)
    first = pool_module.get_global_pool(size=2, driver="sqlite")
    first.dispose()
    with pytest.raises(PoolClosed):
        first.acquire()
    second = pool_module.get_global_pool(size=3, driver="sqlite")
    try:
        assert second is not first
        assert second.size == 3
        with second as conn:
            conn.cursor().execute("SELECT 1")
        assert pool_module.get_global_pool() is second
    finally:
        second.dispose()


# -- item 8: no overflow churn under overload -----------------------------------------


def test_no_overflow_close_while_threads_wait(pools: list[ConnectionPool]) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "shared", size=3, max_overflow=2, timeout=30)
    barrier = threading.Barrier(24)

    def work() -> None:
        barrier.wait()
        for _ in range(60):
            with pool as conn:
                conn.cursor().execute("SELECT 1")
                time.sleep(0.0005)  # held a while: more borrowers than connections

    workers = [threading.Thread(target=work) for _ in range(24)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stats = pool.get_stats()
    # Under overload the five connections go from thread to thread: none is closed as
    # overflow while others wait, so none is opened again.
    assert driver.connects == pool.max_size, stats
    assert stats["closed_overflow"] == pool.max_size - pool.size
    assert stats["pool_size"] == pool.size


# -- the start of a `with pool` exit ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_exit_cut_at_its_start_while_the_connection_is_still_held(
    pools: list[ConnectionPool], mode: str
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode)
    code = _BlockExit.__call__.__code__
    first = _lines(_BlockExit.__call__)[0]
    with pytest.raises(Injected), LineInjector(code, first, Injected):  # noqa: SIM117
        with pool as held:
            held.cursor().execute("INSERT INTO t VALUES (1)")  # an open transaction
    # `held` still refers to the connection: it is given back all the same, and the
    # same thread's next borrow is not taken as nested into it (persistent mode).
    with pool as again:
        assert not again.dbapi_connection.in_transaction, "inherited an abandoned transaction"
        again.cursor().execute("SELECT 1")
    with pytest.raises(PoolError):
        held.cursor()
    check_invariants(pool, driver)
