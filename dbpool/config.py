"""Find and read ``config.yaml``, validate pool options, and build connection ``Settings``.

Every problem is a ``ConfigError`` that names its origin and cause; no message or
``repr`` produced here ever contains a password.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from dbpool.drivers import DRIVERS, connect_parameters, describe
from dbpool.errors import ConfigError
from dbpool.hosts import HOST_ORDERS, Address, parse_hosts

MODES: tuple[str, ...] = ("shared", "persistent")
RESET_POLICIES: tuple[str, ...] = ("rollback", "session")
ORDERS: tuple[str, ...] = ("fifo", "lifo")
DEFAULT_SQLITE_PATH = "dbpool.sqlite3"

_MYSQL_DRIVERS = ("pymysql", "mysql-connector")
# Keys that mean "connect to this server"; without any of them and without a config
# file, the embedded SQLite database is used.
_CONNECTION_KEYS = ("host", "port", "user", "password", "database", "path")
_ALIASES = {"ip": "host", "db": "database"}
_STRING_KEYS = ("user", "database", "charset", "init_command", "sql_mode")
# Connection parameters in seconds; 0 lifts the bound (see drivers.py for the defaults).
_SECONDS_KEYS = ("connect_timeout", "read_timeout", "write_timeout")
_BOOL_KEYS = ("autocommit", "use_pure")
# The one set of TLS options every MySQL driver takes; ``ssl={...}`` holds the same
# names without the prefix. A CA given means the server's certificate is verified.
_TLS_PATH_KEYS = ("ssl_ca", "ssl_cert", "ssl_key")
_TLS_BOOL_KEYS = ("ssl_verify_cert", "ssl_verify_identity", "ssl_disabled")
_TLS_KEYS = (*_TLS_PATH_KEYS, "ssl_key_password", *_TLS_BOOL_KEYS)
# How each driver puts a password on the wire: a password it cannot encode is refused
# when the pool is built, not at the first connect.
_PASSWORD_ENCODINGS = {"pymysql": "latin-1", "mysql-connector": "utf-8"}
# Entry keys that steer loading and are not connection parameters.
_ENTRY_ONLY_KEYS = ("pool", "driver", "password_env", "password_provider")
# The keys every driver takes (the adapters map or drop them), besides the driver's own.
_COMMON_KEYS = frozenset(
    {
        *_CONNECTION_KEYS,
        *_ALIASES,
        "replicas",
        "charset",
        "url",
        "ssl",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "use_pure",
        "ssl_ca",
        "ssl_cert",
        "ssl_key",
        "ssl_key_password",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "ssl_disabled",
    }
)
# Other pools' names for dbpool's options, for the "did you mean" of a typo.
_OTHER_NAMES = {
    "pool_size": "size",
    "min_size": "min_idle",
    "max_size": "max_overflow",
    "pool_timeout": "timeout",
    "pool_recycle": "recycle",
    "max_lifetime": "recycle",
    "pool_pre_ping": "pre_ping",
    "maxusage": "max_usage",
    "idle_timeout": "max_idle",
    "max_idle_time": "max_idle",
    "connection_init_sql": "init_sql",
    "setsession": "init_sql",
}
# The URL schemes of the `url` option, and the driver each one asks for (None: any MySQL one).
_URL_SCHEMES: dict[str, str | None] = {
    "mysql": None,
    "mariadb": None,
    "mysql+pymysql": "pymysql",
    "mysql+mysqlconnector": "mysql-connector",
    "mysql+mysql-connector": "mysql-connector",
    "sqlite": "sqlite",
}
# Pool options of host lists that belong under `pool:`, not among the connection settings.
_HOST_OPTION_NAMES = (
    "host_order",
    "host_deny_seconds",
    "galera_check",
    "replica_fallback",
    "replica_max_lag",
    "causal_reads",
)
_SECRET_MARKERS = ("pass", "secret", "token")
# A config file is a few hundred bytes; anything this large is a mistake or an attack.
MAX_CONFIG_BYTES = 1024 * 1024
# Bounds on one entry once YAML aliases are expanded (a real one has a few dozen values).
_MAX_ENTRY_VALUES = 10_000
_MAX_ENTRY_DEPTH = 16

_password_decoder: Callable[[str], str] | None = None


@dataclass(frozen=True)
class PoolOptions:
    """How a pool behaves; every value is checked when the object is built."""

    mode: str = "shared"
    size: int = 10
    max_overflow: int = 5
    timeout: float = 30.0
    recycle: float = 3600.0
    pre_ping: bool = True
    ping_interval: float = 1.0
    ping_timeout: float = 5.0
    reset: str = "rollback"
    leak_threshold: float | None = None
    min_idle: int = 0
    max_idle: float = 0.0
    order: str = "fifo"
    max_waiting: int = 0
    max_usage: int = 0
    init_sql: tuple[str, ...] = ()
    configure: Callable[[Any], object] | None = None
    wait: bool = False
    host_order: str = "sequential"
    host_deny_seconds: float = 30.0
    galera_check: bool = False
    replica_fallback: bool = True
    replica_max_lag: float | None = None
    causal_reads: bool = False

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_count("size", self.size)
        _check_count("max_overflow", self.max_overflow)
        _check_seconds("timeout", self.timeout)
        _check_seconds("recycle", self.recycle)
        _check_seconds("ping_interval", self.ping_interval)
        _check_seconds("ping_timeout", self.ping_timeout)
        if self.ping_timeout == 0:
            raise ConfigError("ping_timeout must be positive (got 0)")
        _check_flag("pre_ping", self.pre_ping)
        _check_choice("reset", self.reset, RESET_POLICIES)
        if self.leak_threshold is not None:
            _check_seconds("leak_threshold", self.leak_threshold)
            if self.leak_threshold == 0:
                raise ConfigError("leak_threshold must be positive, or None to disable it (got 0)")
        _check_choice("host_order", self.host_order, HOST_ORDERS)
        _check_seconds("host_deny_seconds", self.host_deny_seconds)
        _check_flag("galera_check", self.galera_check)
        _check_flag("replica_fallback", self.replica_fallback)
        _check_flag("causal_reads", self.causal_reads)
        if self.replica_max_lag is not None:
            _check_seconds("replica_max_lag", self.replica_max_lag)
        if self.max_size < 1:
            raise ConfigError(
                f"size + max_overflow must be at least 1 (got {self.size} + {self.max_overflow})"
            )
        _check_count("min_idle", self.min_idle)
        if self.min_idle > self.size:
            raise ConfigError(f"min_idle cannot exceed size (got {self.min_idle} > {self.size})")
        _check_seconds("max_idle", self.max_idle)
        _check_choice("order", self.order, ORDERS)
        _check_count("max_waiting", self.max_waiting)
        _check_count("max_usage", self.max_usage)
        _check_flag("wait", self.wait)
        # Frozen: normalised values are set the way dataclasses set them.
        object.__setattr__(self, "init_sql", _statements(self.init_sql))
        if isinstance(self.configure, str):
            object.__setattr__(self, "configure", import_callable(self.configure, "configure"))
        elif self.configure is not None and not callable(self.configure):
            raise ConfigError(
                "configure must be a callable, or a 'package.module:function' string "
                f"(got {self.configure!r})"
            )

    @property
    def max_size(self) -> int:
        """The hard bound on live connections: ``size + max_overflow``."""
        return self.size + self.max_overflow


POOL_OPTION_NAMES: frozenset[str] = frozenset(field.name for field in fields(PoolOptions))


def validate_pool_options(values: Mapping[str, Any], *, where: str) -> PoolOptions:
    """Build PoolOptions from a mapping, rejecting unknown keys and bad values.

    ``where`` names the origin in messages, e.g. ``"ConnectionPool()"``.
    """
    unknown = sorted(str(key) for key in values if key not in POOL_OPTION_NAMES)
    if unknown:
        raise ConfigError(
            f"{where}: unknown pool option {unknown[0]!r}{_suggestion(unknown[0])}; "
            f"valid options: {_listing(sorted(POOL_OPTION_NAMES))}"
        )
    try:
        return PoolOptions(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything needed to open connections for one named configuration."""

    config_name: str
    driver: str
    params: Mapping[str, Any]
    pool: PoolOptions
    source: str | None
    #: The primaries, in list order (one for a single host; none for SQLite).
    hosts: tuple[Address, ...] = ()
    #: The read replicas (``replicas:``), in list order.
    replicas: tuple[Address, ...] = ()

    def describe(self) -> str:
        """A URL-like summary for messages and logs, without the password."""
        if len(self.hosts) > 1:
            netloc = ",".join(address.key for address in self.hosts)
            if self.params.get("user"):
                netloc = f"{self.params['user']}@{netloc}"
            return f"{self.driver}://{netloc}/{self.params.get('database') or ''}"
        return describe(self.driver, self.params)

    def __repr__(self) -> str:
        text = (
            f"Settings(config_name={self.config_name!r}, driver={self.driver!r}, "
            f"params={_masked(self.params)!r}, pool={self.pool!r}, source={self.source!r}"
        )
        if len(self.hosts) > 1 or self.replicas:
            text += f", hosts={[a.key for a in self.hosts]!r}"
            text += f", replicas={[a.key for a in self.replicas]!r}"
        return text + ")"


def set_password_decoder(decoder: Callable[[str], str] | None) -> None:
    """Set the process-wide decoder of encrypted (``^``-prefixed) passwords; None removes it."""
    global _password_decoder
    if decoder is not None and not callable(decoder):
        raise TypeError(f"password decoder must be callable or None (got {type(decoder).__name__})")
    _password_decoder = decoder


def find_config_file(
    config: str | os.PathLike[str] | Literal[False] | None = None,
) -> Path | None:
    """Return the config file to use: ``config``, else ``$DBPOOL_CONFIG``, else ``./config.yaml``.

    A path given explicitly or through the environment must exist: falling back to another
    file would silently connect somewhere else. No ``./config.yaml`` gives None, and so
    does ``config=False`` (read no file at all).
    """
    if config is False:
        return None
    if config is not None:
        return _existing_file(config, "the config argument")
    # An empty variable counts as unset, as compose files often leave them empty.
    from_env = os.environ.get("DBPOOL_CONFIG")
    if from_env:
        return _existing_file(from_env, "$DBPOOL_CONFIG")
    local = Path.cwd() / "config.yaml"
    return local if local.is_file() else None


def load_settings(
    config_name: str = "primary",
    *,
    config: str | os.PathLike[str] | Literal[False] | None = None,
    driver: str | None = None,
    pool_options: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parameters: Callable[[str], frozenset[str] | None] = connect_parameters,
) -> Settings:
    """Resolve the settings of ``config_name``: arguments, then the config entry, then defaults.

    ``params`` use the neutral names (``host``, ``port``, ``user``, ``password``, ``database``,
    ``charset``, ``path``, ...) and win over the entry and the environment. For MySQL drivers
    ``DBPOOL_<NAME>_PASSWORD``, ``_USER`` and ``_HOST`` override the entry, and an entry's
    ``password_env`` names a variable holding its password, ``password_provider`` a
    function returning it. A configured password starting with ``^`` goes through the
    decoder set with ``set_password_decoder``. ``url`` (in the arguments, the entry or
    ``DBPOOL_<NAME>_URL``) gives several parameters at once. ``parameters`` tells the
    names a driver's connect() takes (None: any), against which every key is checked.
    """
    if not isinstance(config_name, str):
        raise ConfigError(f"config_name must be a string (got {config_name!r})")
    if config is not None and config is not False and not isinstance(config, str | os.PathLike):
        raise ConfigError(f"config must be a path (got {config!r}), or False to read no file")
    path = find_config_file(config)
    given, url_driver = _connection_params(params or {}, where="arguments")
    if driver is not None:
        _check_choice("driver", driver, DRIVERS, where="arguments")
    driver = _url_driver(driver, url_driver, "arguments")

    if path is None:
        entry: Mapping[Any, Any] = {}
        where = f"config {config_name!r}"
    else:
        entry = _read_entry(path, config_name)
        where = f"config {config_name!r} in {path}"
    prefix = "DBPOOL_" + re.sub(r"[^A-Za-z0-9]", "_", config_name).upper() + "_"
    env_url = os.environ.get(prefix + "URL")  # empty counts as unset

    pool = _pool_options(entry, pool_options or {}, where)
    entry_driver = entry.get("driver")
    if entry_driver is not None:
        _check_choice("driver", entry_driver, DRIVERS, where=where)
    from_entry, entry_url_driver = _connection_params(
        {
            key: value
            for key, value in entry.items()
            if key not in _ENTRY_ONLY_KEYS and not (env_url and key == "url")
        },
        where=where,
    )
    if env_url:
        # The variable replaces the entry's url, and its parts win over the entry's keys.
        parts, entry_url_driver = _parse_url(env_url, f"${prefix}URL")
        from_entry.update(parts)
    entry_driver = _url_driver(entry_driver, entry_url_driver, where)
    # Arguments win; a plain mysql:// URL ("") keeps the MySQL driver named elsewhere.
    if driver == "":
        driver = entry_driver if entry_driver in _MYSQL_DRIVERS else "pymysql"
    elif driver is None and entry_driver is not None:
        driver = entry_driver or "pymysql"
    elif driver is None:
        # With no file, a lone `path` names a SQLite database; server keys mean MySQL.
        server_keys = [key for key in _CONNECTION_KEYS if key != "path"]
        wants_server = path is not None or any(key in given for key in server_keys)
        driver = "pymysql" if wants_server else "sqlite"

    _refuse_misplaced_options(entry, where)
    _refuse_misplaced_options(given, "arguments")
    accepted = parameters(driver)
    _check_names(given, "arguments", accepted)
    _check_names(from_entry, where, accepted, entry=True)
    if driver in _MYSQL_DRIVERS:
        _apply_environment(
            from_entry, entry, config_name, where, caller_password="password" in given
        )
    resolved = {**from_entry, **given}
    if driver in _MYSQL_DRIVERS:
        _check_mysql_params(resolved, driver, config_name)
    hosts, replicas = _host_lists(resolved, driver, where)

    if driver == "sqlite":
        if "path" in given:
            resolved["path"] = _sqlite_path(given["path"], Path.cwd(), "arguments")
        elif path is None:
            resolved["path"] = str(Path.cwd() / DEFAULT_SQLITE_PATH)
        elif "path" in from_entry:
            resolved["path"] = _sqlite_path(from_entry["path"], path.parent, where)
        else:
            raise ConfigError(f"{where}: driver 'sqlite' needs a 'path' (':memory:' is allowed)")

    return Settings(
        config_name=config_name,
        driver=driver,
        params=MappingProxyType(resolved),
        pool=pool,
        source=None if path is None else str(path),
        hosts=hosts,
        replicas=replicas,
    )


def _refuse_misplaced_options(values: Mapping[Any, Any], where: str) -> None:
    misplaced = [key for key in _HOST_OPTION_NAMES if key in values]
    if misplaced:
        raise ConfigError(
            f"{where}: {_listing(misplaced)} belong with the pool options "
            "(under 'pool:' in a config entry), not with the connection settings"
        )


def _host_lists(
    resolved: dict[str, Any], driver: str, where: str
) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
    """Read ``host`` and ``replicas`` into address lists, aiming ``resolved`` at the first host.

    A lone host without a port in its text is left in ``resolved`` exactly as given.
    """
    host = resolved.get("host")
    replicas_value = resolved.pop("replicas", None)
    if driver not in _MYSQL_DRIVERS:
        if replicas_value is not None or not (host is None or isinstance(host, str)):
            raise ConfigError(
                f"{where}: host lists and replicas need a MySQL driver (got {driver!r})"
            )
        return (), ()
    port = resolved.get("port")
    try:
        hosts = (Address("127.0.0.1", port),) if host is None else parse_hosts(host, port)
        replicas = () if replicas_value is None else parse_hosts(replicas_value, port, "replicas")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    overlap = sorted({a.key for a in hosts} & {a.key for a in replicas})
    if overlap:
        raise ConfigError(
            f"{where}: {_listing(overlap)} listed both as host and as replica; "
            "a server has one role"
        )
    first = hosts[0]
    if host is not None and (host != first.host or len(hosts) > 1):
        resolved["host"] = first.host
        if first.port is not None:
            resolved["port"] = first.port
    return hosts, replicas


def _existing_file(value: str | os.PathLike[str], origin: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.exists():
        raise ConfigError(f"config file {path} (from {origin}) does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} (from {origin}) is not a file")
    return path


def _read_entry(path: Path, config_name: str) -> Mapping[Any, Any]:
    """Return the ``database:`` entry named ``config_name`` from the YAML file at ``path``."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; "
            "is it really a dbpool config?"
        )
    try:
        # safe_load: a config file must never be able to build arbitrary Python objects.
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = "" if mark is None else f" at line {mark.line + 1}"
        problem = getattr(exc, "problem", None) or "cannot parse it"
        # `from None`: yaml's own message quotes the offending line, which may hold a password.
        raise ConfigError(f"config file {path} is not valid YAML{line}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping with a 'database:' key "
            f"(got {_kind(data)})"
        )
    databases = data.get("database")
    if not isinstance(databases, Mapping):
        raise ConfigError(
            f"config file {path} has no 'database:' mapping of config names "
            f"(got {_kind(databases)})"
        )
    if config_name not in databases:
        names = _listing(sorted(str(name) for name in databases)) or "(none)"
        raise ConfigError(f"config {config_name!r} not found in {path}; configs there: {names}")
    entry = databases[config_name]
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"config {config_name!r} in {path} must be a mapping of connection settings "
            f"(got {_kind(entry)})"
        )
    _check_expanded_size(entry, f"config {config_name!r} in {path}")
    return entry


def _pool_options(
    entry: Mapping[Any, Any], overrides: Mapping[str, Any], where: str
) -> PoolOptions:
    """Merge the entry's ``pool:`` section with the caller's options (which win)."""
    section = entry.get("pool")
    if section is None:  # a bare `pool:` line in YAML
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: 'pool:' must be a mapping (got {_kind(section)})")
    # Check the file on its own first, so its mistakes are reported against the file.
    validate_pool_options(section, where=where)
    return validate_pool_options({**section, **overrides}, where="arguments")


def _connection_params(raw: Mapping[Any, Any], where: str) -> tuple[dict[str, Any], str | None]:
    """Rename aliases to the neutral names, expand ``url``, check the values whose type is known.

    Also returns the driver the URL asks for: None without a URL, "" for any MySQL driver.
    """
    # None means "not set" (a bare `port:` in YAML, or a keyword argument left at None).
    raw = {key: value for key, value in raw.items() if value is not None}
    url_driver: str | None = None
    if "url" in raw:
        parts, url_driver = _parse_url(raw.pop("url"), where)
        # Keys given beside the URL win over its parts.
        raw = {**parts, **raw}
    for alias, name in _ALIASES.items():
        if alias in raw and name in raw and raw[alias] != raw[name]:
            raise ConfigError(
                f"{where}: {alias!r} and {name!r} differ ({raw[alias]!r} vs {raw[name]!r}); "
                "give only one"
            )
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: setting names must be strings (got {key!r})")
        params[_ALIASES.get(key, key)] = value
    for key in _STRING_KEYS:
        if key in params and not isinstance(params[key], str):
            raise ConfigError(f"{where}: {key} must be a string (got {params[key]!r})")
    for key in ("host", "replicas"):
        value = params.get(key)
        if value is not None and not (
            isinstance(value, str)
            or (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value))
        ):
            raise ConfigError(
                f"{where}: {key} must be a string or a list of strings (got {value!r})"
            )
    password = params.get("password")
    if password is not None and not isinstance(password, str) and not callable(password):
        raise ConfigError(
            f"{where}: password must be a string (quote it in YAML) or a function returning one"
        )
    port = params.get("port")
    if isinstance(port, str) and port.strip().isdigit():
        params["port"] = port = int(port)  # a quoted port in YAML, or one from the environment
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise ConfigError(f"{where}: port must be an integer from 1 to 65535 (got {port!r})")
    for key in _SECONDS_KEYS:
        if key in params:
            _check_seconds(key, params[key], where)
    for key in _BOOL_KEYS:
        if key in params:
            _check_bool(key, params[key], where)
    _tls_params(params, where)
    return params, url_driver


def _parse_url(url: Any, where: str) -> tuple[dict[str, Any], str]:
    """The parameters in ``mysql://user:password@host:port/database``, and its driver.

    ``sqlite:///relative/path``, ``sqlite:////absolute/path`` and ``sqlite:///:memory:``
    name SQLite databases. The password is decoded and never quoted back in a message.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{where}: url must be a string (got {_kind(url)})")
    # The URL itself may hold a password: messages show its scheme at most.
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        raise ConfigError(
            f"{where}: url is not a valid URL (a port must be a number from 1 to 65535)"
        ) from None
    scheme = split.scheme.lower()
    if scheme not in _URL_SCHEMES:
        raise ConfigError(
            f"{where}: url scheme {scheme!r} is not supported; use one of "
            f"{_listing(tuple(_URL_SCHEMES))}"
        )
    driver = _URL_SCHEMES[scheme]
    if split.query or split.fragment:
        options = dict(parse_qsl(split.query))
        if split.fragment or set(options) - {"charset"}:
            raise ConfigError(
                f"{where}: url may carry only ?charset=; give other parameters as options"
            )
    else:
        options = {}
    if driver == "sqlite":
        if split.netloc:
            raise ConfigError(f"{where}: a sqlite url names no host: write sqlite:///path")
        name = unquote(split.path[1:]) if split.path.startswith("/") else unquote(split.path)
        return {"path": name or ":memory:"}, driver
    params: dict[str, Any] = dict(options)
    if split.hostname:
        params["host"] = unquote(split.hostname)
    if port is not None:
        params["port"] = port
    if split.username:
        params["user"] = unquote(split.username)
    if split.password is not None:
        params["password"] = unquote(split.password)
    database = unquote(split.path.lstrip("/"))
    if database:
        params["database"] = database
    return params, driver or ""


def _url_driver(driver: str | None, url_driver: str | None, where: str) -> str | None:
    """Reconcile a driver named outright with the one a URL of the same origin asks for."""
    if url_driver is None:
        return driver
    if driver is None:
        return url_driver
    if url_driver == "" and driver in _MYSQL_DRIVERS:
        return driver
    if url_driver != driver:
        raise ConfigError(
            f"{where}: driver {driver!r} and the url's scheme (driver {url_driver or 'mysql'!r}) "
            "disagree; give only one"
        )
    return driver


def _check_names(
    params: Mapping[str, Any], where: str, accepted: frozenset[str] | None, *, entry: bool = False
) -> None:
    """Refuse a key that is neither a connection parameter of the driver nor a common one.

    A pool option written among an entry's connection settings is pointed to ``pool:``.
    """
    for key in params:
        if key in _COMMON_KEYS or accepted is None or key in accepted:
            continue
        if entry and key in POOL_OPTION_NAMES:
            raise ConfigError(
                f"{where}: {key!r} is a pool option; put it under the entry's 'pool:' section"
            )
        if entry:
            raise ConfigError(f"{where}: unknown setting {key!r}{_suggestion(key, accepted)}")
        raise ConfigError(f"unknown option {key!r}{_suggestion(key, accepted)}")


def _suggestion(name: str, parameters: frozenset[str] | None = None) -> str:
    """``; did you mean 'size'?`` for a near miss among the options and parameters, or ""."""
    known = _OTHER_NAMES.get(name.lower())
    if known is None:
        candidates = sorted(POOL_OPTION_NAMES | _COMMON_KEYS | (parameters or frozenset()))
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        known = close[0] if close else None
    return "" if known is None else f"; did you mean {known!r}?"


def import_callable(spec: Any, what: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"`` (for options given in YAML)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError(f"{what} must be a 'package.module:function' string (got {spec!r})")
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"{what} {spec!r}: {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ConfigError(f"{what} {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _statements(value: Any) -> tuple[str, ...]:
    """init_sql as a tuple of statements: a list of strings, or one string."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise ConfigError(f"init_sql must be a list of SQL statements (got {value!r})")
    return tuple(value)


def _tls_params(params: dict[str, Any], where: str) -> None:
    """Turn ``ssl={...}`` into the flat ``ssl_*`` options, checking every value."""
    if "ssl" in params:
        nested = params.pop("ssl")
        if not isinstance(nested, Mapping):
            raise ConfigError(
                f"{where}: ssl must be a mapping of {_listing(_tls_names())} (got {_kind(nested)})"
            )
        for key, value in nested.items():
            name = f"ssl_{key}"
            if name not in _TLS_KEYS:
                raise ConfigError(
                    f"{where}: unknown key {key!r} in ssl; valid keys: {_listing(_tls_names())}"
                )
            if name in params:
                raise ConfigError(f"{where}: {name} is given twice (as {name} and in ssl)")
            if value is not None:
                params[name] = value
    for key in _TLS_PATH_KEYS:
        if key in params:
            value = params[key]
            if not isinstance(value, str | os.PathLike) or not isinstance(os.fspath(value), str):
                raise ConfigError(f"{where}: {key} must be a path (got {value!r})")
            params[key] = os.fspath(value)
    if "ssl_key_password" in params and not isinstance(params["ssl_key_password"], str):
        raise ConfigError(f"{where}: ssl_key_password must be a string")
    for key in _TLS_BOOL_KEYS:
        if key in params:
            _check_bool(key, params[key], where)


def _tls_names() -> tuple[str, ...]:
    return tuple(key.removeprefix("ssl_") for key in _TLS_KEYS)


def _check_mysql_params(params: dict[str, Any], driver: str, config_name: str) -> None:
    """Checks that need the driver: the password's encoding, TLS defaults."""
    password = params.get("password")
    encoding = _PASSWORD_ENCODINGS[driver]
    if isinstance(password, str):
        try:
            password.encode(encoding)
        except UnicodeEncodeError:
            # `from None`: the encoding error holds the password itself.
            raise ConfigError(
                f"config {config_name!r}: the password has characters that driver {driver!r} "
                f"cannot send (it sends passwords as {encoding.upper()})"
                + ("; mysql-connector sends UTF-8" if driver == "pymysql" else "")
            ) from None
    if "ssl_key_password" in params and driver != "pymysql":
        raise ConfigError(
            f"config {config_name!r}: ssl_key_password is not supported by driver {driver!r}"
        )
    if params.get("ssl_verify_identity") and params.get("ssl_verify_cert") is False:
        raise ConfigError(
            f"config {config_name!r}: ssl_verify_identity needs ssl_verify_cert "
            "(a name is only checked on a verified certificate)"
        )
    if "ssl_ca" in params or params.get("ssl_verify_identity"):
        # A CA is given to be used: verify the server's certificate unless told not to.
        params.setdefault("ssl_verify_cert", True)


def _apply_environment(
    params: dict[str, Any],
    entry: Mapping[Any, Any],
    config_name: str,
    where: str,
    *,
    caller_password: bool,
) -> None:
    """Apply ``password_env`` and ``DBPOOL_<NAME>_*`` to ``params``, then decode the password."""
    prefix = "DBPOOL_" + re.sub(r"[^A-Za-z0-9]", "_", config_name).upper() + "_"
    overrides: dict[str, Any] = {
        key: os.environ[prefix + key.upper()]
        for key in ("host", "user", "password", "port", "database")
        if os.environ.get(prefix + key.upper())  # empty counts as unset
    }
    if "port" in overrides:
        port = overrides["port"].strip()
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(
                f"{where}: ${prefix}PORT must be a port number from 1 to 65535 "
                f"(got {overrides['port']!r})"
            )
        overrides["port"] = int(port)
    # Read password_env (and decode below) only when the result is used: a password given by
    # the caller or by DBPOOL_<NAME>_PASSWORD replaces it, and a stale entry must not block it.
    if not caller_password and "password" not in overrides:
        variable = entry.get("password_env")
        provider = entry.get("password_provider")
        if provider is not None:
            # Called before each connect, so a rotated password is picked up.
            params["password"] = import_callable(provider, f"{where}: password_provider")
        elif variable is not None:
            if not isinstance(variable, str):
                raise ConfigError(
                    f"{where}: password_env must be a variable name (got {variable!r})"
                )
            if variable not in os.environ:
                raise ConfigError(f"{where}: password_env names ${variable}, which is not set")
            params["password"] = os.environ[variable]
    params.update(overrides)
    password = params.get("password")
    if not caller_password and isinstance(password, str) and password.startswith("^"):
        params["password"] = _decode_password(password[1:], config_name)


def _decode_password(encrypted: str, config_name: str) -> str:
    decoder = _password_decoder
    if decoder is None:
        raise ConfigError(
            f"password of config {config_name!r} is encrypted (starts with '^') but no password "
            "decoder is set; call dbpool.set_password_decoder(...)"
        )
    try:
        decoded = decoder(encrypted)
    except Exception as exc:
        # The type only: the decoder's own message may quote what it was given.
        raise ConfigError(
            f"password decoder failed for config {config_name!r} ({type(exc).__name__})"
        ) from exc
    if not isinstance(decoded, str):
        raise ConfigError(
            f"password decoder returned {type(decoded).__name__}, not str, "
            f"for config {config_name!r}"
        )
    return decoded


def _sqlite_path(value: Any, base: Path, where: str) -> str:
    """Make a SQLite path absolute against ``base``, so a later chdir cannot move the database."""
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{where}: path must be a string (got {value!r})")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise ConfigError(f"{where}: path must be a string (got {value!r})")
    if text == ":memory:" or text.startswith("file:"):
        return text
    return str(base / Path(text).expanduser())


def _check_choice(name: str, value: Any, choices: tuple[str, ...], where: str = "") -> None:
    if value not in choices:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{name} must be one of {_listing(choices)} (got {value!r})")


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false (got {value!r})")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer (got {value!r})")
    if value < 0:
        raise ConfigError(f"{name} cannot be negative (got {value})")


def _check_seconds(name: str, value: Any, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{prefix}{name} must be a number of seconds (got {value!r})")
    if not math.isfinite(value):
        raise ConfigError(f"{prefix}{name} must be a finite number of seconds (got {value!r})")
    if value < 0:
        raise ConfigError(f"{prefix}{name} cannot be negative (got {value})")


def _check_bool(name: str, value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be true or false (got {value!r})")


def _masked(params: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of ``params`` fit for a repr: secret-looking values, nested too, become ``'***'``."""
    masked: dict[Any, Any] = {}
    for key, value in params.items():
        if isinstance(key, str) and any(marker in key.lower() for marker in _SECRET_MARKERS):
            masked[key] = "***"
        elif isinstance(value, Mapping):
            masked[key] = _masked(value)
        else:
            masked[key] = value
    return masked


def scrub_secrets(text: str, params: Mapping[str, Any]) -> str:
    """``text`` with the secrets of ``params`` (password...) masked where they stand as values.

    A value is quoted (``'...'``, ``"..."``, a repr), follows ``=`` or ``:``, or is a whole
    word of eight characters or more. A secret is never masked inside other words, so a
    short password cannot garble a message (``C***n't connect``).
    """
    for key, secret in params.items():
        if not (isinstance(key, str) and any(m in key.lower() for m in _SECRET_MARKERS)):
            continue
        if not isinstance(secret, str) or not secret:
            continue
        for quoted, masked in (
            (repr(secret), "'***'"),
            (repr(secret.encode("utf-8", "backslashreplace")), "b'***'"),
            (f"'{secret}'", "'***'"),
            (f'"{secret}"', '"***"'),
        ):
            text = text.replace(quoted, masked)
        escaped = re.escape(secret)
        end = r"(?=[\s,;)\]}]|$)"
        text = re.sub(r"([=:]\s*)" + escaped + end, r"\1***", text)
        if len(secret) >= 8:
            text = re.sub(r"(?<!\w)" + escaped + r"(?!\w)", "***", text)
    return text


def _check_expanded_size(entry: Mapping[Any, Any], where: str) -> None:
    """Reject an entry whose YAML aliases expand into something huge or circular.

    PyYAML builds an aliased node once and shares it, so loading stays cheap, but
    anything that walks the result (a repr, a driver) sees every copy.
    """
    budget = [_MAX_ENTRY_VALUES]

    def walk(value: Any, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(
                f"{where} expands to more than {_MAX_ENTRY_VALUES} values "
                "(YAML aliases repeating one another?)"
            )
        if depth > _MAX_ENTRY_DEPTH:
            raise ConfigError(
                f"{where} is nested more than {_MAX_ENTRY_DEPTH} levels deep "
                "(a YAML alias inside itself?)"
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(key, depth + 1)
                walk(item, depth + 1)
        elif isinstance(value, list | tuple | set):
            for item in value:
                walk(item, depth + 1)

    walk(entry, 0)


def _listing(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
