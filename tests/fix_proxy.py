"""A loopback TCP proxy that can pass, blackhole, delay or reset traffic, for fault tests.

::

    with TCPProxy("127.0.0.1", server_port) as proxy:
        pool = make_pool(host="127.0.0.1", port=proxy.port, ...)
        proxy.blackhole()   # accept, then never answer; data both ways is dropped
        proxy.delay(0.5)    # forward every chunk half a second late
        proxy.reset()       # cut every connection with a TCP reset, refuse new ones likewise
        proxy.heal()        # pass traffic again

One thread accepts, one thread per connection pumps both directions; every
blocking call has a short timeout, so ``stop()`` ends them all promptly. The
number of connections is bounded (``max_connections``); beyond it, new ones are
reset. Listens on 127.0.0.1 only.

As a plugin: the ``proxy`` fixture is a running TCPProxy in front of the
session's MariaDB server, stopped after the test; every test that uses it gets
the ``faults`` marker.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import pytest

from tests.mariadb import MariaDBServer

PASS = "pass"
BLACKHOLE = "blackhole"
DELAY = "delay"
RESET = "reset"
MODES = (PASS, BLACKHOLE, DELAY, RESET)

_TICK = 0.05  # how often every thread looks at the mode and the stop flag
_CHUNK = 65536


def _abort(sock: socket.socket | None) -> None:
    """Close with a TCP reset rather than a FIN."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TCPProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``, with faults on demand."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 256,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._mode = PASS
        self._delay = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.accepted = 0
        self.chunks_up = 0  # reads from clients: about one per command sent to the server
        self.port = 0

    # -- control ----------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str, delay: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; valid: {', '.join(MODES)}")
        if delay < 0:
            raise ValueError(f"delay cannot be negative (got {delay})")
        self._delay = delay
        self._mode = mode

    def blackhole(self) -> None:
        self.set_mode(BLACKHOLE)

    def delay(self, seconds: float) -> None:
        self.set_mode(DELAY, seconds)

    def reset(self) -> None:
        self.set_mode(RESET)

    def heal(self) -> None:
        self.set_mode(PASS)

    @property
    def connections(self) -> int:
        """Connections being served now."""
        with self._lock:
            return len(self._threads)

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> TCPProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(_TICK)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="tcpproxy-accept", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every connection, and wait (bounded) for the threads."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = [t.name for t in self._threads if t.is_alive()]
        if left:
            raise RuntimeError(f"tcpproxy threads still running after {timeout}s: {left}")

    def __enter__(self) -> TCPProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the threads ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                full = len(self._threads) >= self.max_connections
            if full or self._mode == RESET:
                _abort(client)
                continue
            thread = threading.Thread(
                target=self._serve, args=(client,), name=f"tcpproxy-{self.accepted}", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if self._mode != BLACKHOLE:
                try:
                    upstream = socket.create_connection(self.target, self.connect_timeout)
                except OSError:
                    return  # the server is down: the client sees its connection closed
            self._pump(client, upstream)
        finally:
            end = _abort if self._mode == RESET else _close
            end(client)
            end(upstream)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _pump(self, client: socket.socket, upstream: socket.socket | None) -> None:
        peers = {client: upstream}
        if upstream is not None:
            peers[upstream] = client
        while not self._stop.is_set():
            mode = self._mode
            if mode == RESET:
                return
            if upstream is None and mode != BLACKHOLE:
                return  # accepted while blackholed: it never had a server to talk to
            readable, _, _ = select.select(list(peers), [], [], _TICK)
            for sock in readable:
                try:
                    data = sock.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                if sock is client:
                    self.chunks_up += 1  # one pump thread per connection: a rare lost count
                mode = self._mode
                if mode == BLACKHOLE:
                    continue  # swallowed
                if mode == DELAY:
                    self._stop.wait(self._delay)
                target = peers[sock]
                if target is None:
                    continue
                try:
                    target.sendall(data)
                except OSError:
                    return


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "proxy" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def proxy(mariadb: MariaDBServer) -> Iterator[TCPProxy]:
    """A TCPProxy in front of the session's MariaDB server, passing traffic at first."""
    with TCPProxy(mariadb.host, mariadb.port) as running:
        yield running
