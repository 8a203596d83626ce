"""HTTP/1.1 server connections for the public port, parsed by llhttp (through httptools).

llhttp, Node.js's parser, parses each request in its strict mode; this module adds what RFC
9112 asks of a server and llhttp leaves to its caller. A request is refused (400, or 431 for a
head over 16 KiB or 100 field lines) and the connection closed after the answer when llhttp
refuses its framing or fields, when the request line is not exactly
``method SP target SP HTTP/1.0|1.1``, or when its ``Host`` is missing (HTTP/1.1), repeated or
invalid. Non-HTTP bytes (a TLS ClientHello, the HTTP/2 preface) fail at once. The full list,
with the RFC clause of each: docs/http1.md.

Keep-alive and pipelining are kept, answers strictly in request order; ``close`` wins over
``keep-alive``, and ``Proxy-Connection`` counts as ``Connection`` (llhttp reads it so). A body
of at most 64 KiB is skipped; a larger or chunked one is not read and the connection closes
after the answer; ``Upgrade`` is never honoured. Write back-pressure stops reading. llhttp is
fed one request head at a time (the 16 KiB limit is exact, nothing past a request is parsed
while its answer waits). A refusal raised in a callback is kept on the connection (httptools
reports any callback exception as a bare ``HttpParserCallbackError``).

Only ``write``/``close``/``abort``/``pause_reading``/``resume_reading``/
``get_write_buffer_size`` of the transport are used, so the protocol runs the same over TLS.
*What* to answer is the :class:`Responder`'s business (``public.PublicServer``); the open
connections and the idle/drain sweeper are :mod:`jwks_mirror.serving.http.connections`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Protocol, cast

import httptools

from jwks_mirror.core.logs import event
from jwks_mirror.serving.http.connections import Connections, Liveness

MAX_HEAD_BYTES = 16384  # aiohttp's limit is 8190 per line; a real JWKS request is ~200 bytes
MAX_FIELDS = 100  # as aiohttp's default; a real JWKS request has fewer than ten
MAX_SKIPPED_BODY_BYTES = 65536  # a GET with a body is odd; a large one is not worth reading

# RFC 9110 7.2 / RFC 3986 3.2.2: uri-host [ ":" port ]; empty is allowed (RFC 9112 3.2)
_HOST = re.compile(rb"(?:\[[\w:.~%!$&'()*+,;=-]+\]|[\w.~%!$&'()*+,;=-]*)(?::\d*)?")
_END = b"\r\n\r\n"


class Responder(Protocol):
    """The server side a connection talks to."""

    connections: Connections  # the port's open connections; draining at shutdown

    def answer(
        self, method: bytes, target: bytes, inm: bytes | None, keep_alive: bool, http11: bool
    ) -> bytes: ...

    def refusal(self, status: int) -> bytes: ...

    def join(self, connection: Connection, transport: asyncio.BaseTransport) -> bool: ...

    def forget(self, connection: Connection) -> None: ...


class _Refused(Exception):
    """The request is refused with ``status`` and the connection closed."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Connection(asyncio.Protocol):
    """One client connection: feed llhttp one request head at a time, write answers."""

    __slots__ = (
        "_body_left",
        "_callback_error",
        "_closing",
        "_connections",
        "_eof",
        "_fields",
        "_head_bytes",
        "_head_parts",
        "_host",
        "_inm",
        "_length",
        "_liveness",
        "_parser",
        "_paused",
        "_pending",
        "_piece",
        "_saw_framing_fields",
        "_server",
        "_tail",
        "_te",
        "_tokens",
        "_transport",
        "_valid_host",
        "served",
    )

    def __init__(self, server: Responder) -> None:
        self._server = server
        self._connections = server.connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pending = b""  # received while paused: fed on resume
        self._body_left = 0  # Content-Length body bytes still to skip
        # what the last llhttp callback raised (httptools reports a bare HttpParserCallbackError)
        self._callback_error: BaseException | None = None
        self._head_bytes = 0  # bytes of the current head fed so far
        self._head_parts: list[bytes] = []  # earlier pieces of a head split across reads
        self._piece = b""  # the piece being fed
        self._tail = b""  # the last bytes of an unfinished head: a blank line may straddle
        self._paused = False
        self._closing = False
        self._eof = False
        self.served = 0  # answers written
        self._liveness = Liveness()  # what the sweeper saw of this connection
        self._valid_host = b""  # the last Host found valid: clients repeat theirs
        # a Connection, Content-Length or Transfer-Encoding field in this request: looked at
        # after the head, and its values reset after the answer (True: reset them now)
        self._saw_framing_fields = True
        self._reset()

    def _reset(self) -> None:
        """Forget the request just answered (or never begun)."""
        self._fields = 0
        self._host: bytes | None = None
        self._inm: bytes | None = None
        if self._saw_framing_fields:
            self._saw_framing_fields = False
            self._tokens: list[bytes] = []
            self._length = 0
            self._te = b""  # the last transfer coding named

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check
        self._transport = cast(asyncio.Transport, transport)
        if not self._server.join(self, transport):  # past the cap: closed already
            self._closing = True
        # While draining, a connection made now was accepted before the port closed (the loop's
        # last accepts, the kernel's queue): its request is answered, then it closes.

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pending = b""
        self._head_parts = []
        self._server.forget(self)

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport; None once the connection is lost."""
        return self._transport

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._liveness.resumed = True
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            if self._pending:
                self.data_received(b"")

    def eof_received(self) -> bool:
        # Half-close (RFC 9112 9.6): every request already received is still answered, then
        # the connection closes once its answers are written.
        self._eof = True
        if self._pending and not self._closing:
            return True  # requests held back by back-pressure: answered on resume
        self._closing = True
        return False  # the transport closes itself after writing what is buffered

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        try:
            self._feed(data)
        except _Refused as refused:
            self._refuse(refused.status)
        except httptools.HttpParserCallbackError as exc:
            error, self._callback_error = self._callback_error, None
            if isinstance(error, _Refused):
                self._refuse(error.status)
            else:
                self._internal_error(error or exc)
        except httptools.HttpParserUpgrade:
            self.close()  # the request was answered with Connection: close; never upgraded
        except httptools.HttpParserError:
            self._refuse(400)
        except Exception as exc:  # the outer edge: a bug must not leave the client hanging
            self._internal_error(exc)
        if self._eof and not self._pending:
            self.close()

    # -- parsing ---------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Feed llhttp one head (or one skipped body) at a time, so that the head size is
        counted exactly and nothing past a request is parsed while its answer waits."""
        parser = self._parser
        size = len(data)
        pos = 0
        while pos < size and not self._closing:
            if self._paused:
                self._pending = data[pos:]
                return
            if self._body_left:
                take = min(self._body_left, size - pos)
                parser.feed_data(memoryview(data)[pos : pos + take])
                self._body_left -= take
                pos += take
                continue
            if self._tail:
                end = self._head_end(data, pos)
            else:
                end = data.find(_END, pos)
                end = -1 if end < 0 else end + 4
            stop = size if end < 0 else end
            self._head_bytes += stop - pos
            if self._head_bytes > MAX_HEAD_BYTES:
                raise _Refused(431)
            piece = data if pos == 0 and stop == size else data[pos:stop]
            self._piece = piece
            if end < 0:
                self._tail = (self._tail + piece)[-3:]
            parser.feed_data(piece)
            if end < 0:
                self._head_parts.append(piece)
            elif self._head_bytes:  # a blank line, but no head completed (leading CRLFs)
                self._head_parts.append(piece)
                self._tail = b""
            pos = stop

    def _head_end(self, data: bytes, pos: int) -> int:
        """Index just past the blank line ending the current head in ``data``, or -1,
        when the head began in an earlier read (its blank line may straddle the two)."""
        tail = self._tail
        found = (tail + data[pos : pos + 3]).find(_END)
        if found >= 0:
            return pos + found + 4 - len(tail)
        found = data.find(_END, pos)
        return -1 if found < 0 else found + 4

    # llhttp callbacks. Per request, only the field count, Host and If-None-Match are kept on
    # the common path; a field that bears on framing sets ``_saw_framing_fields``.

    def on_header(self, name: bytes, value: bytes) -> None:
        try:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise _Refused(431)
            name = name.lower()
            if name == b"host":
                if self._host is not None:
                    raise _Refused(400)  # RFC 9112 3.2: more than one Host
                self._host = value
            elif name == b"if-none-match":
                value = value.strip(b" \t")
                self._inm = value if self._inm is None else self._inm + b", " + value
            elif name == b"connection" or name == b"proxy-connection":
                # llhttp reads Proxy-Connection as Connection (close, keep-alive, upgrade):
                # so does this server, or it would advertise keep-alive and then close
                self._saw_framing_fields = True
                self._tokens.extend(t.strip(b" \t").lower() for t in value.split(b","))
            elif name == b"content-length":
                self._saw_framing_fields = True
                self._length = int(value)  # llhttp allows digits and whitespace, one value
            elif name == b"transfer-encoding":
                self._saw_framing_fields = True
                self._te = value.rpartition(b",")[2].strip(b" \t").lower()
        except BaseException as exc:
            self._callback_error = exc  # httptools raises HttpParserCallbackError
            raise

    def on_headers_complete(self) -> None:
        try:
            method = self._parser.get_method()
            target, http11 = self._request_line(method)
            host = self._host
            if host is None:
                if http11:
                    raise _Refused(400)  # RFC 9112 3.2
            elif host != self._valid_host:
                if not _HOST.fullmatch(host.rstrip(b" \t")):
                    raise _Refused(400)
                self._valid_host = host
            keep_alive = http11 and method != b"CONNECT"
            if self._saw_framing_fields:
                keep_alive = self._keep_alive(keep_alive, http11=http11)
            self._write(self._server.answer(method, target, self._inm, keep_alive, http11))
            if not keep_alive or self._connections.draining:
                self.close()
            else:
                self._body_left = self._length
            self._fields = 0
            self._host = None
            self._inm = None
            if self._saw_framing_fields:
                self._reset()
        except BaseException as exc:
            self._callback_error = exc  # httptools raises HttpParserCallbackError
            raise

    def _request_line(self, method: bytes) -> tuple[bytes, bool]:
        """The target and whether the version is 1.1, from the request line llhttp has just
        validated (cheaper than its URL callback). llhttp tolerates repeated spaces there,
        and HTTP/0.9 and 2.0: refused here. The head's pieces are forgotten."""
        head = self._piece
        if self._head_parts:
            head = b"".join((*self._head_parts, head))
            self._head_parts = []
        self._tail = b""
        self._head_bytes = 0
        if head[0] in b"\r\n":
            head = head.lstrip(b"\r\n")
        line_end = head.find(b"\r\n")
        version = head[line_end - 9 : line_end]
        if version == b" HTTP/1.1":
            http11 = True
        elif version == b" HTTP/1.0":
            http11 = False
        else:
            raise _Refused(400)
        target = head[len(method) + 1 : line_end - 9]
        if not target or b" " in target:
            raise _Refused(400)
        return target, http11

    def _keep_alive(self, keep_alive: bool, *, http11: bool) -> bool:
        """The rare path: framing and connection fields. Refuses what cannot be framed."""
        te = self._te
        if te and (not http11 or te != b"chunked"):
            # RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding is faulty; 6.3: a final coding but
            # chunked leaves the length unknown (llhttp checks it after this callback: too late)
            raise _Refused(400)
        tokens = self._tokens
        if b"close" in tokens or b"upgrade" in tokens:
            return False  # close wins; an upgrade is never honoured
        if b"keep-alive" in tokens and not http11:
            keep_alive = True
        # a chunked body is not read, nor a large one: answer, then close
        return keep_alive and not te and self._length <= MAX_SKIPPED_BODY_BYTES

    def _write(self, answer: bytes) -> None:
        """The one write path: every answer is written and counted here."""
        if self._transport is not None:
            self._transport.write(answer)
            self.served += 1

    def _refuse(self, status: int) -> None:
        if self._closing:
            return
        self._write(self._server.refusal(status))
        self.close()

    def _internal_error(self, exc: BaseException) -> None:
        event("public_error", error=f"{type(exc).__name__}: {exc}", level=logging.ERROR)
        self._refuse(500)

    def drain(self) -> None:
        """Shutdown: an idle keep-alive connection closes now; one with a request half-received,
        or a new one whose first request is on its way, after that answer (the drain's timeout
        bounds the wait). Closing a new connection unanswered would reset its client."""
        if self.served and not self._pending and not self._head_bytes and not self._body_left:
            self.close()

    def close(self) -> None:
        """Close after the pending answers are written."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping unwritten answers (the peer sees a reset)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def sweep(self, limit: int) -> str | None:
        """One periodic check (see ``connections.Liveness.check``): an idle
        connection is closed, a stalled or stuck one aborted. Returns why it was aborted."""
        transport = self._transport
        if transport is None:
            return None
        buffered = 0 if self._closing else transport.get_write_buffer_size()
        verdict = self._liveness.check(limit, self._closing, buffered, self.served)
        if verdict == "idle":
            self.close()
            return None
        if verdict is not None:
            self.abort()
        return verdict
