"""A thread gets back the connection it gave back clean, and no connection is ever lent twice.

A connection given back with nothing to reset waits for its thread ("parked"); that
thread's next acquire() takes it without DBUtils' round trip. Any other thread may
still take it when it needs one, and close_all(), dispose(), resize() and max_idle
see it as the idle connection it is. Over the fake driver, in both modes.
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import pytest

from dbpool import ConnectionPool, PoolClosed, PoolTimeout
from tests.fakedb import FakeConnection, FakeDriver, small_pool

MODES = ["shared", "persistent"]


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def new_pool(pools: list[ConnectionPool], driver: FakeDriver, mode: str, **options: Any) -> Any:
    return small_pool(pools, driver, mode, **{"timeout": 2.0, **options})


def in_thread(fn: Any) -> Any:
    """Run ``fn`` in a new thread and return what it returned (or raise what it raised)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(("ok", fn()))
        except BaseException as exc:  # handed to the caller
            result.append(("error", exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert result, "the thread did not finish"
    kind, value = result[0]
    if kind == "error":
        raise value
    return value


@pytest.mark.parametrize("mode", MODES)
def test_thread_gets_back_the_connection_it_gave_back(
    pools: list[ConnectionPool], mode: str
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode)
    seen = []
    for _ in range(5):
        with pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
            seen.append(conn.dbapi_connection)
        stats = pool.get_stats()
        assert stats["in_use"] == 0
        assert stats["pool_size"] == 1  # the parked one counts as idle
    assert len({id(raw) for raw in seen}) == 1
    stats = pool.get_stats()
    assert (stats["acquired"], stats["released"], stats["requests"]) == (5, 5, 5)
    assert stats["wait_time"]["count"] == 5 and stats["use_time"]["count"] == 5
    assert driver.connects == 1


@pytest.mark.parametrize("mode", MODES)
def test_every_return_reaches_the_histograms(pools: list[ConnectionPool], mode: str) -> None:
    """Parked returns are counted in batches, without the lock; none is lost or doubled."""
    pool = new_pool(pools, FakeDriver(), mode)
    for n in (100, 700):  # under one batch, then over two
        while pool.get_stats()["released"] < n:
            pool.release(pool.acquire())
        stats = pool.get_stats()
        assert stats["wait_time"]["count"] == stats["use_time"]["count"] == n


@pytest.mark.parametrize("mode", MODES)
def test_claim_is_counted_while_the_connection_is_in_use(
    pools: list[ConnectionPool], mode: str
) -> None:
    pool = new_pool(pools, FakeDriver(), mode)
    pool.release(pool.acquire())
    conn = pool.acquire()  # claimed from the parked ones
    stats = pool.get_stats()
    assert (stats["acquired"], stats["released"], stats["in_use"]) == (2, 1, 1)
    assert stats["pool_size"] == 0
    pool.release(conn)


@pytest.mark.parametrize("mode", MODES)
def test_connection_with_an_open_transaction_is_rolled_back_not_parked(
    pools: list[ConnectionPool], mode: str
) -> None:
    pool = new_pool(pools, FakeDriver(), mode)
    with pool.connection() as conn:
        conn.cursor().execute("INSERT INTO t VALUES (1)")
        raw = conn.dbapi_connection
    assert raw.rollbacks == 1 and not raw.in_transaction
    with pool.connection() as conn:
        assert not conn.dbapi_connection.in_transaction


def test_another_thread_takes_a_parked_connection_when_none_other_is_free(
    pools: list[ConnectionPool],
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "shared", size=1, timeout=0.5)
    with pool.connection() as conn:
        mine = conn.dbapi_connection
    # The only connection is parked for this thread: another thread must still get it.
    theirs = in_thread(lambda: _borrow_raw(pool))
    assert theirs is mine
    assert driver.connects == 1
    with pool.connection() as conn:  # and this thread gets it back from the store
        assert conn.dbapi_connection is mine


def _borrow_raw(pool: ConnectionPool) -> FakeConnection:
    with pool.connection() as conn:
        raw: FakeConnection = conn.dbapi_connection
        return raw


def test_a_taken_parked_connection_is_never_lent_to_its_thread_too(
    pools: list[ConnectionPool],
) -> None:
    pool = new_pool(pools, FakeDriver(), "shared", size=1, timeout=0.3)
    pool.release(pool.acquire())  # parked for this thread
    taken = threading.Event()
    done = threading.Event()
    holder: list[Any] = []

    def hold() -> None:
        conn = pool.acquire()
        holder.append(conn.dbapi_connection)
        taken.set()
        done.wait(5)
        pool.release(conn)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(5)
    try:
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0.2)  # the parked one is the other thread's now
    finally:
        done.set()
        thread.join(5)
    with pool.connection() as conn:
        assert conn.dbapi_connection is holder[0]
    assert pool.get_stats()["in_use"] == 0


def test_a_waiting_thread_gets_the_connection_given_back(pools: list[ConnectionPool]) -> None:
    pool = new_pool(pools, FakeDriver(), "shared", size=1, timeout=5.0)
    conn = pool.acquire()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(_borrow_raw(pool)))
    waiter.start()
    while not pool.get_stats()["waiting"]:  # bounded by the waiter's own timeout
        if not waiter.is_alive():
            break
        threading.Event().wait(0.001)
    raw = conn.dbapi_connection
    pool.release(conn)  # not parked: a thread waits for it
    waiter.join(5)
    assert got == [raw]


class _PausingParked(dict):  # type: ignore[type-arg]
    """A pool's ``_parked`` that runs ``pause`` once, at _park's look for the thread's key.

    That look comes after _park's checks (nobody waiting, the pool open) and before the
    entry goes in, without the lock: what ``pause`` does lands between the two.
    """

    def __init__(self, pause: Any) -> None:
        super().__init__()
        self.pause = pause

    def __contains__(self, key: object) -> bool:
        pause, self.pause = self.pause, None
        if pause is not None:
            pause()
        return super().__contains__(key)


def test_a_thread_that_starts_waiting_while_a_connection_is_parked_gets_it(
    pools: list[ConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter is woken: it does not sleep until its wait ends and find it then."""
    monkeypatch.setattr("dbpool.pool._WAIT_SLICE", 60.0)
    pool = new_pool(pools, FakeDriver(), "shared", size=1, timeout=1.0)
    woken: list[bool] = []  # what each Condition.wait returned: False when it timed out
    wait = pool._cond.wait
    monkeypatch.setattr(pool._cond, "wait", lambda timeout: woken.append(wait(timeout)))
    conn = pool.acquire()
    raw = conn.dbapi_connection
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(_borrow_raw(pool)))

    def start_waiting() -> None:
        waiter.start()
        while not pool._waiting and waiter.is_alive():  # bounded by the waiter's timeout
            threading.Event().wait(0.001)
        with pool._lock:  # the waiter holds it until its wait begins
            pass

    pool._parked = _PausingParked(start_waiting)
    pool.release(conn)
    waiter.join(10)
    assert got == [raw]
    assert woken == [True]


def test_a_connection_parked_as_a_thread_decides_to_wait_goes_to_that_thread(
    pools: list[ConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parked after the waiter's look at the idle ones, before it is counted as waiting."""
    monkeypatch.setattr("dbpool.pool._WAIT_SLICE", 60.0)
    pool = new_pool(pools, FakeDriver(), "shared", size=1, timeout=1.0)
    woken: list[bool] = []
    wait = pool._cond.wait
    monkeypatch.setattr(pool._cond, "wait", lambda timeout: woken.append(wait(timeout)))
    held: list[Any] = []
    in_thread(lambda: held.append(pool.acquire()))
    raw = held[0].dbapi_connection

    class ParkFirst(weakref.WeakSet):  # type: ignore[type-arg]
        def add(self, item: Any) -> None:
            if held:  # once: give the connection back from its thread, parked there
                in_thread(lambda: pool.release(held.pop()))
            super().add(item)

    pool._waiters = ParkFirst()
    pool._waiting = pool._waiters.data  # type: ignore[attr-defined]
    assert _borrow_raw(pool) is raw
    assert not woken  # it never had to wait


@pytest.mark.parametrize("mode", MODES)
def test_dispose_while_a_connection_is_being_parked_closes_it(
    pools: list[ConnectionPool], mode: str
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode)
    conn = pool.acquire()
    raw = conn.dbapi_connection
    pool._parked = _PausingParked(pool.dispose)
    pool.release(conn)
    assert raw.closed
    assert not driver.open
    assert not pool._parked


@pytest.mark.parametrize("threads", [2, 6])
def test_no_connection_is_ever_lent_twice(pools: list[ConnectionPool], threads: int) -> None:
    """Threads outnumber (6) or match (2) the connections; each use is checked exclusive."""
    driver = FakeDriver()
    pool = new_pool(pools, driver, "shared", size=2, max_overflow=0, timeout=10.0)
    errors: list[str] = []
    users: dict[int, int] = {}
    lock = threading.Lock()

    def work() -> None:
        me = threading.get_ident()
        for i in range(400):
            with pool.connection() as conn:
                raw = conn.dbapi_connection
                with lock:
                    if users.get(raw.id) is not None:
                        errors.append(f"connection {raw.id} lent twice")
                    users[raw.id] = me
                conn.cursor().execute("SELECT 1")
                if i % 7 == 0:
                    threading.Event().wait(0)  # let another thread run here
                with lock:
                    users[raw.id] = None  # type: ignore[assignment]

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not errors
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["acquired"] == stats["released"] == threads * 400
    assert stats["total_connections"] <= 2


@pytest.mark.parametrize("mode", MODES)
def test_close_all_closes_parked_connections_now(pools: list[ConnectionPool], mode: str) -> None:
    pool = new_pool(pools, FakeDriver(), mode)
    with pool.connection() as conn:
        raw = conn.dbapi_connection
    pool.close_all()
    assert raw.closed
    with pool.connection() as conn:
        assert conn.dbapi_connection is not raw


@pytest.mark.parametrize("mode", MODES)
def test_close_all_while_lent_never_parks_the_old_connection(
    pools: list[ConnectionPool], mode: str
) -> None:
    pool = new_pool(pools, FakeDriver(), mode)
    conn = pool.acquire()
    raw = conn.dbapi_connection
    pool.close_all()
    pool.release(conn)
    assert raw.closed
    with pool.connection() as again:
        assert again.dbapi_connection is not raw


@pytest.mark.parametrize("mode", MODES)
def test_dispose_closes_parked_connections(pools: list[ConnectionPool], mode: str) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, mode)
    with pool.connection() as conn:
        raw = conn.dbapi_connection
    pool.dispose()
    assert raw.closed
    assert not driver.open
    with pytest.raises(PoolClosed):
        pool.acquire()


@pytest.mark.parametrize("mode", MODES)
def test_parked_connection_past_recycle_is_replaced(
    pools: list[ConnectionPool], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = new_pool(pools, FakeDriver(), mode, recycle=30)
    with pool.connection() as conn:
        raw = conn.dbapi_connection
    import dbpool.pool as pool_module

    real = pool_module.monotonic
    monkeypatch.setattr(pool_module, "monotonic", lambda: real() + 60)
    with pool.connection() as conn:
        assert conn.dbapi_connection is not raw
    assert raw.closed
    assert pool.get_stats()["recycled"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_parked_connection_killed_by_the_server_is_replaced(
    pools: list[ConnectionPool], mode: str
) -> None:
    pool = new_pool(pools, FakeDriver(), mode)
    with pool.connection() as conn:
        raw = conn.dbapi_connection
    raw.killed = True  # the server ended it while it was parked
    with pool.connection() as conn:
        assert conn.dbapi_connection is not raw
        conn.cursor().execute("SELECT 1")


def test_shrinking_closes_parked_connections_beyond_size(pools: list[ConnectionPool]) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "shared", size=3)
    conns = [pool.acquire() for _ in range(3)]
    for conn in conns:
        pool.release(conn)  # one parked, two in the store
    pool.resize(size=1)
    assert pool.get_stats()["total_connections"] == 1
    assert len(driver.open) == 1


def test_overflow_connection_is_closed_not_parked(pools: list[ConnectionPool]) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "shared", size=1, max_overflow=1)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)  # parked: the one connection size keeps
    pool.release(b)  # beyond size: closed
    stats = pool.get_stats()
    assert stats["total_connections"] == 1
    assert stats["closed_overflow"] == 1


@pytest.mark.parametrize("order", ["fifo", "lifo"])
def test_two_given_back_by_one_thread_come_back_in_the_pool_order(
    pools: list[ConnectionPool], order: str
) -> None:
    pool = new_pool(pools, FakeDriver(), "shared", size=3, order=order)
    a, b = pool.acquire(), pool.acquire()
    first, second = a.dbapi_connection, b.dbapi_connection
    pool.release(a)
    pool.release(b)
    with pool.connection() as x, pool.connection() as y:
        got = [x.dbapi_connection, y.dbapi_connection]
    assert got == ([first, second] if order == "fifo" else [second, first])


def test_persistent_thread_that_ended_with_a_parked_connection_frees_its_slot(
    pools: list[ConnectionPool],
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "persistent", size=1)
    raw = in_thread(lambda: _borrow_raw(pool))
    gc.collect()
    stats = pool.get_stats()  # closes what DBUtils let go when the thread ended
    assert raw.closed
    assert stats["total_connections"] == 0
    assert not pool._parked  # no entry kept for a thread that is gone


def test_persistent_close_thread_connection_closes_a_parked_one(
    pools: list[ConnectionPool],
) -> None:
    driver = FakeDriver()
    pool = new_pool(pools, driver, "persistent")
    with pool.connection() as conn:
        raw = conn.dbapi_connection
    pool.close_thread_connection()
    assert raw.closed
    assert pool.get_stats()["total_connections"] == 0
    with pool.connection() as conn:
        assert conn.dbapi_connection is not raw


def test_persistent_nested_borrow_is_not_parked_while_the_outer_one_is_out(
    pools: list[ConnectionPool],
) -> None:
    pool = new_pool(pools, FakeDriver(), "persistent")
    with pool.connection() as outer:
        with pool.connection() as inner:
            assert inner.dbapi_connection is outer.dbapi_connection
        assert pool.get_stats()["in_use"] == 1
        outer.cursor().execute("SELECT 1")  # still usable after the inner return
    assert pool.get_stats()["in_use"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_checkin_listener_sees_every_return(pools: list[ConnectionPool], mode: str) -> None:
    pool = new_pool(pools, FakeDriver(), mode)
    seen: list[Any] = []
    pool.add_listener("checkin", seen.append)
    for _ in range(3):
        with pool.connection():
            pass
    assert len(seen) == 3


def test_thread_whose_parked_connection_was_taken_gets_one_opened_in_the_background(
    pools: list[ConnectionPool],
) -> None:
    """Threads taking turns on fewer connections than threads end up with one each."""
    driver = FakeDriver()
    pool = new_pool(pools, driver, "shared", size=4)
    pool.release(pool.acquire())  # parked for this thread
    # Another thread takes it (nothing else is idle) and parks it for itself.
    assert in_thread(lambda: _borrow_raw(pool)) is not None
    with pool.connection():  # this thread finds its own gone: a connect starts for it
        pass
    for _ in range(500):  # bounded: the background connect takes microseconds here
        if pool.get_stats()["total_connections"] == 2:
            break
        threading.Event().wait(0.01)
    assert pool.get_stats()["total_connections"] == 2
    assert driver.connects == 2
