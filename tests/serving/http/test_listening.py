"""The public port under abuse: slow clients, oversized requests, many connections."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import resource
import socket
import struct
import termios
import time

import aiohttp
import pytest

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.http import connections as connections_module
from jwks_mirror.serving.http import listening, sockets
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.server import start

from ...conftest import BOTH_LOOPS, config_text, until


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


def _capped(text: str, *, public: int | None = None, admin: int | None = None) -> str:
    """``config_text`` with ``max_connections`` set on either port."""
    for port, cap in (("public", public), ("admin", admin)):
        if cap is not None:
            line = f"{port}: {{host: 127.0.0.1, port: 0}}"
            assert line in text
            text = text.replace(line, line[:-1] + f", max_connections: {cap}}}")
    return text


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


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
async def test_a_thousand_concurrent_connections(fake_issuer):
    """A thousand clients at once, all answered, with the public cap raised above them (the
    default cap is tested below)."""
    issuer = await fake_issuer()
    text = _capped(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"), public=1100)
    settings = parse_settings(text)
    served = await start(settings, mirror=Mirror(settings, registry=new_registry()))
    try:
        await served.mirror.refresh()
        await _a_thousand(served)
    finally:
        await served.stop()


async def _a_thousand(served) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(f"{served.public_url}/a/jwks.json") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(1000)))
    assert statuses.count(200) == 1000


def _sample(running, name: str, port: str) -> float:
    return running.mirror.metrics.registry.get_sample_value(name, {"port": port}) or 0.0


async def _answered(url: str, path: str, writer_reader) -> bool:
    reader, writer = writer_reader
    host = url.removeprefix("http://")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).startswith(b"HTTP/1.1 200")


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
@pytest.mark.parametrize(("port", "path"), [("public", "/a/jwks.json"), ("admin", "/healthz")])
async def test_past_the_cap_a_new_connection_is_closed_at_once_and_counted(fake_issuer, port, path):
    """``max_connections: 3``: three connections are served; a fourth is closed at once,
    before it sends anything, and counted; once one of the three goes, a new one is served."""
    issuer = await fake_issuer()
    text = _capped(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"), **{port: 3})
    settings = parse_settings(text)
    running = await start(settings, mirror=Mirror(settings, registry=new_registry()))
    url = running.public_url if port == "public" else running.admin_url
    held = []
    try:
        await running.mirror.refresh()
        for _ in range(3):
            held.append(await asyncio.open_connection(*_address(url)))
            assert await _answered(url, path, held[-1])
        assert _sample(running, "jwks_mirror_open_connections", port) == 3
        reader, writer = await asyncio.open_connection(*_address(url))
        held.append((reader, writer))
        assert await asyncio.wait_for(_read_to_end(reader), 30) == b""  # closed, unasked
        assert _sample(running, "jwks_mirror_connections_rejected_total", port) == 1
        other = "admin" if port == "public" else "public"
        assert _sample(running, "jwks_mirror_connections_rejected_total", other) == 0
        held[0][1].close()
        await until(
            lambda: _sample(running, "jwks_mirror_open_connections", port) == 2,
            what="the closed connection to be forgotten",
        )
        held.append(await asyncio.open_connection(*_address(url)))
        assert await _answered(url, path, held[-1])
    finally:
        for _, writer in held:
            writer.close()
        await running.stop()


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
async def test_tls_handshakes_count_against_the_cap(fake_issuer, tmp_path):
    """On an HTTPS public port a connection counts from its accept, not from the end of its
    handshake: clients that connect and never say hello cannot hold more than the cap."""
    from jwks_mirror.demo.pki import MeshCA

    issued = MeshCA().issue(namespace="jwks-mirror", service_account="jwks-mirror")
    cert, key = issued.write(tmp_path, "serving")
    issuer = await fake_issuer()
    text = config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n").replace(
        "public: {host: 127.0.0.1, port: 0}",
        f"public: {{host: 127.0.0.1, port: 0, max_connections: 2, "
        f"tls: {{cert_file: {cert}, key_file: {key}}}}}",
    )
    settings = parse_settings(text)
    running = await start(settings, mirror=Mirror(settings, registry=new_registry()))
    address = _address(running.public_url.replace("https://", "http://"))
    silent = []
    try:
        for _ in range(2):
            silent.append(await asyncio.open_connection(*address))
        await until(
            lambda: _sample(running, "jwks_mirror_open_connections", "public") == 2,
            what="both handshakes to be counted",
        )
        reader, writer = await asyncio.open_connection(*address)
        silent.append((reader, writer))
        assert await asyncio.wait_for(_read_to_end(reader), 30) == b""
        assert _sample(running, "jwks_mirror_connections_rejected_total", "public") == 1
    finally:
        for _, writer in silent:
            writer.close()
        await running.stop()


def _queued(sock, request: int) -> int:
    """Bytes in a socket's send queue (SIOCOUTQ) or receive queue (SIOCINQ)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0])


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
async def test_pipeliners_that_never_read_pin_bounded_kernel_memory(fake_issuer, monkeypatch):
    """Ten clients pipeline thousands of requests each and never read. The server stops
    reading them (back-pressure); each socket's kernel buffers are the fixed, small ones
    (TCP autotuning grew them to megabytes a socket: 40 such clients pinned ~100 MB), and
    the sweep aborts them once their answers have not drained for the idle timeout."""
    monkeypatch.setattr(connections_module, "SWEEP_S", 0.2)
    running = await _serve(fake_issuer, 1.0)
    clients = []
    try:
        for _ in range(10):
            reader, writer = await asyncio.open_connection(*_address(running.public_url))
            writer.transport.set_write_buffer_limits(high=1 << 30)
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            writer.write(b"GET /a/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n" * 60000)
            clients.append((reader, writer))
        connections = running.public.connections
        await until(
            lambda: len(connections) == 10 and all(c.transport and not c.transport.is_reading() for c in connections),
            what="the server to stop reading every non-reader",
        )
        doubled_send = 2 * sockets.SEND_BUFFER_BYTES  # Linux doubles what is set
        doubled_receive = 2 * sockets.RECEIVE_BUFFER_BYTES
        # Linux takes a write while the send queue is under the buffer, and that write may add
        # up to one segment's worth (64 KiB on loopback) past it: uvloop, under load, writes
        # several queued answers at once. Bounded either way, against megabytes autotuned.
        one_segment = 65536
        for connection in list(connections):
            sock = connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == doubled_send
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == doubled_receive
            assert _queued(sock, termios.TIOCOUTQ) <= doubled_send + one_segment
            assert _queued(sock, termios.FIONREAD) <= doubled_receive
        await until(lambda: not connections, what="the sweep to abort every non-reader")
        registry = running.mirror.metrics.registry
        aborted = sum(
            registry.get_sample_value("jwks_mirror_public_aborts_total", {"reason": r}) or 0
            for r in ("stalled", "closing")  # a close cannot drain either: then aborted
        )
        assert aborted == 10
        assert await _ok(running)
    finally:
        for _, writer in clients:
            writer.close()
        await running.stop()


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
@pytest.mark.parametrize("port", ["public", "admin"])
async def test_a_burst_past_the_cap_is_counted_exactly(fake_issuer, port):
    """Twenty connections at once against a cap of eight: exactly eight stay open, twelve are
    closed at once and counted (a connection still connecting counts, and none twice)."""
    issuer = await fake_issuer()
    text = _capped(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"), **{port: 8})
    settings = parse_settings(text)
    running = await start(settings, mirror=Mirror(settings, registry=new_registry()))
    url = running.public_url if port == "public" else running.admin_url
    opened = await asyncio.gather(*(asyncio.open_connection(*_address(url)) for _ in range(20)))
    try:
        ends = [asyncio.ensure_future(_read_to_end(reader)) for reader, _ in opened]
        await until(lambda: sum(e.done() for e in ends) == 12, what="twelve to be closed")
        assert _sample(running, "jwks_mirror_connections_rejected_total", port) == 12
        assert _sample(running, "jwks_mirror_open_connections", port) == 8
        for end in ends:
            end.cancel()
    finally:
        for _, writer in opened:
            writer.close()
        await running.stop()


async def _answer_or_end(url: str, writer_reader) -> bytes:
    """The status line of the answer to one request, or b"" when the server closed first."""
    reader, writer = writer_reader
    with contextlib.suppress(ConnectionError):
        writer.write(b"GET /a/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.readline(), 30)
    except ConnectionError:
        return b""


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
async def test_the_public_port_leaves_the_last_descriptors_to_the_rest(fake_issuer, monkeypatch):
    """The reserve moved down to 30 descriptors above those open now: thirty public clients
    connect; those whose server socket gets a descriptor in the reserve are closed at once
    (before an answer) and counted as accept errors, not as cap rejections; the others are
    answered, and the admin port (no reserve) still answers."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with socket.socket() as probe:
        ceiling = probe.fileno() + 30
    monkeypatch.setattr(listening, "DESCRIPTOR_RESERVE", soft - ceiling)
    running = await _serve(fake_issuer, 30.0)
    clients = []
    try:
        for _ in range(30):
            clients.append(await asyncio.open_connection(*_address(running.public_url)))
        firsts = await asyncio.gather(*(_answer_or_end(running.public_url, c) for c in clients))
        answered = sum(first.startswith(b"HTTP/1.1 200") for first in firsts)
        refused = firsts.count(b"")
        assert answered >= 1 and refused >= 1 and answered + refused == 30, firsts
        assert _sample(running, "jwks_mirror_accept_errors_total", "public") == refused
        assert _sample(running, "jwks_mirror_connections_rejected_total", "public") == 0
        assert _sample(running, "jwks_mirror_open_connections", "public") == answered
        for connection in running.public.connections:
            assert connection.transport.get_extra_info("socket").fileno() < ceiling
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{running.admin_url}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        for _, writer in clients:
            writer.close()
        await running.stop()


async def test_the_admin_port_sends_through_a_larger_bounded_buffer(served):
    """The admin port answers MBs (/metrics with thousands of issuers, /status, /peer): its
    send buffer is bounded like the public port's, but larger, since through 64 KiB a 7.5 MB
    scrape took 3.6 s instead of 0.44 s (bench/issuers10k.py). Accepted sockets inherit the
    listening socket's sizes; Linux reports twice what was set."""
    for sock in served.admin_listener.sockets:
        sent = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert sent == 2 * sockets.ADMIN_SEND_BUFFER_BYTES
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == (
            2 * sockets.RECEIVE_BUFFER_BYTES
        )
    assert sockets.SEND_BUFFER_BYTES < sockets.ADMIN_SEND_BUFFER_BYTES <= 1 << 20
