"""The facade's SQL on every driver: placeholder dialects, and the readers of results."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .connection import PooledConnection

Params = Sequence[Any] | Mapping[str, Any] | None
Row = tuple[Any, ...]

# -- placeholders ----------------------------------------------------------------
#
# The facade's SQL follows PyMySQL's rules on every driver: %s and %(name)s are
# placeholders and, when parameters are given, %% is a literal percent sign.

_TOKEN = re.compile(r"%%|%\((\w+)\)s|%s")


@functools.lru_cache(maxsize=512)
def _to_qmark(sql: str) -> str:
    """sqlite3: %s becomes ?, %(name)s becomes :name, %% becomes %; native SQL stays as is."""
    found = False

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        token = match.group(0)
        if token == "%%":
            return "%"
        found = True
        name = match.group(1)
        return "?" if name is None else f":{name}"

    converted = _TOKEN.sub(replace, sql)
    # Without a %-placeholder the statement is written in sqlite's own style (?, :name).
    return converted if found else sql


@functools.lru_cache(maxsize=512)
def _unescape_percent(sql: str) -> str:
    """mysql-connector: %% becomes %, as PyMySQL reads it; placeholders are left alone."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token != "%%":
            return token
        following = sql[match.end() : match.end() + 1]
        if following in ("s", "("):
            raise ValueError(
                f"mysql-connector cannot tell a literal '%{following}' from a placeholder in "
                f"{sql!r}: pass that text as a parameter instead"
            )
        return "%"

    return _TOKEN.sub(replace, sql)


class _Dialect:
    """How one driver wants the facade's %s-style SQL."""

    def __init__(self, convert: Callable[[str], str] | None) -> None:
        self._convert = convert

    def sql(self, sql: str, has_params: bool) -> str:
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a string (got {type(sql).__name__})")
        if self._convert is None or not has_params:
            return sql
        return self._convert(sql)


_FORMAT = _Dialect(None)
_DIALECTS = {"sqlite": _Dialect(_to_qmark), "mysql-connector": _Dialect(_unescape_percent)}


def _dialect_of(conn: Any) -> _Dialect:
    """The dialect of a connection handed in from outside (DB=...)."""
    raw = conn.dbapi_connection if isinstance(conn, PooledConnection) else conn
    if isinstance(raw, sqlite3.Connection):
        return _DIALECTS["sqlite"]
    if any(cls.__module__.startswith("mysql.connector") for cls in type(raw).__mro__):
        return _DIALECTS["mysql-connector"]
    return _FORMAT


# -- reading a result --------------------------------------------------------------


def _rows(cur: Any) -> list[Row]:
    return [tuple(row) for row in cur.fetchall()]


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [column[0] for column in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _rowcount(cur: Any) -> int:
    if cur.description is not None:
        cur.fetchall()  # mysql-connector refuses to close a cursor with unread rows
    return int(cur.rowcount)


def _lastrowid(cur: Any) -> int | None:
    if cur.description is not None:
        cur.fetchall()
    value = cur.lastrowid
    return None if value is None else int(value)
