"""Overflow churn under overload: new server connections per 1000 requests.

Starts a throwaway MariaDB (tests/mariadb.py), then runs 16 and 64 threads on a
shared pool of size 10 + max_overflow 5, each borrowing for a ``SELECT 1``, and
prints the connections opened beyond the first 15 per 1000 requests.

    python -m benchmarks.overflow_churn
"""

from __future__ import annotations

import threading
import time

from dbpool import make_pool
from tests.mariadb import MariaDBServer

SIZE, OVERFLOW, PER_THREAD = 10, 5, 200


def run(params: dict[str, object], threads: int) -> None:
    pool = make_pool(driver="pymysql", size=SIZE, max_overflow=OVERFLOW, timeout=30, **params)

    def work() -> None:
        for _ in range(PER_THREAD):
            with pool as conn:
                cur = conn.cursor()
                cur.execute("SELECT 1")
                cur.fetchall()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = pool.get_stats()
    requests = threads * PER_THREAD
    extra = stats["created"] - (SIZE + OVERFLOW)
    print(
        f"threads={threads} requests={requests} created={stats['created']} "
        f"closed_overflow={stats['closed_overflow']} "
        f"opened_per_1000={1000 * max(extra, 0) / requests:.2f} "
        f"seconds={time.monotonic() - start:.1f}"
    )
    pool.dispose()


def main() -> None:
    server = MariaDBServer().start()
    try:
        for threads in (16, 64):
            run(server.params(), threads)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
