"""The PyMySQL internals dbpool builds on are checked when a pool is made."""

from __future__ import annotations

import importlib.metadata

import pymysql.connections
import pytest

from dbpool import ConfigError, make_pool


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        ("Connection", "_read_query_result"),
        ("Connection", "_execute_command"),
        ("Connection", "_create_ssl_ctx"),
        ("Connection", "_read_packet"),
        ("MySQLResult", "_check_packet_is_eof"),
    ],
)
def test_a_missing_pymysql_internal_fails_at_pool_creation(
    monkeypatch: pytest.MonkeyPatch, owner: str, name: str
) -> None:
    monkeypatch.delattr(getattr(pymysql.connections, owner), name)
    with pytest.raises(ConfigError) as caught:
        make_pool(driver="pymysql", host="127.0.0.1", port=1, user="u", password="pw")
    message = str(caught.value)
    assert f"PyMySQL {importlib.metadata.version('PyMySQL')} " in message
    assert f"{owner}.{name}" in message


def test_the_installed_pymysql_has_every_internal() -> None:
    pool = make_pool(driver="pymysql", host="127.0.0.1", port=1, user="u", password="pw")
    pool.dispose()
