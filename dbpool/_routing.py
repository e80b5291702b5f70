"""Which servers a pool's connections may use: host checks, replica reads, causal reads.

A new connection to one of several servers is vetted before it is lent: a
Galera node must be ready (``galera_check``), one of several primaries must take
writes (after a switchover the old primary still accepts connections), a replica
must not lag past ``replica_max_lag``. The validation at checkout asks the same
of a connection in use, the lag at most once per ``ping_interval`` per host. A
server found unable to do its job is denied in its HostList (hosts.py), and the
connections opened to it before are stale. ``acquire(readonly=True)`` goes to
the pool of replicas; with ``causal_reads``, a primary connection given back
tells its session's last GTID (@@last_gtid, MariaDB), kept per thread, and that
thread's next replica connection waits for it (MASTER_GTID_WAIT) within the
acquire deadline, or the read goes to a primary.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

from .hosts import (
    Address,
    HostState,
    error_verdict,
    galera_not_ready,
    replica_lag_problem,
    server_read_only,
)
from .stats import RETIRE_COUNTERS

if TYPE_CHECKING:
    from ._handles import _Handle
    from .connection import PooledConnection
    from .pool import ConnectionPool

log = logging.getLogger("dbpool")

# The least time a check's round trip gets, even when the acquire deadline is closer.
MIN_PING_TIMEOUT = 0.05
# Retire reasons that say the server itself can no longer do its job: its host is denied.
HOST_UNUSABLE = {
    "read_only": "the server is read-only",
    "not_ready": "the Galera node is not ready",
    "lagging": "the replica lags",
}


def host_check_due(pool: ConnectionPool, handle: _Handle, now: float) -> bool:
    """Whether the replica of this connection is due for its lag check (unclaimed)."""
    host = handle.host
    return (
        pool._max_lag is not None
        and host is not None
        and now - host.checked_at >= pool._ping_interval
    )


def check_connection(
    pool: ConnectionPool, handle: _Handle, deadline: float
) -> tuple[str, str | None] | None:
    """Check a connection: a socket look when it was used moments ago, else a ping.

    None when it may be lent, else why not: (retire reason, what was seen). The
    real ping asks a Galera node whether it is ready (``galera_check``) and a
    replica how far it lags (``replica_max_lag``, once per ``ping_interval`` per
    host). It waits at most ``ping_timeout``, and no longer than the acquire
    deadline allows (but long enough for a healthy server to answer).
    """
    raw = handle.raw
    now = monotonic()
    if pool._seen_alive(handle, now):
        return None
    if pool._probe(raw) is False:
        return "broken", None  # closed by the server: no ping can help
    host = handle.host
    lag_due = (
        pool._max_lag is not None
        and host is not None
        and pool._hosts is not None
        and pool._hosts.due_for_check(host, pool._ping_interval)
    )
    limit = max(min(pool._ping_timeout, deadline - now), MIN_PING_TIMEOUT)
    try:
        with pool._driver.bounded(raw, limit):
            if pool._galera_check:
                why = galera_not_ready(raw)
                if why is not None:
                    return "not_ready", why
            else:
                pool._driver.ping(raw)
            if lag_due and pool._max_lag is not None:
                why = replica_lag_problem(raw, pool._max_lag, pool._driver.errors)
                if why is not None:
                    return "lagging", why
    except Exception:
        if error_verdict(pool._driver.statement_error(raw)) == "not_ready":
            return "not_ready", None
        return "broken", None
    return None


def vet(pool: ConnectionPool, raw: Any, host: HostState, deadline: float) -> str | None:
    """Why a new connection's server cannot do this pool's job, or None; closes it if so.

    Galera nodes must be ready (``galera_check``), one of several primaries must
    take writes, a replica must not lag (``replica_max_lag``; asked once per
    ``ping_interval`` per host, and again whenever the host is denied).
    """
    hosts = pool._hosts
    assert hosts is not None
    lag_due = pool._max_lag is not None and (
        hosts.is_denied(host) or hosts.due_for_check(host, pool._ping_interval)
    )
    why: str | None = None
    reason = ""
    limit = max(min(pool._ping_timeout, deadline - monotonic()), MIN_PING_TIMEOUT)
    try:
        with pool._driver.bounded(raw, limit):
            if pool._galera_check:
                why, reason = galera_not_ready(raw), "not_ready"
            if why is None and pool._needs_writable and server_read_only(raw):
                why, reason = "read_only is ON", "read_only"
            if why is None and lag_due and pool._max_lag is not None:
                why = replica_lag_problem(raw, pool._max_lag, pool._driver.errors)
                reason = "lagging"
    except BaseException:
        pool._driver.close(raw)
        raise
    if why is None:
        return None
    pool._driver.close(raw)
    pool._tallies.extend(("created", "closed", RETIRE_COUNTERS[reason]))
    log.debug("closed a new connection of %s to %s (%s): %s", pool._label, host.key, reason, why)
    return why


def connect_to(
    pool: ConnectionPool, address: Address, seconds: float, params: dict[str, Any]
) -> Any:
    """Connect to one server of the list, the parameters aimed at it when there are several."""
    params = address.apply(params) if pool._aim else params
    return pool._driver.connect(params, timeout=seconds)


def note_last_write(pool: ConnectionPool, raw: Any) -> None:
    """Keep, for the calling thread, the GTID of the last write of this session."""
    try:
        with pool._driver.bounded(raw, pool._ping_timeout):
            pool._driver.discard_pending(raw, pool._ping_timeout)  # a result left unread
            cur = raw.cursor()
            try:
                cur.execute("SELECT @@last_gtid")
                rows = cur.fetchall()
            finally:
                cur.close()
    except pool._driver_errors as exc:
        log.debug(
            "causal_reads: cannot read @@last_gtid from %s (MariaDB only): %s", pool._label, exc
        )
        return
    gtid = str(rows[0][0] or "") if rows else ""
    if gtid and gtid != getattr(pool._last_write, "gtid", None):
        pool._last_write.gtid = gtid
        pool._last_write.seen = {}  # replicas known to have applied it: none yet


def caught_up(pool: ConnectionPool, reader: PooledConnection, deadline: float) -> bool:
    """Whether the replica of ``reader`` applied the thread's last write by ``deadline``."""
    gtid = getattr(pool._last_write, "gtid", None)
    if gtid is None:
        return True
    raw = reader.dbapi_connection
    key = reader._lease[-1][1].host if reader._lease else None
    seen: dict[Any, str] = pool._last_write.seen
    if key is not None and seen.get(key) == gtid:
        return True
    seconds = max(0.0, deadline - monotonic())
    try:
        with pool._driver.bounded(raw, seconds + pool._ping_timeout):
            cur = raw.cursor()
            try:
                cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (gtid, seconds))
                rows = cur.fetchall()
            finally:
                cur.close()
    except pool._driver_errors as exc:
        log.debug("causal_reads: MASTER_GTID_WAIT failed on %s: %s", pool._label, exc)
        rows = []
    done = bool(rows) and rows[0][0] == 0
    with pool._lock:
        pool._stats.causal_waits += 1
        if not done:
            pool._stats.causal_timeouts += 1
    if done and key is not None:
        seen[key] = gtid
    return done


def host_figures(
    pool: ConnectionPool, handles: list[_Handle], parked: set[int]
) -> dict[str, dict[str, Any]]:
    """``get_stats()["hosts"]``: each host's connections and deny state.

    ``parked``: the ids of the handles parked for their threads, idle though marked lent.
    """
    if pool._hosts is None:
        return {}
    figures: dict[str, dict[str, Any]] = {}
    for key, values in pool._hosts.figures().items():
        figures[key] = {"role": values.pop("role"), "open": 0, "in_use": 0, **values}
    for handle in handles:
        host = handle.host
        if handle.raw is not None and host is not None and host.key in figures:
            figures[host.key]["open"] += 1
            if handle.lent and id(handle) not in parked:
                figures[host.key]["in_use"] += 1
    return figures
