"""The public port under abuse: slow clients, oversized requests, many connections."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from jwks_mirror.metrics import new_registry
from jwks_mirror.mirror import Mirror
from jwks_mirror.server import start
from jwks_mirror.settings import parse_settings

from .conftest import config_text


async def _serve(fake_issuer, keepalive_timeout_s: float):
    issuer = await fake_issuer()
    settings = parse_settings(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    running = await start(
        settings,
        mirror=Mirror(settings, registry=new_registry()),
        keepalive_timeout_s=keepalive_timeout_s,
    )
    await running.mirror.refresh()
    return running


@pytest.fixture
async def served(fake_issuer):
    running = await _serve(fake_issuer, 0.5)
    yield running
    await running.stop()


@pytest.fixture
async def served_patiently(fake_issuer):
    """A header deadline long enough that a request answered before it is plainly not
    waiting for it, even on a loaded machine."""
    running = await _serve(fake_issuer, 3.0)
    yield running
    await running.stop()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _raw(url: str, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*_address(url))
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 30)  # a bound on a hang
    finally:
        writer.close()
        await writer.wait_closed()


async def _ok(running) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.public_url}/a/jwks.json") as response,
    ):
        return response.status == 200 and b'"keys"' in await response.read()


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read()
    except ConnectionError:
        return b""


async def test_slow_header_clients_are_cut_off_and_cannot_starve_others(served_patiently):
    served = served_patiently
    host, port = _address(served.public_url)
    slow = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /a/jwks.json HTTP/1.1\r\nHost: x\r\n")
        slow.append((reader, writer))
    # Each slow client's connection ends when its read to EOF is done (closed or reset).
    cut_off = [asyncio.create_task(_read_to_end(reader)) for reader, _ in slow]
    try:
        # Not starved: answered while every slow client still holds its connection.
        assert await _ok(served)
        assert not [t for t in cut_off if t.done()], "answered only after the cut-off"
        # Keep dribbling header bytes (the slow client's behaviour, hence the sleep): the
        # header deadline still closes every one. Were the deadline reset by each byte, they
        # would stay open and this would end at the cap.
        cap = time.monotonic() + 60
        while not all(t.done() for t in cut_off):
            assert time.monotonic() < cap, "slow clients were never cut off"
            for _, writer in slow:
                # A broken pipe means the server already cut this client off: the point.
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X-a: b\r\n")
            await asyncio.sleep(0.1)
        assert b"200 OK" not in b"".join(t.result() for t in cut_off)
        assert await _ok(served)
    finally:
        for task in cut_off:
            task.cancel()
        for _, writer in slow:
            writer.close()


async def test_idle_connections_are_closed(served):
    host, port = _address(served.public_url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        # The idle timeout is 0.5 s; the wait is only a bound on a hang.
        assert await asyncio.wait_for(reader.read(), 30) == b""
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (b"400", b"414", b"431")),
        (b"GET /a/jwks.json HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", (b"400", b"431")),
        (b"GET /a/jwks.json HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n", (b"400", b"431")),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, (b"400",)),
        (b"GET /a/jwks.json HTTP/9.9\r\nHost: x\r\n\r\n", (b"400", b"505")),
    ],
    ids=["long-url", "huge-header", "many-headers", "tls-to-plain-port", "bad-version"],
)
async def test_malformed_requests_get_a_4xx_and_the_server_stays_healthy(served, payload, expected):
    answer = await _raw(served.public_url, payload)
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.") else b""
    assert status in expected, answer[:200]
    assert await _ok(served)


async def test_a_thousand_concurrent_connections(served):
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(f"{served.public_url}/a/jwks.json") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(1000)))
    assert statuses.count(200) == 1000
