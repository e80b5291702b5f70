"""Arguments that must not slip past validation, and passwords that must not leak or garble.

Fast tier: no server. A refused loopback port stands in for an unreachable server,
and a small custom driver plays one that echoes its parameters in an error.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from typing import Any

import pytest

from dbpool import ConfigError, ConnectError, make_pool
from dbpool.drivers import Driver

SECRET = "hunter2-argument-secret"


def full_text(exc: BaseException) -> str:
    """Everything a user could see of an error: message, repr, whole chained traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


# A loopback port nothing listens on: the connect is refused at once.
REFUSED = {"host": "127.0.0.1", "port": 1, "user": "u"}


# -- the password in messages -----------------------------------------------------------


@pytest.mark.parametrize("driver", ["pymysql", "mysql-connector"])
@pytest.mark.parametrize("password", ["o", "t", "on", "to", "1", "'", "a b"])
def test_short_password_leaves_the_message_readable(
    driver: str, password: str, pools: list[Any]
) -> None:
    pool = make_pool(**REFUSED, password=password, driver=driver, timeout=5)
    pools.append(pool)
    with pytest.raises(ConnectError) as caught:
        pool.acquire(max_retries=0)
    text = str(caught.value)
    print(f"\n{driver} password {password!r}: {text}")
    assert "***" not in text
    assert "Can't connect to MySQL server on '127.0.0.1" in text
    assert "cannot connect to" in text


class EchoingDriver(Driver):
    """A driver whose connect error quotes its parameters, as a careless one might."""

    name = "echo"

    def connect(self, params: Mapping[str, Any], timeout: float | None) -> Any:
        raise OSError(
            f"Can't connect to the server with {dict(params)!r}; "
            f"password={params['password']} user: {params['user']}"
        )


@pytest.mark.parametrize("password", [SECRET, "o", "to", "x'y"])
def test_password_is_scrubbed_where_it_appears_as_a_value(password: str, pools: list[Any]) -> None:
    pool = make_pool(**REFUSED, password=password, driver=EchoingDriver(), timeout=5)
    pools.append(pool)
    with pytest.raises(ConnectError) as caught:
        pool.acquire(max_retries=0)
    text = str(caught.value)
    print(f"\npassword {password!r}: {text}")
    assert "Can't connect to the server with" in text
    assert "'user': 'u'" in text
    assert "user: u" in text
    assert f"'password': {password!r}" not in text
    assert f"password={password} " not in text
    assert "'password': '***'" in text
    assert "password=*** " in text
    if len(password) > 3:
        assert password not in text


@pytest.mark.parametrize(
    ("driver", "password"),
    [
        ("pymysql", f"{SECRET}-\u20ac"),  # PyMySQL sends the password as Latin-1
        ("mysql-connector", f"{SECRET}-\udcff"),  # a lone surrogate has no UTF-8 form
    ],
)
def test_password_the_driver_cannot_encode_is_refused_up_front(driver: str, password: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(**REFUSED, password=password, driver=driver)
    text = str(caught.value)
    print(f"\n{driver}: {text}")
    assert "password" in text
    assert driver in text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert SECRET not in full_text(caught.value)


# -- arguments that escape validation -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"config_name": 1}, "config_name must be a string (got 1)"),
        ({"config_name": None}, "config_name must be a string (got None)"),
        ({"config": 123}, "config must be a path (got 123)"),
        ({"config": ["a.yaml"]}, "config must be a path (got ['a.yaml'])"),
    ],
)
def test_bad_config_arguments(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(**kwargs, password=SECRET)
    print(f"\n{kwargs}: {caught.value}")
    assert words in str(caught.value)
    assert SECRET not in full_text(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"timeout": "1"},
            TypeError,
            "acquire(): timeout must be a number of seconds or None (got '1')",
        ),
        ({"timeout": True}, TypeError, "acquire(): timeout must be a number of seconds"),
        (
            {"timeout": math.nan},
            ValueError,
            "acquire(): timeout must be a finite number of seconds (got nan)",
        ),
        ({"timeout": math.inf}, ValueError, "acquire(): timeout must be a finite number"),
        ({"timeout": -1}, ValueError, "acquire(): timeout cannot be negative (got -1)"),
        ({"max_retries": "3"}, TypeError, "acquire(): max_retries must be an integer (got '3')"),
        ({"max_retries": 1.5}, TypeError, "acquire(): max_retries must be an integer (got 1.5)"),
        ({"max_retries": None}, TypeError, "acquire(): max_retries must be an integer"),
        ({"max_retries": -1}, ValueError, "max_retries cannot be negative (got -1)"),
    ],
)
def test_bad_acquire_arguments(
    kwargs: dict[str, Any], error: type[BaseException], words: str, pools: list[Any]
) -> None:
    pool = make_pool(path=":memory:")
    pools.append(pool)
    with pytest.raises(error) as caught:
        pool.acquire(**kwargs)
    print(f"\nacquire({kwargs}): {type(caught.value).__name__}: {caught.value}")
    assert words in str(caught.value)
    # Nothing was lent, nothing is stuck.
    stats = pool.get_stats()
    assert (stats["in_use"], stats["acquired"]) == (0, 0)
    with pool.acquire(timeout=1, max_retries=0) as conn:
        conn.execute("SELECT 1")


@pytest.mark.parametrize("driver", ["pymysql", "mysql-connector"])
@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("connect_timeout", "ten", "connect_timeout must be a number of seconds (got 'ten')"),
        ("connect_timeout", -1, "connect_timeout cannot be negative (got -1)"),
        ("connect_timeout", math.nan, "connect_timeout must be a finite number"),
        ("read_timeout", "300", "read_timeout must be a number of seconds (got '300')"),
        ("write_timeout", [1], "write_timeout must be a number of seconds"),
    ],
)
def test_bad_timeout_parameter_is_named(driver: str, option: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(**REFUSED, password=SECRET, driver=driver, **{option: value})
    print(f"\n{driver} {option}={value!r}: {caught.value}")
    assert words in str(caught.value)
    assert SECRET not in full_text(caught.value)


def test_use_pure_false_without_the_c_extension() -> None:
    import mysql.connector

    if getattr(mysql.connector, "HAVE_CEXT", False):
        pytest.skip("mysql-connector's C extension is available here")
    with pytest.raises(ConfigError) as caught:
        make_pool(**REFUSED, password=SECRET, driver="mysql-connector", use_pure=False)
    text = str(caught.value)
    print(f"\n{text}")
    assert "use_pure=False" in text
    assert "C extension" in text
    assert SECRET not in full_text(caught.value)


def test_bad_use_pure_value() -> None:
    with pytest.raises(ConfigError, match=r"use_pure must be true or false \(got 'no'\)"):
        make_pool(**REFUSED, driver="mysql-connector", use_pure="no")
