"""Host lists without a server: parsing, order, deny windows, the deadline split, config."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dbpool.config import PoolOptions, load_settings
from dbpool.errors import ConfigError
from dbpool.hosts import (
    Address,
    HostList,
    HostsFailed,
    error_verdict,
    parse_hosts,
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Refused(Exception):
    pass


class Denied(Exception):
    pass


def opener(
    clock: Clock, down: set[str], *, cost: float = 0.0, calls: list[tuple[str, float]] | None = None
) -> Any:
    """An open_one that refuses the hosts in ``down`` and takes ``cost`` clock seconds."""

    def open_one(address: Address, seconds: float) -> str:
        if calls is not None:
            calls.append((address.key, seconds))
        clock.now += min(cost, seconds)
        if address.key in down:
            raise Refused(f"refused by {address.key}")
        return f"conn to {address.key}"

    return open_one


def connect(
    hosts: HostList, clock: Clock, down: set[str], deadline: float = 30.0, **kwargs: Any
) -> tuple[Any, Any]:
    return hosts.connect(
        opener(clock, down, **kwargs),
        clock.now + deadline,
        is_permanent=lambda exc: isinstance(exc, Denied),
        describe_error=str,
        errors=(Refused, Denied),
    )


def make(entries: Any, clock: Clock, **kwargs: Any) -> HostList:
    return HostList(parse_hosts(entries, 3306), clock=clock, **kwargs)


# -- parsing -------------------------------------------------------------------------


def test_entries_take_the_port_of_the_entry_where_they_name_none() -> None:
    parsed = parse_hosts(
        ["db1", "db2:3307", "10.0.0.3:3306", "[::1]:3310", "::1", "[fe80::2]"], 3308
    )
    assert [(a.host, a.port) for a in parsed] == [
        ("db1", 3308),
        ("db2", 3307),
        ("10.0.0.3", 3306),
        ("::1", 3310),
        ("::1", 3308),
        ("fe80::2", 3308),
    ]
    assert [a.key for a in parsed] == [
        "db1:3308",
        "db2:3307",
        "10.0.0.3:3306",
        "[::1]:3310",
        "[::1]:3308",
        "[fe80::2]:3308",
    ]


def test_a_string_with_commas_is_a_list_and_no_port_means_3306() -> None:
    parsed = parse_hosts("db1, db2:3307", None)
    assert [a.key for a in parsed] == ["db1:3306", "db2:3307"]
    assert parsed[0].port is None  # the driver's default applies
    assert parse_hosts("db1", None) == (Address("db1", None),)


def test_address_aims_connection_parameters() -> None:
    params = {"host": "x", "port": 1, "user": "u"}
    assert Address("db2", 3307).apply(params) == {"host": "db2", "port": 3307, "user": "u"}
    assert Address("db2", None).apply(params) == {"host": "db2", "user": "u"}
    assert params == {"host": "x", "port": 1, "user": "u"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "host is an empty list"),
        (["db1", ""], "host has an empty entry"),
        (["db1", 3], r"host entries must be strings \(got 3\)"),
        (["db1:0"], "'db1:0': the port must be an integer from 1 to 65535"),
        (["db1:65536"], "port must be an integer from 1 to 65535"),
        (["db1:abc"], "'db1:abc': the port must be"),
        ([":3306"], "':3306' has no host before the port"),
        (["[::1"], r"'\[::1' is not a valid \[address\]:port"),
        (["[::1]x"], r"is not a valid \[address\]:port"),
        (["db 1"], "'db 1' is not a host or host:port"),
        (["db1", "db1:3306"], "host lists db1:3306 twice"),
        (3306, r"host must be a string or a list of strings \(got 3306\)"),
    ],
)
def test_bad_host_entries_are_named(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_hosts(value, None)


# -- order -----------------------------------------------------------------------------


def test_sequential_takes_the_first_usable_host() -> None:
    clock = Clock()
    hosts = make(["a", "b", "c"], clock)
    assert [connect(hosts, clock, set())[1].key for _ in range(3)] == ["a:3306"] * 3


def test_random_spreads_over_usable_hosts_only() -> None:
    clock = Clock()
    hosts = make(["a", "b", "c"], clock, order="random", rng=random.Random(7))
    hosts.connect_failed(hosts.states[1], "refused")
    seen = [connect(hosts, clock, set())[1].key for _ in range(60)]
    assert set(seen) == {"a:3306", "c:3306"}
    assert min(seen.count("a:3306"), seen.count("c:3306")) > 10


# -- the deny list ------------------------------------------------------------------------


def test_failed_host_is_denied_for_its_window_then_preferred_again() -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock, deny_seconds=30)
    raw, state = connect(hosts, clock, {"a:3306"})
    assert (raw, state.key) == ("conn to b:3306", "b:3306")
    figures = hosts.figures()
    assert figures["a:3306"]["denied"] is True
    assert figures["a:3306"]["denied_for"] == 30.0
    assert figures["a:3306"]["connect_failures"] == 1
    assert figures["a:3306"]["last_error"] == "refused by a:3306"
    assert figures["b:3306"] == {
        "role": "primary",
        "connects": 1,
        "connect_failures": 0,
        "denied": False,
        "denied_for": 0.0,
        "last_error": "",
    }
    # While denied, a is not even tried although it is back.
    calls: list[tuple[str, float]] = []
    assert connect(hosts, clock, set(), calls=calls)[1].key == "b:3306"
    assert [key for key, _ in calls] == ["b:3306"]
    clock.now += 29.9
    assert hosts.figures()["a:3306"]["denied_for"] == pytest.approx(0.1)
    assert connect(hosts, clock, set())[1].key == "b:3306"
    clock.now += 0.1
    assert hosts.figures()["a:3306"]["denied"] is False
    assert connect(hosts, clock, set())[1].key == "a:3306"


def test_every_host_denied_means_every_host_is_tried_again() -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock)
    with pytest.raises(HostsFailed) as failed:
        connect(hosts, clock, {"a:3306", "b:3306"})
    assert failed.value.retryable
    assert str(failed.value) == "a:3306: refused by a:3306; b:3306: refused by b:3306"
    # Both denied now; b comes back and is found at once, and its deny ends.
    assert connect(hosts, clock, {"a:3306"})[1].key == "b:3306"
    assert hosts.figures()["b:3306"]["denied"] is False
    assert hosts.figures()["a:3306"]["denied"] is True


def test_a_list_that_may_give_up_does_not_retry_denied_hosts() -> None:
    clock = Clock()
    replicas = make(["r1", "r2"], clock, role="replica", give_up_when_denied=True)
    replicas.unusable(replicas.states[0], "it lags 40s behind")
    assert connect(replicas, clock, set())[1].key == "r2:3306"
    replicas.connect_failed(replicas.states[1], "refused")
    calls: list[tuple[str, float]] = []
    with pytest.raises(HostsFailed) as failed:
        connect(replicas, clock, set(), calls=calls)
    assert calls == []
    assert not failed.value.retryable
    assert failed.value.role == "replica"
    assert str(failed.value) == (
        "r1:3306: denied for 30.0s more after: it lags 40s behind; "
        "r2:3306: denied for 30.0s more after: refused"
    )


def test_zero_deny_seconds_never_skips_a_host() -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock, deny_seconds=0)
    connect(hosts, clock, {"a:3306"})
    assert hosts.figures()["a:3306"]["denied"] is False
    assert connect(hosts, clock, set())[1].key == "a:3306"


def test_a_single_host_raises_the_drivers_own_error() -> None:
    clock = Clock()
    hosts = make("a", clock)
    with pytest.raises(Refused, match="refused by a:3306"):
        connect(hosts, clock, {"a:3306"})
    # Denied, but being the only one it is tried again at once.
    assert connect(hosts, clock, set())[1].key == "a:3306"


def test_permanent_errors_everywhere_are_not_retryable() -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock)

    def open_one(address: Address, seconds: float) -> str:
        raise Denied(f"Access denied on {address.key}")

    with pytest.raises(HostsFailed) as failed:
        hosts.connect(
            open_one,
            clock.now + 5,
            is_permanent=lambda e: isinstance(e, Denied),
            describe_error=str,
            errors=(Refused, Denied),
        )
    assert not failed.value.retryable
    assert str(failed.value) == "a:3306: Access denied on a:3306; b:3306: Access denied on b:3306"


def test_unusable_host_marks_its_connections_stale_and_connect_failure_does_not() -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock)
    a = hosts.states[0]
    opened = clock.now
    hosts.connect_failed(a, "refused")
    assert not hosts.is_stale(a, opened)  # connections open to it are kept
    clock.now += 1
    hosts.unusable(a, "read-only")
    assert hosts.is_stale(a, opened)
    clock.now += 1
    assert not hosts.is_stale(a, clock.now)  # a connection opened later is fine
    # A successful connect does not lift a deny for being unusable.
    clock.now += 1
    assert hosts.is_denied(a)
    hosts.connected(a)
    assert hosts.is_denied(a)


def test_deny_is_logged_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock, owner="'primary' (pymysql://u@a:3306,b:3306/d)")
    with caplog.at_level("WARNING", logger="dbpool"):
        hosts.connect_failed(hosts.states[0], "refused")
        hosts.connect_failed(hosts.states[0], "refused again")
    assert [r.getMessage() for r in caplog.records] == [
        "primary host a:3306 of 'primary' (pymysql://u@a:3306,b:3306/d) denied for 30.0s: refused"
    ]


# -- the deadline ---------------------------------------------------------------------------


def test_each_host_gets_a_share_of_what_is_left() -> None:
    clock = Clock()
    hosts = make(["a", "b", "c"], clock)
    calls: list[tuple[str, float]] = []
    # Each silent host eats all it is given.
    with pytest.raises(HostsFailed):
        connect(hosts, clock, {"a:3306", "b:3306", "c:3306"}, deadline=9.0, cost=100.0, calls=calls)
    assert calls == [("a:3306", 3.0), ("b:3306", 3.0), ("c:3306", 3.0)]


def test_the_last_host_gets_everything_left_and_no_host_starts_after_the_deadline() -> None:
    clock = Clock()
    hosts = make(["a", "b", "c"], clock)
    calls: list[tuple[str, float]] = []
    with pytest.raises(HostsFailed) as failed:
        connect(hosts, clock, {"a:3306", "b:3306", "c:3306"}, deadline=0.8, cost=100.0, calls=calls)
    # a gets at least the minimum share, b the rest, c nothing.
    assert calls == [("a:3306", 0.5), ("b:3306", pytest.approx(0.3))]
    assert str(failed.value).endswith("c:3306: not tried: the deadline passed")
    assert failed.value.retryable


def test_a_quick_refusal_leaves_the_rest_to_the_next_host() -> None:
    clock = Clock()
    hosts = make(["a", "b"], clock)
    calls: list[tuple[str, float]] = []
    _raw, state = connect(hosts, clock, {"a:3306"}, deadline=4.0, calls=calls)
    assert calls == [("a:3306", 2.0), ("b:3306", 4.0)]
    assert state.key == "b:3306"


# -- checks and errors ----------------------------------------------------------------------------


def test_due_for_check_once_per_interval_per_host() -> None:
    clock = Clock()
    hosts = make(["r1", "r2"], clock, role="replica")
    r1, r2 = hosts.states
    assert hosts.due_for_check(r1, 1.0)
    assert not hosts.due_for_check(r1, 1.0)
    assert hosts.due_for_check(r2, 1.0)
    clock.now += 0.99
    assert not hosts.due_for_check(r1, 1.0)
    clock.now += 0.01
    assert hosts.due_for_check(r1, 1.0)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (1290, "read_only"),
        (1792, "read_only"),
        (1836, "read_only"),
        (1047, "not_ready"),
        (2013, "lost"),
        (2006, "lost"),
        (1927, "lost"),
        (1062, None),
        (None, None),
    ],
)
def test_error_verdicts(code: Any, verdict: str | None) -> None:
    assert error_verdict(code) == verdict


# -- config -------------------------------------------------------------------------------------


def entry_file(tmp_path: Path, body: str, name: str = "primary") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"database:\n  {name}:\n" + textwrap.indent(textwrap.dedent(body), "    "))
    return path


def test_yaml_host_list_with_replicas_and_options(tmp_path: Path) -> None:
    path = entry_file(
        tmp_path,
        """\
        host: [db1, "db2:3307", "10.0.0.3:3306"]
        port: 3308
        replicas:
          - r1
          - "[::1]:3309"
        user: app
        password: s3cret
        database: appdb
        pool:
          host_order: random
          host_deny_seconds: 5
          galera_check: true
          replica_fallback: false
          replica_max_lag: 2.5
        """,
    )
    settings = load_settings(config=path)
    assert [a.key for a in settings.hosts] == ["db1:3308", "db2:3307", "10.0.0.3:3306"]
    assert [a.key for a in settings.replicas] == ["r1:3308", "[::1]:3309"]
    assert (settings.params["host"], settings.params["port"]) == ("db1", 3308)
    assert "replicas" not in settings.params
    options = settings.pool
    assert (
        options.host_order,
        options.host_deny_seconds,
        options.galera_check,
        options.replica_fallback,
        options.replica_max_lag,
    ) == ("random", 5, True, False, 2.5)
    assert settings.describe() == "pymysql://app@db1:3308,db2:3307,10.0.0.3:3306/appdb"
    text = repr(settings)
    assert "s3cret" not in text
    assert "replicas=['r1:3308', '[::1]:3309']" in text


def test_a_single_host_is_left_as_given(tmp_path: Path) -> None:
    settings = load_settings(params={"host": "db1", "user": "u"})
    assert dict(settings.params) == {"host": "db1", "user": "u"}
    assert [a.key for a in settings.hosts] == ["db1:3306"]
    assert settings.replicas == ()
    assert settings.describe() == "pymysql://u@db1/"
    assert "hosts=" not in repr(settings)
    # No host at all: the driver's default, which the stats name too.
    assert [a.key for a in load_settings(params={"user": "u"}).hosts] == ["127.0.0.1:3306"]
    # host:port in a single string sets the port.
    settings = load_settings(params={"host": "db1:3307"})
    assert (settings.params["host"], settings.params["port"]) == ("db1", 3307)


def test_host_list_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = entry_file(tmp_path, "host: db0\nuser: u\n")
    monkeypatch.setenv("DBPOOL_PRIMARY_HOST", "db1:3307,db2")
    settings = load_settings(config=path)
    assert [a.key for a in settings.hosts] == ["db1:3307", "db2:3306"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("host: [db1, db1]\n", r"config 'primary' in .*: host lists db1:3306 twice"),
        ("host: [db1, 'db2:99999']\n", "'db2:99999': the port must be an integer"),
        ("host: [db1]\nreplicas: [db1]\n", "'db1:3306' listed both as host and as replica"),
        ("host: db1\nreplicas: {a: 1}\n", "replicas must be a string or a list of strings"),
        ("host: db1\nreplicas: []\n", "replicas is an empty list"),
        (
            "host: db1\nhost_order: random\n",
            "'host_order' belong with the pool options \\(under 'pool:'",
        ),
        (
            "host: db1\npool:\n  host_order: nearest\n",
            "host_order must be one of 'sequential', 'random' \\(got 'nearest'\\)",
        ),
        ("host: db1\npool:\n  host_deny_seconds: -1\n", "host_deny_seconds cannot be negative"),
        ("host: db1\npool:\n  galera_check: 'yes'\n", "galera_check must be true or false"),
        ("host: db1\npool:\n  replica_fallback: 1\n", "replica_fallback must be true or false"),
        ("host: db1\npool:\n  replica_max_lag: .nan\n", "replica_max_lag must be a finite number"),
        (
            "path: x.db\ndriver: sqlite\nreplicas: [r1]\n",
            "host lists and replicas need a MySQL driver \\(got 'sqlite'\\)",
        ),
    ],
)
def test_bad_host_settings_fail_with_their_cause(tmp_path: Path, body: str, message: str) -> None:
    path = entry_file(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        load_settings(config=path)


def test_host_options_as_arguments() -> None:
    settings = load_settings(
        params={"host": ["a", "b"]}, pool_options={"host_order": "random", "replica_max_lag": 3}
    )
    assert settings.pool.host_order == "random"
    with pytest.raises(ConfigError, match="arguments: 'host_order' belong with the pool options"):
        load_settings(params={"host": "a", "host_order": "random"})
    with pytest.raises(ConfigError, match="replica_max_lag cannot be negative"):
        PoolOptions(replica_max_lag=-1)
