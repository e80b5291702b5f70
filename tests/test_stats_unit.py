"""Histograms, request counts, the pool name and check(), over the fake driver and SQLite."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from dbpool import ConfigError, ConnectionPool, PoolTimeout, make_pool
from dbpool.stats import BUCKETS, Histogram
from tests.fakedb import FakeDriver
from tests.faultkit import wait_until

MODES = ["shared", "persistent"]

# Every key get_stats() had before the histograms; none may go.
OLD_KEYS = {
    "created",
    "recycled",
    "acquired",
    "released",
    "timeouts",
    "connect_failures",
    "validation_failures",
    "closed",
    "closed_broken",
    "closed_overflow",
    "reclaimed",
    "leaks_reported",
    "wait_ms_mean",
    "wait_ms_p99",
    "wait_ms_max",
    "total_connections",
    "pool_size",
    "max_size",
    "in_use",
    "waiting",
    "size",
    "mode",
}


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def new_pool(pools: list[ConnectionPool]) -> Any:
    def new(driver: FakeDriver | None = None, **options: Any) -> ConnectionPool:
        pool = make_pool(driver=driver or FakeDriver(), **options)
        pools.append(pool)
        return pool

    return new


def bucket_of(histogram: dict[str, Any], seconds: float) -> int:
    """The cumulative count at the first bound not below ``seconds``."""
    return next(count for bound, count in histogram["buckets"] if seconds <= bound)


def test_histogram_buckets_are_upper_inclusive() -> None:
    histogram = Histogram()
    for seconds in (0.0, BUCKETS[0], BUCKETS[0] * 1.01, 0.003, BUCKETS[-1], BUCKETS[-1] * 2):
        histogram.record(seconds)
    snap = histogram.snapshot()
    cumulative = dict((bound, count) for bound, count in snap["buckets"])
    assert cumulative[BUCKETS[0]] == 2  # 0 and the bound itself
    assert cumulative[BUCKETS[1]] == 3
    assert cumulative[0.0025] == 3 and cumulative[0.005] == 4
    assert cumulative[BUCKETS[-1]] == 5
    assert snap["count"] == 6  # the last figure is above every bound
    assert snap["sum"] == pytest.approx(BUCKETS[0] * 2.01 + 0.003 + BUCKETS[-1] * 3)
    assert list(BUCKETS) == sorted(set(BUCKETS))


@pytest.mark.parametrize("mode", MODES)
def test_histograms_count_every_checkout(new_pool: Any, mode: str) -> None:
    driver = FakeDriver(connect_delay=0.003)
    pool = new_pool(driver=driver, mode=mode, size=2, max_overflow=0)
    for _ in range(5):
        with pool:
            pass
    held = pool.acquire()
    stats = pool.get_stats()
    assert set(stats) >= OLD_KEYS
    assert stats["requests"] == stats["acquired"] == 6
    # A wait is counted with the use time, when the connection comes back.
    assert stats["wait_time"]["count"] == 5
    assert stats["use_time"]["count"] == stats["released"] == 5
    assert stats["connect_time"]["count"] == stats["created"] == driver.connects == 1
    # The one connect took at least connect_delay, and so did the wait of its acquire().
    assert stats["connect_time"]["sum"] >= 0.003
    assert bucket_of(stats["connect_time"], 0.0025) == 0
    assert stats["wait_time"]["sum"] >= stats["connect_time"]["sum"]
    for key in ("wait_time", "connect_time", "use_time"):
        counts = [count for _, count in stats[key]["buckets"]]
        assert counts == sorted(counts) and counts[-1] <= stats[key]["count"]
        assert [bound for bound, _ in stats[key]["buckets"]] == list(BUCKETS)
    pool.release(held)
    assert pool.get_stats()["use_time"]["count"] == pool.get_stats()["wait_time"]["count"] == 6
    json.dumps(stats, allow_nan=False)  # served as JSON as it is (e.g. by /stats endpoints)


@pytest.mark.parametrize("mode", MODES)
def test_histogram_counts_exact_under_threads(new_pool: Any, mode: str) -> None:
    pool = new_pool(mode=mode, size=4, max_overflow=4, timeout=30)
    threads, rounds = 8, 300

    def work() -> None:
        for _ in range(rounds):
            with pool:
                pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stats = pool.get_stats()
    total = threads * rounds
    assert stats["requests"] == stats["acquired"] == stats["released"] == total
    assert stats["wait_time"]["count"] == stats["use_time"]["count"] == total
    assert stats["connect_time"]["count"] == stats["created"]


def test_requests_count_timeouts_but_waits_do_not(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=0)
    held = pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.05)
    stats = pool.get_stats()
    assert (stats["requests"], stats["acquired"], stats["timeouts"]) == (2, 1, 1)
    pool.release(held)
    assert pool.get_stats()["wait_time"]["count"] == 1


def test_failed_connects_have_no_connect_time(new_pool: Any) -> None:
    pool = new_pool(driver=FakeDriver(fail_connects=2), size=1)
    with pool:
        pass
    stats = pool.get_stats()
    assert stats["connect_failures"] == 2
    assert stats["connect_time"]["count"] == stats["created"] == 1


def test_listeners_hear_every_figure(new_pool: Any) -> None:
    pool = new_pool(size=1)
    heard: list[tuple[str, float]] = []
    pool._stats.listeners = (lambda kind, seconds: heard.append((kind, seconds)),)
    with pool:
        pass
    with pool:
        pass
    assert [kind for kind, _ in heard] == ["connect", "wait", "use", "wait", "use"]
    stats = pool.get_stats()
    assert sum(s for kind, s in heard if kind == "wait") == pytest.approx(stats["wait_time"]["sum"])
    assert sum(s for kind, s in heard if kind == "use") == pytest.approx(stats["use_time"]["sum"])
    assert all(seconds >= 0 for _, seconds in heard)


# -- the pool's name ------------------------------------------------------------


def test_name_defaults_to_the_config_name(tmp_path: Path, pools: list[Any]) -> None:
    (tmp_path / "config.yaml").write_text("database:\n  reporting: {driver: sqlite, path: r.db}\n")
    pool = make_pool(config_name="reporting")
    pools.append(pool)
    assert pool.name == "reporting"
    assert pool.get_stats()["name"] == "reporting"
    assert "'reporting' (sqlite://" in repr(pool)


def test_name_defaults_to_the_server_without_a_config(pools: list[Any]) -> None:
    # No config file: a pool given its server in code is named after it (no connect here).
    pool = make_pool(host="127.0.0.1", port=3307, user="app", password="s3cret", database="shop")
    pools.append(pool)
    assert pool.name == "127.0.0.1:3307/shop"
    assert "s3cret" not in repr(pool) and "s3cret" not in json.dumps(pool.get_stats())
    embedded = make_pool()
    pools.append(embedded)
    assert embedded.name == "primary"


def test_name_option_in_stats_logs_and_messages(
    new_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dbpool")
    pool = new_pool(name="orders", size=1, max_overflow=0)
    assert pool.name == "orders"
    with pool:
        assert pool.get_stats()["name"] == "orders"
        with pytest.raises(PoolTimeout, match=r"in pool 'orders' \(fake://\)"):
            pool.acquire(timeout=0.01)
    assert "created shared pool 'orders' (fake://)" in caplog.text
    assert "acquired a connection from 'orders' (fake://)" in caplog.text


@pytest.mark.parametrize("bad", ["", "  ", 3])
def test_bad_name_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        make_pool(driver=FakeDriver(), name=bad)


# -- check() ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_check_on_a_live_pool(new_pool: Any, mode: str) -> None:
    driver = FakeDriver()
    pool = new_pool(driver=driver, mode=mode, name="main")
    result = pool.check(timeout=2)
    assert result["ok"] is True and result["error"] is None
    assert result["latency_s"] is not None and result["latency_s"] >= 0
    assert (result["in_use"], result["waiting"], result["name"]) == (0, 0, "main")
    opened = next(iter(driver.open))
    assert opened.pings >= 1  # a real round trip, not just a socket look


def test_check_reports_a_dead_server_without_raising(new_pool: Any) -> None:
    pool = new_pool(driver=FakeDriver(fail_connects=10), name="down")
    result = pool.check(timeout=1)
    assert result["ok"] is False and result["latency_s"] is None
    assert "cannot connect to 'down'" in result["error"]


def test_check_replaces_a_dropped_connection(new_pool: Any) -> None:
    driver = FakeDriver()
    pool = new_pool(driver=driver, ping_interval=0)
    with pool as conn:
        first = conn.dbapi_connection
    first.killed = True
    assert pool.check(timeout=1)["ok"] is True
    assert first.closed and pool.get_stats()["closed_broken"] == 1


def test_check_of_a_full_pool_ends_at_its_timeout(new_pool: Any) -> None:
    pool = new_pool(size=1, max_overflow=0)
    with pool:
        result = pool.check(timeout=0.1)
    assert result["ok"] is False and "timeout" in result["error"]
    assert result["in_use"] == 1


def test_check_on_sqlite(pools: list[Any], tmp_path: Path) -> None:
    pool = make_pool()
    pools.append(pool)
    result = pool.check()
    assert result["ok"] is True
    assert result["host"] == str(tmp_path / "dbpool.sqlite3")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_check_refuses_a_bad_timeout(new_pool: Any, bad: Any) -> None:
    pool = new_pool()
    with pytest.raises(ValueError, match="check\\(\\): timeout must be a positive number"):
        pool.check(timeout=bad)


def test_stats_cost_script_measures_the_recording() -> None:
    from benchmarks import stats_cost

    result = stats_cost.measure(number=2000, repeat=2)
    assert result["with_histograms_ns"] > 0
    assert set(result) == {"with_histograms_ns", "before_ns", "added_ns"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["max_idle", "invalidate"])
def test_a_connection_counts_as_closed_as_soon_as_it_leaves(
    new_pool: Any, mode: str, how: str
) -> None:
    # Seen from a "close" listener, which runs just before the driver's close: the
    # connection no longer counts as open, so it must count as closed already.
    pool = new_pool(mode=mode, size=2, **({"max_idle": 0.05} if how == "max_idle" else {}))
    seen: list[dict[str, Any]] = []
    pool.add_listener("close", lambda raw: seen.append(pool.get_stats()))
    with pool.connection() as conn:
        if how == "invalidate":
            conn.invalidate()
    assert wait_until(lambda: bool(seen))
    stats = seen[0]
    assert stats["total_connections"] + stats["closed"] == stats["created"] == 1
    counter = "closed_idle" if how == "max_idle" else "closed_broken"
    assert stats[counter] == 1
