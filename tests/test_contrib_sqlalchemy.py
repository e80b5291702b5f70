"""dbpool.contrib.sqlalchemy: SQLAlchemy Core and ORM on connections lent by a dbpool pool."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, String, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from dbpool import make_pool
from dbpool.contrib.sqlalchemy import DBPoolSource, create_engine

THREADS = 32
ROUNDS = 6  # per thread: each round commits two rows and rolls two back


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "sa_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))


@pytest.fixture
def sqlite_pool(tmp_path: Path, pools: list[Any]) -> Any:
    pool = make_pool(driver="sqlite", path=str(tmp_path / "sa.sqlite3"))
    pools.append(pool)
    return pool


@pytest.fixture
def engines() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for engine in made:
        engine.dispose()


# -- fast tier -------------------------------------------------------------------------


def test_sqlite_engine_core_and_orm(sqlite_pool: Any, engines: list[Any]) -> None:
    engine = create_engine(sqlite_pool)
    engines.append(engine)
    assert (engine.dialect.name, engine.dialect.driver) == ("sqlite", "pysqlite")
    assert isinstance(engine.pool, DBPoolSource)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add_all([Item(worker=1, kind="kept"), Item(worker=2, kind="kept")])
    with Session(engine) as session:
        session.add(Item(worker=3, kind="dropped"))
        session.flush()
        session.rollback()
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Item)) == 2
    stats = sqlite_pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["acquired"] == stats["released"] > 0


def test_pooling_options_of_sqlalchemy_are_refused(sqlite_pool: Any) -> None:
    for option in (
        {"poolclass": NullPool},
        {"pool_size": 5},
        {"pool_pre_ping": True},
        {"pool_recycle": 60},
        {"pool_reset_on_return": "rollback"},
    ):
        with pytest.raises(TypeError, match=next(iter(option))):
            create_engine(sqlite_pool, **option)
    with pytest.raises(TypeError, match="ConnectionPool"):
        create_engine("sqlite://")  # type: ignore[arg-type]


def test_engine_dispose_leaves_the_pool_open(sqlite_pool: Any) -> None:
    engine = create_engine(sqlite_pool)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    with engine.connect() as conn:  # a disposed engine makes a fresh pool on the same dbpool
        assert conn.scalar(text("SELECT 2")) == 2
    assert isinstance(engine.pool, DBPoolSource)
    assert engine.pool.dbpool is sqlite_pool
    with sqlite_pool as conn:
        conn.cursor().execute("SELECT 1")


# -- against MariaDB -----------------------------------------------------------------


def _dialect_driver(mysql_driver: str) -> str:
    return {"pymysql": "pymysql", "mysql-connector": "mysqlconnector"}[mysql_driver]


def test_url_names_dialect_and_target_without_password(
    mysql_pool: Callable[..., Any],
    mysql_driver: str,
    mysql_params: dict[str, Any],
    engines: list[Any],
) -> None:
    pool = mysql_pool()
    engine = create_engine(pool)
    engines.append(engine)
    assert engine.dialect.name == "mysql"
    assert engine.dialect.driver == _dialect_driver(mysql_driver)
    assert engine.url.host == mysql_params["host"]
    assert engine.url.database == mysql_params["database"]
    assert mysql_params["password"] not in repr(engine)
    assert mysql_params["password"] not in engine.pool.status()


def test_core_and_orm_sessions_under_32_threads(
    mysql_pool: Callable[..., Any], pool_mode: str, engines: list[Any]
) -> None:
    # Persistent mode keeps a connection per thread: give every thread a slot.
    size, overflow = (6, 2) if pool_mode == "shared" else (THREADS, 0)
    pool = mysql_pool(size=size, max_overflow=overflow, timeout=60)
    engine = create_engine(pool)
    engines.append(engine)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(worker: int) -> None:
        try:
            start.wait()
            for _ in range(ROUNDS):
                with engine.begin() as conn:  # Core, committed
                    conn.execute(Item.__table__.insert(), {"worker": worker, "kind": "core"})
                with engine.connect() as conn:  # Core, rolled back
                    conn.execute(Item.__table__.insert(), {"worker": worker, "kind": "lost"})
                    conn.rollback()
                with Session(engine) as session:  # ORM, committed
                    session.add(Item(worker=worker, kind="orm"))
                    session.commit()
                with Session(engine) as session:  # ORM, rolled back by an exception
                    try:
                        with session.begin():
                            session.add(Item(worker=worker, kind="lost"))
                            session.flush()
                            raise LookupError("abandon")
                    except LookupError:
                        pass
                with Session(engine) as session:  # each worker sees its committed rows
                    mine = session.scalar(
                        select(func.count()).select_from(Item).where(Item.worker == worker)
                    )
                    assert mine == 2 * (_ + 1), mine
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[:3]
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(Item.kind, func.count()).group_by(Item.kind)).all())
    assert kinds == {"core": THREADS * ROUNDS, "orm": THREADS * ROUNDS}
    stats = pool.get_stats()
    assert stats["in_use"] == 0
    assert stats["acquired"] == stats["released"]
    assert stats["total_connections"] <= stats["max_size"] == size + overflow
    assert stats["timeouts"] == 0


def _connection_id(conn: Any) -> int:
    return int(conn.scalar(text("SELECT CONNECTION_ID()")))


def _kill(admin: Any, connection_id: int) -> None:
    with admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {connection_id}")


def test_killed_idle_connection_is_replaced(
    mysql_pool: Callable[..., Any], admin: Any, engines: list[Any]
) -> None:
    pool = mysql_pool(size=1, max_overflow=0)
    engine = create_engine(pool)
    engines.append(engine)
    with engine.connect() as conn:
        first = _connection_id(conn)
    _kill(admin, first)
    with engine.connect() as conn:  # dbpool's check at checkout replaces it
        second = _connection_id(conn)
    assert second != first
    stats = pool.get_stats()
    assert stats["validation_failures"] >= 1
    assert stats["closed_broken"] >= 1
    assert stats["total_connections"] == 1


def test_connection_killed_in_use_raises_once_then_is_replaced(
    mysql_pool: Callable[..., Any], admin: Any, engines: list[Any], mysql_driver: str
) -> None:
    pool = mysql_pool(size=1, max_overflow=0)
    engine = create_engine(pool)
    engines.append(engine)
    with Session(engine) as session:
        victim = _connection_id(session.connection())
        _kill(admin, victim)
        with pytest.raises(DBAPIError) as caught:
            session.execute(text("SELECT 1"))
        if mysql_driver == "pymysql":
            # SQLAlchemy's mysqlconnector dialect does not count mysql-connector's
            # "Connection not available" as a disconnect; dbpool closes it all the same.
            assert caught.value.connection_invalidated
    with Session(engine) as session:  # the broken one went back to dbpool, which closed it
        assert _connection_id(session.connection()) != victim
    stats = pool.get_stats()
    assert stats["closed_broken"] == 1
    assert stats["in_use"] == 0
    assert stats["total_connections"] == 1


# -- server commands per request ------------------------------------------------------

_COUNTERS = (
    "Questions",
    "Com_select",
    "Com_insert",
    "Com_commit",
    "Com_rollback",
    "Com_set_option",
)
REQUESTS = 40


def _status(admin: Any) -> dict[str, int]:
    names = ", ".join(f"'{name}'" for name in _COUNTERS)
    with admin.cursor() as cur:
        cur.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
        return {name: int(value) for name, value in cur.fetchall()}


def _per_request(admin: Any, request: Callable[[], None]) -> dict[str, float]:
    for _ in range(3):
        request()  # warm: connections opened and prepared, dialect initialized
    before = _status(admin)
    for _ in range(REQUESTS):
        request()
    after = _status(admin)
    delta = {name: after[name] - before[name] for name in _COUNTERS}
    delta["Questions"] -= 1  # the SHOW STATUS that read `before`
    return {name: value / REQUESTS for name, value in delta.items()}


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "no-autocommit"])
def test_no_server_command_beyond_plain_dbpool(
    mysql_pool: Callable[..., Any],
    admin: Any,
    engines: list[Any],
    autocommit: bool,
    mysql_driver: str,
    pool_mode: str,
) -> None:
    pool = mysql_pool(autocommit=autocommit)
    engine = create_engine(pool)
    engines.append(engine)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(Item.__table__.insert(), [{"worker": 1, "kind": "seed"}] * 5)
    read = "SELECT COUNT(*) FROM sa_items WHERE worker = 1"
    write = "INSERT INTO sa_items (worker, kind) VALUES (2, 'w')"

    def plain_read() -> None:
        with pool as conn:
            cur = conn.cursor()
            cur.execute(read)
            cur.fetchall()
            cur.close()

    def plain_write() -> None:
        with pool as conn:
            cur = conn.cursor()
            cur.execute(write)
            cur.close()
            conn.commit()

    def core_read() -> None:
        with engine.connect() as conn:
            conn.execute(text(read)).all()

    def core_write() -> None:
        with engine.begin() as conn:
            conn.execute(text(write))

    def orm_read() -> None:
        with Session(engine) as session:
            session.scalar(select(func.count()).select_from(Item).where(Item.worker == 1))

    def orm_write() -> None:
        with Session(engine) as session:
            session.add(Item(worker=2, kind="w"))
            session.commit()

    figures = {
        name: _per_request(admin, fn)
        for name, fn in [
            ("plain read", plain_read),
            ("core read", core_read),
            ("orm read", orm_read),
            ("plain write", plain_write),
            ("core write", core_write),
            ("orm write", orm_write),
        ]
    }
    for name, figure in figures.items():
        print(
            f"{mysql_driver} {pool_mode} autocommit={autocommit} {name}: "
            + ", ".join(f"{key} {value:g}" for key, value in figure.items())
        )
    for kind in ("read", "write"):
        plain = figures[f"plain {kind}"]
        for api in ("core", "orm"):
            assert figures[f"{api} {kind}"]["Questions"] <= plain["Questions"], (api, kind)
            assert figures[f"{api} {kind}"]["Com_set_option"] == 0
    # A read is one statement, plus dbpool's rollback at return when it opened a
    # transaction; a write is the INSERT and its COMMIT, which the engine skips
    # under autocommit since the server has no transaction to end.
    expected = {"read": 1 if autocommit else 2, "write": 1 if autocommit else 2}
    assert figures["plain read"]["Questions"] == expected["read"]
    assert figures["plain write"]["Questions"] == 2
    for api in ("core", "orm"):
        assert figures[f"{api} read"]["Questions"] == expected["read"]
        assert figures[f"{api} write"]["Questions"] == expected["write"]


def test_naive_recipe_costs_more_round_trips(
    mysql_params: dict[str, Any],
    admin: Any,
    pools: list[Any],
    engines: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The figures create_engine() saves: a NullPool with pool.acquire as creator."""
    import sqlalchemy

    pool = make_pool(driver="pymysql", autocommit=True, **mysql_params)
    pools.append(pool)
    naive = sqlalchemy.create_engine("mysql+pymysql://", creator=pool.acquire, poolclass=NullPool)
    lean = create_engine(pool)
    engines.extend([naive, lean])

    def request(engine: Any) -> Callable[[], None]:
        def run() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1")).all()

        return run

    naive_figures = _per_request(admin, request(naive))
    lean_figures = _per_request(admin, request(lean))
    print(f"naive NullPool recipe: {naive_figures}\ncreate_engine(): {lean_figures}")
    assert lean_figures["Questions"] == 1
    assert naive_figures["Questions"] > lean_figures["Questions"]


def test_example_program_runs_on_sqlite(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "DBPOOL_CONFIG"}
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / "sqlalchemy_example.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert ": 80 users" in proc.stdout
    assert "'in_use': 0" in proc.stdout
    assert (tmp_path / "dbpool.sqlite3").exists()
