"""PooledConnection: a driver connection lent by the pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._handles import _Handle
from .errors import PoolError

if TYPE_CHECKING:
    from .pool import ConnectionPool


class PooledConnection:
    """A connection lent by the pool; a DB-API 2 connection of the driver.

    ``close()`` gives it back to the pool. Other attributes come from the
    driver's connection, which ``dbapi_connection`` returns outright.
    """

    __slots__ = (
        "__weakref__",
        "_lease",
        "_origin",
        "_pool",
        "_raw",
        "_reported",
        "_since",
        "_waited",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        token: Any,
        handle: _Handle,
        since: float,
        origin: str | None,
        waited: float = 0.0,
    ) -> None:
        self._pool = pool
        self._raw = handle.raw
        self._lease = [(token, handle)]
        self._since = since  # when it was lent
        self._waited = waited  # how long acquire() took, for the stats at return
        self._origin = origin  # where it was acquired, kept only when leak_threshold is set
        self._reported = False  # already reported as held past leak_threshold

    def __del__(self) -> None:
        # Dropped without close(): hand the slot to the pool, which closes the driver
        # connection on its next call. A finalizer may run in any thread, even one
        # holding the pool's lock, so it only appends to a deque (atomic, no lock).
        lease = getattr(self, "_lease", None)
        if lease:
            try:
                token, handle = lease.pop()
            except IndexError:
                return
            self._pool._collected.append((token, handle, self._since, self._origin))

    def _live(self) -> Any:
        raw = self._raw
        if raw is None:
            raise PoolError("this connection was already given back to the pool")
        return raw

    @property
    def dbapi_connection(self) -> Any:
        """The driver's own connection object."""
        return self._live()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """A cursor of the driver's connection."""
        return self._live().cursor(*args, **kwargs)

    def commit(self) -> None:
        self._live().commit()

    def rollback(self) -> None:
        self._live().rollback()

    def close(self) -> None:
        """Give the connection back to the pool (a second call does nothing)."""
        self._pool.release(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live(), name)

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.release(self)

    def __repr__(self) -> str:
        state = "returned" if self._raw is None else "in use"
        return f"<PooledConnection {self._pool._label} {state}>"
