"""Shared fixtures: a test mesh CA, real fake issuers on 127.0.0.1:0, and a mirror factory.

Everything here is real: TLS uses certificates made at test time, servers listen on loopback,
the mirror is the production code bound to port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import inspect
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from jwcrypto import jwk

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import Settings
from jwks_mirror.demo.pki import MeshCA
from jwks_mirror.serving import server
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.server import Running, start

ISSUER_HOST = "keys.myns.svc.cluster.local"

_KEYS: dict[str, jwk.JWK] = {}


def signing_key(kid: str, kty: str = "RSA") -> jwk.JWK:
    """A private signing key, generated once per test session and kid."""
    cache_key = f"{kty}:{kid}"
    if cache_key not in _KEYS:
        if kty == "RSA":
            _KEYS[cache_key] = jwk.JWK.generate(kty="RSA", size=2048, kid=kid, alg="RS256")
        else:
            _KEYS[cache_key] = jwk.JWK.generate(kty="EC", crv="P-256", kid=kid, alg="ES256")
    return _KEYS[cache_key]


def public_jwk(kid: str, kty: str = "RSA") -> dict[str, Any]:
    return dict(json.loads(signing_key(kid, kty).export_public()))


def jwks(*kids: str) -> dict[str, Any]:
    return {"keys": [public_jwk(k) for k in kids]}


@dataclass
class Pki:
    """Certificates on disk for one test: the CA, the issuer's and the mirror's identities."""

    ca: MeshCA
    directory: Path
    ca_file: Path
    issuer_cert: Path
    issuer_key: Path
    mirror_cert: Path
    mirror_key: Path

    def expired_server_context(self) -> ssl.SSLContext:
        """The issuer's identity in a certificate that expired two days ago."""
        cert, key = self.ca.issue(
            namespace="myns",
            service_account="keys",
            dns_names=(ISSUER_HOST,),
            not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
            valid_for=dt.timedelta(days=1),
        ).write(self.directory, "expired")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def server_context(self, *, require_client: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        context.load_cert_chain(self.issuer_cert, self.issuer_key)
        context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
        return context


@pytest.fixture(scope="session")
def mesh_ca() -> MeshCA:
    return MeshCA()


@pytest.fixture
def pki(mesh_ca: MeshCA, tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    issuer_cert, issuer_key = mesh_ca.issue(
        namespace="myns", service_account="keys", dns_names=(ISSUER_HOST,)
    ).write(directory, "issuer")
    mirror_cert, mirror_key = mesh_ca.issue(
        namespace="jwks-mirror", service_account="jwks-mirror"
    ).write(directory, "mirror")
    return Pki(
        ca=mesh_ca,
        directory=directory,
        ca_file=mesh_ca.write_ca(directory),
        issuer_cert=issuer_cert,
        issuer_key=issuer_key,
        mirror_cert=mirror_cert,
        mirror_key=mirror_key,
    )


Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeIssuer:
    """A real HTTP(S) server whose JWKS answer a test can change at any moment."""

    document: Any = field(default_factory=lambda: jwks("k1"))
    etag: str | None = None
    last_modified: str | None = None
    behaviour: Behaviour | None = None
    requests: list[web.Request] = field(default_factory=list)
    port: int = 0
    scheme: str = "http"
    _runner: web.AppRunner | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/jwks.json"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def body(self) -> bytes:
        if isinstance(self.document, bytes):
            return self.document
        return json.dumps(self.document).encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.behaviour is not None:
            return await self.behaviour(request)
        headers = {}
        if self.etag:
            headers["ETag"] = self.etag
            if request.headers.get("If-None-Match") == self.etag:
                return web.Response(status=304, headers=headers)
        if self.last_modified:
            headers["Last-Modified"] = self.last_modified
            if request.headers.get("If-Modified-Since") == self.last_modified:
                return web.Response(status=304, headers=headers)
        return web.Response(body=self.body(), content_type="application/json", headers=headers)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> FakeIssuer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.scheme = "https" if ssl_context else "http"
        return self

    async def stop(self) -> None:
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# -- canned misbehaviours ---------------------------------------------------------------------


def answer(status: int, body: bytes = b"", **headers: str) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return behave


def hang(issuer: FakeIssuer) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        await issuer.released.wait()
        return web.Response(status=503)

    return behave


def reset() -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=500)

    return behave


def drip(total: int = 100_000, *, every_s: float = 0.05) -> Behaviour:
    """Promise ``total`` bytes, then send one byte every ``every_s`` (a slow-drip upstream)."""

    async def behave(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = total
        await response.prepare(request)
        for _ in range(200):
            await response.write(b" ")
            await asyncio.sleep(every_s)
        return response

    return behave


def truncated() -> Behaviour:
    """Promise 1000 bytes, send the start of a key set, close the connection."""

    async def behave(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"keys": [')
        assert request.transport is not None
        request.transport.close()
        return response

    return behave


def gzipped(body: bytes) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    return behave


@pytest.fixture
async def fake_issuer() -> AsyncIterator[Callable[..., Awaitable[FakeIssuer]]]:
    started: list[FakeIssuer] = []

    async def make(ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> FakeIssuer:
        issuer = await FakeIssuer(**kwargs).start(ssl_context)
        started.append(issuer)
        return issuer

    yield make
    for issuer in started:
        await issuer.stop()


@pytest.fixture
async def refused_url(fake_issuer) -> str:
    """The JWKS URL of an issuer that has gone away: connections to it are refused."""
    issuer = await fake_issuer()
    url = issuer.url
    await issuer.stop()
    return url


def gated(gate: asyncio.Event, document: Any = None) -> Behaviour:
    """Answer ``document`` (a default key set) only once ``gate`` is set: a slow upstream."""

    async def behave(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.json_response(document or jwks("k1"))

    return behave


def config_text(issuers: str, *, extra: str = "", defaults: str = "") -> str:
    """A config on loopback, both ports on 0; ``issuers`` is the YAML list body."""
    return (
        "public: {host: 127.0.0.1, port: 0}\n"
        "admin: {host: 127.0.0.1, port: 0}\n"
        f"{extra}"
        f"defaults: {{refresh_interval: 60s, timeout: 2s{defaults}}}\n"
        f"issuers:\n{issuers}"
    )


# A deadline for conditions that hold within milliseconds on an idle machine. It is generous on
# purpose: the machine may be loaded, and a slow pass is not a failure; it only bounds a hang.
DEADLINE_S = 30.0


async def until(
    condition: Callable[[], object], *, what: str, timeout_s: float = DEADLINE_S
) -> None:
    """Poll ``condition`` (returning a truth value, or an awaitable of one) until it holds.

    The way tests wait for something to happen: never a fixed sleep, which is either too
    short on a loaded machine (flaky) or too long everywhere else (slow).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)  # a poll interval, not a synchronisation


class Clock:
    """A settable wall clock for tests that must not sleep."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def mirror_factory() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Start real mirrors (both ports bound on loopback) and stop them after the test."""
    running: list[Running] = []

    async def make(settings: Settings | str, **kwargs: Any) -> Running:
        if isinstance(settings, str):
            settings = parse_settings(settings)
        mirror = Mirror(settings, registry=new_registry(), **kwargs)
        instance = await start(settings, mirror=mirror)
        running.append(instance)
        return instance

    yield make
    for instance in running:
        await instance.stop()


@pytest.fixture
async def connect():
    """Open raw connections to a running mirror's public port; all closed at teardown."""
    writers: list[asyncio.StreamWriter] = []

    async def open_(running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = urlsplit(running.public_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writers.append(writer)
        return reader, writer

    yield open_
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


# The loop `jwks-mirror serve` runs on (server.new_event_loop: uvloop where it installs), so
# the in-process suites run on the loop the image ships, as the subprocess suites do.
def _image_loop() -> str:
    loop = server.new_event_loop()
    try:
        return type(loop).__module__.split(".")[0]
    finally:
        loop.close()


IMAGE_LOOP = _image_loop()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the image's loop (:data:`IMAGE_LOOP`). One marked
    ``@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)`` runs on each loop (the public port
    accepts differently on uvloop: jwks_mirror/serving/http/listening.py); uvloop's run is skipped where
    it is not installed."""
    marker = item.get_closest_marker("asyncio")
    if marker is None or "loop_factories" not in marker.kwargs:
        return {IMAGE_LOOP: server.new_event_loop}
    return _loop_factories()


BOTH_LOOPS = ["asyncio", "uvloop"]
