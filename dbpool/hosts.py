"""Host lists: which server a new connection goes to, and which servers to avoid.

A pool connects to one list of primaries (``host``) and, optionally, one list of
replicas (``replicas``). Each list keeps a ``HostState`` per server:

- Order. ``sequential`` tries the hosts in list order, so every connection goes to
  the first usable one (a primary with standbys); ``random`` shuffles the usable
  hosts at every connect, so new connections spread over them.
- Deny list. A host whose connect failed, or that was found unable to do its job
  (read-only, Galera node not ready, replica lagging), is denied for
  ``host_deny_seconds``: new connects try it only after every usable host, or not
  at all when the list may give up early (replicas with a fallback to the primaries).
  A successful connect lifts a deny that a connect failure set.
- Stale marks. A host found unable to do its job also marks every connection opened
  to it until then: the pool closes those at checkout instead of lending them, so one
  error retires them all. A host that merely refused a connect keeps its connections.
- Deadline. One connect walks the candidates within the caller's deadline; each host
  gets a fair share of what is left, so a silent first host cannot eat all of it.

State changes happen under the list's own small lock; the connects themselves run
outside it. The hot path reads one float per checkout (``stale_before``) unlocked:
a stale read keeps or closes a single connection a moment late.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

log = logging.getLogger("dbpool.hosts")

DEFAULT_PORT = 3306
HOST_ORDERS: tuple[str, ...] = ("sequential", "random")
ROLES: tuple[str, ...] = ("primary", "replica")

# Server errors that say the server can no longer do a primary's job.
READ_ONLY_CODES = frozenset(
    {
        1290,  # ER_OPTION_PREVENTS_STATEMENT: running with --read-only
        1792,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
        1836,  # ER_READ_ONLY_MODE
    }
)
# Galera's "WSREP has not yet prepared node for application use".
NOT_READY_CODES = frozenset({1047})
# The session is gone: the connection is useless whatever the host's state.
LOST_CODES = frozenset(
    {
        1053,  # ER_SERVER_SHUTDOWN
        1927,  # ER_CONNECTION_KILLED
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    }
)

# The least time one host's connect gets when several share a short deadline.
_MIN_HOST_SHARE = 0.5

_BRACKETED = re.compile(r"\[([^\[\]]+)\](?::(\d+))?")


def error_verdict(code: Any) -> str | None:
    """What a failed statement's error code says: "read_only", "not_ready", "lost" or None."""
    if code in READ_ONLY_CODES:
        return "read_only"
    if code in NOT_READY_CODES:
        return "not_ready"
    if code in LOST_CODES:
        return "lost"
    return None


@dataclass(frozen=True)
class Address:
    """One server of a host list; ``port`` None means the driver's default (3306)."""

    host: str
    port: int | None = None

    @property
    def key(self) -> str:
        """``host:port`` (``[v6]:port``), the name used in stats, logs and messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{DEFAULT_PORT if self.port is None else self.port}"

    def apply(self, params: dict[str, Any]) -> dict[str, Any]:
        """Connection parameters aimed at this address."""
        aimed = {**params, "host": self.host}
        if self.port is None:
            aimed.pop("port", None)
        else:
            aimed["port"] = self.port
        return aimed


def parse_hosts(value: Any, default_port: int | None, what: str = "host") -> tuple[Address, ...]:
    """Read a host list: a string (commas separate hosts) or a list of strings.

    Each item is ``host``, ``host:port`` or ``[ipv6]:port``; a bare IPv6 address has
    no port. ``default_port`` applies where an item names none.
    """
    if isinstance(value, str):
        items: list[Any] = value.split(",") if "," in value else [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"{what} must be a string or a list of strings (got {value!r})")
    if not items:
        raise ConfigError(f"{what} is an empty list; give at least one host")
    addresses: list[Address] = []
    seen: set[str] = set()
    for item in items:
        address = _parse_one(item, default_port, what)
        if address.key in seen:
            raise ConfigError(f"{what} lists {address.key} twice")
        seen.add(address.key)
        addresses.append(address)
    return tuple(addresses)


def _parse_one(item: Any, default_port: int | None, what: str) -> Address:
    if not isinstance(item, str):
        raise ConfigError(f"{what} entries must be strings (got {item!r})")
    text = item.strip()
    if not text:
        raise ConfigError(f"{what} has an empty entry ({item!r})")
    if any(ch.isspace() for ch in text) or "/" in text:
        raise ConfigError(f"{what} entry {item!r} is not a host or host:port")
    if text.startswith("["):
        match = _BRACKETED.fullmatch(text)
        if match is None:
            raise ConfigError(f"{what} entry {item!r} is not a valid [address]:port")
        host, port_text = match.group(1), match.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not host:
            raise ConfigError(f"{what} entry {item!r} has no host before the port")
    else:
        host, port_text = text, None  # a name, an IPv4 address, or a bare IPv6 address
    if port_text is None:
        return Address(host, default_port)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{what} entry {item!r}: the port must be an integer from 1 to 65535")
    return Address(host, int(port_text))


class HostState:
    """One server's figures and deny window; changed only under its list's lock."""

    __slots__ = (
        "address",
        "checked_at",
        "connect_failures",
        "connects",
        "denied_until",
        "deny_lifted_by_connect",
        "key",
        "last_error",
        "role",
        "stale_before",
    )

    def __init__(self, address: Address, role: str) -> None:
        self.address = address
        self.key = address.key
        self.role = role
        self.connects = 0
        self.connect_failures = 0
        self.denied_until = float("-inf")
        self.deny_lifted_by_connect = False
        # Connections opened at or before this moment are not lent any more.
        self.stale_before = float("-inf")
        self.checked_at = float("-inf")  # last health check of this host (replica lag)
        self.last_error = ""

    def __repr__(self) -> str:
        return f"<HostState {self.role} {self.key}>"


class HostsFailed(Exception):
    """Every candidate host of one connect failed, or none could be tried.

    ``failures`` pairs each host with why; ``retryable`` is False when another
    attempt right now cannot help (nothing was tried, or every error was permanent).
    ``tried``: how many connects failed; ``last``: the driver's last error, if any;
    ``refused_by_vet``: every host tried was reached but turned down by the vet.
    """

    def __init__(
        self,
        role: str,
        failures: Sequence[tuple[str, str]],
        *,
        retryable: bool,
        tried: int = 0,
        last: BaseException | None = None,
        refused_by_vet: bool = False,
    ) -> None:
        self.role = role
        self.failures = list(failures)
        self.retryable = retryable
        self.tried = tried
        self.last = last
        self.refused_by_vet = refused_by_vet
        super().__init__(self.describe())

    def describe(self) -> str:
        """``db1:3306: why; db2:3307: why``."""
        return "; ".join(f"{key}: {why}" for key, why in self.failures)


class HostList:
    """The servers of one role, the order new connects try them in, and their deny list.

    order: "sequential" or "random". deny_seconds: how long a failed or unusable host is
    skipped (0: never). give_up_when_denied: when every host is denied, raise at once
    instead of trying them all again (replicas that may fall back to the primaries).
    owner: the pool's name, for log lines. clock and rng are for tests.
    """

    def __init__(
        self,
        addresses: Iterable[Address],
        *,
        role: str = "primary",
        order: str = "sequential",
        deny_seconds: float = 30.0,
        give_up_when_denied: bool = False,
        owner: str = "",
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES} (got {role!r})")
        if order not in HOST_ORDERS:
            raise ValueError(f"host_order must be one of {HOST_ORDERS} (got {order!r})")
        self.role = role
        self.order = order
        self.deny_seconds = deny_seconds
        self.give_up_when_denied = give_up_when_denied
        self.owner = owner
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.states: tuple[HostState, ...] = tuple(HostState(a, role) for a in addresses)
        #: Called (outside this list's lock) with a host each time it is found unusable,
        #: after the connections opened to it before were made stale.
        self.on_unusable: Callable[[HostState], None] | None = None
        if not self.states:
            raise ValueError("a host list needs at least one host")

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held this one)."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Any:
        return iter(self.states)

    # -- choosing --------------------------------------------------------------------

    def is_denied(self, state: HostState, now: float | None = None) -> bool:
        """Whether new connects skip this host right now."""
        return (self._clock() if now is None else now) < state.denied_until

    def candidates(self) -> list[HostState]:
        """The hosts one connect tries, in order: usable ones first, denied ones last.

        Denied hosts are left out when the list gives up early, or shuffled in list order.
        """
        now = self._clock()
        with self._lock:
            usable = [s for s in self.states if now >= s.denied_until]
            denied = [s for s in self.states if now < s.denied_until]
        if self.order == "random":
            self._rng.shuffle(usable)
        if self.give_up_when_denied:
            return usable
        return usable + denied

    def connect(
        self,
        open_one: Callable[[Address, float], Any],
        deadline: float,
        *,
        is_permanent: Callable[[BaseException], bool],
        describe_error: Callable[[BaseException], str],
        errors: tuple[type[BaseException], ...],
        vet: Callable[[Any, HostState], str | None] | None = None,
    ) -> tuple[Any, HostState]:
        """Open a connection to the first candidate that accepts one, before ``deadline``.

        ``open_one(address, seconds)`` connects or raises one of ``errors``. ``vet(raw,
        state)``, when given, asks the new connection's server whether it can do its
        job: it returns why not (having closed ``raw``), and that host is found
        unusable and the next one tried. A single-host list re-raises the driver's
        connect error itself, as a pool of one host always did; otherwise HostsFailed
        names every host tried and why.
        """
        candidates = self.candidates()
        if not candidates:
            raise HostsFailed(self.role, self._denied_reasons(), retryable=False)
        failures: list[tuple[str, str]] = []
        permanent = True
        vetted_out = 0
        last: BaseException | None = None
        for index, state in enumerate(candidates):
            remaining = deadline - self._clock()
            if remaining <= 0 and failures:
                break
            left = len(candidates) - index
            share = (
                remaining if left == 1 else max(remaining / left, min(remaining, _MIN_HOST_SHARE))
            )
            try:
                raw = open_one(state.address, max(share, 0.0))
            except errors as exc:
                why = describe_error(exc)
                self.connect_failed(state, why)
                if len(self.states) == 1:
                    raise
                permanent = permanent and is_permanent(exc)
                failures.append((state.key, why))
                last = exc
                continue
            if vet is not None:
                try:
                    refusal = vet(raw, state)
                except errors as exc:
                    why = describe_error(exc)
                    self.connect_failed(state, why)
                    permanent = False
                    failures.append((state.key, why))
                    last = exc
                    continue
                if refusal is not None:
                    self.unusable(state, refusal)
                    permanent = False
                    vetted_out += 1
                    failures.append((state.key, refusal))
                    continue
            self.connected(state)
            return raw, state
        tried = len(failures)
        for state in candidates[tried:]:
            last_error = f" (last error: {state.last_error})" if state.last_error else ""
            failures.append((state.key, f"not tried: the deadline passed{last_error}"))
            permanent = False
        raise HostsFailed(
            self.role,
            failures,
            retryable=not permanent,
            tried=tried - vetted_out,
            last=last,
            refused_by_vet=0 < vetted_out == tried,
        )

    def _denied_reasons(self) -> list[tuple[str, str]]:
        now = self._clock()
        with self._lock:
            return [
                (
                    s.key,
                    f"denied for {max(0.0, s.denied_until - now):.1f}s more"
                    + (f" after: {s.last_error}" if s.last_error else ""),
                )
                for s in self.states
            ]

    # -- what happened -----------------------------------------------------------------

    def connected(self, state: HostState) -> None:
        """A connect to ``state`` succeeded: a deny set by a connect failure ends."""
        with self._lock:
            state.connects += 1
            if state.deny_lifted_by_connect:
                state.denied_until = float("-inf")
                state.deny_lifted_by_connect = False

    def connect_failed(self, state: HostState, why: str) -> None:
        """A connect to ``state`` failed: deny it; its open connections stay."""
        with self._lock:
            state.connect_failures += 1
            newly = self._deny(state, why)
            if newly:
                state.deny_lifted_by_connect = True
        if newly:
            self._log_deny(state, why)

    def unusable(self, state: HostState, why: str) -> None:
        """``state`` can no longer do its job: deny it and retire its open connections."""
        with self._lock:
            newly = self._deny(state, why)
            state.deny_lifted_by_connect = False
            state.stale_before = self._clock()
        if newly:
            self._log_deny(state, why)
        if self.on_unusable is not None:
            self.on_unusable(state)

    def _deny(self, state: HostState, why: str) -> bool:
        # Under self._lock. True when the host was not denied already.
        now = self._clock()
        newly = now >= state.denied_until
        state.denied_until = max(state.denied_until, now + self.deny_seconds)
        state.last_error = why
        return newly

    def _log_deny(self, state: HostState, why: str) -> None:
        log.warning(
            "%s host %s of %s denied for %.1fs: %s",
            self.role,
            state.key,
            self.owner or "a pool",
            self.deny_seconds,
            why,
        )

    def others_usable(self, state: HostState) -> bool:
        """Whether any host other than ``state`` is not denied now."""
        now = self._clock()
        with self._lock:
            return any(now >= s.denied_until for s in self.states if s is not state)

    def is_stale(self, state: HostState, created: float) -> bool:
        """Whether a connection opened to ``state`` at ``created`` must not be lent again."""
        return created <= state.stale_before

    def due_for_check(self, state: HostState, interval: float) -> bool:
        """Claim the host's periodic check: True at most once per ``interval`` per host."""
        now = self._clock()
        with self._lock:
            if now - state.checked_at < interval:
                return False
            state.checked_at = now
            return True

    def figures(self) -> dict[str, dict[str, Any]]:
        """Per-host figures, keyed ``host:port`` (the pool adds ``open`` and ``in_use``)."""
        now = self._clock()
        with self._lock:
            return {
                s.key: {
                    "role": s.role,
                    "connects": s.connects,
                    "connect_failures": s.connect_failures,
                    "denied": now < s.denied_until,
                    "denied_for": round(max(0.0, s.denied_until - now), 3),
                    "last_error": s.last_error,
                }
                for s in self.states
            }


# -- health checks on a live connection (driver-neutral DB-API) ---------------------------


def _query(raw: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = raw.cursor()
    try:
        cur.execute(sql)
        rows = list(cur.fetchall())
        names = [str(d[0]) for d in (cur.description or ())]
    finally:
        cur.close()
    return names, rows


def server_read_only(raw: Any) -> bool:
    """Whether the server refuses writes from ordinary accounts (``read_only`` is ON)."""
    _, rows = _query(raw, "SELECT @@global.read_only")
    return bool(rows) and str(rows[0][0]).upper() in ("1", "ON")


def galera_not_ready(raw: Any) -> str | None:
    """Why a Galera node cannot take statements now, or None when ``wsrep_ready`` is ON."""
    _, rows = _query(raw, "SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
    value = str(rows[0][1]) if rows else ""
    if value.upper() == "ON":
        return None
    return f"wsrep_ready is {value or 'missing (not a Galera node)'}"


def replica_lag_problem(
    raw: Any,
    max_lag: float,
    errors: tuple[type[BaseException], ...],
) -> str | None:
    """Why a replica must be skipped (replication stopped, lag past ``max_lag``), or None.

    Needs the REPLICA MONITOR privilege (MariaDB 10.5.9+; REPLICATION CLIENT on MySQL);
    without it the replica cannot be vouched for and is skipped too.
    """
    try:
        try:
            names, rows = _query(raw, "SHOW REPLICA STATUS")
        except errors as exc:
            if _code(exc) != 1064:  # only a server too old for the new spelling
                raise
            names, rows = _query(raw, "SHOW SLAVE STATUS")
    except errors as exc:
        return (
            f"cannot read its replication status (grant REPLICA MONITOR or "
            f"REPLICATION CLIENT): {exc}"
        )
    if not rows:
        return "replication is not configured on it"
    row = {name.lower(): value for name, value in zip(names, rows[0], strict=False)}

    def column(*suffixes: str) -> Any:
        for name, value in row.items():
            if name.endswith(suffixes):
                return value
        return None

    io, sql = column("_io_running"), column("_sql_running")
    if str(io) != "Yes" or str(sql) != "Yes":
        return f"replication is stopped (IO thread {io}, SQL thread {sql})"
    lag = column("seconds_behind_master", "seconds_behind_source")
    if lag is None:
        return "its replication lag is unknown"
    if float(lag) > max_lag:
        return f"it lags {float(lag):.0f}s behind (replica_max_lag {max_lag:g}s)"
    return None


def _code(exc: BaseException) -> Any:
    code = getattr(exc, "errno", None)
    if code is None and getattr(exc, "args", None):
        code = exc.args[0]
    return code
