"""``http1.Connection``: the public port's HTTP/1.1 handling, byte for byte over a raw loopback
socket.

The port is a bare asyncio protocol (see ``jwks_mirror/serving/http/http1.py``), so what a framework would
otherwise guarantee is tested here: keep-alive, pipelining, heads split across packets,
HTTP/1.0, ``Connection: close``, request bodies, malformed and oversized heads, back-pressure.
The RFC table is tests/serving/http/test_http1_conformance.py; shutdown and the sweeper:
tests/serving/http/test_connections.py.
"""

from __future__ import annotations

import asyncio

import pytest

from jwks_mirror.serving.http import http1

from ...conftest import until
from ...rawhttp import closed, read_response

REQUEST = b"GET /keys-myns/jwks.json HTTP/1.1\r\nHost: mirror\r\n\r\n"


async def test_keep_alive_and_pipelining(served, connect):
    reader, writer = await connect(served)
    writer.write(REQUEST * 3)
    bodies = [await read_response(reader) for _ in range(3)]
    assert [s for s, _, _ in bodies] == [200, 200, 200]
    assert bodies[0][2] == bodies[2][2] and b'"k1"' in bodies[0][2]
    _, headers, _ = bodies[0]
    assert headers["content-type"] == "application/json"
    assert headers["etag"].startswith('"') and "date" in headers
    assert "connection" not in headers
    writer.write(REQUEST)  # the connection is still usable afterwards
    assert (await read_response(reader))[0] == 200


async def test_a_head_split_across_packets(served, connect):
    reader, writer = await connect(served)
    for i in range(0, len(REQUEST), 7):
        writer.write(REQUEST[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.01)
    assert (await read_response(reader))[0] == 200


async def test_connection_close_and_http10(served, connect):
    reader, writer = await connect(served)
    writer.write(b"GET /keys-myns/jwks.json HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await closed(reader)

    reader, writer = await connect(served)
    writer.write(b"GET /keys-myns/jwks.json HTTP/1.0\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and b"k1" in body and headers["connection"] == "close"
    assert await closed(reader)

    reader, writer = await connect(served)
    writer.write(b"GET /keys-myns/jwks.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
    for _ in range(2):
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "keep-alive"


@pytest.mark.parametrize(
    "fields",
    [b"Proxy-Connection: close\r\n", b"Proxy-Connection: keep-alive, close\r\nConnection: keep-alive\r\n"],
    ids=["close", "close-among-keep-alive"],
)
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_proxy_connection_close_is_a_close(served, connect, fields, version):
    """llhttp reads ``Proxy-Connection`` as ``Connection``, so a ``close`` there ends the
    connection: the answer must say so, and a request pipelined behind it is not answered
    (it used to be advertised keep-alive, then refused with 400 by llhttp)."""
    reader, writer = await connect(served)
    head = b"GET /keys-myns/jwks.json HTTP/" + version + b"\r\nHost: mirror\r\n" + fields + b"\r\n"
    writer.write(head + REQUEST)
    status, headers, body = await read_response(reader)
    assert status == 200 and b'"k1"' in body and headers["connection"] == "close"
    assert await closed(reader)


async def test_proxy_connection_keep_alive_is_honoured_like_connection(served, connect):
    """HTTP/1.0 with ``Proxy-Connection: keep-alive``: llhttp keeps the connection, and so
    does the server, saying so."""
    reader, writer = await connect(served)
    writer.write(b"GET /keys-myns/jwks.json HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n" * 2)
    for _ in range(2):
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "keep-alive"
    writer.write(REQUEST)
    assert (await read_response(reader))[0] == 200


async def test_if_none_match_over_several_header_lines(served, connect):
    reader, writer = await connect(served)
    writer.write(REQUEST)
    _, headers, _ = await read_response(reader)
    etag = headers["etag"].encode()
    writer.write(
        b"GET /keys-myns/jwks.json?v=2 HTTP/1.1\r\nHost: mirror\r\nIf-None-Match: \"x\"\r\nif-none-match: W/" + etag + b"\r\n\r\n"
    )
    status, headers304, body = await read_response(reader)
    assert status == 304 and body == b"" and headers304["etag"] == etag.decode()
    assert "content-length" not in headers304
    writer.write(b"HEAD /keys-myns/jwks.json HTTP/1.1\r\nHost: mirror\r\n\r\n")
    status, head_headers, _ = await read_response(reader, head_only=True)
    assert status == 200 and int(head_headers["content-length"]) > 0
    writer.write(REQUEST)  # nothing of the HEAD's body was sent: the next answer parses
    assert (await read_response(reader))[0] == 200


async def test_a_request_body_is_skipped_and_chunked_closes(served, connect):
    reader, writer = await connect(served)
    writer.write(b"POST /keys-myns/jwks.json HTTP/1.1\r\nHost: mirror\r\nContent-Length: 5\r\n\r\nhello" + REQUEST)
    assert (await read_response(reader))[0] == 405
    assert (await read_response(reader))[0] == 200
    writer.write(b"POST /keys-myns/jwks.json HTTP/1.1\r\nHost: mirror\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 405 and headers["connection"] == "close"
    assert await closed(reader)


async def test_absolute_form_targets_are_served(served, connect):
    reader, writer = await connect(served)
    writer.write(b"GET http://mirror:8080/keys-myns/jwks.json HTTP/1.1\r\nHost: mirror:8080\r\n\r\n")
    assert (await read_response(reader))[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /keys-myns/jwks.json\r\n\r\n",
        b"GET /keys-myns/jwks.json HTTP/2.0\r\n\r\n",
        b"GET  /keys-myns/jwks.json HTTP/1.1\r\n\r\n",
        b"GET /keys-myns/jwks.json HTTP/1.1\r\nHost mirror\r\n\r\n",
        b"GET /keys-myns/jwks.json HTTP/1.1\r\nHost : mirror\r\n\r\n",
        b"GET /keys-myns/jwks.json HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET /keys-myns/jwks.json HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /keys-myns/jwks.json HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["no-version", "http2", "double-space", "no-colon", "space-before-colon", "folding", "negative-length", "two-lengths"],
)
async def test_malformed_heads_get_400_and_close(served, connect, request_bytes):
    reader, writer = await connect(served)
    writer.write(request_bytes)
    status, headers, _ = await read_response(reader)
    assert status == 400 and headers["connection"] == "close"
    assert await closed(reader)


async def test_an_oversized_head_gets_431_and_close(served, connect):
    reader, writer = await connect(served)
    writer.write(b"GET /keys-myns/jwks.json HTTP/1.1\r\nX-Pad: " + b"a" * (http1.MAX_HEAD_BYTES + 10))
    status, _, _ = await read_response(reader)
    assert status == 431
    assert await closed(reader)


@pytest.mark.slow
async def test_a_client_that_does_not_read_is_not_read_either(served, connect):
    """Back-pressure: pipelined requests from a client that never reads stay in the socket
    buffers instead of piling answers up in the mirror's memory."""
    reader, writer = await connect(served)
    writer.transport.set_write_buffer_limits(high=1 << 30)
    count = 60000  # ~30 MB of answers, far more than loopback socket buffers hold
    writer.write(REQUEST * count)
    (connection,) = served.public.connections
    # The server stops reading once its answers back up in the socket.
    await until(lambda: not connection.transport.is_reading(), what="the server to pause reading")
    assert connection.served < count / 2
    assert connection.transport.get_write_buffer_size() < 1 << 20
    for _ in range(count):
        assert (await read_response(reader))[0] == 200
