"""The dbpool command over SQLite and the fake driver: check, demo, help, top's parsing."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from dbpool import make_pool
from dbpool._top import parse, quantile
from dbpool.cli import main
from dbpool.metrics import PoolCollector
from tests.fakedb import FakeDriver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DBPOOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sqlite_config(directory: Path, pool: str = "") -> Path:
    path = directory / "app.yaml"
    path.write_text(
        "database:\n"
        f"  primary: {{driver: sqlite, path: app.db{pool}}}\n"
        "  other: {driver: sqlite, path: other.db}\n"
    )
    return path


# -- help ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["check"], ["demo"], ["top"]])
def test_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: dbpool")
    for markup in ("``", ":func:", ":class:", ".. ", "::\n"):
        assert markup not in text, markup


def test_python_dash_m_and_the_console_script() -> None:
    for command in (
        [sys.executable, "-m", "dbpool", "--help"],
        [str(Path(sys.executable).with_name("dbpool")), "--help"],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "usage: dbpool" in done.stdout


# -- check ---------------------------------------------------------------------------


def test_check_without_a_config_fails_and_creates_nothing(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no config file" in captured.err and "--sqlite" in captured.err
    assert str(cwd / "config.yaml") in captured.err
    assert not (cwd / "dbpool.sqlite3").exists()


def test_check_sqlite_on_purpose(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--sqlite"]) == 0
    out = capsys.readouterr().out
    assert re.match(r"ok: 'primary' \(sqlite://.*dbpool\.sqlite3\) answered in [\d.]+ ms", out)


def test_check_sqlite_refused_when_a_config_exists(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cwd / "config.yaml").write_text("database:\n  primary: {driver: sqlite, path: a.db}\n")
    assert main(["check", "--sqlite"]) == 2
    assert "there is a config file" in capsys.readouterr().err
    assert main(["check", "--sqlite", "--config", "config.yaml"]) == 2


def test_check_missing_config_file_named(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", "nope.yaml"]) == 2
    assert f"config file {cwd / 'nope.yaml'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--config", "app.yaml", "--config-name", "other"],
        ["--config", "app.yaml", "--config-name", "other", "check"],
        ["--config", "app.yaml", "check", "--config-name", "other"],
        [
            "--config",
            "elsewhere.yaml",
            "--config-name",
            "primary",
            "check",
            "--config",
            "app.yaml",
            "--config-name",
            "other",
        ],
    ],
)
def test_options_before_or_after_the_command(
    cwd: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_config(cwd)
    assert main(argv) == 0, capsys.readouterr().err
    assert "ok: 'other' (sqlite://" in capsys.readouterr().out


def test_check_json(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    sqlite_config(cwd)
    assert main(["check", "--json", "--config", "app.yaml"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["name"] == "primary"
    assert result["host"] == str(cwd / "app.db")


# -- demo ----------------------------------------------------------------------------


def test_demo_leaves_the_users_tables_alone(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sqlite_config(cwd, pool=", pool: {size: 3, max_overflow: 1}")
    with sqlite3.connect(cwd / "app.db") as db:  # a table of the user's, named as the old demo's
        db.execute("CREATE TABLE dbpool_demo (worker TEXT, n INTEGER)")
        db.execute("INSERT INTO dbpool_demo VALUES ('mine', 1)")
    db.close()
    assert main(["demo", "--config", "app.yaml", "--tasks", "30", "--threads", "3"]) == 0
    out = capsys.readouterr().out
    tables = re.findall(r"scratch table (dbpool_demo_[0-9a-f]{12}) \(dropped at the end\)", out)
    assert len(tables) == 2 and tables[0] == tables[1]
    assert f"dropped {tables[0]}" in out
    assert "(size 3, max 4)" in out  # the config's sizes
    assert "persistent mode: using 3 threads" not in out  # 3 threads fit in 4
    with sqlite3.connect(cwd / "app.db") as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
        assert names == ["dbpool_demo"]
        assert db.execute("SELECT * FROM dbpool_demo").fetchall() == [("mine", 1)]
    db.close()
    assert '"acquired": 32' in out  # the tasks, the CREATE and the DROP


def test_demo_sizes_given_win(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sqlite_config(cwd, pool=", pool: {size: 3, max_overflow: 1}")
    argv = [
        "--config",
        "app.yaml",
        "demo",
        "--tasks",
        "10",
        "--threads",
        "4",
        "--size",
        "1",
        "--max-overflow",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(size 1, max 2)" in out
    assert "persistent mode: using 2 threads, one per connection" in out


# -- top's reading of the endpoint ----------------------------------------------------------


def test_quantile_interpolates_within_the_bucket() -> None:
    inf = float("inf")
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0, 1.0: 0, inf: 0}) is None
    assert quantile(0.5, {0.1: 0, 1.0: 10, inf: 10}) == pytest.approx(0.55)
    assert quantile(0.99, {0.1: 90, 1.0: 100, inf: 100}) == pytest.approx(0.91)
    assert quantile(0.5, {0.1: 10, 1.0: 10, inf: 10}) == pytest.approx(0.05)
    assert quantile(0.99, {0.1: 0, 1.0: 1, inf: 100}) == 1.0  # beyond the last bound


def test_parse_reads_what_the_collector_writes(pools: list[Any]) -> None:
    pool = make_pool(driver=FakeDriver(), name="parsed", size=2, max_overflow=1)
    pools.append(pool)
    for _ in range(3):
        with pool:
            pass
    held = pool.acquire()
    registry = CollectorRegistry()
    registry.register(PoolCollector(pool))
    figures = parse(generate_latest(registry).decode())["parsed"]
    stats = pool.get_stats()
    assert (figures.used, figures.idle, figures.max, figures.waiting) == (1, 0, 3, 0)
    assert figures.requests == stats["requests"] == 4
    assert figures.wait_buckets[float("inf")] == stats["wait_time"]["count"] == 3  # returned
    pool.release(held)


def test_parse_adds_up_the_servers_of_a_pool(pools: list[Any]) -> None:
    driver = FakeDriver()
    pool = make_pool(
        driver=driver, user="app", name="spread", host=["a", "b"], replicas=["r1"], size=2
    )
    pools.append(pool)
    driver.server("a:3306").down = True
    held = [pool.acquire(), pool.acquire(readonly=True)]
    spare = pool.acquire()
    pool.release(spare)
    registry = CollectorRegistry()
    registry.register(PoolCollector(pool))
    figures = parse(generate_latest(registry).decode())["spread"]
    stats = pool.get_stats()
    assert figures.used == stats["in_use"] + stats["replicas"]["in_use"] == 2
    assert figures.idle == stats["pool_size"] + stats["replicas"]["pool_size"] == 1
    for conn in held:
        pool.release(conn)


@pytest.fixture
def endpoint(pools: list[Any]) -> Iterator[tuple[str, Any]]:
    pool = make_pool(driver=FakeDriver(), name="served", size=2, max_overflow=0)
    pools.append(pool)
    registry = CollectorRegistry()
    registry.register(PoolCollector(pool))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", pool
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_top_once_prints_a_view(
    endpoint: tuple[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    url, pool = endpoint
    held = pool.acquire()
    assert main(["top", url, "--once", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "served" in line)
    assert "█" in row and "░" in row
    assert re.search(r"served +█{12}░{12} +1/0/2 +0 +0\.0 +- +- +0\.0 +0\.0", row), row
    pool.release(held)


def test_top_unreachable_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["top", f"http://127.0.0.1:{port}/metrics", "--once", "--interval", "0.05"]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_top_without_the_cli_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in [name for name in sys.modules if name.split(".")[0] == "rich"] + ["rich"]:
        monkeypatch.setitem(sys.modules, module, None)  # None: an import of it fails
    monkeypatch.delitem(sys.modules, "dbpool._top", raising=False)
    assert main(["top", "http://127.0.0.1:9/metrics"]) == 2
    assert "pip install 'dbpool-dbutils[cli]'" in capsys.readouterr().err
