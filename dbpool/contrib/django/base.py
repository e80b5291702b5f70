"""Django's MySQL backend on connections lent by a dbpool pool.

Design (after Django's own pooling for PostgreSQL):

- ``OPTIONS["pool"]`` (True, or a dict of dbpool pool options) turns pooling
  on. Each database alias gets one pool per process, made on its first connect
  and kept in a class-level dict, since Django makes a ``DatabaseWrapper`` per
  thread. When the settings of an alias change (the test runner switching NAME
  to the test database), its pool is closed and a new one made: an alias never
  has two live pools. After ``os.fork()`` dbpool gives the child connections
  of its own.
- ``get_new_connection()`` takes a connection from the pool; ``_close()`` gives
  it back. Django closes at the end of every request, since ``CONN_MAX_AGE``
  must be 0 with a pool; the pool rolls back what is left open.
- Django sets each new connection up (autocommit, ``SQL_AUTO_IS_NULL``, the
  isolation level). A pooled server connection keeps that session, so it is
  set up when first lent only, unless the pool clears sessions at return
  (``reset: "session"``), when it is set up again at every checkout.
- ``CONN_HEALTH_CHECKS`` is the pool's check before lending (``pre_ping``).
  A connection Django finds unusable is closed and leaves the pool.

Django's MySQL backend is written for mysqlclient (``MySQLdb``); this one runs
it on PyMySQL's ``MySQLdb`` compatibility layer, the driver of dbpool's pools.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pymysql
import pymysql.connections
import pymysql.constants.CLIENT
import pymysql.constants.FIELD_TYPE
import pymysql.converters
import pymysql.cursors
import pymysql.err
from django.core.exceptions import ImproperlyConfigured

from dbpool import ConnectionPool, PooledConnection, PoolError, make_pool
from dbpool.config import POOL_OPTION_NAMES


def _install_pymysql() -> None:
    """Make ``import MySQLdb`` give PyMySQL, before Django's MySQL backend imports it.

    ``pymysql.install_as_MySQLdb()`` alone lets ``import MySQLdb.converters`` load a
    second copy of PyMySQL's modules, and that import rebinds ``pymysql.err`` to the
    copy: exception classes that PyMySQL's own connections never raise. The pool no
    longer minds (its driver takes the classes bound at PyMySQL's top level), but
    the application's own ``except pymysql.err.IntegrityError`` would silently stop
    matching. So every ``MySQLdb.<name>`` is made the very module ``pymysql.<name>``.
    """
    current = sys.modules.get("MySQLdb")
    if current is not None and current is not pymysql:
        raise ImproperlyConfigured(
            "dbpool.contrib.django runs Django's MySQL backend on PyMySQL, but mysqlclient's "
            "MySQLdb was imported first; do not mix the two in one process"
        )
    pymysql.install_as_MySQLdb()
    for name, module in list(sys.modules.items()):
        if name.startswith("pymysql.") and module is not None:
            sys.modules["MySQLdb" + name[len("pymysql") :]] = module
            parent, _, leaf = name.rpartition(".")
            setattr(sys.modules[parent], leaf, module)  # undo a rebinding by an earlier copy


_install_pymysql()

from django.db.backends.base.base import (  # noqa: E402  (needs MySQLdb)
    NO_DB_ALIAS,
    BaseDatabaseWrapper,
)
from django.db.backends.mysql import base as mysql_base  # noqa: E402
from django.utils.asyncio import async_unsafe  # noqa: E402

from .creation import DatabaseCreation  # noqa: E402

Database = mysql_base.Database

# The pool's settings come from DATABASES alone: config=False reads no config file
# (neither ./config.yaml nor $DBPOOL_CONFIG).
_CONFIG_NAME = "django"
_POOL_OPTIONS = POOL_OPTION_NAMES
# The settings a pool's connections are made from; when one changes, the alias gets a
# new pool. CONN_MAX_AGE and CONN_HEALTH_CHECKS are read when a pool is made.
_POOL_SETTINGS = ("NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS", "AUTOCOMMIT")
_SERVER_STATUS_IN_TRANS = 0x0001  # the MySQL protocol's server-status bit
# Set on a driver connection once Django has set its session up.
_PREPARED = "_dbpool_django_prepared"


@dataclass(frozen=True)
class _AliasPool:
    fingerprint: str
    pool: ConnectionPool
    resets_session: bool  # reset="session": each checkout starts from the server's defaults


class DatabaseWrapper(mysql_base.DatabaseWrapper):  # type: ignore[misc]
    """Django's MySQL ``DatabaseWrapper``, lending its connections from a dbpool pool."""

    creation_class = DatabaseCreation
    connection: Any  # the driver's connection, None when closed
    health_check_done: bool
    errors_occurred: bool
    _connection_pools: ClassVar[dict[str, _AliasPool]] = {}
    _pools_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lease: PooledConnection | None = None
        # Set by get_new_connection() for a pooled connection whose session Django
        # already set up; consumed by the init_connection_state() of that connect().
        self._session_ready = False
        self._rerun_init_command = False

    # -- the pool ------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool | None:
        """This alias's pool, made on first use; None when ``OPTIONS["pool"]`` is not set."""
        entry = self._alias_pool()
        return None if entry is None else entry.pool

    def close_pool(self) -> None:
        """Close this alias's pool: idle connections now, lent ones when given back."""
        with self._pools_lock:
            entry = self._connection_pools.pop(self.alias, None)
        if entry is not None:
            entry.pool.dispose()

    def _alias_pool(self) -> _AliasPool | None:
        if self.alias == NO_DB_ALIAS or not self.settings_dict["OPTIONS"].get("pool"):
            return None
        fingerprint = self._fingerprint()
        with self._pools_lock:
            entry = self._connection_pools.get(self.alias)
            if entry is not None and entry.fingerprint == fingerprint:
                return entry
            # First use, or the settings changed: making a pool does no I/O.
            fresh = self._make_pool(fingerprint)
            self._connection_pools[self.alias] = fresh
        if entry is not None:
            entry.pool.dispose()  # lent connections stay usable until given back
        return fresh

    def _fingerprint(self) -> str:
        settings = self.settings_dict
        text = repr([settings.get(key) for key in _POOL_SETTINGS])
        return hashlib.sha256(text.encode()).hexdigest()

    def _make_pool(self, fingerprint: str) -> _AliasPool:
        where = f"DATABASES[{self.alias!r}]"
        settings = self.settings_dict
        if settings.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                f"{where}: pooling doesn't support persistent connections: set CONN_MAX_AGE "
                f"to 0 (got {settings['CONN_MAX_AGE']!r}); the pool keeps them open instead"
            )
        given = settings["OPTIONS"]["pool"]
        if given is True:
            options: dict[str, Any] = {}
        elif isinstance(given, Mapping):
            options = dict(given)
        else:
            raise ImproperlyConfigured(
                f"{where}: OPTIONS['pool'] must be True or a dict of dbpool pool options "
                f"(got {given!r})"
            )
        unknown = sorted(str(key) for key in options if key not in _POOL_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"{where}: unknown pool option {', '.join(map(repr, unknown))} in "
                f"OPTIONS['pool']; valid options: {', '.join(sorted(_POOL_OPTIONS))}"
            )
        health_checks = bool(settings["CONN_HEALTH_CHECKS"])
        if options.setdefault("pre_ping", health_checks) != health_checks:
            raise ImproperlyConfigured(
                f"{where}: OPTIONS['pool']['pre_ping'] is {options['pre_ping']!r} but "
                f"CONN_HEALTH_CHECKS is {health_checks!r}; set CONN_HEALTH_CHECKS only"
            )
        params = self.get_connection_params()
        # New connections start in the mode Django asks for, so it has nothing to switch.
        params["autocommit"] = bool(settings["AUTOCOMMIT"])
        try:
            pool = make_pool(
                config=False, config_name=_CONFIG_NAME, driver="pymysql", **options, **params
            )
        except (ValueError, TypeError) as exc:  # ConfigError is a ValueError
            raise ImproperlyConfigured(f"{where}: {exc}") from exc
        return _AliasPool(fingerprint, pool, options.get("reset") == "session")

    # -- connections ---------------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        params.pop("pool", None)
        return params

    @async_unsafe  # type: ignore[untyped-decorator]
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        entry = self._alias_pool()
        if entry is None:
            return super().get_new_connection(conn_params)
        try:
            lease = entry.pool.acquire()
        except PoolError as exc:
            # Django turns the driver's errors into django.db.OperationalError.
            raise Database.OperationalError(str(exc)) from exc
        raw = lease.dbapi_connection
        # Django drops mysqlclient's bytes encoder from every new connection.
        if raw.encoders.get(bytes) is bytes:
            raw.encoders.pop(bytes)
        self._lease = lease
        self._session_ready = getattr(raw, _PREPARED, False) and not entry.resets_session
        self._rerun_init_command = getattr(raw, _PREPARED, False) and entry.resets_session
        return raw

    def init_connection_state(self) -> None:
        ready, self._session_ready = self._session_ready, False
        rerun, self._rerun_init_command = self._rerun_init_command, False
        if ready:
            # The session still has the settings made when the pool first lent it.
            BaseDatabaseWrapper.init_connection_state(self)
            return
        super().init_connection_state()
        if self._lease is None:
            return
        init_command = self.settings_dict["OPTIONS"].get("init_command")
        if rerun and init_command:
            # PyMySQL ran it at connect; the session reset at the last return undid it.
            with self.cursor() as cursor:
                cursor.execute(init_command)
        setattr(self.connection, _PREPARED, True)

    def _close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            super()._close()
            return
        # Given back, the driver connection may be lent to another thread at once:
        # this wrapper must not keep it, even when closed inside an atomic block.
        self.connection = None
        with self.wrap_database_errors:
            lease.close()

    # Django closes a connection it finds unusable (a failed health check, an error
    # after which is_usable() is false, autocommit left switched). A pooled one must
    # then leave the pool, not be lent again: these two follow Django's own logic.

    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        if not self.is_usable():
            self._close_unusable()
        self.health_check_done = True

    def close_if_unusable_or_obsolete(self) -> None:
        if self.connection is None:
            return
        self.health_check_done = False
        if self.get_autocommit() != self.settings_dict["AUTOCOMMIT"]:
            self._close_unusable()
            return
        if self.errors_occurred:
            if self.is_usable():
                self.errors_occurred = False
                self.health_check_done = True
            else:
                self._close_unusable()
                return
        if self.close_at is not None and time.monotonic() >= self.close_at:
            self.close()  # the end of a request: back to the pool

    def _close_unusable(self) -> None:
        lease = self._lease
        if lease is not None:
            raw = lease.dbapi_connection
            with contextlib.suppress(Exception):
                raw.close()
            # dbpool rolls back a connection that reports a transaction and closes one
            # whose rollback fails, as this closed one's does.
            raw.server_status = (raw.server_status or 0) | _SERVER_STATUS_IN_TRANS
        self.close()

    def is_usable(self) -> bool:
        if self.connection is None:
            return False  # given back to the pool
        try:
            # PyMySQL's ping() reconnects by default, which would hide a lost session.
            self.connection.ping(reconnect=False)
        except Database.Error:
            return False
        return True


def close_pools() -> None:
    """Close the pools of every alias (at shutdown, or between tests)."""
    with DatabaseWrapper._pools_lock:
        entries = list(DatabaseWrapper._connection_pools.values())
        DatabaseWrapper._connection_pools.clear()
    for entry in entries:
        entry.pool.dispose()
