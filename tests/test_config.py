"""Unit tests of dbpool.config: finding the file, precedence, validation, secrets."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dbpool.config import (
    DEFAULT_SQLITE_PATH,
    DRIVERS,
    MODES,
    POOL_OPTION_NAMES,
    RESET_POLICIES,
    PoolOptions,
    Settings,
    find_config_file,
    load_settings,
    set_password_decoder,
    validate_pool_options,
)
from dbpool.errors import ConfigError, PoolError
from tests.bad_options import BAD_POOL_OPTIONS
from tests.bad_options import IDS as BAD_IDS

SECRET = "s3cr3t-PW"

PRIMARY = """
database:
  primary:
    ip: "127.0.0.1"
    port: 3306
    user: "app"
    password: "s3cr3t-PW"
    db: "appdb"
    charset: utf8mb4
    connect_timeout: 5
    pool: {size: 7, max_overflow: 2, timeout: 12, pre_ping: false}
  embedded:
    driver: sqlite
    path: "./data/dbpool.sqlite3"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(tmp_path / "conf" / "config.yaml", PRIMARY)


def entry_file(tmp_path: Path, entry: str, name: str = "primary") -> Path:
    """A config file whose only entry ``name`` has the given (YAML) body."""
    body = textwrap.indent(textwrap.dedent(entry), "    ")
    return write(tmp_path / "conf" / "config.yaml", f"database:\n  {name}:\n{body}")


# --- constants and PoolOptions ---------------------------------------------------------


def test_constants() -> None:
    assert DRIVERS == ("pymysql", "mysql-connector", "sqlite")
    assert MODES == ("shared", "persistent")
    assert RESET_POLICIES == ("rollback", "session")
    assert DEFAULT_SQLITE_PATH == "dbpool.sqlite3"
    assert issubclass(ConfigError, PoolError)
    assert issubclass(ConfigError, ValueError)


def test_pool_option_defaults_and_max_size() -> None:
    options = PoolOptions()
    assert options == PoolOptions(
        mode="shared",
        size=10,
        max_overflow=5,
        timeout=30.0,
        recycle=3600.0,
        pre_ping=True,
        ping_interval=1.0,
        ping_timeout=5.0,
        reset="rollback",
        leak_threshold=None,
        host_order="sequential",
        host_deny_seconds=30.0,
        galera_check=False,
        replica_fallback=True,
        replica_max_lag=None,
        causal_reads=False,
    )
    assert options.max_size == 15
    assert PoolOptions(size=0, max_overflow=1).max_size == 1
    assert set(POOL_OPTION_NAMES) == {
        "mode",
        "size",
        "max_overflow",
        "timeout",
        "recycle",
        "pre_ping",
        "ping_interval",
        "ping_timeout",
        "reset",
        "leak_threshold",
        "min_idle",
        "max_idle",
        "order",
        "max_waiting",
        "max_usage",
        "init_sql",
        "configure",
        "wait",
        "host_order",
        "host_deny_seconds",
        "galera_check",
        "replica_fallback",
        "replica_max_lag",
        "causal_reads",
    }


def test_validate_pool_options_accepts_good_values() -> None:
    options = validate_pool_options(
        {
            "mode": "persistent",
            "size": 0,
            "max_overflow": 3,
            "timeout": 0,
            "recycle": 0,
            "pre_ping": False,
            "ping_interval": 0.5,
            "reset": "session",
            "leak_threshold": 2.5,
        },
        where="test",
    )
    assert options.mode == "persistent"
    assert options.max_size == 3
    assert options.timeout == 0
    assert options.leak_threshold == 2.5
    assert validate_pool_options({}, where="test") == PoolOptions()


def test_unknown_pool_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"^ConnectionPool\(\): unknown pool option 'sise'") as e:
        validate_pool_options({"sise": 3}, where="ConnectionPool()")
    assert "'sise'; did you mean 'size'?; valid options: 'causal_reads', 'configure'" in str(
        e.value
    )


@pytest.mark.parametrize(("options", "message"), BAD_POOL_OPTIONS, ids=BAD_IDS)
def test_bad_pool_option_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^here: {message}"):
        validate_pool_options(options, where="here")


def test_pool_needs_at_least_one_connection() -> None:
    message = r"size \+ max_overflow must be at least 1 \(got 0 \+ 0\)"
    with pytest.raises(ConfigError, match=message):
        validate_pool_options({"size": 0, "max_overflow": 0}, where="here")


def test_pool_options_validate_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="max_overflow cannot be negative"):
        PoolOptions(max_overflow=-1)
    with pytest.raises(ValueError, match="mode must be one of"):
        PoolOptions(mode="threaded")


# --- find_config_file ------------------------------------------------------------------


def test_no_config_file_anywhere_gives_none() -> None:
    assert find_config_file() is None


def test_local_config_yaml_is_found(cwd: Path) -> None:
    local = write(cwd / "config.yaml", PRIMARY)
    assert find_config_file() == local


def test_environment_variable_is_used(
    config_file: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(cwd / "config.yaml", PRIMARY)
    monkeypatch.setenv("DBPOOL_CONFIG", str(config_file))
    assert find_config_file() == config_file


def test_empty_environment_variable_counts_as_unset(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = write(cwd / "config.yaml", PRIMARY)
    monkeypatch.setenv("DBPOOL_CONFIG", "")
    assert find_config_file() == local


def test_explicit_path_beats_environment(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = write(tmp_path / "other.yaml", PRIMARY)
    monkeypatch.setenv("DBPOOL_CONFIG", str(config_file))
    assert find_config_file(other) == other
    assert find_config_file(str(other)) == other


def test_relative_explicit_path_is_made_absolute(cwd: Path) -> None:
    write(cwd / "sub" / "my.yaml", PRIMARY)
    found = find_config_file("sub/my.yaml")
    assert found is not None
    assert found.is_absolute()
    assert found == cwd / "sub" / "my.yaml"


def test_missing_explicit_path_is_an_error_not_a_fallback(
    tmp_path: Path, config_file: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(cwd / "config.yaml", PRIMARY)
    monkeypatch.setenv("DBPOOL_CONFIG", str(config_file))
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing} (from the config argument)")):
        find_config_file(missing)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=missing)


def test_missing_environment_path_is_an_error_not_a_fallback(
    tmp_path: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(cwd / "config.yaml", PRIMARY)
    missing = tmp_path / "gone.yaml"
    monkeypatch.setenv("DBPOOL_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=re.escape(f"{missing} (from $DBPOOL_CONFIG)")):
        find_config_file()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        find_config_file(tmp_path)


# --- load_settings from a file ---------------------------------------------------------


def test_entry_becomes_neutral_params(config_file: Path) -> None:
    settings = load_settings(config=config_file)
    assert settings.config_name == "primary"
    assert settings.driver == "pymysql"
    assert dict(settings.params) == {
        "host": "127.0.0.1",
        "port": 3306,
        "user": "app",
        "password": SECRET,
        "database": "appdb",
        "charset": "utf8mb4",
        "connect_timeout": 5,
    }
    assert settings.pool == PoolOptions(size=7, max_overflow=2, timeout=12, pre_ping=False)
    assert settings.source == str(config_file)


def test_host_and_database_spellings(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "host: db.example\ndatabase: app\nip: db.example\n")
    params = load_settings(config=path).params
    assert params["host"] == "db.example"
    assert params["database"] == "app"
    assert "ip" not in params
    assert "db" not in params


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ip: a.example\nhost: b.example\n", r"'ip' and 'host' differ \('a.example' vs 'b.exa"),
        ("db: one\ndatabase: two\n", r"'db' and 'database' differ \('one' vs 'two'\)"),
    ],
)
def test_conflicting_spellings_are_an_error(tmp_path: Path, entry: str, message: str) -> None:
    path = entry_file(tmp_path, entry)
    with pytest.raises(ConfigError, match=message):
        load_settings(config=path)


def test_entry_only_keys_are_not_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PW", SECRET)
    path = entry_file(tmp_path, "driver: mysql-connector\npassword_env: APP_PW\npool: {size: 1}\n")
    settings = load_settings(config=path)
    assert settings.driver == "mysql-connector"
    assert dict(settings.params) == {"password": SECRET}


def test_local_config_yaml_is_used_by_load_settings(cwd: Path) -> None:
    write(cwd / "config.yaml", PRIMARY)
    settings = load_settings()
    assert settings.source == str(cwd / "config.yaml")
    assert settings.params["user"] == "app"


def test_environment_config_is_used_by_load_settings(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBPOOL_CONFIG", str(config_file))
    assert load_settings().source == str(config_file)


# --- precedence: argument > entry > default --------------------------------------------


def test_driver_precedence(tmp_path: Path) -> None:
    no_driver = entry_file(tmp_path, "host: h\n", name="a")
    assert load_settings("a", config=no_driver).driver == "pymysql"
    with_driver = entry_file(tmp_path, "host: h\ndriver: mysql-connector\n", name="b")
    assert load_settings("b", config=with_driver).driver == "mysql-connector"
    assert load_settings("b", config=with_driver, driver="pymysql").driver == "pymysql"


def test_pool_option_precedence(config_file: Path) -> None:
    pool = load_settings(config=config_file, pool_options={"size": 3, "mode": "persistent"}).pool
    assert pool.size == 3  # argument over the entry's 7
    assert pool.mode == "persistent"  # argument over the default
    assert pool.max_overflow == 2  # entry over the default 5
    assert pool.timeout == 12  # entry
    assert pool.recycle == 3600.0  # default


def test_param_precedence(config_file: Path) -> None:
    params = load_settings(
        config=config_file,
        params={"host": "10.0.0.9", "database": "other", "ssl": {"ca": "/ca.pem"}, "port": None},
    ).params
    assert params["host"] == "10.0.0.9"  # argument over the entry's ip
    assert params["database"] == "other"
    # The ssl mapping becomes the flat options every driver takes; a CA given is verified.
    assert "ssl" not in params
    assert (params["ssl_ca"], params["ssl_verify_cert"]) == ("/ca.pem", True)
    assert params["port"] == 3306  # None means "not given"
    assert params["user"] == "app"  # entry


def test_caller_may_use_the_entry_spellings(config_file: Path) -> None:
    params = load_settings(config=config_file, params={"ip": "h2", "db": "d2"}).params
    assert (params["host"], params["database"]) == ("h2", "d2")
    assert "ip" not in params


def test_settings_params_are_read_only_copies(config_file: Path) -> None:
    given = {"host": "h"}
    settings = load_settings(config=config_file, params=given)
    given["host"] = "changed"
    assert settings.params["host"] == "h"
    with pytest.raises(TypeError):
        settings.params["host"] = "x"  # type: ignore[index]


# --- no config file --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["primary", "reporting"])
def test_no_file_and_no_params_gives_embedded_sqlite(cwd: Path, name: str) -> None:
    settings = load_settings(name)
    assert settings.driver == "sqlite"
    assert dict(settings.params) == {"path": str(cwd / DEFAULT_SQLITE_PATH)}
    assert Path(settings.params["path"]).is_absolute()
    assert settings.source is None
    assert settings.pool == PoolOptions()


def test_no_file_non_connection_params_keep_sqlite(cwd: Path) -> None:
    settings = load_settings(params={"connect_timeout": 3})
    assert settings.driver == "sqlite"
    assert settings.params["path"] == str(cwd / DEFAULT_SQLITE_PATH)


@pytest.mark.parametrize(
    "given",
    [{"host": "db"}, {"user": "u"}, {"database": "d"}, {"password": "p"}, {"port": 3307}],
)
def test_no_file_with_connection_params_defaults_to_pymysql(given: dict[str, Any]) -> None:
    settings = load_settings(params=given)
    assert settings.driver == "pymysql"
    assert dict(settings.params) == given  # no host or port added: the adapter's business


@pytest.mark.parametrize("driver", ["pymysql", "mysql-connector"])
def test_no_file_explicit_mysql_driver_uses_params_as_given(driver: str) -> None:
    settings = load_settings(driver=driver)
    assert settings.driver == driver
    assert dict(settings.params) == {}
    assert settings.source is None


def test_no_file_explicit_sqlite_driver(cwd: Path) -> None:
    settings = load_settings(driver="sqlite", pool_options={"size": 1})
    assert settings.params["path"] == str(cwd / DEFAULT_SQLITE_PATH)
    assert settings.pool.size == 1


def test_caller_sqlite_path_is_resolved_against_cwd(cwd: Path) -> None:
    settings = load_settings(driver="sqlite", params={"path": "data/x.db"})
    assert settings.params["path"] == str(cwd / "data" / "x.db")
    memory = load_settings(driver="sqlite", params={"path": ":memory:"})
    assert memory.params["path"] == ":memory:"


# --- sqlite entries --------------------------------------------------------------------


def test_relative_sqlite_path_is_resolved_against_the_config_directory(
    config_file: Path, cwd: Path
) -> None:
    settings = load_settings("embedded", config=config_file)
    assert settings.driver == "sqlite"
    assert settings.params["path"] == str(config_file.parent / "data" / "dbpool.sqlite3")
    assert not settings.params["path"].startswith(str(cwd))


def test_absolute_and_memory_sqlite_paths_are_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "abs.db"
    path = entry_file(tmp_path, f"driver: sqlite\npath: '{absolute}'\n")
    assert load_settings(config=path).params["path"] == str(absolute)
    path = entry_file(tmp_path, "driver: sqlite\npath: ':memory:'\n")
    assert load_settings(config=path).params["path"] == ":memory:"


def test_sqlite_entry_needs_a_path(tmp_path: Path, cwd: Path) -> None:
    path = entry_file(tmp_path, "driver: sqlite\n", name="embedded")
    with pytest.raises(ConfigError, match=r"config 'embedded' in .*needs a 'path'"):
        load_settings("embedded", config=path)
    given = load_settings("embedded", config=path, params={"path": "x.db"})
    assert given.params["path"] == str(cwd / "x.db")


def test_sqlite_entry_ignores_server_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBPOOL_EMBEDDED_HOST", "db.example")
    monkeypatch.setenv("DBPOOL_EMBEDDED_PASSWORD", SECRET)
    params = load_settings("embedded", config=config_file).params
    assert "host" not in params
    assert "password" not in params


# --- bad files and entries -------------------------------------------------------------


def test_invalid_yaml_names_the_file_and_line_but_not_the_password(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        f"""\
        database:
          primary:
            user: app
            password: {SECRET}: oops
        """,
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML at line 4") as e:
        load_settings(config=path)
    assert SECRET not in str(e.value)
    assert e.value.__cause__ is None  # yaml's own message would quote the line


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00database")
    with pytest.raises(ConfigError, match=r"cannot read config file .*binary\.yaml"):
        load_settings(config=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"top level must be a mapping .*\(got nothing\)"),
        ("- a\n- b\n", r"top level must be a mapping .*\(got list\)"),
        ("other: {}\n", r"has no 'database:' mapping"),
        ("database: [primary]\n", r"has no 'database:' mapping .*\(got list\)"),
        ("database:\n  primary: just-a-string\n", r"config 'primary' in .* must be a mapping"),
        ("database:\n  primary:\n", r"must be a mapping of connection settings \(got nothing\)"),
        ("database:\n  primary:\n    pool: [1]\n", r"'pool:' must be a mapping \(got list\)"),
    ],
)
def test_bad_structure(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config=path)


def test_bare_pool_line_means_defaults(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "host: h\npool:\n")
    assert load_settings(config=path).pool == PoolOptions()


def test_unknown_config_name_lists_the_names_sorted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        """\
        database:
          zeta: {host: z}
          alpha: {host: a}
          primary: {host: p}
        """,
    )
    message = r"config 'replica' not found in .*; configs there: 'alpha', 'primary', 'zeta'$"
    with pytest.raises(ConfigError, match=message):
        load_settings("replica", config=path)


def test_pool_section_errors_name_the_file(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "pool: {size: ten}\n")
    message = r"config 'primary' in .*config\.yaml: size must be an integer \(got 'ten'\)"
    with pytest.raises(ConfigError, match=message):
        load_settings(config=path)
    path = entry_file(tmp_path, "pool: {sise: 3}\n")
    with pytest.raises(ConfigError, match=r"yaml: unknown pool option 'sise'; did you"):
        load_settings(config=path)
    path = entry_file(tmp_path, "pool: {size: 0, max_overflow: 0}\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: size \+ max_overflow must be at least 1"):
        load_settings(config=path)


def test_bad_pool_arguments_are_reported_as_arguments(config_file: Path) -> None:
    message = r"^arguments: max_overflow cannot be negative \(got -1\)"
    with pytest.raises(ConfigError, match=message):
        load_settings(config=config_file, pool_options={"max_overflow": -1})
    with pytest.raises(ConfigError, match=r"^arguments: unknown pool option 'colour'"):
        load_settings(pool_options={"colour": "blue"})


def test_unknown_driver_in_file_lists_the_valid_ones(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "driver: oracle\n")
    with pytest.raises(
        ConfigError,
        match=r"config\.yaml: driver must be one of 'pymysql', 'mysql-connector', 'sqlite' "
        r"\(got 'oracle'\)",
    ):
        load_settings(config=path)


def test_unknown_driver_argument_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"driver must be one of 'pymysql', .*\(got 'mysqldb'\)"):
        load_settings(driver="mysqldb")


@pytest.mark.parametrize("port", ["'33o6'", "0", "65536", "true", "3306.0", "-1"])
def test_bad_port_in_file(tmp_path: Path, port: str) -> None:
    path = entry_file(tmp_path, f"host: h\nport: {port}\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: port must be an integer from 1 to 65535"):
        load_settings(config=path)


@pytest.mark.parametrize("port", ["3306x", 0, 70000, True])
def test_bad_port_argument(port: Any) -> None:
    with pytest.raises(ConfigError, match=r"^arguments: port must be an integer from 1 to 65535"):
        load_settings(params={"host": "h", "port": port})


def test_port_bounds_are_inclusive() -> None:
    assert load_settings(params={"port": 1}).params["port"] == 1
    assert load_settings(params={"port": 65535}).params["port"] == 65535


def test_non_string_password_is_rejected_without_its_value(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "user: app\npassword: 987654321\n")
    with pytest.raises(ConfigError, match="password must be a string") as e:
        load_settings(config=path)
    assert "987654321" not in str(e.value)


def test_non_string_host_is_rejected(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "host: {a: b}\n")
    with pytest.raises(
        ConfigError,
        match=r"host must be a string or a list of strings "
        r"\(got \{'a': 'b'\}\)",
    ):
        load_settings(config=path)
    path = entry_file(tmp_path, "host: [a, 3]\n")
    with pytest.raises(ConfigError, match=r"host must be a string or a list of strings"):
        load_settings(config=path)


# --- secrets from the environment ------------------------------------------------------


def test_environment_password_overrides_the_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", "from-env")
    assert load_settings(config=config_file).params["password"] == "from-env"


def test_environment_user_and_host_override_the_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBPOOL_PRIMARY_USER", "env-user")
    monkeypatch.setenv("DBPOOL_PRIMARY_HOST", "env-host")
    params = load_settings(config=config_file).params
    assert (params["user"], params["host"]) == ("env-user", "env-host")


def test_empty_environment_override_counts_as_unset(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBPOOL_PRIMARY_HOST", "")
    assert load_settings(config=config_file).params["host"] == "127.0.0.1"


def test_environment_name_is_derived_from_the_config_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = entry_file(tmp_path, "host: h\npassword: file-pw\n", name="read-replica.eu")
    monkeypatch.setenv("DBPOOL_READ_REPLICA_EU_PASSWORD", "env-pw")
    assert load_settings("read-replica.eu", config=path).params["password"] == "env-pw"


def test_password_env_reads_the_named_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = entry_file(tmp_path, "host: h\npassword: file-pw\npassword_env: APP_DB_PW\n")
    monkeypatch.setenv("APP_DB_PW", "var-pw")
    assert load_settings(config=path).params["password"] == "var-pw"
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", "dbpool-pw")  # the DBPOOL_ variable wins
    assert load_settings(config=path).params["password"] == "dbpool-pw"


def test_password_env_missing_variable_is_named(tmp_path: Path) -> None:
    path = entry_file(tmp_path, f"host: h\npassword: {SECRET}\npassword_env: APP_DB_PW\n")
    with pytest.raises(ConfigError, match=r"password_env names \$APP_DB_PW, which is not set") as e:
        load_settings(config=path)
    assert SECRET not in str(e.value)


def test_password_env_must_be_a_name(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "host: h\npassword_env: [A, B]\n")
    with pytest.raises(ConfigError, match=r"password_env must be a variable name"):
        load_settings(config=path)


def test_password_env_is_not_needed_when_the_password_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = entry_file(tmp_path, "host: h\npassword_env: APP_DB_PW\n")
    assert load_settings(config=path, params={"password": "p"}).params["password"] == "p"
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", "e")
    assert load_settings(config=path).params["password"] == "e"


def test_caller_params_beat_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", "env-pw")
    monkeypatch.setenv("DBPOOL_PRIMARY_USER", "env-user")
    params = load_settings(config=config_file, params={"password": "arg-pw", "user": "u"}).params
    assert (params["password"], params["user"]) == ("arg-pw", "u")


def test_environment_applies_without_a_file_for_mysql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", "env-pw")
    assert load_settings(params={"host": "h"}).params["password"] == "env-pw"
    assert "password" not in load_settings().params  # the embedded default stays sqlite


# --- encrypted passwords ---------------------------------------------------------------


def test_encrypted_password_goes_through_the_decoder(tmp_path: Path) -> None:
    seen: list[str] = []

    def decode(text: str) -> str:
        seen.append(text)
        return text[::-1]

    set_password_decoder(decode)
    path = entry_file(tmp_path, f"host: h\npassword: '^{SECRET[::-1]}'\n")
    assert load_settings(config=path).params["password"] == SECRET
    assert seen == [SECRET[::-1]]


def test_encrypted_password_without_a_decoder(tmp_path: Path) -> None:
    path = entry_file(tmp_path, "host: h\npassword: '^ciphertext'\n")
    expected = (
        "password of config 'primary' is encrypted (starts with '^') but no password decoder "
        "is set; call dbpool.set_password_decoder(...)"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(config=path)
    set_password_decoder(str.upper)
    assert load_settings(config=path).params["password"] == "CIPHERTEXT"
    set_password_decoder(None)  # removes it again
    with pytest.raises(ConfigError, match="no password decoder is set"):
        load_settings(config=path)


def test_failing_decoder_is_a_config_error_from_its_exception(tmp_path: Path) -> None:
    def decode(text: str) -> str:
        raise ValueError(f"bad padding in {text}")

    set_password_decoder(decode)
    path = entry_file(tmp_path, f"host: h\npassword: '^{SECRET}'\n")
    with pytest.raises(ConfigError, match=r"password decoder failed for config 'primary'") as e:
        load_settings(config=path)
    assert isinstance(e.value.__cause__, ValueError)
    assert SECRET not in str(e.value)


def test_decoder_must_return_a_string(tmp_path: Path) -> None:
    set_password_decoder(lambda text: text.encode())  # type: ignore[arg-type,return-value]
    path = entry_file(tmp_path, "host: h\npassword: '^abc'\n")
    with pytest.raises(ConfigError, match=r"password decoder returned bytes, not str"):
        load_settings(config=path)


def test_environment_password_may_be_encrypted(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_password_decoder(str.upper)
    monkeypatch.setenv("DBPOOL_PRIMARY_PASSWORD", "^abc")
    assert load_settings(config=config_file).params["password"] == "ABC"


def test_caller_password_is_taken_literally(config_file: Path) -> None:
    # No decoder is set: decoding the argument would raise.
    settings = load_settings(config=config_file, params={"password": "^literal"})
    assert settings.params["password"] == "^literal"


def test_encrypted_entry_password_is_not_decoded_when_the_caller_gives_one(
    tmp_path: Path,
) -> None:
    # No decoder is set: decoding the entry's password would raise.
    path = entry_file(tmp_path, "host: h\npassword: '^ciphertext'\n")
    assert load_settings(config=path, params={"password": "p"}).params["password"] == "p"


def test_decoder_must_be_callable() -> None:
    with pytest.raises(TypeError, match="must be callable or None"):
        set_password_decoder("rot13")  # type: ignore[arg-type]


# --- the password never shows ----------------------------------------------------------


def test_repr_and_describe_hide_the_password(config_file: Path) -> None:
    settings = load_settings(config=config_file, params={"ssl": {"key_password": SECRET}})
    assert settings.params["password"] == SECRET
    text = repr(settings)
    assert SECRET not in text
    assert "'password': '***'" in text
    assert "'ssl_key_password': '***'" in text
    assert text.startswith("Settings(config_name='primary', driver='pymysql', params={")
    assert "pool=PoolOptions(" in text
    assert settings.describe() == "pymysql://app@127.0.0.1:3306/appdb"
    assert SECRET not in str(settings)


def test_describe_variants(config_file: Path) -> None:
    embedded = load_settings("embedded", config=config_file)
    expected = "sqlite://" + str(config_file.parent / "data" / "dbpool.sqlite3")
    assert embedded.describe() == expected
    assert embedded.describe().startswith("sqlite:///")
    memory = load_settings(driver="sqlite", params={"path": ":memory:"})
    assert memory.describe() == "sqlite:///:memory:"
    assert load_settings(params={"host": "::1"}).describe() == "pymysql://[::1]/"
    bare = Settings("x", "mysql-connector", {"host": "h", "database": "d"}, PoolOptions(), None)
    assert bare.describe() == "mysql-connector://h/d"


@pytest.mark.parametrize(
    "entry",
    [
        f"ip: a\nhost: b\npassword: {SECRET}\n",
        f"port: 0\npassword: {SECRET}\n",
        f"password: {SECRET}\npool: {{size: -1}}\n",
        f"password: {SECRET}\npool: {{bogus: 1}}\n",
        f"password: {SECRET}\ndriver: oracle\n",
        f"password: {SECRET}\npassword_env: NOT_SET_ANYWHERE\n",
        f"password: '^{SECRET}'\n",
    ],
)
def test_error_messages_never_contain_the_password(tmp_path: Path, entry: str) -> None:
    path = entry_file(tmp_path, entry)
    with pytest.raises(ConfigError) as e:
        load_settings(config=path)
    assert SECRET not in str(e.value)
    assert SECRET not in repr(e.value)


def test_lone_path_without_a_file_names_a_sqlite_database(cwd: Path) -> None:
    settings = load_settings(params={"path": "app.db"})
    assert settings.driver == "sqlite"
    assert settings.params["path"] == str(cwd / "app.db")
    assert load_settings(params={"path": "app.db", "host": "db1"}).driver == "pymysql"
