"""What one request of ``dbpool bench`` does: statements, their parameters, think time.

A workload is a list of requests, each picked at random by weight: one
statement, or a transaction of several. Each ``%s`` of a statement takes a
value from a parameter generator (``int:1:10000``, ``float:0:1``,
``choice:a,b,c``, ``str:8`` or ``str:4:16``), or all of them come from a row of
a parameters file (CSV or tab-separated, one row per request). Between two
requests a worker "thinks" for ``think_ms`` on average (uniformly 0.5x-1.5x)
without holding a connection, as an application doing other work would.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .sqlcheck import BadStatement, UnsafeStatement, check_read_only, placeholders

Generator = Callable[[random.Random], Any]

# A parameters file is a list of keys or values, not a dump: bound what is read.
MAX_PARAMS_FILE_BYTES = 64 * 1024 * 1024
MAX_WORKLOAD_FILE_BYTES = 1024 * 1024
MAX_THINK_MS = 60_000.0
_ALPHABET = string.ascii_letters + string.digits


class WorkloadError(ValueError):
    """A workload that cannot run as given; the message names the statement and the cause."""


@dataclass(frozen=True)
class Param:
    """One parameter generator, as written on the command line or in the YAML file."""

    spec: str
    draw: Generator


def parse_param(spec: str) -> Param:
    """Build the generator of ``int:LO:HI``, ``float:LO:HI``, ``choice:A,B,...``, ``str:N[:M]``."""
    kind, _, rest = str(spec).partition(":")
    kind = kind.strip().lower()
    try:
        draw = _GENERATORS[kind](rest)
    except KeyError:
        raise WorkloadError(
            f"parameter {spec!r}: unknown kind {kind!r}; use int:LO:HI, float:LO:HI, "
            "choice:A,B,C or str:LENGTH[:MAX]"
        ) from None
    except ValueError as exc:
        raise WorkloadError(f"parameter {spec!r}: {exc}") from None
    return Param(str(spec), draw)


def _bounds(rest: str, convert: Callable[[str], Any], kind: str) -> tuple[Any, Any]:
    parts = rest.split(":")
    if len(parts) != 2:
        raise ValueError(f"expected {kind}:LOW:HIGH")
    try:
        low, high = convert(parts[0]), convert(parts[1])
    except ValueError:
        raise ValueError(f"LOW and HIGH must be {kind} numbers") from None
    if low > high:
        raise ValueError(f"LOW is greater than HIGH ({low} > {high})")
    return low, high


def _int_param(rest: str) -> Generator:
    low, high = _bounds(rest, int, "int")
    return lambda rng: rng.randint(low, high)


def _float_param(rest: str) -> Generator:
    low, high = _bounds(rest, float, "float")
    return lambda rng: rng.uniform(low, high)


def _choice_param(rest: str) -> Generator:
    values = [_value(part) for part in rest.split(",")]
    if not rest or not values:
        raise ValueError("expected choice:A,B,...")
    return lambda rng: rng.choice(values)


def _str_param(rest: str) -> Generator:
    parts = rest.split(":")
    try:
        lengths = [int(part) for part in parts]
    except ValueError:
        raise ValueError("expected str:LENGTH or str:MIN:MAX with whole numbers") from None
    if len(lengths) not in (1, 2) or min(lengths) < 0 or lengths[0] > lengths[-1]:
        raise ValueError("expected str:LENGTH or str:MIN:MAX with 0 <= MIN <= MAX")
    low, high = lengths[0], lengths[-1]
    return lambda rng: "".join(rng.choices(_ALPHABET, k=rng.randint(low, high)))


_GENERATORS: dict[str, Callable[[str], Generator]] = {
    "int": _int_param,
    "float": _float_param,
    "choice": _choice_param,
    "str": _str_param,
}


def _value(text: str) -> Any:
    """A file or choice value: whole numbers as int (``LIMIT %s`` needs one), the rest as text."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        return stripped


def read_params_file(path: str | Path) -> list[tuple[Any, ...]]:
    """The rows of a parameters file: one request's values per line, by commas or tabs."""
    path = Path(path).expanduser()
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PARAMS_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read parameters file {path}: {exc}") from exc
    if len(raw) > MAX_PARAMS_FILE_BYTES:
        raise WorkloadError(
            f"parameters file {path} is larger than {MAX_PARAMS_FILE_BYTES // 2**20} MiB"
        )
    lines = [line for line in text.splitlines() if line.strip()]
    delimiter = "\t" if any("\t" in line for line in lines) else ","
    rows = [tuple(_value(cell) for cell in row) for row in csv.reader(lines, delimiter=delimiter)]
    if not rows:
        raise WorkloadError(f"parameters file {path} has no rows")
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise WorkloadError(
            f"parameters file {path}: rows have different numbers of values "
            f"({', '.join(map(str, sorted(widths)))})"
        )
    return rows


@dataclass(frozen=True)
class Statement:
    """One SQL statement with the source of its parameters."""

    sql: str
    params: tuple[Param, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    rows_source: str | None = None

    @property
    def reads_only(self) -> bool:
        """Whether the read-only check passes it (see sqlcheck)."""
        try:
            check_read_only(self.sql)
        except (UnsafeStatement, BadStatement):
            return False
        return True

    def arguments(self, rng: random.Random) -> tuple[Any, ...] | None:
        """The values of one execution; None when the statement takes none."""
        if self.rows:
            return self.rows[rng.randrange(len(self.rows))]
        if self.params:
            return tuple(param.draw(rng) for param in self.params)
        return None

    def describe(self) -> dict[str, Any]:
        params: list[str] = [p.spec for p in self.params]
        if self.rows_source is not None:
            params.append(f"file:{self.rows_source} ({len(self.rows)} rows)")
        return {"sql": self.sql, "params": params}


def make_statement(
    sql: str, params: Sequence[str] = (), params_file: str | Path | None = None, *, where: str
) -> Statement:
    """Check ``sql`` against its parameters; ``where`` names it in messages."""
    if not isinstance(sql, str) or not sql.strip():
        raise WorkloadError(f"{where}: the statement is empty")
    if params and params_file is not None:
        raise WorkloadError(f"{where}: give its parameters as generators or as a file, not both")
    gens = tuple(parse_param(spec) for spec in params)
    rows: tuple[tuple[Any, ...], ...] = ()
    if params_file is not None:
        rows = tuple(read_params_file(params_file))
    given = len(rows[0]) if rows else len(gens)
    count, problem = placeholders(sql)
    if given and problem is not None:
        raise WorkloadError(
            f"{where}: {problem!r} is not a placeholder: with parameters, use %s for each "
            "value and %% for a literal %"
        )
    if count != given:
        source = (
            f"{given} values per row in {params_file}"
            if rows
            else f"{given} parameter{'s' if given != 1 else ''}"
        )
        raise WorkloadError(
            f"{where}: {count} placeholder{'s' if count != 1 else ''} (%s) but {source}"
        )
    return Statement(sql.strip(), gens, rows, None if params_file is None else str(params_file))


@dataclass(frozen=True)
class Request:
    """What a worker does with one connection: a statement, or a transaction of several."""

    statements: tuple[Statement, ...]
    transaction: bool = False
    weight: float = 1.0
    writes: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # A write is committed at the end of its request, as the application would;
        # the pool would otherwise roll it back at return (autocommit off).
        object.__setattr__(self, "writes", not all(s.reads_only for s in self.statements))


@dataclass(frozen=True)
class Workload:
    """The requests, their weights and the think time between two requests."""

    requests: tuple[Request, ...]
    think_ms: float = 0.0
    source: str = "command line"
    _cumulative: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.requests:
            raise WorkloadError("the workload has no statements")
        check_think(self.think_ms)
        weights = [r.weight for r in self.requests]
        object.__setattr__(self, "_cumulative", list(itertools.accumulate(weights)))

    def pick(self, rng: random.Random) -> Request:
        if len(self.requests) == 1:
            return self.requests[0]
        point = rng.random() * self._cumulative[-1]
        return self.requests[bisect.bisect_right(self._cumulative, point)]

    def statements(self) -> list[Statement]:
        return [s for r in self.requests for s in r.statements]

    def check_read_only(self) -> None:
        """Raise WorkloadError naming the first statement that may write."""
        for number, statement in enumerate(self.statements(), 1):
            try:
                check_read_only(statement.sql)
            except (UnsafeStatement, BadStatement) as exc:
                raise WorkloadError(
                    f"refusing statement {number} ({_short(statement.sql)}): {exc}. "
                    "dbpool bench only reads unless you pass --allow-writes"
                ) from None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "think_ms": self.think_ms,
            "requests": [
                {
                    "weight": r.weight,
                    "transaction": r.transaction,
                    "statements": [s.describe() for s in r.statements],
                }
                for r in self.requests
            ],
        }


def check_think(think_ms: Any) -> float:
    if (
        isinstance(think_ms, bool)
        or not isinstance(think_ms, int | float)
        or not (0 <= think_ms <= MAX_THINK_MS)
    ):
        raise WorkloadError(f"think time must be 0 to {MAX_THINK_MS:.0f} ms (got {think_ms!r})")
    return float(think_ms)


def _short(sql: str, width: int = 60) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def from_arguments(
    statements: Sequence[tuple[str, list[str], str | None]], think_ms: float
) -> Workload:
    """The workload of ``--sql`` options, each with its ``--param``s or ``--params-file``."""
    return Workload(
        tuple(
            Request((make_statement(sql, params, params_file, where=f"--sql #{number}"),))
            for number, (sql, params, params_file) in enumerate(statements, 1)
        ),
        think_ms=think_ms,
    )


def load_workload(path: str | Path) -> Workload:
    """Read a YAML workload file (see README.rst, "Which mode for my workload?")."""
    path = Path(path).expanduser()
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_WORKLOAD_FILE_BYTES + 1)
        data = yaml.safe_load(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = "" if mark is None else f" at line {mark.line + 1}"
        raise WorkloadError(f"workload file {path} is not valid YAML{line}") from None
    if len(raw) > MAX_WORKLOAD_FILE_BYTES:
        raise WorkloadError(f"workload file {path} is larger than 1 MiB")
    where = f"workload file {path}"
    if not isinstance(data, Mapping):
        raise WorkloadError(f"{where}: expected a mapping with a 'statements:' list")
    unknown = sorted(str(key) for key in data if key not in ("statements", "think_ms"))
    if unknown:
        raise WorkloadError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; "
            "valid keys: 'statements', 'think_ms'"
        )
    items = data.get("statements")
    if not isinstance(items, list) or not items:
        raise WorkloadError(f"{where}: 'statements:' must be a non-empty list")
    requests = tuple(
        _request(item, path, f"{where}, statements[{i}]") for i, item in enumerate(items)
    )
    think = data.get("think_ms", 0)
    try:
        return Workload(requests, think_ms=check_think(think), source=str(path))
    except WorkloadError as exc:
        raise WorkloadError(f"{where}: {exc}") from None


_STATEMENT_KEYS = ("sql", "params", "params_file")


def _request(item: Any, path: Path, where: str) -> Request:
    if isinstance(item, str):
        item = {"sql": item}
    if not isinstance(item, Mapping):
        raise WorkloadError(f"{where}: expected a mapping with 'sql:' or 'transaction:'")
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise WorkloadError(f"{where}: weight must be a positive number (got {weight!r})")
    if "transaction" in item:
        _no_unknown(item, ("transaction", "weight"), where)
        body = item["transaction"]
        if not isinstance(body, list) or not body:
            raise WorkloadError(f"{where}: 'transaction:' must be a non-empty list of statements")
        statements = tuple(
            _statement(s, path, f"{where}.transaction[{j}]") for j, s in enumerate(body)
        )
        return Request(statements, transaction=True, weight=float(weight))
    _no_unknown(item, (*_STATEMENT_KEYS, "weight"), where)
    statement = {key: value for key, value in item.items() if key != "weight"}
    return Request((_statement(statement, path, where),), weight=float(weight))


def _statement(item: Any, path: Path, where: str) -> Statement:
    if isinstance(item, str):
        item = {"sql": item}
    if not isinstance(item, Mapping) or "sql" not in item:
        raise WorkloadError(f"{where}: expected a mapping with 'sql:'")
    _no_unknown(item, _STATEMENT_KEYS, where)
    params = item.get("params") or []
    if not isinstance(params, list):
        params = [params]
    params_file = item.get("params_file")
    if params_file is not None:
        params_file = path.parent / Path(str(params_file)).expanduser()
    return make_statement(item["sql"], [str(p) for p in params], params_file, where=where)


def _no_unknown(item: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in item if key not in allowed)
    if unknown:
        raise WorkloadError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(map(repr, allowed))}"
        )
