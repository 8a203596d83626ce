"""Accepting connections, for both ports: a cap on open connections, bounded socket buffers,
and accept errors (out of descriptors) logged at most once a second.

The ports do not use ``loop.create_server``'s accept loop. asyncio's
(``BaseSelectorEventLoop._accept_connection``) tries up to ``backlog`` accepts per wake-up
and, on EMFILE, ENFILE, ENOBUFS or ENOMEM, hands each failure to the loop's exception handler
(a traceback in the log) and schedules a retry a second later without leaving the loop: with
the public port's backlog of 1024, about a thousand tracebacks a second, megabytes of log,
while nothing is served. Here:

* Each wake-up accepts at most ``ACCEPT_BATCH`` connections. A connection accepted while the
  port already holds ``max_connections`` (answered or still in the TLS handshake) is closed
  at once and counted (``jwks_mirror_connections_rejected_total{port}``).
* Accepted sockets have bounded kernel buffers (``SEND_BUFFER_BYTES``,
  ``RECEIVE_BUFFER_BYTES``, set on the listening socket, which they inherit; Linux doubles
  each for its bookkeeping), so a client that pipelines requests and never reads pins at
  most that much kernel memory until the idle sweep aborts it, instead of what TCP
  autotuning would grow (megabytes a socket).
* When accept fails (for want of descriptors, say), the port stops accepting for
  ``RETRY_S`` (the kernel keeps queueing connections in the backlog) and tries again. Every
  failure is counted (``jwks_mirror_accept_errors_total{port}``) and logged at most once a
  second per port, as one ``accept_failed`` line with the number of failures it stands for.

The protocol factory is the port's own: ``http1.Connection`` on the public port, aiohttp's
request handler (``web.Server``) on the admin port; a TLS handshake, when the port has one, is
the loop's (``connect_accepted_socket``), limited to ``ssl_handshake_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from prometheus_client import Counter

from jwks_mirror.logs import event

ACCEPT_BATCH = 64  # accepts per wake-up: a burst is taken quickly, other work still runs
SEND_BUFFER_BYTES = 32768  # a JWKS answer is a few KB; the kernel reserves twice this
RECEIVE_BUFFER_BYTES = 32768  # a request head is ~200 bytes, at most 16 KiB
RETRY_S = 0.1  # out of descriptors: stop accepting this long, then try again
LOG_EVERY_S = 1.0  # at most one accept_failed line a second per port


def bound_buffers(sock: socket.socket) -> None:
    """Fix the socket's kernel buffers (it then no longer grows them by autotuning)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


class Listener:
    """The listening sockets of one port (``name``: ``public`` or ``admin``)."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], asyncio.BaseProtocol],
        *,
        open_connections: Callable[[], int],
        max_connections: int,
        rejected: Counter,
        errors: Counter,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        tells_made: bool = False,
    ) -> None:
        self.name = name
        self.max_connections = max_connections
        self._factory = factory
        self._connected = open_connections  # connections the port's protocol holds
        self._rejected = rejected.labels(name)
        self._errors = errors.labels(name)
        self._ssl = ssl_context
        self._handshake_timeout = ssl_handshake_timeout
        self._loop = asyncio.get_running_loop()
        self.sockets: list[socket.socket] = []
        # connect_accepted_socket in flight, and the socket of each
        self._tasks: dict[asyncio.Task[None], socket.socket] = {}
        # Accepted connections the port does not count yet: no protocol made so far, or one
        # whose connection_made has not run (with TLS: the handshake is not over); made().
        self._accepted = 0
        self._unmade: set[asyncio.BaseProtocol] = set()
        self._tells_made = tells_made
        self._retry: dict[int, asyncio.TimerHandle] = {}
        self._unlogged = 0
        self._last_error = ""
        self._next_log = 0.0
        self._flush: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections held now: made, or accepted and still connecting (TLS handshake)."""
        return self._connected() + self._accepted + len(self._unmade)

    def made(self, protocol: asyncio.BaseProtocol) -> None:
        """The port counts ``protocol`` from now on: its ``connection_made`` ran (with TLS,
        the handshake is over). A port created with ``tells_made`` calls this from its
        protocol's ``connection_made``; for any other, the listener assumes it at the turn
        of the loop that runs ``connection_made`` (the transport schedules that call just
        after this listener's, with no accept in between), which is exact without TLS."""
        self._unmade.discard(protocol)

    async def start(self, host: str, port: int, *, backlog: int) -> None:
        """Bind every address ``host`` resolves to (as ``create_server`` does), then accept.
        Raises OSError when an address cannot be bound."""
        infos = await self._loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        seen: set[tuple[int, object]] = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # Before listen: the window offered in the SYN-ACK, and every accepted socket
                # inherits both sizes (no system call per connection).
                bound_buffers(sock)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self.sockets]

    def close(self) -> None:
        """Stop accepting and close the listening sockets. Connections still connecting (in
        the TLS handshake) are dropped; those made are the port's to drain."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for handle in self._retry.values():
            handle.cancel()
        self._retry.clear()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._log_errors()

    async def wait_closed(self) -> None:
        """Wait until the connections dropped by ``close`` are gone."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    # -- accepting ----------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._failed(sock, exc)
                return
            if self.open_connections >= self.max_connections:
                conn.close()
                self._rejected.inc()
                continue
            # Its buffers are the listening socket's (Linux copies them); the loop makes it
            # non-blocking.
            self._accepted += 1
            task = self._loop.create_task(self._connect(conn))
            self._tasks[task] = conn
            task.add_done_callback(self._connect_done)

    async def _connect(self, conn: socket.socket) -> None:
        created: list[asyncio.BaseProtocol] = []

        def protocol() -> asyncio.BaseProtocol:
            self._accepted -= 1
            made = self._factory()
            created.append(made)
            self._unmade.add(made)  # until made(), or the handshake fails
            if not self._tells_made:
                self._loop.call_soon(self.made, made)
            return made

        try:
            await self._loop.connect_accepted_socket(
                protocol,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl else None,
            )
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError
            conn.close()  # a failed or timed-out TLS handshake, a client gone already
        finally:
            if created:
                self._unmade.discard(created[0])
            else:
                self._accepted -= 1

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        conn = self._tasks.pop(task)
        if task.cancelled():  # by close(), maybe before it began: the socket is still ours
            conn.close()

    def _failed(self, sock: socket.socket, exc: OSError) -> None:
        """Count and (at most once a second) log an accept error, and stop accepting on
        ``sock`` for ``RETRY_S``: out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
        ENOMEM), the listening socket stays readable and every retry would fail at once."""
        self._errors.inc()
        self._unlogged += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if not self._closed:  # the readiness would be reported again at once: pause
            fd = sock.fileno()
            self._loop.remove_reader(fd)
            self._retry[fd] = self._loop.call_later(RETRY_S, self._resume, sock)
        now = self._loop.time()
        if now >= self._next_log:
            self._log_errors()
        elif self._flush is None:
            self._flush = self._loop.call_at(self._next_log, self._log_errors)

    def _resume(self, sock: socket.socket) -> None:
        self._retry.pop(sock.fileno(), None)
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _log_errors(self) -> None:
        self._flush = None
        if not self._unlogged:
            return
        count, self._unlogged = self._unlogged, 0
        self._next_log = self._loop.time() + LOG_EVERY_S
        event(
            "accept_failed", port=self.name, error=self._last_error, count=count,
            level=logging.ERROR,
        )
