"""The exceptions dbpool raises."""

from __future__ import annotations

import queue


class PoolError(Exception):
    """Base class of every error dbpool raises."""


class ConfigError(PoolError, ValueError):
    """A configuration file, entry or option is missing or invalid."""


class PoolTimeout(PoolError, queue.Empty):
    """No connection could be had before the deadline.

    Also a ``queue.Empty``, so code written as ``except Empty:`` keeps working.
    """


class TooManyRequests(PoolError):
    """``max_waiting`` callers were already waiting: ``acquire()`` gave up at once."""


class PoolClosed(PoolError):
    """The pool was closed with ``dispose()``; it hands out no more connections."""


class ConnectError(PoolError):
    """The database server could not be reached or refused the login."""


class ValidationError(PoolError):
    """No connection passed validation within the allowed retries."""
