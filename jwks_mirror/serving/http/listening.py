"""Accepting connections, for both ports: a cap on open connections, bounded socket buffers,
accept errors (out of descriptors) counted and logged at most once a second, and descriptors
kept for the rest of the process. docs/http1.md ("Accepting connections") gives the whole
story; in short, one accept loop per case:

* **The plain public port on uvloop** (istiod's, a new connection per fetch) uses libuv's own
  accept loop through ``loop.create_server`` on sockets bound here (:class:`NativeListener`):
  a new connection costs about a quarter less CPU than through an accept loop in Python. The
  cap is enforced where ``connection_made`` runs (:meth:`NativeListener.admit`), right after
  the accept, so the count of admitted connections is exact.
* **Every other case** uses this module's loop (:class:`Listener`): the TLS public port (a
  handshake in progress must count), the admin port (aiohttp's handler has no place to
  refuse a connection), and the plain public port on asyncio, whose own accept loop
  (``BaseSelectorEventLoop._accept_connection``) hands every failed accept to the exception
  handler, up to ``backlog`` a wake-up, each with its own retry: thousands of tracebacks a
  second while descriptors are short.

Either way a connection past ``max_connections`` is closed at once and counted
(``connections_rejected_total{port}``); accepted sockets inherit bounded kernel buffers from
the listening socket (``SEND_BUFFER_BYTES``, ``ADMIN_SEND_BUFFER_BYTES``,
``RECEIVE_BUFFER_BYTES``; Linux doubles each) instead of what TCP autotuning grows; accept
errors are counted (``accept_errors_total{port}``) and logged as one ``accept_failed`` line a
second at most, with a count (:class:`AcceptErrors`); and the public port leaves the last
``DESCRIPTOR_RESERVE`` descriptors to the rest of the process (probes, fetches, state
writes). Linux hands out the lowest free number, so a connection numbered that high is
closed at once and reported as EMFILE. That reserve is also the only way to see running out
on uvloop: libuv reports nothing to Python, it closes a spare descriptor, accepts and closes
every pending connection, and opens the spare again. At shutdown the plain public port takes
the kernel's accept queue before its sockets close (:meth:`_Port.take_queued`): closing them
would reset connections whose clients have already sent a request.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from jwks_mirror.core.logs import event
from jwks_mirror.serving.http.sockets import SEND_BUFFER_BYTES, bind, refuse_new_handshakes

ACCEPT_BATCH = 64  # accepts per wake-up: a burst is taken quickly, other work still runs
RETRY_S = 0.1  # out of descriptors: stop accepting this long, then try again
LOG_EVERY_S = 1.0  # at most one accept_failed line a second per port
# The plain public port leaves this many descriptors to the rest of the process.
DESCRIPTOR_RESERVE = 32


def native_accept(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the plain public port uses the loop's own accept loop: on uvloop."""
    return type(loop).__module__.partition(".")[0] == "uvloop"


def descriptor_ceiling(reserve: int) -> int:
    """The lowest descriptor number that leaves fewer than ``reserve`` free."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (soft if soft != resource.RLIM_INFINITY else 1 << 30) - reserve


def out_of_descriptors() -> OSError:
    """The accept failure a connection in the reserve is reported as."""
    return OSError(
        errno.EMFILE,
        f"{os.strerror(errno.EMFILE)} (fewer than {DESCRIPTOR_RESERVE} descriptors left, "
        "kept for the rest of the process)",
    )


class AcceptErrors:
    """One port's accept errors: each counted, logged at most once a second with a count."""

    def __init__(self, name: str, errors: Counter) -> None:
        self.name = name
        self._errors = errors.labels(name)
        self._loop = asyncio.get_running_loop()
        self._unlogged = 0
        self._last_error = ""
        self._next_log = 0.0
        self._flush: asyncio.TimerHandle | None = None

    def failed(self, exc: BaseException) -> None:
        self._errors.inc()
        self._unlogged += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._loop.time() >= self._next_log:
            self.log()
        elif self._flush is None:
            self._flush = self._loop.call_at(self._next_log, self.log)

    def log(self) -> None:
        """Log what is not logged yet (``close`` calls it at once)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._unlogged:
            return
        count, self._unlogged = self._unlogged, 0
        self._next_log = self._loop.time() + LOG_EVERY_S
        event(
            "accept_failed", port=self.name, error=self._last_error, count=count,
            level=logging.ERROR,
        )


@dataclass(frozen=True)
class PortSpec:
    """What an accept loop is given about its port: the name (``public`` or ``admin``, the
    metrics' ``port`` label), the protocol factory, how many connections the port's protocol
    holds now, the cap, and the two counters (by port) of refused connections and of failed
    accepts."""

    name: str
    factory: Callable[[], asyncio.BaseProtocol]
    open_connections: Callable[[], int]
    max_connections: int
    rejected: Counter
    errors: Counter


class _Port:
    """What both accept loops share: the port (:class:`PortSpec`), its counters, and its
    listening sockets. With ``reserve`` (the public port) a descriptor numbered at or above
    the reserve's ceiling is refused."""

    def __init__(self, port: PortSpec, *, reserve: bool) -> None:
        self.name = port.name
        self.max_connections = port.max_connections
        self._factory = port.factory
        self._connected = port.open_connections  # connections the port's protocol holds
        self._rejected = port.rejected.labels(port.name)
        self._errors = AcceptErrors(port.name, port.errors)
        self._loop = asyncio.get_running_loop()
        self.sockets: list[socket.socket] = []
        self._ceiling = descriptor_ceiling(DESCRIPTOR_RESERVE) if reserve else 1 << 62
        self._closed = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self.sockets]

    def take_queued(self) -> list[socket.socket]:
        """Shutdown, before the listening sockets close: the connections whose handshake the
        kernel completed and nobody accepted yet. Closing a listening socket resets every one
        of them, though their clients have connected and sent a request; taken, they are
        answered like any other (the port is draining: then closed)."""
        taken: list[socket.socket] = []
        for sock in self.sockets:
            if sock.fileno() < 0:
                continue
            refuse_new_handshakes(sock)
            while len(taken) < self.max_connections:
                try:
                    conn, _ = sock.accept()
                except OSError:  # BlockingIOError: the queue is empty
                    break
                taken.append(conn)
        return taken


class NativeListener(_Port):
    """The plain public port's listening sockets, served by the loop's own accept loop; the
    port's protocol calls :meth:`admit` first thing in ``connection_made``."""

    def __init__(self, port: PortSpec) -> None:
        super().__init__(port, reserve=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._queued: list[asyncio.Task[None]] = []  # take_queued's, being made

    @property
    def open_connections(self) -> int:
        return self._connected()

    async def start(self, host: str, port: int, *, backlog: int) -> None:
        """Bind (see :func:`bind`), then serve through ``loop.create_server``."""
        self.sockets = await bind(host, port, backlog=backlog)
        try:
            for sock in self.sockets:
                self._servers.append(
                    await self._loop.create_server(self._factory, sock=sock, backlog=backlog)
                )
        except OSError:
            self.close()
            raise

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether a connection just made may stay; if not, it is closed (it has sent
        nothing that will be read) and counted. Called before the port counts it."""
        if self._connected() >= self.max_connections:
            transport.close()
            self._rejected.inc()
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.fileno() >= self._ceiling:
            transport.close()
            self._errors.failed(out_of_descriptors())
            return False
        return True

    def close(self) -> None:
        """Stop accepting and close the listening sockets, after taking the kernel's queue
        (:meth:`take_queued`); every connection is the port's."""
        if self._closed:
            return
        self._closed = True
        queued = self.take_queued()
        for server in self._servers:
            server.close()
        for sock in self.sockets:
            sock.close()  # the loop's server closed it already, unless it never served
        self._queued = [self._loop.create_task(self._make(conn)) for conn in queued]
        self._errors.log()

    async def _make(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # the client is gone already

    async def wait_closed(self) -> None:
        """Wait until the connections taken from the queue are made (they are the port's)."""
        if self._queued:
            await asyncio.wait(self._queued)


class Listener(_Port):
    """The listening sockets of one port, accepted by this module's loop."""

    def __init__(
        self,
        port: PortSpec,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        tells_made: bool = False,
        reserve: bool = False,
        serve_queued: bool = False,
    ) -> None:
        super().__init__(port, reserve=reserve)
        self._ssl = ssl_context
        self._handshake_timeout = ssl_handshake_timeout
        # connect_accepted_socket in flight, and the socket of each
        self._tasks: dict[asyncio.Task[None], socket.socket] = {}
        # Accepted connections the port does not count yet: no protocol made so far, or one
        # whose connection_made has not run (with TLS: the handshake is not over); made().
        self._accepted = 0
        self._unmade: set[asyncio.BaseProtocol] = set()
        self._tells_made = tells_made
        # At close, take the kernel's queue and let the connections being made finish (a plain
        # port whose protocol answers while draining), instead of dropping both.
        self._serve_queued = serve_queued
        self._retry: dict[int, asyncio.TimerHandle] = {}

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

    async def start(
        self, host: str, port: int, *, backlog: int, send_bytes: int = SEND_BUFFER_BYTES
    ) -> None:
        """Bind (see :func:`bind`), then accept."""
        self.sockets = await bind(host, port, backlog=backlog, send_bytes=send_bytes)
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets. With ``serve_queued`` the kernel's
        queue is taken first (:meth:`take_queued`) and every accepted connection is made;
        otherwise connections still connecting (in the TLS handshake) are dropped. Those made
        are the port's to drain."""
        self._closed = True
        queued = self.take_queued() if self._serve_queued else []
        if not self._serve_queued:
            for task in self._tasks:
                task.cancel()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for handle in self._retry.values():
            handle.cancel()
        self._retry.clear()
        for conn in queued:
            self._start(conn)
        self._errors.log()

    async def wait_closed(self) -> None:
        """Wait until the connections being made at ``close`` are made, or dropped."""
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
            if conn.fileno() >= self._ceiling:
                conn.close()
                self._failed(sock, out_of_descriptors())
                return
            if self.open_connections >= self.max_connections:
                conn.close()
                self._rejected.inc()
                continue
            self._start(conn)

    def _start(self, conn: socket.socket) -> None:
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
        self._errors.failed(exc)
        if not self._closed:  # the readiness would be reported again at once: pause
            fd = sock.fileno()
            self._loop.remove_reader(fd)
            self._retry[fd] = self._loop.call_later(RETRY_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._retry.pop(sock.fileno(), None)
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)
