"""Coverage-guided fuzzing of the public port's connection protocol with atheris (libFuzzer).

    python fuzz/fuzz_http1.py -max_total_time=60 [CORPUS_DIR ...]

The first byte picks how the rest is delivered (one byte per read, all at once, or reads of
a fixed size; with or without write back-pressure), and the rest is fed to a real
``http1.Connection`` answered by a real ``public.PublicServer`` (one issuer with a published
set, one without), over a transport that records what is written. Whatever the bytes:

* no exception escapes the protocol, and it never answers 500 (that would be a bug);
* every write is one whole response: a status line, a head, and a body of its
  ``Content-Length`` (or none, for HEAD and 304);
* answers come only at request boundaries: fed one byte per read, an answer is written only
  by the read that completes a blank line ending a head;
* there are never more answers than requests: at most one per head in the input, plus one
  refusal (400 or 431), which is the last thing written, after which the transport is closed
  and nothing more is written.

With no corpus directory given, a seed corpus of real requests is written to a temporary
directory.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from jwks_mirror.core.config.loader import parse_settings
    from jwks_mirror.serving.counters import new_registry
    from jwks_mirror.serving.http import http1, public
    from jwks_mirror.serving.mirror import Issuer, Mirror
    from jwks_mirror.serving.refreshing import Health
    from jwks_mirror.serving.state import IssuerState, Published

CONFIG = """\
public: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
issuers:
  - {name: a, jwks_uri: "http://a.ns.svc/jwks.json"}
  - {name: b, jwks_uri: "http://b.ns.svc/jwks.json"}
"""
NOW = 1_800_000_000.0
REFUSALS = (400, 431)
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z ]+\r\n")
_LENGTH = re.compile(rb"\r\nContent-Length: (\d+)\r\n")


def _server() -> public.PublicServer:
    settings = parse_settings(CONFIG)
    mirror = Mirror(settings, registry=new_registry(), clock=lambda: NOW)
    served, empty = settings.issuers
    state = IssuerState(served, last_success=NOW)
    state.published = Published(body=b'{"keys":[]}', version="v1", etag='"v1"', kids=())
    down = IssuerState(empty)
    mirror.issuers = {
        "a": Issuer(state, Health(next_refresh=NOW + 300)),
        "b": Issuer(down, Health(next_refresh=NOW + 5)),
    }
    return public.PublicServer(mirror)


SERVER: public.PublicServer | None = None


class Transport(asyncio.Transport):
    """Records writes; closing is a flag, as a real transport's close is deferred."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.wrote_after_close = False

    def write(self, data: Any) -> None:
        if self.closed:
            self.wrote_after_close = True
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def _check_response(answer: bytes) -> int:
    status_line = _STATUS.match(answer)
    assert status_line, answer[:80]
    status = int(status_line.group(1))
    end = answer.find(b"\r\n\r\n")
    assert end > 0, answer[:200]
    body = answer[end + 4 :]
    length = _LENGTH.search(answer[: end + 2])
    if status == 304:
        assert length is None and body == b"", answer
    else:
        assert length is not None, answer
        assert len(body) in (int(length.group(1)), 0), answer
    return status


def check(data: bytes) -> None:
    global SERVER
    if SERVER is None:
        SERVER = _server()
    server = SERVER
    mode = data[0] if data else 0
    payload = data[1:]
    size = {0: 1, 1: max(1, len(payload))}.get(mode % 3, (mode // 3) % 17 + 1)
    transport = Transport()
    connection = http1.Connection(server)
    connection.connection_made(transport)
    if mode & 0x80:
        connection.pause_writing()
    fed = b""
    heads = 0  # blank lines ending a head, counted in the input: an upper bound of requests
    checked = 0
    successes = 0

    def check_writes(*, at_boundary: bool) -> None:
        nonlocal checked, successes
        for index in range(checked, len(transport.writes)):
            answer = transport.writes[index]
            status = _check_response(answer)
            assert status != 500, answer
            if status in REFUSALS:
                assert index == len(transport.writes) - 1 and transport.closed, "refusal not last"
            else:
                successes += 1
                assert at_boundary, ("answer mid-head", fed[-40:])
        checked = len(transport.writes)
        assert successes <= heads, ("more answers than requests", successes, heads)

    for start in range(0, len(payload), size):
        piece = payload[start : start + size]
        if size == 1:
            heads += (fed + piece).endswith(b"\r\n\r\n")
        else:
            heads += (fed[-3:] + piece).count(b"\r\n\r\n")
        fed += piece
        connection.data_received(piece)
        # Fed a byte at a time without back-pressure, an answer must come with the byte that
        # ends a head; otherwise only the counts are checked.
        check_writes(at_boundary=size > 1 or bool(mode & 0x80) or fed.endswith(b"\r\n\r\n"))
        if mode & 0x80 and start // size == 2:
            connection.resume_writing()
            check_writes(at_boundary=True)
    if mode & 0x80:
        connection.resume_writing()
        check_writes(at_boundary=True)
    connection.eof_received()
    check_writes(at_boundary=True)
    connection.connection_lost(None)
    assert not transport.wrote_after_close, "written after close"
    assert not server.connections


def seed(directory: Path) -> None:
    get = b"GET /a/jwks.json HTTP/1.1\r\nHost: m\r\n\r\n"
    samples = {
        "pipeline": get + b"HEAD /a/jwks.json?v=1 HTTP/1.1\r\nHost: m\r\n\r\n" + get,
        "conditional": b"GET /a/jwks.json HTTP/1.1\r\nHost: m\r\nIf-None-Match: \"v1\"\r\n\r\n"
        + get,
        "statuses": b"GET /b/jwks.json HTTP/1.1\r\nHost: m\r\n\r\nPOST /a/jwks.json HTTP/1.1\r\n"
        b"Host: m\r\nContent-Length: 5\r\n\r\nhello" + get + b"GET /x HTTP/1.1\r\nHost: m\r\n\r\n",
        "chunked": b"POST /a/jwks.json HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" + get,
        "http10": b"GET /a/jwks.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get,
        "close": b"GET http://m/a/jwks.json HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n" + get,
        "smuggle": b"GET /a/jwks.json HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n"
        b"Content-Length: 42\r\n\r\n" + get,
        "bare-lf": b"GET /a/jwks.json HTTP/1.1\r\nHost: m\nContent-Length: 5\r\n\r\nhello",
    }
    for name, request in samples.items():
        for mode in (0, 1, 5, 0x80 | 7):
            (directory / f"{name}-{mode}").write_bytes(bytes([mode]) + request)


def main() -> None:
    harness.run(check, seed, name="http1")


if __name__ == "__main__":
    main()
