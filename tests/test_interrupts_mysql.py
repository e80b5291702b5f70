"""Real signals whose handler raises, delivered at random during a ``with pool`` loop on MariaDB.

The pool must stay usable in both modes: nothing left counted as in use, every
slot can be had, no borrower inherits (and commits) another's abandoned rows.
"""

from __future__ import annotations

import contextlib
import gc
import random
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest


class Interrupted(BaseException):
    """What the test's SIGALRM handler raises, like a KeyboardInterrupt."""


ROUNDS = 600


def _interrupt_next_read(raw: Any, driver: str) -> None:
    """Raise ``Interrupted`` at the driver's next read of a reply, before it reads a byte.

    As a signal that lands after a statement was sent and before its reply is read:
    the reply stays on the wire and the socket stays open.
    """
    target, name = (raw, "_read_packet") if driver == "pymysql" else (raw._socket, "recv")
    own = name in vars(target)
    real = getattr(target, name)

    def read(*args: Any, **kwargs: Any) -> Any:
        if own:
            setattr(target, name, real)
        else:
            delattr(target, name)
        raise Interrupted("a signal between the send and the read")

    setattr(target, name, read)


@pytest.mark.faults
@pytest.mark.parametrize("autocommit", [True, False])
def test_reply_left_unread_by_an_interrupt_is_never_read_by_the_next_borrower(
    mysql_pool: Any,
    admin: Any,
    mysql_params: dict[str, Any],
    mysql_driver: str,
    pool_mode: str,
    autocommit: bool,
) -> None:
    table = f"`{mysql_params['database']}`.`unread_{mysql_driver.replace('-', '_')}_{pool_mode}`"
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, kind CHAR(1))")
    pool = mysql_pool(size=1, max_overflow=0, timeout=5, autocommit=autocommit)
    for statement in ("SELECT 'first'", f"INSERT INTO {table} (kind) VALUES ('a')"):
        with pytest.raises(Interrupted), pool as conn:
            raw = conn.dbapi_connection
            cur = conn.cursor()
            if not autocommit:
                cur.execute(f"INSERT INTO {table} (kind) VALUES ('a')")  # abandoned
            _interrupt_next_read(raw, mysql_driver)
            cur.execute(statement)
        assert pool.get_stats()["in_use"] == 0
        with pool as conn:
            cur = conn.cursor()
            cur.execute("SELECT 'second'")
            assert [tuple(row) for row in cur.fetchall()] == [("second",)], "read another's reply"
            cur.execute("SELECT @@in_transaction")
            assert cur.fetchall()[0][0] == 0, "the next borrower inherited a transaction"
            cur.execute(f"INSERT INTO {table} (kind) VALUES ('c')")
            conn.commit()
            cur.close()
        assert pool.get_stats()["closed_broken"] >= 1
    with admin.cursor() as cur:
        cur.execute(f"SELECT kind, COUNT(*) FROM {table} GROUP BY kind ORDER BY kind")
        kinds = dict(cur.fetchall())
        cur.execute(f"DROP TABLE {table}")
    # Under autocommit the interrupted INSERT ran and committed on the server; otherwise
    # every 'a' row belongs to an abandoned transaction.
    assert kinds.get("a", 0) == (1 if autocommit else 0), kinds
    assert kinds["c"] == 2


@contextlib.contextmanager
def _borrow(pool: Any, style: str) -> Iterator[Any]:
    """``with pool``, or acquire() and release() in a try/finally."""
    if style == "with":
        with pool as conn:
            yield conn
        return
    conn = pool.acquire()
    try:
        yield conn
    finally:
        pool.release(conn)


def _close_what_signals_left_open(pool: Any) -> None:
    """Close the server sessions the known gaps leave behind, so they do not outlive the test.

    A signal at the start of __exit__ leaves its `with pool` block registered and its
    connection lent, which disposing of the pool does not close: give it back. A connect
    cut by a signal leaves a driver connection in a reference cycle, whose socket only
    the cycle collector closes.
    """
    with pool._blocks_lock:
        left = [block[1] for block in pool._blocks]
        pool._blocks.clear()
    for conn in left:
        pool.release(conn)
    gc.collect()


@pytest.mark.faults
# A connect cut by the signal inside the driver leaves its half-open socket to the
# garbage collector, which warns; that socket was never the pool's.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("style", ["acquire", "with"])
def test_random_signals_leave_the_pool_usable(
    mysql_pool: Any,
    admin: Any,
    mysql_params: dict[str, Any],
    mysql_driver: str,
    pool_mode: str,
    style: str,
    request: pytest.FixtureRequest,
) -> None:
    mode = pool_mode
    assert threading.current_thread() is threading.main_thread()
    table = f"`{mysql_params['database']}`.`signals_{mysql_driver.replace('-', '_')}_{mode}`"
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, kind CHAR(1))")
    pool = mysql_pool(size=2, max_overflow=1, timeout=5, autocommit=False)
    request.addfinalizer(lambda: _close_what_signals_left_open(pool))
    rng = random.Random(10)
    interrupted = 0
    committed = 0
    errors: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    try:
        for round_ in range(ROUNDS):
            try:
                try:
                    # Rounds that commit get longer, so that some of them get that far.
                    longest = 0.2 if round_ % 5 == 0 else 0.0015
                    signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.00002, longest))
                    with _borrow(pool, style) as conn:
                        cur = conn.cursor()
                        cur.execute(f"SELECT COUNT(*) FROM {table}")
                        cur.fetchall()
                        if round_ % 5 == 0:
                            # A borrower that commits: were it to inherit an abandoned
                            # transaction, its commit would make the 'a' rows permanent.
                            cur.execute(f"INSERT INTO {table} (kind) VALUES ('c')")
                            conn.commit()
                            committed += 1
                        cur.execute(f"INSERT INTO {table} (kind) VALUES ('a')")  # not committed
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except Interrupted:
                interrupted += 1
            except pool._driver_errors as exc:
                errors.append(repr(exc))  # a statement cut midway: the driver's own error
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert interrupted >= 5, "too few signals landed to prove anything"
    assert committed, errors[:5]
    stats = pool.get_stats()
    assert stats["in_use"] == 0, stats
    n = pool.max_size if mode == "shared" else 1
    conns = [pool.acquire(timeout=5) for _ in range(n)]
    try:
        for conn in conns:
            cur = conn.cursor()
            cur.execute("SELECT @@in_transaction")
            assert cur.fetchall()[0][0] == 0, "a borrower inherited an open transaction"
            cur.execute("SELECT 1")
    finally:
        for conn in conns:
            pool.release(conn)
    with admin.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE kind = 'a'")
        assert cur.fetchall()[0][0] == 0, "abandoned rows were committed by a later borrower"
        cur.execute(f"DROP TABLE {table}")
    pool.dispose()
    # Collect here, under this test's warning filters, the half-open sockets of connects
    # cut by the signal: collected later, they would warn inside another test.
    gc.collect()
