"""PooledConnection: a driver connection lent by the pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from .errors import PoolError

if TYPE_CHECKING:
    from ._handles import _Handle
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

    def __init__(self, pool: ConnectionPool, origin: str | None) -> None:
        # Built empty, before the pool takes a slot: the checkout puts the slot's lease
        # into ``_lease`` in the same critical section as it takes it, so that from then
        # on this object owns the slot and an exception anywhere gives it back.
        self._pool = pool
        self._lease: list[tuple[Any, _Handle]] = []
        self._raw: Any = None
        self._since = 0.0  # when it was lent
        self._waited = 0.0  # how long acquire() took, for the histograms at return
        self._origin = origin  # where it was acquired, kept only when leak_threshold is set
        self._reported = False  # already reported as held past leak_threshold

    def __del__(self) -> None:
        # Dropped without close(): hand the slot to the pool, which closes the driver
        # connection on its next call. A finalizer may run in any thread, even one
        # holding the pool's lock, so it only appends to a deque (atomic, no lock).
        # Given back, as almost every one is, its lease is empty: nothing more to do.
        try:
            lease = self._lease
        except AttributeError:  # half built
            return
        if lease:
            self._abandon()

    def _abandon(self) -> None:
        """Hand the slot to the pool to be closed and freed, without a lock or any I/O."""
        lease = getattr(self, "_lease", None)
        if lease:
            # Out of the lease and counted in one step, with no call between (neither a
            # signal handler nor another thread runs there); the pool closes it later.
            item = lease[-1]
            del lease[-1]
            pool = self._pool
            if item[1].factory is pool._handles:  # else lent before os.fork()
                pool._stats.reclaimed += 1
            pool._collected.append((*item, self._since, self._origin))

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
        raw = self._raw  # _live() inline: a cursor is made for every statement
        if raw is None:
            self._live()  # raises
        return raw.cursor(*args, **kwargs)

    def commit(self) -> None:
        self._live().commit()

    def rollback(self) -> None:
        self._live().rollback()

    def close(self) -> None:
        """Give the connection back to the pool (a second call does nothing)."""
        self._pool.release(self)

    def invalidate(self) -> None:
        """Close the connection instead of giving it back: the application knows it is bad."""
        self._pool.release(self, discard=True)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found on the object: an own slot not set yet (a
        # half-built or copied object) or a special name is not the driver's business.
        if name in _OWN or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._live(), name)

    def __copy__(self) -> NoReturn:
        raise TypeError("a pooled connection cannot be copied: acquire another one")

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__copy__()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a pooled connection cannot be pickled")

    def __enter__(self) -> PooledConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.release(self)

    def __repr__(self) -> str:
        state = "returned" if getattr(self, "_raw", None) is None else "in use"
        pool = getattr(self, "_pool", None)
        return f"<PooledConnection {pool._label if pool else '?'} {state}>"


_OWN = frozenset(PooledConnection.__slots__)
