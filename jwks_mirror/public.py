"""The public, plain-HTTP port: ``GET|HEAD /{name}/jwks.json`` and nothing else.

This is the port istiod reaches, on the path of every push, so it must be cheap and boring.
It is a bare :class:`asyncio.Protocol`, not an aiohttp server: the port answers a handful of
byte strings that change a few times a second at most, and profiling aiohttp's low-level
server under load showed most of the time in its per-request machinery (request and response
objects, a coroutine per request, header serialisation), not in our handler. Here a request
costs one head parse, one dict lookup and one ``transport.write`` of pre-built bytes.

* Responses are built once per issuer, published set, ``max-age`` second and ``Date`` second
  (``Cache-Control: max-age`` counts down to the next refresh, so it cannot be fixed forever).
* Query strings are ignored on purpose: istiod caches by the exact URI, so ``?v=<version>`` is
  how an operator makes every istiod fetch at once. The raw target is matched, never decoded,
  so nothing encoded becomes a name by accident.
* Requests are counted in plain ints on the issuer state (one event loop, no lock); the
  metrics collector reads them at scrape time.

HTTP/1.1 as this port needs it: keep-alive and pipelining, ``Connection: close``, HTTP/1.0,
request bodies skipped (``Content-Length``) or the connection closed after the answer
(``Transfer-Encoding``), heads over 16 KiB refused (431), malformed heads refused (400),
connections with no complete request for 15 s closed, and write back-pressure honoured (a
client that does not read its answers stops being read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable
from email.utils import formatdate
from typing import cast

from jwks_mirror import __version__
from jwks_mirror.logs import event
from jwks_mirror.mirror import Mirror
from jwks_mirror.state import IssuerState, Published

_SUFFIX = b"/jwks.json"
# The start of a request line: a method token (upper-case letters) and a space, or a prefix
# of one while it is still arriving.
_METHOD_START = re.compile(rb"^[A-Z]{1,15}( |$)")
MAX_HEAD_BYTES = 16384  # aiohttp's limit is 8190 per line; a real JWKS request is ~200 bytes
MAX_HEADERS = 100  # as aiohttp's default; a real JWKS request has fewer than ten
MAX_SKIPPED_BODY_BYTES = 65536  # a GET with a body is odd; a large one is not worth reading
# A connection with no complete request for this long is closed: the idle keep-alive
# timeout, and the header timeout that stops slow clients (slowloris) holding connections.
KEEPALIVE_S = 15.0
_SWEEP_S = 5.0  # at most; shorter for short keep-alive timeouts (tests)
_SERVER = f"Server: jwks-mirror/{__version__}\r\n".encode()
_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of entity tags, or ``*``."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == opaque for c in header.split(","))


class _Responses:
    """The pre-built keep-alive answers of one issuer for one (set, max-age, Date second)."""

    __slots__ = ("date", "etag", "full", "head", "max_age", "not_modified", "published")

    def __init__(self, published: Published, max_age: int, date: int, date_line: bytes) -> None:
        self.published = published
        self.max_age = max_age
        self.date = date
        self.etag = published.etag.encode()
        common = (
            b"ETag: " + self.etag + b"\r\n"
            b"Cache-Control: public, max-age="
            + str(max_age).encode()
            + b"\r\n"
            + date_line
            + _SERVER
        )
        self.head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(published.body)).encode() + b"\r\n" + common + b"\r\n"
        )
        self.full = self.head + published.body
        self.not_modified = b"HTTP/1.1 304 Not Modified\r\n" + common + b"\r\n"


class _Clock:
    """``now()`` from the mirror's clock, and the ``Date`` line for it, rebuilt once a second."""

    __slots__ = ("_second", "line", "now")

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._second = -1
        self.line = b""

    def date(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            self._second = second
            self.line = f"Date: {formatdate(second, usegmt=True)}\r\n".encode()
        return second


class PublicServer:
    """The listening socket, its connections, and their orderly shutdown."""

    def __init__(self, mirror: Mirror, *, keepalive_s: float | None = None) -> None:
        self.mirror = mirror
        self.keepalive_s = KEEPALIVE_S if keepalive_s is None else keepalive_s
        self.states = mirror.states
        self.unknown = mirror.unknown_requests
        self.clock = _Clock(mirror.clock)
        self.cache: dict[str, _Responses] = {}
        self.connections: set[_Connection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._all_closed = asyncio.Event()

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=backlog
        )
        self._sweeper = loop.create_task(self._sweep(), name="public:idle-sweep")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def close(self, *, timeout_s: float) -> None:
        """Stop accepting; answer requests already received; close every connection (idle
        ones at once, busy ones after their answer); abort what is left after ``timeout_s``."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for connection in list(self.connections):
            connection.drain()
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def _sweep(self) -> None:
        """Close connections with no complete request for ``keepalive_s`` (idle keep-alive
        clients, and clients that dribble a head to hold a connection): a counter compared
        every few seconds, so the request path never reads a clock for this."""
        period = min(_SWEEP_S, self.keepalive_s / 3)
        limit = math.ceil(self.keepalive_s / period)
        while True:
            await asyncio.sleep(period)
            for connection in list(self.connections):
                if connection.served != connection.seen:
                    connection.seen = connection.served
                    connection.idle_sweeps = 0
                else:
                    connection.idle_sweeps += 1
                    if connection.idle_sweeps >= limit:
                        connection.close()

    # -- answers ----------------------------------------------------------------------------

    def answer(
        self, method: bytes, target: bytes, inm: bytes | None, keep_alive: bool
    ) -> tuple[bytes, int]:
        """The complete response for one request, and its status."""
        path = target.partition(b"?")[0]
        if path[:1] != b"/" and (path.startswith((b"http://", b"https://"))):
            # absolute-form (RFC 9112 3.2.2): the path starts after the authority
            slash = path.find(b"/", path.find(b"//") + 2)
            path = path[slash:] if slash >= 0 else b"/"
        state = None
        if path.endswith(_SUFFIX) and path[:1] == b"/":
            state = self.states.get(path[1 : -len(_SUFFIX)].decode("latin-1"))
        if state is None:
            self.unknown[404] = self.unknown.get(404, 0) + 1
            return self.simple(404, b"not found\n", keep_alive=keep_alive, method=method), 404
        counts = state.requests
        if method != b"GET" and method != b"HEAD":
            counts[405] = counts.get(405, 0) + 1
            extra = b"Allow: GET, HEAD\r\n"
            body = b"method not allowed\n"
            return self.simple(405, body, extra, keep_alive=keep_alive, method=method), 405
        now = self.clock.now()
        published = state.published
        if published is None or now > state.stale_deadline():
            counts[503] = counts.get(503, 0) + 1
            retry = max(1, math.ceil(state.next_refresh - now))
            extra = f"Retry-After: {retry}\r\nCache-Control: no-store\r\n".encode()
            body = b"no servable key set\n"
            return self.simple(503, body, extra, keep_alive=keep_alive, method=method), 503
        responses = self._responses(state, published, now)
        if inm is not None and (
            inm == responses.etag or etag_matches(inm.decode("latin-1"), published.etag)
        ):
            counts[304] = counts.get(304, 0) + 1
            answer = responses.not_modified
            status = 304
        else:
            counts[200] = counts.get(200, 0) + 1
            answer = responses.full if method == b"GET" else responses.head
            status = 200
        if not keep_alive or self.draining:
            answer = _with_connection(answer, b"close")
        return answer, status

    def _responses(self, state: IssuerState, published: Published, now: float) -> _Responses:
        max_age = max(0, int(state.next_refresh - now))
        date = self.clock.date(now)
        cached = self.cache.get(state.name)
        if (
            cached is None
            or cached.published is not published
            or cached.max_age != max_age
            or cached.date != date
        ):
            cached = _Responses(published, max_age, date, self.clock.line)
            self.cache[state.name] = cached
            if len(self.cache) > 2 * len(self.states) + 16:  # issuers removed by a reload
                for name in [n for n in self.cache if n not in self.states]:
                    del self.cache[name]
        return cached

    def simple(
        self,
        status: int,
        body: bytes,
        extra: bytes = b"",
        *,
        keep_alive: bool,
        method: bytes = b"GET",
    ) -> bytes:
        """A small plain-text answer (errors: not the hot path, built each time)."""
        self.clock.date(self.clock.now())
        head = (
            (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            ).encode()
            + extra
            + self.clock.line
            + _SERVER
        )
        if not keep_alive or self.draining:
            head += b"Connection: close\r\n"
        return head + b"\r\n" + (b"" if method == b"HEAD" else body)


def _with_connection(answer: bytes, value: bytes) -> bytes:
    """Insert a ``Connection`` header into a pre-built answer (rare: HTTP/1.0, close)."""
    end = answer.index(b"\r\n\r\n") + 2
    return answer[:end] + b"Connection: " + value + b"\r\n" + answer[end:]


class _Connection(asyncio.Protocol):
    """One client connection: parse request heads, write pre-built answers."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_paused",
        "_server",
        "_skip",
        "_transport",
        "idle_sweeps",
        "seen",
        "served",
    )

    def __init__(self, server: PublicServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._skip = 0  # request body bytes still to discard
        self._paused = False
        self._closing = False
        self.served = 0
        self.seen = 0
        self.idle_sweeps = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        if self._server.draining:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._buffer = b""
        self._server.forget(self)

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            if self._buffer:
                self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        try:
            self._process(data)
        except Exception as exc:  # the outer edge: a bug must not leave the client hanging
            event("public_error", error=f"{type(exc).__name__}: {exc}", level=logging.ERROR)
            self._reply(self._server.simple(500, b"internal error\n", keep_alive=False))
            self.close()

    def _process(self, data: bytes) -> None:
        transport = self._transport
        while data and transport is not None and not self._closing:
            if self._skip:
                taken = min(self._skip, len(data))
                self._skip -= taken
                data = data[taken:]
                continue
            if self._paused:
                break
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if data.strip(b"\r\n") == b"":
                    data = b""  # blank lines between requests are allowed (RFC 9112 2.2)
                elif len(data) > MAX_HEAD_BYTES:
                    self._refuse(431)
                    return
                elif not _METHOD_START.match(data.lstrip(b"\r\n")[:16]):
                    # Not HTTP at all (a TLS ClientHello, say): say so now rather than wait
                    # for a head that will never come.
                    self._refuse(400)
                    return
                break
            head, data = data[:end], data[end + 4 :]
            if not self._request(head.lstrip(b"\r\n")):
                return
        self._buffer = data

    def _request(self, head: bytes) -> bool:
        """Answer one request head; False when the connection is closing."""
        if len(head) > MAX_HEAD_BYTES:
            self._refuse(431)
            return False
        if head.count(b"\r\n") >= MAX_HEADERS:
            self._refuse(431)
            return False
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            self._refuse(400)
            return False
        method, target, version = parts
        if version == b"HTTP/1.1":
            keep_alive = True
        elif version == b"HTTP/1.0":
            keep_alive = False
        else:
            self._refuse(400)
            return False
        inm: bytes | None = None
        length = 0
        chunked = False
        http10_keep_alive = False
        if line_end >= 0:
            for line in head[line_end + 2 :].split(b"\r\n"):
                name, colon, value = line.partition(b":")
                if not colon or not name or name[-1] in b" \t" or line[0] in b" \t":
                    self._refuse(400)  # no colon, obsolete folding, space before the colon
                    return False
                name = name.lower()
                if name == b"if-none-match":
                    value = value.strip()
                    inm = value if inm is None else inm + b", " + value
                elif name == b"connection":
                    tokens = {t.strip() for t in value.lower().split(b",")}
                    if b"close" in tokens:
                        keep_alive = False
                    elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                        http10_keep_alive = keep_alive = True
                elif name == b"content-length":
                    value = value.strip()
                    if not value.isdigit() or (length and int(value) != length):
                        self._refuse(400)
                        return False
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = True  # never parsed: answer, then close
        if chunked or length > MAX_SKIPPED_BODY_BYTES:
            keep_alive = False
        answer, _ = self._server.answer(method, target, inm, keep_alive)
        if http10_keep_alive and not self._server.draining:
            answer = _with_connection(answer, b"keep-alive")
        self._reply(answer)
        if not keep_alive or self._server.draining:
            self.close()
            return False
        self._skip = length
        return True

    def _reply(self, answer: bytes) -> None:
        if self._transport is not None:
            self._transport.write(answer)
            self.served += 1

    def _refuse(self, status: int) -> None:
        self._reply(
            self._server.simple(status, _REASONS[status].lower().encode() + b"\n", keep_alive=False)
        )
        self.close()

    def drain(self) -> None:
        """Shutdown: close now if no request is half-received, else after its answer."""
        if not self._buffer and not self._skip:
            self.close()

    def close(self) -> None:
        """Close after the pending answers are written."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
