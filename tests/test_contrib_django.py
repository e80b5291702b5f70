"""dbpool.contrib.django: Django's MySQL backend taking its connections from a dbpool pool."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import patch

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import OperationalError  # noqa: E402
from django.db.backends.base.base import NO_DB_ALIAS  # noqa: E402

from dbpool import PoolClosed, PoolTimeout  # noqa: E402
from dbpool.contrib.django.base import DatabaseWrapper, close_pools  # noqa: E402

SERVER = {
    "host": "127.0.0.1",
    "port": 3306,
    "user": "app",
    "password": "s3cret-in-settings",
    "database": "appdb",
}


def settings_dict(server: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A complete DATABASES entry, as Django's connection handler fills it in."""
    base: dict[str, Any] = {
        "ENGINE": "dbpool.contrib.django",
        "NAME": server["database"],
        "USER": server["user"],
        "PASSWORD": server["password"],
        "HOST": server["host"],
        "PORT": str(server["port"]),
        "OPTIONS": {"pool": True},
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "TIME_ZONE": None,
        "TEST": {"CHARSET": None, "COLLATION": None, "MIGRATE": True, "MIRROR": None, "NAME": None},
    }
    base.update(overrides)
    return base


@pytest.fixture
def wrappers() -> Iterator[Callable[..., Any]]:
    """Makes DatabaseWrappers; closes them and every alias's pool after the test."""
    made: list[Any] = []

    def new(server: dict[str, Any], alias: str = "default", **overrides: Any) -> Any:
        wrapper = DatabaseWrapper(settings_dict(server, **overrides), alias=alias)
        made.append(wrapper)
        return wrapper

    yield new
    for wrapper in made:
        wrapper.close()
    close_pools()


# -- settings, no server needed ----------------------------------------------------------


def test_conn_max_age_with_a_pool_is_improperly_configured(wrappers: Callable[..., Any]) -> None:
    for age in (60, None):
        wrapper = wrappers(SERVER, CONN_MAX_AGE=age)
        with pytest.raises(ImproperlyConfigured, match=r"CONN_MAX_AGE to 0 \(got"):
            _ = wrapper.pool


@pytest.mark.parametrize(
    ("pool_option", "message"),
    [
        ("yes", r"must be True or a dict of dbpool pool options \(got 'yes'\)"),
        ({"sise": 4}, r"unknown pool option 'sise'.*valid options: .*size"),
        ({"size": -1}, r"size"),
        ({"mode": "sticky"}, r"mode"),
        ({"pre_ping": True}, r"pre_ping.*CONN_HEALTH_CHECKS"),
    ],
)
def test_bad_pool_options_are_improperly_configured(
    wrappers: Callable[..., Any], pool_option: Any, message: str
) -> None:
    wrapper = wrappers(SERVER, alias="bad", OPTIONS={"pool": pool_option})
    with pytest.raises(ImproperlyConfigured, match=message) as caught:
        _ = wrapper.pool
    assert "DATABASES['bad']" in str(caught.value)
    assert SERVER["password"] not in str(caught.value)


def test_no_pool_without_the_option_nor_for_the_no_db_alias(wrappers: Callable[..., Any]) -> None:
    assert wrappers(SERVER, OPTIONS={}).pool is None
    assert wrappers(SERVER, OPTIONS={"pool": False}).pool is None
    assert wrappers(SERVER, alias=NO_DB_ALIAS).pool is None


def test_one_pool_per_alias_replaced_when_its_settings_change(wrappers: Callable[..., Any]) -> None:
    first = wrappers(SERVER).pool
    assert wrappers(SERVER).pool is first  # another thread's wrapper of the same alias
    assert wrappers(SERVER, alias="other").pool is not first
    assert first.max_size == 15 and first.mode == "shared"  # dbpool's defaults
    renamed = wrappers({**SERVER, "database": "test_appdb"}).pool  # as the test runner does
    assert renamed is not first
    with pytest.raises(PoolClosed):
        first.acquire()
    assert SERVER["password"] not in repr(renamed)


def test_pool_options_and_health_checks_reach_the_pool(wrappers: Callable[..., Any]) -> None:
    wrapper = wrappers(
        SERVER,
        CONN_HEALTH_CHECKS=True,
        OPTIONS={"pool": {"size": 3, "max_overflow": 1, "mode": "persistent", "pre_ping": True}},
    )
    pool = wrapper.pool
    assert (pool.size, pool.max_size, pool.mode) == (3, 4, "persistent")
    wrapper.close_pool()
    with pytest.raises(PoolClosed):
        pool.acquire()
    assert wrapper.pool is not pool


# -- against MariaDB ---------------------------------------------------------------------


def _session_ids(admin: Any) -> set[int]:
    """The ids of the server's sessions now."""
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {int(row[0]) for row in cur.fetchall()}


def _isolation(wrapper: Any) -> str:
    rows = _query(
        wrapper, "SHOW VARIABLES WHERE variable_name IN ('transaction_isolation', 'tx_isolation')"
    )
    return str(rows[0][1])


def _query(wrapper: Any, sql: str, params: Any = None) -> list[Any]:
    with wrapper.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


@pytest.fixture
def items(mysql_params: dict[str, Any], admin: Any) -> str:
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{mysql_params['database']}`.dj_items")
        cur.execute(
            f"CREATE TABLE `{mysql_params['database']}`.dj_items "
            "(id INT AUTO_INCREMENT PRIMARY KEY, worker INT, kind VARCHAR(16)) "
            "ENGINE=InnoDB"
        )
    return "dj_items"


def test_connection_taken_from_the_pool_and_given_back(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any]
) -> None:
    wrapper = wrappers(mysql_params)
    pool = wrapper.pool
    first_id = _query(wrapper, "SELECT CONNECTION_ID()")[0][0]
    # The session's own count of statements (the global one counts every session's).
    before = int(_query(wrapper, "SHOW SESSION STATUS LIKE 'Questions'")[0][1])
    assert pool.get_stats()["in_use"] == 1
    wrapper.close()  # what Django does at the end of each request (CONN_MAX_AGE=0)
    assert wrapper.connection is None
    assert pool.get_stats()["in_use"] == 0
    # The next request gets the same server connection and sends only its own query:
    # Django's session set-up was done when it was first lent. Nothing is sent
    # between the two requests either.
    after = int(_query(wrapper, "SHOW SESSION STATUS LIKE 'Questions'")[0][1])
    assert _query(wrapper, "SELECT CONNECTION_ID()")[0][0] == first_id
    wrapper.close()
    assert after - before == 1  # the SHOW itself
    stats = pool.get_stats()
    assert (stats["created"], stats["acquired"], stats["released"]) == (1, 2, 2)


@pytest.mark.parametrize("reset", ["rollback", "session"])
def test_session_settings_hold_on_every_checkout(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any], reset: str
) -> None:
    wrapper = wrappers(
        mysql_params,
        OPTIONS={
            "pool": {"size": 1, "max_overflow": 0, "reset": reset},
            "isolation_level": "serializable",
            "init_command": "SET @@session.sql_select_limit = 1000",
        },
    )
    for _ in range(3):
        assert _isolation(wrapper) == "SERIALIZABLE"
        assert _query(wrapper, "SELECT @@session.sql_select_limit") == [(1000,)]
        assert wrapper.get_autocommit() is True
        _query(wrapper, "SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        wrapper.close()
        # A borrower's own session change stays with the connection under "rollback",
        # as for any dbpool pool; "session" clears it and Django sets its own again.
        isolation = _isolation(wrapper)
        wrapper.close()
        assert isolation == ("READ-UNCOMMITTED" if reset == "rollback" else "SERIALIZABLE")
        wrapper.connect()
        wrapper.init_connection_state()  # an explicit call always sets the session up
        wrapper.close()


def test_closed_inside_an_atomic_block_is_rolled_back_and_returned(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any], items: str
) -> None:
    wrapper = wrappers(mysql_params)
    pool = wrapper.pool
    wrapper.set_autocommit(False)
    _query(wrapper, f"INSERT INTO {items} (worker, kind) VALUES (1, 'lost')")
    wrapper.close()  # with a transaction open
    assert wrapper.connection is None
    assert pool.get_stats()["in_use"] == 0
    assert _query(wrapper, f"SELECT COUNT(*) FROM {items}")[0][0] == 0
    assert wrapper.get_autocommit() is True  # a fresh checkout is back in Django's mode


def test_pool_timeout_is_a_django_operational_error(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any]
) -> None:
    options = {"pool": {"size": 1, "max_overflow": 0, "timeout": 0.2}}
    holder = wrappers(mysql_params, OPTIONS=options)
    waiter = wrappers(mysql_params, OPTIONS=options)
    _query(holder, "SELECT 1")
    with pytest.raises(OperationalError, match="pool timeout") as caught:
        _query(waiter, "SELECT 1")
    assert isinstance(caught.value.__cause__.__cause__, PoolTimeout)
    holder.close()
    assert _query(waiter, "SELECT 1") == [(1,)]


@pytest.mark.parametrize("health_checks", [True, False])
def test_conn_health_checks_is_the_pools_check(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any], admin: Any, health_checks: bool
) -> None:
    wrapper = wrappers(
        mysql_params,
        CONN_HEALTH_CHECKS=health_checks,
        OPTIONS={"pool": {"size": 1, "max_overflow": 0, "ping_interval": 0}},
    )
    victim = _query(wrapper, "SELECT CONNECTION_ID()")[0][0]
    wrapper.close()
    with admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {victim}")
    if health_checks:
        assert _query(wrapper, "SELECT CONNECTION_ID()")[0][0] != victim
        assert wrapper.pool.get_stats()["validation_failures"] == 1
    else:
        with pytest.raises(OperationalError):
            _query(wrapper, "SELECT CONNECTION_ID()")
        wrapper.close()  # Django closes at the end of the request; the pool drops it
        assert _query(wrapper, "SELECT 1") == [(1,)]
    assert wrapper.pool.get_stats()["closed_broken"] == 1


@pytest.mark.parametrize("mode", ["shared", "persistent"])
def test_threads_share_the_alias_pool_within_its_bound(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any], admin: Any, items: str, mode: str
) -> None:
    threads, rounds = 16, 8
    size, overflow = (3, 2) if mode == "shared" else (threads, 0)
    options = {"pool": {"size": size, "max_overflow": overflow, "mode": mode, "timeout": 60}}
    errors: list[BaseException] = []
    peak = [0]
    barrier = threading.Barrier(threads)
    per_thread = [wrappers(mysql_params, OPTIONS=options) for _ in range(threads)]
    pool = per_thread[0].pool
    # Sessions opened since: those of earlier tests that end meanwhile do not count,
    # nor those the pool has closed (told before the driver's close) that the server
    # still lists for a moment.
    baseline = _session_ids(admin)
    closed: set[int] = set()
    pool.add_listener("close", lambda raw: closed.add(raw.thread_id()))

    def work(worker: int) -> None:
        wrapper = per_thread[worker]  # Django makes one DatabaseWrapper per thread
        wrapper.inc_thread_sharing()  # made in the main thread
        try:
            barrier.wait()
            for n in range(rounds):
                wrapper.set_autocommit(False)
                _query(
                    wrapper,
                    f"INSERT INTO {items} (worker, kind) VALUES (%s, %s)",
                    (worker, "kept" if n % 2 else "lost"),
                )
                if n % 2:
                    wrapper.commit()
                else:
                    wrapper.rollback()
                wrapper.set_autocommit(True)
                count = _query(
                    wrapper, f"SELECT COUNT(*) FROM {items} WHERE worker = %s", (worker,)
                )[0][0]
                assert count == (n + 1) // 2, (worker, n, count)
                peak[0] = max(peak[0], pool.get_stats()["total_connections"])
                wrapper.close()  # end of the request
        except BaseException as exc:
            errors.append(exc)
        finally:
            wrapper.dec_thread_sharing()

    done = threading.Event()
    server_peak = [0]

    def watch() -> None:  # the server's own sessions, while the threads run
        while not done.wait(0.02):
            # Listed, then not closed by the pool after the listing: the pool's at once.
            listed = _session_ids(admin) - baseline
            server_peak[0] = max(server_peak[0], len(listed - set(closed)))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    done.set()
    watcher.join()
    assert not errors, errors[:3]
    stats = pool.get_stats()
    assert 0 < peak[0] <= size + overflow
    assert 0 < server_peak[0] <= size + overflow
    assert stats["in_use"] == 0 and stats["timeouts"] == 0
    assert _query(per_thread[0], f"SELECT COUNT(*) FROM {items}")[0][0] == threads * rounds // 2


@pytest.mark.parametrize(
    "cause", ["autocommit left off", "failed health check", "error, then unusable"]
)
def test_connection_django_finds_unusable_leaves_the_pool(
    wrappers: Callable[..., Any], mysql_params: dict[str, Any], cause: str
) -> None:
    # No check before lending (CONN_HEALTH_CHECKS off): only the discard keeps the
    # next request from getting the connection Django gave up on.
    wrapper = wrappers(
        mysql_params, CONN_MAX_AGE=0, OPTIONS={"pool": {"size": 1, "max_overflow": 0}}
    )
    pool = wrapper.pool
    first = _query(wrapper, "SELECT CONNECTION_ID()")[0][0]
    if cause == "autocommit left off":
        wrapper.set_autocommit(False)
        wrapper.close_if_unusable_or_obsolete()  # request_finished
    elif cause == "failed health check":
        wrapper.settings_dict["CONN_HEALTH_CHECKS"] = True  # Django's own check, per request
        wrapper.health_check_enabled, wrapper.health_check_done = True, False
        with patch.object(wrapper, "is_usable", return_value=False):
            second = _query(wrapper, "SELECT CONNECTION_ID()")[0][0]
        assert second != first
    else:
        wrapper.errors_occurred = True
        with patch.object(wrapper, "is_usable", return_value=False):
            wrapper.close_if_unusable_or_obsolete()
    assert wrapper.connection is None or cause == "failed health check"
    wrapper.close()
    assert _query(wrapper, "SELECT CONNECTION_ID()")[0][0] != first
    wrapper.close()
    stats = pool.get_stats()
    assert stats["closed_broken"] == 1
    assert (stats["total_connections"], stats["in_use"]) == (1, 0)
