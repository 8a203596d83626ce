"""What only the shipped entrypoint shows: ``jwks-mirror serve`` as a subprocess.

The in-process suites call ``server.start()`` on pytest's loop; the image runs ``serve``, which
chooses the event loop, sets the process up and runs everything under ``server.run``. A defect
that lives there (an event loop run inside an ``except`` block turned every refusal raised in
an llhttp callback into a 500) is invisible in process, so the ``Proxy-Connection`` case and the descriptor-exhaustion
cases run here against the real process, started through the harness's ``cli_argv()``; the
conformance vectors run against it in tests/system/test_http1_conformance.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jwks_mirror.serving.http.listening import DESCRIPTOR_RESERVE

from ..e2e.harness import http
from ..e2e.harness.issuer import PlainIssuer
from ..e2e.harness.mirror import Mirror
from ..e2e.harness.procs import wait_until
from ..rawhttp import closed, read_response
from ..serving.http.test_http1_conformance import HOST

pytestmark = pytest.mark.slow

NAME = "keys-myns"
PROBE = b"GET /keys-myns/jwks.json HTTP/1.1\r\n" + HOST + b"\r\n"


@pytest.fixture(scope="module")
def issuer() -> Iterator[PlainIssuer]:
    plain = PlainIssuer(NAME)
    plain.start()
    try:
        yield plain
    finally:
        plain.close()


def _mirror(workdir: Path, issuer: PlainIssuer, **kwargs: Any) -> Mirror:
    return Mirror(
        workdir,
        issuers=[{"name": NAME, "jwks_uri": issuer.url, "refresh_interval": "300s"}],
        **kwargs,
    )


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, issuer: PlainIssuer) -> Iterator[Mirror]:
    mirror = _mirror(tmp_path_factory.mktemp("serve"), issuer).start()
    try:
        yield mirror
    finally:
        mirror.stop()


def errors_logged(mirror: Mirror) -> list[dict[str, Any]]:
    return [e for e in mirror.log_events() if e.get("level") in ("error", "critical")]


async def _open(mirror: Mirror) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", mirror.public_port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_proxy_connection_close_closes_and_says_so(serve: Mirror) -> None:
    """llhttp treats ``Proxy-Connection: close`` as a close: the answer says
    ``Connection: close`` and the connection closes, never keep-alive advertised and then a
    400 for the next request."""
    for version in (b"1.1", b"1.0"):
        reader, writer = await _open(serve)
        try:
            writer.write(
                b"GET /keys-myns/jwks.json HTTP/" + version + b"\r\n" + HOST
                + b"Proxy-Connection: close\r\nConnection: keep-alive\r\n\r\n"
            )
            status, headers, _ = await read_response(reader)
            assert status == 200
            assert headers.get("connection") == "close", version
            assert await closed(reader), version
        finally:
            await _close(writer)


def _seconds(ts: str) -> float:
    """A log line's ``ts`` (``2026-01-02T03:04:05.678Z``) as seconds since the epoch."""
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _descriptor_limit(limit: int) -> None:
    """In the child, before exec: ``ulimit -n`` (soft and hard, so serve cannot raise it)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def _open_descriptors(mirror: Mirror) -> int:
    assert mirror.proc is not None and mirror.proc.popen is not None
    return len(os.listdir(f"/proc/{mirror.proc.popen.pid}/fd"))


def _accept_failures(mirror: Mirror, port: str) -> list[dict[str, Any]]:
    return [e for e in mirror.log_events()
            if e.get("event") == "accept_failed" and e["port"] == port]


def test_out_of_descriptors_the_log_stays_small_and_the_ports_come_back(
    tmp_path: Path, issuer: PlainIssuer
) -> None:
    """``ulimit -n 256`` and 400 idle connections (300 public, 100 admin): every accept past
    the limit fails with EMFILE. The log grows by under 200 KB in 5 s (asyncio's own accept
    loop logged a traceback for each of up to ``backlog`` attempts per wake-up, ~1,000 a
    second), the failures are logged with a count, and once the clients close ``/healthz``
    answers again within 10 s."""
    mirror = _mirror(tmp_path, issuer, preexec_fn=lambda: _descriptor_limit(256)).start()
    clients: list[socket.socket] = []
    try:
        assert mirror.proc is not None
        log = mirror.proc.log_path
        for _ in range(300):
            clients.append(socket.create_connection(("127.0.0.1", mirror.public_port), timeout=10))
        # The public port first reaches its reserve; only then the admin clients come, so they
        # find the last descriptors and then EMFILE. Opened together, the admin port takes low
        # descriptors while the public one is still accepting, stops at its own cap (64), and
        # the process never runs out (seen: 144 public + 64 admin, 223 descriptors).
        wait_until(lambda: _accept_failures(mirror, "public"), timeout=30,
                   what="the public port to reach its descriptor reserve",
                   describe=lambda: f"{_open_descriptors(mirror)} open")
        for _ in range(100):
            clients.append(socket.create_connection(("127.0.0.1", mirror.admin_port), timeout=10))
        wait_until(lambda: _open_descriptors(mirror) >= 250, timeout=30,
                   what="serve to use up its descriptors",
                   describe=lambda: f"{_open_descriptors(mirror)} open")
        before = log.stat().st_size
        time.sleep(5)  # the measurement window the limit is stated over, not a synchronisation
        grown = log.stat().st_size - before
        assert grown < 200_000, f"the log grew by {grown} bytes in 5 s"
        failures = [e for e in mirror.log_events() if e.get("event") == "accept_failed"]
        assert {e["port"] for e in failures} == {"public", "admin"}, "accept errors not logged"
        assert all(e["count"] >= 1 and "Too many open files" in e["error"] for e in failures)
        for port in ("public", "admin"):
            times = [_seconds(e["ts"]) for e in failures if e["port"] == port]
            assert all(b - a >= 0.9 for a, b in itertools.pairwise(times)), f"{port}: {times}"
        for client in clients:
            client.close()
        clients.clear()
        closed_at = time.monotonic()
        wait_until(lambda: http.get(f"{mirror.admin_url}/healthz", timeout=2).status == 200,
                   timeout=10, what="/healthz to answer again")
        assert time.monotonic() - closed_at < 10
        assert http.get(mirror.jwks_url(NAME)).status == 200
        mirror.proc.check_alive()
    finally:
        for client in clients:
            client.close()
        mirror.stop()


def test_the_public_port_leaves_descriptors_for_the_probes(
    tmp_path: Path, issuer: PlainIssuer
) -> None:
    """``ulimit -n 128`` and 150 idle public connections (the public cap, 256, is above the
    limit): the public port stops ``DESCRIPTOR_RESERVE`` descriptors short of the limit, so
    ``/healthz`` and ``/metrics`` answer while every public client is still connected; the
    connections it closed for want of descriptors are counted and logged as accept failures.
    On uvloop this is also what makes running out visible at all (libuv's own accept loop
    sheds connections without telling Python)."""
    limit = 128
    mirror = _mirror(tmp_path, issuer, preexec_fn=lambda: _descriptor_limit(limit)).start()
    clients: list[socket.socket] = []
    try:
        for _ in range(150):
            clients.append(socket.create_connection(("127.0.0.1", mirror.public_port), timeout=10))

        failures = wait_until(lambda: _accept_failures(mirror, "public"), timeout=30, what="public accept failures logged",
                              describe=lambda: f"{_open_descriptors(mirror)} open")
        assert all("Too many open files" in e["error"] for e in failures)
        assert http.get(f"{mirror.admin_url}/healthz", timeout=5).status == 200
        assert (mirror.metric("jwks_mirror_accept_errors_total", port="public") or 0) >= 1
        held = mirror.metric("jwks_mirror_open_connections", port="public")
        assert held is not None and 0 < held <= limit - DESCRIPTOR_RESERVE
        for client in clients:
            client.close()
        clients.clear()
        wait_until(lambda: http.get(mirror.jwks_url(NAME), timeout=2).status == 200,
                   timeout=10, what="the public port to serve again")
        assert mirror.proc is not None
        mirror.proc.check_alive()
    finally:
        for client in clients:
            client.close()
        mirror.stop()


def test_past_the_public_cap_serve_closes_a_new_connection_at_once(
    tmp_path: Path, issuer: PlainIssuer
) -> None:
    """``public.max_connections: 4`` under ``serve``: four idle connections are held, a fifth
    is closed before it sends anything, counted, and the admin port (its own cap) answers."""
    mirror = _mirror(tmp_path, issuer, extra={"public": {"max_connections": 4}}).start()
    held: list[socket.socket] = []
    try:
        for _ in range(4):
            held.append(socket.create_connection(("127.0.0.1", mirror.public_port), timeout=10))
        wait_until(lambda: mirror.metric("jwks_mirror_open_connections", port="public") == 4,
                   timeout=10, what="four open public connections")
        fifth = socket.create_connection(("127.0.0.1", mirror.public_port), timeout=10)
        held.append(fifth)
        assert fifth.recv(1) == b""  # closed by the server, unasked
        assert mirror.metric("jwks_mirror_connections_rejected_total", port="public") == 1
        assert mirror.metric("jwks_mirror_connections_rejected_total", port="admin") == 0
        held.pop(0).close()
        wait_until(lambda: http.get(mirror.jwks_url(NAME)).status == 200, timeout=10,
                   what="a new connection to be served once one left")
    finally:
        for client in held:
            client.close()
        mirror.stop()
