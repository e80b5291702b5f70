"""Run one statement on a DB-API connection (pooled or the driver's own) and read the answer."""

from __future__ import annotations

from typing import Any


def run(conn: Any, sql: str, args: Any = None) -> list[Any]:
    """The rows ``sql`` returns (none for a statement without a result); the cursor closed."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def value(conn: Any, sql: str, args: Any = None) -> Any:
    """The first column of the first row; bytes (some drivers' strings) decoded."""
    result = run(conn, sql, args)[0][0]
    return result.decode() if isinstance(result, bytes | bytearray) else result
