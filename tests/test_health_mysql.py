"""Health against MariaDB: pool.check(), dbpool check and the example's /healthz, up and down."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest

from dbpool.cli import main
from tests.fix_appserver import EXAMPLES, AppServers, app_env
from tests.fix_proxy import TCPProxy


@pytest.fixture
def down_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, params: dict[str, Any], **changes: Any) -> Path:
    p = {**params, **changes}
    path.write_text(
        "database:\n"
        "  primary:\n"
        f"    host: {p['host']}\n"
        f"    port: {p['port']}\n"
        f"    user: {p['user']}\n"
        f"    password: {p['password']}\n"
        f"    database: {p['database']}\n"
        "    connect_timeout: 2\n"
    )
    return path


def checked(pool: Any, timeout: float) -> dict[str, Any]:
    """pool.check() in a thread that must end: a check that hangs fails the test."""
    box: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: box.append(pool.check(timeout=timeout)), daemon=True)
    thread.start()
    thread.join(timeout + 20)
    assert not thread.is_alive(), "check() did not return"
    return box[0]


# -- pool.check() ---------------------------------------------------------------------


@pytest.mark.timing
def test_check_up(mysql_pool: Any, mysql_params: dict[str, Any]) -> None:
    pool = mysql_pool(name="up")
    result = checked(pool, 5)
    assert result["ok"] is True and result["error"] is None
    assert 0 < result["latency_s"] < 5
    assert (result["host"], result["port"]) == (mysql_params["host"], mysql_params["port"])
    assert (result["in_use"], result["waiting"], result["name"]) == (0, 0, "up")
    assert pool.get_stats()["created"] == 1


def test_check_down(mysql_pool: Any, down_port: int) -> None:
    pool = mysql_pool(port=down_port, name="down")
    result = checked(pool, 2)
    assert result["ok"] is False and result["latency_s"] is None
    assert "cannot connect to 'down'" in result["error"]
    assert "cannot be reached" in result["error"]


def test_check_silent_server_respects_the_timeout(mysql_pool: Any, proxy: TCPProxy) -> None:
    pool = mysql_pool(port=proxy.port, name="silent")
    assert checked(pool, 5)["ok"] is True
    proxy.blackhole()  # the kept connection and any new one: no answer at all
    result = checked(pool, 1)
    assert result["ok"] is False
    assert result["in_use"] == 0
    proxy.heal()
    assert checked(pool, 5)["ok"] is True


def test_check_after_the_server_dropped_the_connection(
    mysql_pool: Any, admin: pymysql.connections.Connection
) -> None:
    pool = mysql_pool(name="dropped", ping_interval=0)
    with pool as conn:
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        (thread_id,) = cur.fetchone()
        cur.close()
    with admin.cursor() as cur:
        cur.execute(f"KILL {int(thread_id)}")
    assert checked(pool, 5)["ok"] is True  # replaced, not reported


# -- dbpool check -------------------------------------------------------------------------


def test_dbpool_check_ok(
    mysql_params: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "app.yaml", mysql_params)
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 'primary' (pymysql://")
    assert mysql_params["password"] not in out


def test_dbpool_check_wrong_password(
    mysql_params: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "app.yaml", mysql_params, password=wrong)
    assert main(["--config", str(config), "check"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "dbpool check: check FAILED for 'primary' (pymysql://" in captured.err
    assert "Access denied" in captured.err
    assert wrong not in captured.err


def test_dbpool_check_down_server(
    mysql_params: dict[str, Any],
    down_port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path / "app.yaml", mysql_params, port=down_port)
    assert main(["check", "--config", str(config), "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert f":{down_port}/" in err and "cannot be reached" in err


# -- the FastAPI example's /healthz -------------------------------------------------------


def test_healthz_follows_the_server(
    mysql_params: dict[str, Any],
    proxy: TCPProxy,
    tmp_path: Path,
    admin: pymysql.connections.Connection,
    app_servers: AppServers,
) -> None:
    table = f"users_{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "config.yaml", mysql_params, port=proxy.port)
    env = app_env({"DBPOOL_CONFIG": str(config), "APP_USERS_TABLE": table})
    try:
        with app_servers.uvicorn("fastapi_app:app", app_dir=EXAMPLES, env=env) as app:
            base = app.url
            up = httpx.get(f"{base}/healthz", timeout=30)
            assert up.status_code == 200, up.text
            assert up.json()["ok"] is True and up.json()["name"] == "primary"
            proxy.reset()  # every connection cut, new ones refused
            down = httpx.get(f"{base}/healthz", timeout=30)
            assert down.status_code == 503, down.text
            assert down.json()["ok"] is False and down.json()["error"]
            assert mysql_params["password"] not in down.text
            proxy.heal()
            for _ in range(50):  # bounded: the next check connects again
                again = httpx.get(f"{base}/healthz", timeout=30)
                if again.status_code == 200:
                    break
            assert again.status_code == 200, again.text
            metrics = httpx.get(f"{base}/metrics", timeout=30)
            assert metrics.status_code == 200
            assert 'db_client_connection_max{db_client_connection_pool_name="primary"}' in (
                metrics.text
            )
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {mysql_params['database']}.{table}")
