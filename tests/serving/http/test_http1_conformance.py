"""The public port against RFC 9112/9110, over raw loopback sockets, as an attacker would try it.

Each vector is a byte string sent on a fresh connection, the answers RFC 9112 requires (or,
where it leaves the choice to the server, the one this server makes: noted in ``why``), and
whether the connection must close afterwards. A connection that must stay open is then probed
with one more request, whose answer must be the next thing read: a request smuggled inside
the vector would surface there as an extra answer. A connection that must close must send
nothing after the expected answers.

Then what a table cannot express: pipelining order with every status the port answers,
half-close, slow heads, and the client that never reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.http import connections as connections_module
from jwks_mirror.serving.http import http1, public
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.server import start

from ...conftest import ISSUER_HOST, config_text, jwks
from ...rawhttp import closed, read_response

HOST = b"Host: mirror\r\n"
GET = b"GET /keys-myns/jwks.json HTTP/1.1\r\n"
PROBE = GET + HOST + b"\r\n"


@dataclass(frozen=True)
class Vector:
    id: str
    payload: bytes
    statuses: tuple[int, ...]
    closes: bool
    why: str


def _head_of(size: int) -> bytes:
    """A valid request head of exactly ``size`` bytes, blank line included."""
    base = GET + HOST + b"X-Pad: \r\n\r\n"
    return GET + HOST + b"X-Pad: " + b"a" * (size - len(base)) + b"\r\n\r\n"


def _fields(count: int) -> bytes:
    """A request with exactly ``count`` field lines (Host is one of them)."""
    return GET + HOST + b"".join(b"X-%d: y\r\n" % i for i in range(count - 1)) + b"\r\n"


CLIENT_HELLO = bytes.fromhex("1603010200010001fc0303") + b"\x00" * 64
SMUGGLED = b"GET /smuggled/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

FRAMING = [
    Vector("cl-0-then-42", GET + HOST + b"Content-Length: 0\r\nContent-Length: 42\r\n\r\n", (400,), True,
           "6.3(5): differing Content-Length values are an unrecoverable framing error: 400, close"),
    Vector("cl-42-then-0", GET + HOST + b"Content-Length: 42\r\nContent-Length: 0\r\n\r\n", (400,), True,
           "6.3(5), the same in the other order"),
    Vector("cl-same-twice", GET + HOST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", (400,), True,
           "8.6 (RFC 9110): a recipient MAY reject repeated identical values; this server does"),
    Vector("cl-list", GET + HOST + b"Content-Length: 5, 5\r\n\r\nhello", (400,), True,
           "8.6 (RFC 9110): a list is invalid or MAY be rejected; this server rejects it"),
    Vector("cl-5000-digits", GET + HOST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", (400,), True,
           "6.3(5): an invalid Content-Length is a framing error: 400, not a 500"),
    Vector("cl-form-feed", GET + HOST + b"Content-Length: \x0c5\r\n\r\nhello", (400,), True,
           "8.6 (RFC 9110): Content-Length = 1*DIGIT; a form feed is not whitespace here"),
    Vector("cl-negative", GET + HOST + b"Content-Length: -1\r\n\r\n", (400,), True, "8.6: 1*DIGIT"),
    Vector("cl-plus-sign", GET + HOST + b"Content-Length: +5\r\n\r\nhello", (400,), True, "8.6: 1*DIGIT"),
    Vector("cl-hex", GET + HOST + b"Content-Length: 0x5\r\n\r\nhello", (400,), True, "8.6: 1*DIGIT"),
    Vector("te-gzip", GET + HOST + b"Transfer-Encoding: gzip\r\n\r\n", (400,), True,
           "6.3(4): a request whose final coding is not chunked: 400 and close"),
    Vector("te-chunked-then-gzip", GET + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", (400,), True,
           "6.3(4): chunked must be the final coding"),
    Vector("te-and-cl", GET + HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
           (400,), True, "6.3(3): both present MAY be rejected and the connection MUST close; rejected"),
    Vector("te-http10", b"GET /keys-myns/jwks.json HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           (400,), True, "6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing"),
    Vector("te-space-before-colon", GET + HOST + b"Transfer-Encoding : chunked\r\n\r\n", (400,), True,
           "5.1: no whitespace between field name and colon; MUST be rejected with 400"),
    Vector("chunked-body-then-smuggled", GET + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\n" + SMUGGLED, (200,), True,
           "7.1: a chunked body is not read here: answered with Connection: close, nothing after it"),
    Vector("cl-body-skipped", b"POST /keys-myns/jwks.json HTTP/1.1\r\nHost: m\r\nContent-Length: %d\r\n\r\n%s%s"
           % (len(SMUGGLED), SMUGGLED, PROBE), (405, 200), False,
           "6.2: the body is exactly Content-Length bytes; a request inside it is body, not a request"),
    Vector("cl-body-too-large", b"POST /keys-myns/jwks.json HTTP/1.1\r\nHost: m\r\nContent-Length: 70000\r\n\r\n",
           (405,), True, "9.6: a server may close after answering rather than read a large body"),
    Vector("leading-blank-line", b"\r\n" + PROBE, (200,), False,
           "2.2: a server SHOULD ignore at least one empty line before a request line"),
]

FIELDS = [
    Vector("bare-lf-in-field", GET + b"Host: mirror\nX: y\r\n\r\n", (400,), True,
           "2.2: a bare LF may be accepted as a line terminator, but one parser's view must be "
           "everyone's: refused"),
    Vector("bare-lf-hides-cl", GET + b"Host: mirror\nContent-Length: 5\r\n\r\nhello", (400,), True,
           "2.2/11.2: the desync the issue found: a Content-Length after a bare LF"),
    Vector("bare-cr", GET + b"Host: mirror\rX: y\r\n\r\n", (400,), True,
           "2.2: a bare CR MUST be rejected or replaced by SP; rejected"),
    Vector("nul-in-value", GET + HOST + b"X: a\x00b\r\n\r\n", (400,), True,
           "5.5 (RFC 9110): NUL MUST be rejected or replaced; rejected"),
    Vector("ctl-in-value", GET + HOST + b"X: a\x01b\r\n\r\n", (400,), True, "5.5 (RFC 9110): no CTLs in field values"),
    Vector("del-in-value", GET + HOST + b"X: a\x7fb\r\n\r\n", (400,), True, "5.5 (RFC 9110): DEL is a CTL"),
    Vector("ctl-in-name", GET + HOST + b"X\x01Y: b\r\n\r\n", (400,), True, "5.1 (RFC 9110): a field name is a token"),
    Vector("space-before-colon", GET + b"Host : mirror\r\n\r\n", (400,), True, "5.1: MUST be rejected with 400"),
    Vector("obs-fold", GET + HOST + b"X: a\r\n folded\r\n\r\n", (400,), True,
           "5.2: obsolete line folding MUST be rejected with 400 (or replaced) outside message/http"),
    Vector("empty-field-name", GET + HOST + b": value\r\n\r\n", (400,), True, "5.1 (RFC 9110): token is 1*tchar"),
    Vector("no-colon", GET + b"Host mirror\r\n\r\n", (400,), True, "5: field-line = field-name \":\" ..."),
    Vector("no-host-http11", GET + b"\r\n", (400,), True,
           "3.2: a server MUST answer 400 to an HTTP/1.1 request without Host"),
    Vector("two-hosts", GET + HOST + HOST + b"\r\n", (400,), True,
           "3.2: ... and to any request with more than one Host field line"),
    Vector("invalid-host", GET + b"Host: a b\r\n\r\n", (400,), True, "3.2: ... or with an invalid Host value"),
    Vector("host-with-port", GET + b"Host: mirror.ns.svc:8080\r\n\r\n", (200,), False, "3.2: uri-host [\":\" port]"),
    Vector("http10-no-host", b"GET /keys-myns/jwks.json HTTP/1.0\r\n\r\n", (200,), True,
           "3.2: Host is required of HTTP/1.1 only; HTTP/1.0 closes by default (9.3)"),
    Vector("http10-close-and-keep-alive", b"GET /keys-myns/jwks.json HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n",
           (200,), True, "9.6: close means the sender will close; it wins over keep-alive"),
    Vector("http10-close-then-keep-alive-lines",
           b"GET /keys-myns/jwks.json HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
           (200,), True, "9.6: the same over two field lines (the old parser let the last one win)"),
    Vector("http11-keep-alive-then-close", GET + HOST + b"Connection: keep-alive\r\nConnection: close\r\n\r\n",
           (200,), True, "9.6: a close option anywhere in Connection closes"),
    Vector("http10-keep-alive", b"GET /keys-myns/jwks.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
           (200,), False, "9.3: an HTTP/1.0 keep-alive is honoured"),
    Vector("tab-and-obs-text-in-value", GET + HOST + b"X-A:\tb\tc\r\nX-B: \xe9t\xe9\r\n\r\n", (200,), False,
           "5.5 (RFC 9110): HTAB and obs-text are valid field value bytes"),
    Vector("100-fields", _fields(100), (200,), False, "a local limit: 100 field lines are allowed"),
    Vector("101-fields", _fields(101), (431,), True, "RFC 6585 5: over the limit of 100 field lines: 431"),
    Vector("head-16384-bytes", _head_of(16384), (200,), False, "a local limit: a head of exactly 16 KiB is allowed"),
    Vector("head-16385-bytes", _head_of(16385), (431,), True, "RFC 6585 5: a head over 16 KiB: 431"),
]

REQUEST_LINE = [
    Vector("double-space-after-method", b"GET  /keys-myns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n", (400,), True,
           "3: request-line = method SP request-target SP HTTP-version; an invalid one SHOULD get 400"),
    Vector("double-space-before-version", b"GET /keys-myns/jwks.json  HTTP/1.1\r\n" + HOST + b"\r\n", (400,), True,
           "3: single SP"),
    Vector("tab-separator", b"GET\t/keys-myns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n", (400,), True, "3: SP, not HTAB"),
    Vector("http09", b"GET /keys-myns/jwks.json\r\n\r\n", (400,), True, "2.3: HTTP/0.9 is not served"),
    Vector("http20-request-line", b"GET /keys-myns/jwks.json HTTP/2.0\r\n" + HOST + b"\r\n", (400,), True,
           "2.3: only HTTP/1.x is spoken on this port"),
    Vector("lower-case-version", b"GET /keys-myns/jwks.json http/1.1\r\n" + HOST + b"\r\n", (400,), True,
           "2.3: HTTP-name is case-sensitive"),
    Vector("space-in-target", b"GET /keys myns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n", (400,), True,
           "3.2: no whitespace in a request-target; SHOULD get 400"),
    Vector("cr-in-target", b"GET /keys\rmyns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n", (400,), True, "3.2"),
    Vector("h2-preface", H2_PREFACE, (400,), True,
           "RFC 9113 3.4: a server that does not speak HTTP/2 sees PRI * HTTP/2.0: refused at once"),
    Vector("tls-client-hello", CLIENT_HELLO, (400,), True,
           "TLS bytes on the plain port: not a request line; a prompt 400 and close, never a hang"),
    Vector("absolute-form", b"GET http://mirror:8080/keys-myns/jwks.json HTTP/1.1\r\nHost: mirror:8080\r\n\r\n",
           (200,), False, "3.2.2: a server MUST accept the absolute-form"),
    Vector("upgrade-is-not-honoured", GET + HOST + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n", (200,), True,
           "RFC 9110 7.8: a server MAY ignore Upgrade; the bytes after it are not HTTP/1.1: close"),
]

VECTORS = FRAMING + FIELDS + REQUEST_LINE


def test_there_are_at_least_forty_vectors():
    ids = [v.id for v in VECTORS]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.fixture
async def served(fake_issuer, mirror_factory, refused_url):
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(
            f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n    refresh_interval: 300s\n"
            f"  - name: broken\n    jwks_uri: {refused_url}\n    refresh_interval: 300s\n"
        )
    )
    outcomes = {o.name: o.outcome for o in await running.mirror.refresh()}
    assert outcomes == {"keys-myns": "changed", "broken": "failed"}
    return running


def metric(running, name: str, **labels: str) -> float:
    return running.mirror.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
async def test_vector(served, connect, vector: Vector):
    reader, writer = await connect(served)
    writer.write(vector.payload)
    statuses = []
    for _ in vector.statuses:
        status, headers, _ = await read_response(reader)
        statuses.append(status)
        if status >= 400 and status not in (404, 405):
            assert headers["connection"] == "close", vector.why
    assert tuple(statuses) == vector.statuses, vector.why
    if vector.closes:
        assert await closed(reader), f"{vector.id}: open or more bytes after the answers ({vector.why})"
    else:
        writer.write(PROBE)
        status, _, body = await read_response(reader)
        assert status == 200 and b'"k1"' in body, f"{vector.id}: out of step after the vector"


async def test_a_refusal_is_a_400_not_a_crash(served, connect):
    """The 5,000-digit Content-Length used to give a 500 and an ERROR log line."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("jwks_mirror")
    logger.addHandler(handler)
    try:
        reader, writer = await connect(served)
        writer.write(GET + HOST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n")
        assert (await read_response(reader))[0] == 400
        assert await closed(reader)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


async def test_pipelined_answers_keep_request_order_across_every_status(served, connect):
    reader, writer = await connect(served)
    writer.write(PROBE)
    _, headers, _ = await read_response(reader)
    etag = headers["etag"].encode()
    writer.write(
        PROBE
        + GET + HOST + b"If-None-Match: " + etag + b"\r\n\r\n"
        + b"GET /nope/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n"
        + b"DELETE /keys-myns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n"
        + b"GET /broken/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n"
        + b"HEAD /keys-myns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n"
        + b"GET /keys-myns/jwks.json?v=2 HTTP/1.1\r\n" + HOST + b"If-None-Match: \"other\"\r\n\r\n"
    )
    got = []
    for head_only in (False, False, False, False, False, True, False):
        status, headers, _ = await read_response(reader, head_only=head_only)
        got.append(status)
        if status == 503:
            assert int(headers["retry-after"]) >= 1
        if status == 405:
            assert headers["allow"] == "GET, HEAD"
    assert got == [200, 304, 404, 405, 503, 200, 200]
    writer.write(PROBE)
    assert (await read_response(reader))[0] == 200


async def test_a_bad_request_in_a_pipeline_is_answered_in_order_and_ends_it(served, connect):
    reader, writer = await connect(served)
    writer.write(PROBE + b"GET /x HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\nhello" + PROBE)
    assert (await read_response(reader))[0] == 200
    assert (await read_response(reader))[0] == 400
    assert await closed(reader)


async def test_half_close_still_answers_every_request_received(served, connect):
    reader, writer = await connect(served)
    writer.write(PROBE * 3)
    writer.write_eof()
    for _ in range(3):
        assert (await read_response(reader))[0] == 200
    assert await closed(reader)


async def test_half_close_in_the_middle_of_a_head_closes_without_an_answer(served, connect):
    reader, writer = await connect(served)
    writer.write(GET + HOST)
    writer.write_eof()
    assert await closed(reader)


async def test_heads_split_at_every_byte_boundary_of_the_blank_line(served, connect):
    """The end of a head is found even when its blank line straddles reads."""
    reader, writer = await connect(served)
    request = GET + HOST + b"\r\n"
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for cut in range(len(request) - 4, len(request)):
        writer.write(request[:cut])
        await writer.drain()
        await asyncio.sleep(0.02)  # not synchronisation: only makes separate reads likely
        writer.write(request[cut:])
        assert (await read_response(reader))[0] == 200


@pytest.fixture
async def short_timeouts(fake_issuer, mirror_factory, monkeypatch):
    monkeypatch.setattr(public, "KEEPALIVE_S", 0.6)
    monkeypatch.setattr(connections_module, "SWEEP_S", 0.2)
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(config_text(f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n"))
    await running.mirror.refresh()
    return running


async def test_slowloris_is_closed_and_others_are_served(short_timeouts, connect):
    """A head dribbled a byte at a time never completes a request, so it is closed after the
    keep-alive timeout (0.6 s here) while a busy neighbour keeps being served."""
    running = short_timeouts
    slow_reader, slow_writer = await connect(running)
    reader, writer = await connect(running)
    slow_writer.write(GET)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not slow_reader.at_eof() and loop.time() < deadline:
        with contextlib.suppress(ConnectionError):
            slow_writer.write(b"X")
        writer.write(PROBE)
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(0.05)  # the dribble's pace, not synchronisation
    assert await closed(slow_reader)
    writer.write(PROBE)
    assert (await read_response(reader))[0] == 200


async def test_a_client_that_never_reads_is_aborted_and_counted(short_timeouts, connect):
    """Thousands of pipelined requests and no reads: the answers cannot drain, so the
    connection is aborted (a close would wait for the drain forever) and counted."""
    running = short_timeouts
    _, writer = await connect(running)
    writer.transport.set_write_buffer_limits(high=1 << 30)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(PROBE * 60000)
    connections = running.public.connections
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while connections and loop.time() < deadline:
        await asyncio.sleep(0.1)  # polling a condition, with a generous deadline
    assert not connections
    aborted = sum(
        [metric(running, "jwks_mirror_public_aborts_total", reason=r) for r in ("stalled", "closing")]
    )
    assert aborted == 1


async def test_a_reader_that_reads_is_never_aborted(short_timeouts, connect):
    """The same flood, read slowly but steadily: every answer arrives; nothing is aborted."""
    running = short_timeouts
    reader, writer = await connect(running)
    writer.transport.set_write_buffer_limits(high=1 << 30)
    count = 20000
    writer.write(PROBE * count)
    for _ in range(count):
        assert (await read_response(reader))[0] == 200
    assert metric(running, "jwks_mirror_public_aborts_total", reason="stalled") == 0
    assert metric(running, "jwks_mirror_public_aborts_total", reason="closing") == 0


def test_limits_have_safe_defaults():
    assert http1.MAX_HEAD_BYTES == 16384 and http1.MAX_FIELDS == 100
    assert public.KEEPALIVE_S == 15.0


async def test_the_protocol_is_the_same_over_tls(served, pki):
    """The public port may be served over TLS (``public.tls``): the protocol uses only the
    transport's interface, so pipelining, refusals and half-close behave the same there."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: http1.Connection(served.public), "127.0.0.1", 0, ssl=pki.server_context(require_client=False)
    )
    try:
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(pki.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=ISSUER_HOST)
        writer.write(PROBE + b"GET /nope/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n" + PROBE)
        assert [(await read_response(reader))[0] for _ in range(3)] == [200, 404, 200]
        writer.write(GET + b"Host: mirror\nContent-Length: 5\r\n\r\nhello" + PROBE)
        status, headers, _ = await read_response(reader)
        assert status == 400 and headers["connection"] == "close"
        assert await closed(reader)
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_repeated_request_is_answered_afresh_and_anything_else_is_parsed(
    fake_issuer, mirror_factory, connect
):
    """A keep-alive client repeating its request byte for byte, one read each, gets a fresh
    answer every time (a new set: a new ETag), counted; a different read after that is
    parsed again, so a bad one is still refused."""
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(config_text(f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n"))
    await running.mirror.refresh()
    reader, writer = await connect(running)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answers = []
    for _ in range(3):
        writer.write(PROBE)
        answers.append(await read_response(reader))
    assert [a[0] for a in answers] == [200, 200, 200]
    issuer.document = jwks("k2")
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome == "changed"
    writer.write(PROBE)
    status, headers, body = await read_response(reader)
    assert status == 200 and b'"k2"' in body and headers["etag"] != answers[0][1]["etag"]
    assert running.public.requests("keys-myns")[200] == 4
    writer.write(GET + b"Host: mirror\nContent-Length: 5\r\n\r\nhello")
    assert (await read_response(reader))[0] == 400
    assert await closed(reader)


def test_a_refusal_in_a_callback_is_a_400_while_another_exception_is_being_handled():
    """``serve`` once ran its whole event loop inside ``except ImportError:`` (the uvloop
    probe), so Python gave every exception raised while serving that ImportError as its
    context, and the refusals raised in llhttp's callbacks (found by reading the context of
    httptools' error) became 500s. Here a mirror runs on a loop started inside an ``except``
    block, over real sockets: a missing Host and 101 fields still get 400 and 431."""

    async def scenario() -> list[int]:
        settings = parse_settings(
            config_text("  - name: keys-myns\n    jwks_uri: http://127.0.0.1:9/jwks.json\n")
        )
        running = await start(settings, mirror=Mirror(settings, registry=new_registry()))
        url = urlsplit(running.public_url)
        statuses = []
        try:
            for payload in (GET + b"\r\n", _fields(101), GET + HOST + HOST + b"\r\n"):
                reader, writer = await asyncio.open_connection(url.hostname, url.port)
                writer.write(payload)
                statuses.append((await read_response(reader))[0])
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        finally:
            await running.stop()
        return statuses

    try:
        raise ImportError("no uvloop")
    except ImportError:
        assert asyncio.run(scenario()) == [400, 431, 400]
