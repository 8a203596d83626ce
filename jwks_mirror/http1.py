"""HTTP/1.1 server connections for the public port: parse request heads, write answers.

Only what a JWKS endpoint needs, and strict about the rest: keep-alive and pipelining,
``Connection: close``, HTTP/1.0, request bodies skipped (``Content-Length``) or the connection
closed after the answer (``Transfer-Encoding``), heads over 16 KiB or with over 100 header
lines refused (431), malformed heads and non-HTTP bytes refused (400), and write back-pressure
honoured (a client that does not read its answers stops being read). *What* to answer is the
:class:`Responder`'s business (``public.PublicServer``); this module never looks at a path.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Protocol, cast

from jwks_mirror.logs import event

# The start of a request line: a method token (upper-case letters) and a space, or a prefix
# of one while it is still arriving.
_METHOD_START = re.compile(rb"^[A-Z]{1,15}( |$)")
MAX_HEAD_BYTES = 16384  # aiohttp's limit is 8190 per line; a real JWKS request is ~200 bytes
MAX_HEADERS = 100  # as aiohttp's default; a real JWKS request has fewer than ten
MAX_SKIPPED_BODY_BYTES = 65536  # a GET with a body is odd; a large one is not worth reading

REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Responder(Protocol):
    """The server side a connection talks to."""

    draining: bool
    connections: set[Connection]

    def answer(
        self, method: bytes, target: bytes, inm: bytes | None, keep_alive: bool
    ) -> tuple[bytes, int]: ...

    def simple(
        self,
        status: int,
        body: bytes,
        extra: bytes = b"",
        *,
        keep_alive: bool,
        method: bytes = b"GET",
    ) -> bytes: ...

    def forget(self, connection: Connection) -> None: ...


def with_connection(answer: bytes, value: bytes) -> bytes:
    """Insert a ``Connection`` header into a pre-built answer (rare: HTTP/1.0, close)."""
    end = answer.index(b"\r\n\r\n") + 2
    return answer[:end] + b"Connection: " + value + b"\r\n" + answer[end:]


class Connection(asyncio.Protocol):
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

    def __init__(self, server: Responder) -> None:
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
            answer = with_connection(answer, b"keep-alive")
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
            self._server.simple(status, REASONS[status].lower().encode() + b"\n", keep_alive=False)
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
