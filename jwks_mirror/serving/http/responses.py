"""The public port's answers as bytes: status lines, the pre-built keep-alive answers of one
issuer, the ``Date`` line, and ``If-None-Match`` matching. Pure: no sockets, no event loop;
:mod:`public` decides which answer a request gets, :mod:`http1`
writes it."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate

from jwks_mirror import __version__
from jwks_mirror.serving.state import Published

SERVER_LINE = f"Server: jwks-mirror/{__version__}\r\n".encode()

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


def with_connection(answer: bytes, value: bytes) -> bytes:
    """Insert a ``Connection`` header into a pre-built answer (rare: HTTP/1.0, close)."""
    end = answer.index(b"\r\n\r\n") + 2
    return answer[:end] + b"Connection: " + value + b"\r\n" + answer[end:]


def etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of entity tags, or ``*``."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == opaque for c in header.split(","))


class Responses:
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
            + SERVER_LINE
        )
        self.head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(published.body)).encode() + b"\r\n" + common + b"\r\n"
        )
        self.full = self.head + published.body
        self.not_modified = b"HTTP/1.1 304 Not Modified\r\n" + common + b"\r\n"


class DateClock:
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
