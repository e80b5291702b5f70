"""Bad arguments and hostile config files: each a clear error naming its cause, no password.

tests/test_config.py covers the ordinary mistakes of the loader; this table goes
through the public constructors, and through YAML written to hurt.
"""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbpool import ConfigError, ConnectionPool, PoolError, load_settings, make_pool
from dbpool.config import MAX_CONFIG_BYTES
from tests.bad_options import AS_ARGUMENTS, AS_ARGUMENTS_IDS, BAD_POOL_OPTIONS
from tests.bad_options import IDS as BAD_IDS

SECRET = "hunter2-bad-input-secret"


def full_text(exc: BaseException) -> str:
    """Everything a user could see of an error: message, repr, whole chained traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


MYSQL = {"host": "127.0.0.1", "port": 1, "user": "u", "password": SECRET}

# (arguments of make_pool, exception type, words the message must contain); the pool
# options themselves are in tests/bad_options.py, for every entry point.
BAD_ARGUMENTS: list[tuple[dict[str, Any], type[BaseException], str]] = [
    ({"mode": "pooled"}, ValueError, "mode must be one of 'shared', 'persistent' (got 'pooled')"),
    ({"mode": 3}, ValueError, "mode must be one of 'shared', 'persistent' (got 3)"),
    ({"driver": "oracle"}, ValueError, "'pymysql', 'mysql-connector', 'sqlite'"),
    ({"driver": 5}, ValueError, "driver"),
    # None leaves an option to the config file or the default.
    ({"max_overflow": None, "size": -3}, ConfigError, "size cannot be negative"),
    ({**MYSQL, "port": 0}, ConfigError, "port must be an integer from 1 to 65535 (got 0)"),
    ({**MYSQL, "port": 70000}, ConfigError, "port must be an integer from 1 to 65535"),
    ({**MYSQL, "port": "33o6"}, ConfigError, "port must be an integer from 1 to 65535"),
    ({**MYSQL, "port": True}, ConfigError, "port must be an integer from 1 to 65535"),
    ({**MYSQL, "host": 127}, ConfigError, "host must be a string or a list of strings (got 127)"),
    ({**MYSQL, "user": ["root"]}, ConfigError, "user must be a string"),
    ({**MYSQL, "password": 1234}, ConfigError, "password must be a string"),
    ({**MYSQL, "ip": "a", "host": "b"}, ConfigError, "'ip' and 'host' differ"),
    ({**MYSQL, "db": "a", "database": "b"}, ConfigError, "'db' and 'database' differ"),
    (
        {"config": "/nonexistent/dbpool.yaml"},
        ConfigError,
        "config file /nonexistent/dbpool.yaml (from the config argument) does not exist",
    ),
    ({"config_name": "nope", "config": "EXISTING"}, ConfigError, "config 'nope' not found"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    BAD_ARGUMENTS,
    ids=[repr(sorted(k.items()))[:60] for k, _, _ in BAD_ARGUMENTS],
)
def test_bad_argument(
    kwargs: dict[str, Any], error: type[BaseException], words: str, tmp_path: Path
) -> None:
    if kwargs.get("config") == "EXISTING":
        path = tmp_path / "config.yaml"
        path.write_text(f"database:\n  primary:\n    password: {SECRET}\n")
        kwargs = {**kwargs, "config": str(path)}
    with pytest.raises(error) as caught:
        make_pool(**kwargs)
    print(f"\nbad-argument {kwargs!r:.70}: {type(caught.value).__name__}: {caught.value}")
    assert words in str(caught.value)
    assert SECRET not in full_text(caught.value)


@pytest.mark.parametrize(("options", "message"), AS_ARGUMENTS, ids=AS_ARGUMENTS_IDS)
def test_bad_pool_option_argument(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConnectionPool(**MYSQL, **options)
    assert re.search(message, str(caught.value))
    assert SECRET not in full_text(caught.value)


@pytest.mark.parametrize(("options", "message"), BAD_POOL_OPTIONS, ids=BAD_IDS)
def test_bad_pool_option_in_the_config_file(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    entry = {"host": "127.0.0.1", "password": SECRET, "pool": options}
    path.write_text(yaml.safe_dump({"database": {"primary": entry}}))
    with pytest.raises(ConfigError) as caught:
        ConnectionPool(config=str(path))
    assert re.search(message, str(caught.value))
    assert str(path) in str(caught.value)
    assert SECRET not in full_text(caught.value)


@pytest.mark.parametrize(
    ("method", "kwargs", "words"),
    [
        ("acquire", {"max_retries": -1}, "max_retries cannot be negative (got -1)"),
        ("release", {"conn": object()}, "which is not a connection of pool"),
    ],
)
def test_bad_call_arguments(method: str, kwargs: dict[str, Any], words: str) -> None:
    pool = make_pool(path=":memory:", password=SECRET)
    try:
        with pytest.raises((ValueError, PoolError)) as caught:
            getattr(pool, method)(**kwargs)
    finally:
        pool.dispose()
    assert words in str(caught.value)
    assert SECRET not in full_text(caught.value)


def test_parameter_the_driver_does_not_take_is_named_when_the_pool_is_made() -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(**MYSQL, bogus_option=1, timeout=2)
    assert str(caught.value) == "unknown option 'bogus_option'"
    assert SECRET not in full_text(caught.value)


def test_parameter_of_the_right_name_and_wrong_type_is_named_at_first_use() -> None:
    pool = make_pool(**MYSQL, client_flag="many", timeout=2)
    try:
        with pytest.raises(ConfigError) as caught:
            pool.acquire()
    finally:
        pool.dispose()
    assert "rejected the connection parameters" in str(caught.value)
    assert SECRET not in full_text(caught.value)


def test_unreachable_server_error_has_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dbpool")
    pool = ConnectionPool(**MYSQL, timeout=2)
    try:
        with pytest.raises(PoolError) as caught:
            pool.acquire()
        seen = full_text(caught.value) + repr(pool) + str(pool.get_stats()) + caplog.text
    finally:
        pool.dispose()
    assert "cannot connect to" in str(caught.value)
    assert SECRET not in seen
    assert SECRET not in repr(pool.settings)


# -- hostile YAML -------------------------------------------------------------------


def laughs(levels: int, width: int = 9) -> str:
    lines = ["database:", "  primary:", f"    password: {SECRET}", "    a0: &a0 [lol]"]
    for level in range(1, levels):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"    a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def mapping_laughs(levels: int) -> str:
    lines = ["database:", "  primary:", f"    password: {SECRET}", "    ssl: &m0 {k: v}"]
    for level in range(1, levels):
        lines.append(
            f"    m{level}: &m{level} {{a: *m{level - 1}, b: *m{level - 1}, c: *m{level - 1}}}"
        )
    lines.append(f"    top: *m{levels - 1}")
    return "\n".join(lines) + "\n"


HOSTILE_YAML: list[tuple[str, str, str]] = [
    (
        "python-object",
        "database:\n  primary: !!python/object/apply:os.system ['echo pwned']\n",
        "not valid YAML",
    ),
    ("python-name", "database: !!python/name:os.system\n", "not valid YAML"),
    ("billion-laughs-lists", laughs(12), "expands to more than"),
    ("billion-laughs-mappings", mapping_laughs(20), "expands to more than"),
    (
        "recursive-alias",
        f"database:\n  primary: &p\n    password: {SECRET}\n    self: *p\n",
        "nested more than",
    ),
    ("deep-nesting", "database:\n  primary:\n    x: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("root-list", "- database\n- primary\n", "top level must be a mapping"),
    ("root-scalar", "just text\n", "top level must be a mapping"),
    ("root-number", "42\n", "top level must be a mapping"),
    ("empty", "", "top level must be a mapping"),
    ("null-root", "~\n", "top level must be a mapping"),
    ("database-scalar", "database: 7\n", "has no 'database:' mapping"),
    ("entry-list", "database:\n  primary: [a, b]\n", "must be a mapping of connection settings"),
    ("pool-scalar", "database:\n  primary:\n    pool: fast\n", "'pool:' must be a mapping"),
    (
        "pool-bad-size",
        "database:\n  primary:\n    pool: {size: many}\n",
        "size must be an integer (got 'many')",
    ),
    ("port-text", "database:\n  primary:\n    port: http\n", "port must be an integer"),
    (
        "password-list",
        f"database:\n  primary:\n    password: [{SECRET}]\n",
        "password must be a string",
    ),
    ("unknown-driver", "database:\n  primary:\n    driver: db2\n", "driver must be one of"),
    ("tabs", f"database:\n\tprimary:\n\t\tpassword: {SECRET}\n", "not valid YAML"),
    ("unclosed-quote", f'database:\n  primary:\n    password: "{SECRET}\n', "not valid YAML"),
    ("duplicate-anchor-missing", "database:\n  primary: *nowhere\n", "not valid YAML"),
    ("non-string-key", "database:\n  primary:\n    1: x\n", "setting names must be strings"),
]


@pytest.mark.parametrize(
    ("text", "words"),
    [(t, w) for _, t, w in HOSTILE_YAML],
    ids=[name for name, _, _ in HOSTILE_YAML],
)
def test_hostile_yaml(text: str, words: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config=path)
    assert words in str(caught.value)
    assert str(path) in str(caught.value)
    assert SECRET not in full_text(caught.value)


def test_huge_config_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("w") as f:
        f.write(f"database:\n  primary:\n    password: {SECRET}\n    junk: '")
        f.write("x" * (MAX_CONFIG_BYTES + 10))
        f.write("'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config=path)
    assert "is larger than" in str(caught.value)
    assert SECRET not in full_text(caught.value)


def test_binary_garbage_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config=path)


def test_safe_load_builds_no_python_object(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "config.yaml"
    path.write_text(
        "database:\n  primary: !!python/object/apply:pathlib.Path.touch "
        f"[!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    with pytest.raises(ConfigError):
        load_settings(config=path)
    assert not marker.exists()


# -- property-based: whatever the file holds, a ConfigError or a result --------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
entry_keys = st.sampled_from(
    [
        "host",
        "ip",
        "port",
        "user",
        "password",
        "db",
        "database",
        "charset",
        "driver",
        "pool",
        "path",
        "password_env",
        "ssl",
    ]
)
pool_keys = st.sampled_from(
    [
        "size",
        "max_overflow",
        "timeout",
        "recycle",
        "pre_ping",
        "ping_interval",
        "ping_timeout",
        "reset",
        "mode",
        "leak_threshold",
        "bogus",
    ]
)
entries = st.dictionaries(
    entry_keys,
    st.one_of(yaml_values, st.dictionaries(pool_keys, yaml_scalars, max_size=5)),
    max_size=8,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entry=entries)
def test_any_entry_gives_settings_or_a_config_error(entry: dict[str, Any], tmp_path: Path) -> None:
    entry = {**entry, "password": SECRET}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"primary": entry}}))
    try:
        result = load_settings(config=path)
    except ConfigError as exc:
        assert SECRET not in full_text(exc)
    else:
        assert SECRET not in repr(result)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=300))
def test_any_text_gives_settings_or_a_config_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"# password: {SECRET}\n" + text, encoding="utf-8")
    try:
        load_settings(config=path)
    except ConfigError as exc:
        assert SECRET not in full_text(exc)
