"""The embedded default: SQLite through the same pool, with no server and no config."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from dbpool import ConfigError, ConnectError, ConnectionPool, make_pool
from dbpool.cli import main


def test_no_config_gives_the_embedded_database(cwd: Path, pools: list[Any], pool_mode: str) -> None:
    pool = make_pool(mode=pool_mode)
    pools.append(pool)
    assert pool.settings.driver == "sqlite"
    with pool as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (?)", (1,))
        conn.commit()
    assert (cwd / "dbpool.sqlite3").exists()
    other = make_pool(mode=pool_mode)
    pools.append(other)
    with other as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_memory_database_is_one_database_per_pool(pools: list[Any], pool_mode: str) -> None:
    pool = make_pool(mode=pool_mode, path=":memory:")
    pools.append(pool)
    with pool as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (7)")
        conn.commit()
    rows: list[Any] = []

    def read() -> None:  # another thread: another connection in both modes
        with pool as conn:
            rows.extend(conn.execute("SELECT x FROM t").fetchall())

    held = pool.acquire()  # so that the reader needs a second connection in shared mode too
    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    pool.release(held)
    assert rows == [(7,)]
    assert pool.get_stats()["created"] == 2
    pool.close_all()  # no connection open: the database still lives while the pool does
    with pool as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
    separate = make_pool(mode=pool_mode, path=":memory:")
    pools.append(separate)
    with separate as conn, pytest.raises(Exception, match="no such table"):
        conn.execute("SELECT x FROM t")


def test_uncommitted_work_rolled_back_on_release(pools: list[Any]) -> None:
    pool = make_pool(size=1, max_overflow=0)
    pools.append(pool)
    with pool as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (1)")
    with pool as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchall() == [(0,)]


def test_unopenable_path_fails_at_once(cwd: Path, pools: list[Any]) -> None:
    pool = make_pool(path=str(cwd / "missing-dir" / "x.db"), timeout=10)
    pools.append(pool)
    with pytest.raises(ConnectError, match="unable to open"):
        pool.acquire()
    assert pool.get_stats()["connect_failures"] == 1


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"size": -1}, ConfigError, r"size cannot be negative \(got -1\)"),
        ({"max_overflow": -1}, ConfigError, r"max_overflow cannot be negative \(got -1\)"),
        ({"size": "ten"}, ConfigError, "size must be an integer"),
        ({"timeout": -5}, ConfigError, "timeout cannot be negative"),
        ({"size": 0, "max_overflow": 0}, ConfigError, r"size \+ max_overflow must be at least 1"),
        ({"driver": "oracle"}, ValueError, "'pymysql', 'mysql-connector', 'sqlite'"),
        ({"mode": "fast"}, ValueError, "'shared', 'persistent'"),
        ({"config": "/nonexistent/config.yaml"}, ConfigError, "/nonexistent/config.yaml"),
    ],
)
def test_bad_input_named(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make_pool(**options)


def test_unknown_config_name_lists_the_names(cwd: Path) -> None:
    (cwd / "config.yaml").write_text(
        "database:\n"
        "  primary: {driver: sqlite, path: a.db}\n"
        "  replica: {driver: sqlite, path: b.db}\n"
    )
    with pytest.raises(ConfigError, match="'primary', 'replica'"):
        ConnectionPool(config_name="reporting")


def test_demo_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tasks", "40", "--threads", "3"]) == 0
    out = capsys.readouterr().out
    assert "shared mode on 'primary' (sqlite://" in out
    assert "persistent mode on" in out
    assert '"acquired": 42' in out  # the tasks, the scratch table's CREATE and DROP


def test_mode_from_the_config_entry(cwd: Path, pools: list[Any]) -> None:
    (cwd / "config.yaml").write_text(
        "database:\n  primary: {driver: sqlite, path: a.db, pool: {mode: persistent}}\n"
    )
    pool = make_pool()
    pools.append(pool)
    assert pool.mode == "persistent"
    explicit = make_pool(mode="shared")
    pools.append(explicit)
    assert explicit.mode == "shared"


@pytest.mark.parametrize("where", ["file", ":memory:"])
def test_overlapping_writes_and_reads(
    cwd: Path, pools: list[Any], pool_mode: str, where: str
) -> None:
    """Eight threads writing and reading at once: the in-memory database behaves like a file."""
    path = str(cwd / "busy.db") if where == "file" else ":memory:"
    pool = make_pool(mode=pool_mode, path=path, size=8, max_overflow=0, timeout=30)
    pools.append(pool)
    with pool as conn:
        conn.execute("CREATE TABLE t (thread INTEGER, n INTEGER)")
        conn.commit()
    threads, rounds = 8, 60
    errors: list[str] = []
    start = threading.Barrier(threads)

    def work(me: int) -> None:
        start.wait()
        for n in range(rounds):
            try:
                with pool as conn:
                    if n % 2:
                        conn.execute("INSERT INTO t VALUES (?, ?)", (me, n))
                        conn.commit()
                    else:
                        conn.execute("SELECT COUNT(*) FROM t").fetchall()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work, args=(me,)) for me in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with pool as conn:
        written = conn.execute("SELECT COUNT(*) FROM t").fetchall()[0][0]
    print(
        f"\nsqlite/{where}/{pool_mode}: {len(errors)} of {threads * rounds} operations failed "
        f"{sorted(set(errors))[:3]}"
    )
    assert errors == []
    assert written == threads * rounds // 2


def test_memory_database_without_memdb(
    pools: list[Any], pool_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite older than 3.36 has no memdb VFS: a private file stands in, deleted at dispose."""
    import dbpool.drivers

    monkeypatch.setattr(dbpool.drivers, "_MEMDB", False)
    test_overlapping_writes_and_reads(Path.cwd(), pools, pool_mode, ":memory:")
    pool = pools[-1]
    with pool as conn:
        files = [row[2] for row in conn.execute("PRAGMA database_list")]
    assert files[0] and Path(files[0]).exists()
    pool.dispose()
    assert not Path(files[0]).parent.exists()
