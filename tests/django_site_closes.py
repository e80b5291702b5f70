"""The example site's WSGI application, telling the test which sessions its pool closed.

Each connection the pool closes has its server thread id appended to the file named
by ``SITE_CLOSED_IDS`` before the driver's close: the server may list a session for a
moment after its client has closed it, and such a session is no longer the pool's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connection
from site_config.wsgi import application as site

_lock = threading.Lock()
_watched: set[int] = set()


def _record(raw: Any) -> None:
    with _lock, open(os.environ["SITE_CLOSED_IDS"], "a", encoding="ascii") as out:
        out.write(f"{raw.thread_id()}\n")


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    pool = connection.pool
    if pool is not None and id(pool) not in _watched:
        with _lock:
            if id(pool) not in _watched:
                _watched.add(id(pool))
                pool.add_listener("close", _record)
    return site(environ, start_response)
