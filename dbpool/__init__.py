"""Pooled, validated, observable MySQL/MariaDB and SQLite connections for threaded code."""

from .config import load_settings, set_password_decoder
from .drivers import Driver
from .errors import (
    ConfigError,
    ConnectError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    TooManyRequests,
    ValidationError,
)
from .facade import ObjData, ObjDataThreadSafe
from .pool import ConnectionPool, PooledConnection, get_global_pool, make_pool

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConnectError",
    "ConnectionPool",
    "Driver",
    "ObjData",
    "ObjDataThreadSafe",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "PooledConnection",
    "TooManyRequests",
    "ValidationError",
    "get_global_pool",
    "load_settings",
    "make_pool",
    "set_password_decoder",
]
