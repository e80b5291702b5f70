"""The lifecycle options and the configuration habits, without a server: typos, URLs,
the environment, and the options on SQLite."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dbpool import (
    ConfigError,
    ConnectError,
    ConnectionPool,
    PoolTimeout,
    load_settings,
    make_pool,
)

SECRET = "s3cr3t-url-PW"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    for name in ("URL", "PORT", "DATABASE", "HOST", "USER", "PASSWORD"):
        monkeypatch.delenv(f"DBPOOL_PRIMARY_{name}", raising=False)


def entry(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    body = "".join(f"    {line}\n" for line in text.strip().splitlines())
    path.write_text(f"database:\n  primary:\n{body}")
    return str(path)


# -- typos ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizee": 3}, "unknown option 'sizee'; did you mean 'size'?"),
        ({"pool_size": 20}, "unknown option 'pool_size'; did you mean 'size'?"),
        ({"min_size": 2}, "unknown option 'min_size'; did you mean 'min_idle'?"),
        ({"max_idel": 2}, "unknown option 'max_idel'; did you mean 'max_idle'?"),
        ({"pasword": "x"}, "unknown option 'pasword'; did you mean 'password'?"),
        ({"completely_unknown": 1}, "unknown option 'completely_unknown'"),
    ],
)
def test_unknown_keyword_fails_when_the_pool_is_made(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(host="127.0.0.1", **kwargs)
    assert str(caught.value) == message
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        ConnectionPool(host="127.0.0.1", **kwargs)


def test_driver_parameters_are_accepted() -> None:
    # PyMySQL's own keywords, mysql-connector's own, sqlite3's own.
    make_pool(host="h", init_command="SET @a = 1", client_flag=0, autocommit=True).dispose()
    make_pool(host="h", driver="mysql-connector", time_zone="+00:00").dispose()
    make_pool(path=":memory:", detect_types=sqlite3.PARSE_DECLTYPES).dispose()
    with pytest.raises(ConfigError, match="unknown option 'time_zone'"):
        make_pool(host="h", driver="pymysql", time_zone="+00:00")


def test_pool_option_outside_the_pool_section(tmp_path: Path) -> None:
    path = entry(tmp_path, "host: h\nsize: 3")
    with pytest.raises(ConfigError) as caught:
        make_pool(config=path)
    assert str(caught.value).endswith(
        "'size' is a pool option; put it under the entry's 'pool:' section"
    )
    path = entry(tmp_path, "host: h\nhots: x")
    with pytest.raises(ConfigError, match="unknown setting 'hots'; did you mean 'host'"):
        make_pool(config=path)


def test_unknown_mode_is_a_config_error(tmp_path: Path) -> None:
    for call in (lambda: make_pool("sharde"), lambda: ConnectionPool(mode="sharde")):
        with pytest.raises(ConfigError) as caught:
            call()
        assert isinstance(caught.value, ValueError)  # as before
        assert "'sharde'" in str(caught.value)
    with pytest.raises(ConfigError, match="mode must be one of 'shared', 'persistent'"):
        make_pool(config=entry(tmp_path, "host: h\npool: {mode: sharde}"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_idle": 4, "size": 3}, "min_idle cannot exceed size (got 4 > 3)"),
        ({"min_idle": -1}, "min_idle cannot be negative"),
        ({"max_idle": -1}, "max_idle cannot be negative"),
        ({"order": "random"}, "order must be one of 'fifo', 'lifo' (got 'random')"),
        ({"max_waiting": -2}, "max_waiting cannot be negative"),
        ({"max_usage": 1.5}, "max_usage must be an integer"),
        ({"init_sql": [""]}, "init_sql must be a list of SQL statements"),
        ({"init_sql": [1]}, "init_sql must be a list of SQL statements"),
        ({"configure": 42}, "configure must be a callable"),
        ({"configure": "nowhere.module:fn"}, "cannot import 'nowhere.module'"),
        ({"configure": "os:no_such_function"}, "'os' has no 'no_such_function'"),
        ({"wait": "yes"}, "wait must be true or false"),
    ],
)
def test_bad_lifecycle_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(path=":memory:", **options)
    assert message in str(caught.value)


def test_configure_and_init_sql_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "setup_hooks.py").write_text(
        "seen = []\ndef configure(raw):\n    seen.append(raw)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = entry(
        tmp_path,
        "driver: sqlite\npath: ':memory:'\n"
        "pool:\n  init_sql:\n    - PRAGMA foreign_keys = ON\n  configure: 'setup_hooks:configure'",
    )
    pool = make_pool(config=path)
    try:
        with pool.connection() as conn:
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert len(sys.modules["setup_hooks"].seen) == 1
    finally:
        pool.dispose()


# -- URLs and the environment ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver", "params"),
    [
        (
            "mysql://app@db.example:3307/shop",
            "pymysql",
            {"host": "db.example", "port": 3307, "user": "app", "database": "shop"},
        ),
        (
            "mysql+pymysql://app@db.example/shop",
            "pymysql",
            {"host": "db.example", "user": "app", "database": "shop"},
        ),
        (
            "mysql+mysqlconnector://app@[::1]:3306/shop?charset=latin1",
            "mysql-connector",
            {"host": "::1", "port": 3306, "user": "app", "database": "shop", "charset": "latin1"},
        ),
        ("mariadb://app@db/", "pymysql", {"host": "db", "user": "app"}),
    ],
)
def test_url_argument(url: str, driver: str, params: dict[str, Any]) -> None:
    settings = load_settings(params={"url": url})
    assert settings.driver == driver
    assert dict(settings.params) == params


def test_url_password_is_decoded_and_never_shown() -> None:
    settings = load_settings(params={"url": f"mysql://app:{SECRET}%40x@db/shop"})
    assert settings.params["password"] == SECRET + "@x"
    assert SECRET not in repr(settings) + settings.describe()
    with pytest.raises(ConfigError) as caught:
        load_settings(params={"url": f"mysql://app:{SECRET}@db:99999/shop"})
    assert "a port must be a number" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="url scheme 'postgres' is not supported") as caught:
        load_settings(params={"url": f"postgres://app:{SECRET}@db/shop"})
    assert SECRET not in str(caught.value)


def test_url_and_driver_must_agree() -> None:
    with pytest.raises(ConfigError, match="driver 'sqlite' and the url's scheme"):
        load_settings(driver="sqlite", params={"url": "mysql+pymysql://db/x"})
    # A plain mysql:// URL leaves the choice of MySQL driver open.
    settings = load_settings(driver="mysql-connector", params={"url": "mysql://db/x"})
    assert settings.driver == "mysql-connector"


def test_sqlite_urls(tmp_path: Path) -> None:
    assert load_settings(params={"url": "sqlite:///:memory:"}).params["path"] == ":memory:"
    assert load_settings(params={"url": "sqlite:///app.db"}).params["path"] == str(
        tmp_path / "app.db"
    )
    assert load_settings(params={"url": "sqlite:////var/app.db"}).params["path"] == "/var/app.db"
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "config.yaml"
    path.write_text("database:\n  primary:\n    url: 'sqlite:///data.db'\n")
    settings = load_settings(config=str(path))
    assert (settings.driver, settings.params["path"]) == ("sqlite", str(conf / "data.db"))


def test_url_in_entry_with_keys_beside_it(tmp_path: Path) -> None:
    path = entry(tmp_path, "url: 'mysql://app@db:3307/shop'\ndatabase: other\npassword: pw")
    settings = load_settings(config=path)
    assert dict(settings.params) == {
        "host": "db",
        "port": 3307,
        "user": "app",
        "database": "other",
        "password": "pw",
    }


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = entry(tmp_path, "host: db\nport: '3306'\nuser: app\ndatabase: shop")
    assert load_settings(config=path).params["port"] == 3306  # a quoted port
    monkeypatch.setenv("DBPOOL_PRIMARY_PORT", "3310")
    monkeypatch.setenv("DBPOOL_PRIMARY_DATABASE", "staging")
    params = load_settings(config=path).params
    assert (params["host"], params["port"], params["database"]) == ("db", 3310, "staging")
    monkeypatch.setenv("DBPOOL_PRIMARY_URL", f"mysql://ops:{SECRET}@other:3399/ignored")
    params = load_settings(config=path).params
    # The URL replaces the entry's target; _PORT and _DATABASE still win over it.
    assert (params["host"], params["user"], params["password"]) == ("other", "ops", SECRET)
    assert (params["port"], params["database"]) == (3310, "staging")
    monkeypatch.setenv("DBPOOL_PRIMARY_PORT", "33o6")
    with pytest.raises(ConfigError, match=r"\$DBPOOL_PRIMARY_PORT must be a port number"):
        load_settings(config=path)


def test_config_false_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text("not: [valid")
    monkeypatch.setenv("DBPOOL_CONFIG", str(tmp_path / "missing.yaml"))
    pool = make_pool(config=False, path=":memory:")
    try:
        assert pool.settings.source is None
    finally:
        pool.dispose()


# -- the options on SQLite ------------------------------------------------------------


@pytest.fixture
def sqlite_pool(tmp_path: Path) -> Any:
    made: list[Any] = []

    def new(**options: Any) -> Any:
        pool = make_pool(path=str(tmp_path / "db.sqlite3"), config=False, **options)
        made.append(pool)
        return pool

    yield new
    for pool in made:
        pool.dispose()


def test_a_closed_sqlite_connection_is_retired_at_return(sqlite_pool: Any) -> None:
    pool = sqlite_pool(size=1, pre_ping=False)
    conn = pool.acquire()
    conn.dbapi_connection.close()
    pool.release(conn)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    assert pool.get_stats()["closed_broken"] == 1


def test_password_provider_errors_are_connect_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def provider() -> str:
        raise RuntimeError(f"vault says no to {SECRET}")

    pool = make_pool(host="127.0.0.1", port=1, password=provider, timeout=2, config=False)
    try:
        with pytest.raises(ConnectError, match=r"provider .* failed \(RuntimeError\)") as e:
            pool.acquire()
        assert SECRET not in str(e.value)
        assert pool.get_stats()["connect_failures"] == 1
    finally:
        pool.dispose()


def test_every_pool_option_is_a_typed_keyword() -> None:
    import inspect

    from dbpool.config import POOL_OPTION_NAMES

    for function in (make_pool, ConnectionPool.__init__):
        parameters = inspect.signature(function).parameters
        missing = POOL_OPTION_NAMES - set(parameters)
        assert not missing, (function, missing)
        assert all(parameters[name].annotation != "Any" for name in POOL_OPTION_NAMES)


def test_wait_times_out_while_a_silent_server_holds_the_connects() -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts into the backlog, never says hello
    port = silent.getsockname()[1]
    pool = make_pool(
        host="127.0.0.1", port=port, user="u", password="p", min_idle=1, timeout=30, config=False
    )
    try:
        with pytest.raises(PoolTimeout, match="opened 0 of its 1 min_idle connections"):
            pool.wait(0.3)
    finally:
        pool.dispose()
        silent.close()


def test_maintenance_thread_ends_with_a_dropped_pool() -> None:
    import gc

    def maintainers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "dbpool-maintenance"}

    before = maintainers()
    pool = make_pool(path=":memory:", min_idle=1, wait=True, config=False)
    started = maintainers() - before
    assert len(started) == 1
    del pool
    gc.collect()
    thread = started.pop()
    thread.join(5)
    assert not thread.is_alive()


def test_sqlite_max_idle_lifo_and_resize(sqlite_pool: Any) -> None:
    # Two seconds: the connection given back is still there when asked for again,
    # however long a busy machine pauses this thread in between.
    pool = sqlite_pool(size=3, max_idle=2.0, order="lifo")
    a, b = pool.acquire(), pool.acquire()
    raw_b = b.dbapi_connection
    pool.release(a)
    pool.release(b)
    with pool.connection() as conn:
        assert conn.dbapi_connection is raw_b  # lifo: the last given back
    deadline = time.monotonic() + 30
    while pool.get_stats()["total_connections"] and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    stats = pool.get_stats()
    assert (stats["total_connections"], stats["closed_idle"]) == (0, 2)
    pool.resize(size=1, max_overflow=0)
    held = pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=0.05)
    pool.resize(max_overflow=1)
    pool.release(pool.acquire(timeout=10))  # the new slot: lent at once
    pool.release(held)
    assert pool.get_stats()["max_size"] == 2


def test_min_idle_retries_after_a_failed_connect(
    sqlite_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    service = {"up": False}

    def provider() -> str:
        if not service["up"]:
            raise RuntimeError("token service down")
        return "unused by sqlite"

    pool = sqlite_pool(size=2, min_idle=2, password=provider, driver="sqlite")
    with pytest.raises(ConnectError, match="password provider"):
        pool.wait(5)
    with pytest.raises(ConnectError, match="password provider"):
        pool.wait(5)  # still failing: raised again at once
    service["up"] = True
    pool.wait(5)  # the maintenance thread retries with a growing pause
    stats = pool.get_stats()
    assert stats["pool_size"] == 2 and stats["connect_failures"] >= 2
    warnings = [
        r for r in caplog.records if "min_idle connections of 'primary' (sqlite" in r.getMessage()
    ]
    assert [r.levelname for r in warnings][:1] == ["WARNING"]
    assert all(r.levelname == "DEBUG" for r in warnings[1:])


def test_hooks_run_with_no_pool_lock_held(sqlite_pool: Any) -> None:
    # Each hook takes the pool's lock (get_stats() does): were it called under the lock,
    # the lock (not reentrant) would deadlock the thread.
    holder: list[Any] = []
    seen: list[str] = []

    def hook(name: str) -> Any:
        def call(*args: Any) -> Any:
            holder[0].get_stats()
            seen.append(name)
            return "pw" if name == "password" else None

        return call

    pool = sqlite_pool(
        size=1,
        min_idle=1,
        max_usage=2,
        driver="sqlite",
        reset="session",
        password=hook("password"),
        configure=hook("configure"),
    )
    holder.append(pool)
    for event in ("connect", "checkout", "checkin", "close"):
        pool.add_listener(event, hook(event))

    def work() -> None:
        pool.wait(5)
        for _ in range(2):  # given back once, then closed at its second return
            with pool.connection():
                pass

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "a hook ran under the pool's lock"
    assert {"password", "configure", "connect", "checkout", "checkin", "close"} <= set(seen)
