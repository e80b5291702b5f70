"""SQLAlchemy Core and ORM on a dbpool pool: python examples/sqlalchemy_example.py

The pool comes from the usual config lookup ($DBPOOL_CONFIG, ./config.yaml), or is
the embedded SQLite database ./dbpool.sqlite3 when there is none. Eight threads
add users through the ORM, one batch is rolled back, and the pool's statistics
are printed at the end.
"""

from __future__ import annotations

import threading

from sqlalchemy import String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dbpool import make_pool
from dbpool.contrib.sqlalchemy import create_engine


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "example_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


def main() -> None:
    pool = make_pool(size=4, max_overflow=2)
    engine = create_engine(pool)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    def add_users(worker: int) -> None:
        for n in range(10):
            with Session(engine) as session, session.begin():
                session.add(User(name=f"user {worker}-{n}"))

    threads = [threading.Thread(target=add_users, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with Session(engine) as session:  # a batch that is rolled back
        session.add_all([User(name="never"), User(name="saved")])
        session.flush()
        session.rollback()

    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(User))
    print(f"{engine.url}: {count} users")
    stats = pool.get_stats()
    print({key: stats[key] for key in ("created", "acquired", "released", "in_use", "max_size")})
    engine.dispose()
    pool.dispose()


if __name__ == "__main__":
    main()
