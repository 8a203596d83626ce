"""The plain issuer: an in-mesh JWKS endpoint that speaks plain HTTP behind its sidecar.

A real aiohttp server on 127.0.0.1, run on its own event loop in a background thread so the
tests (synchronous, polling with deadlines) can switch its behaviour at any moment and so it
does not depend on pytest-asyncio's loop scoping. Behaviours cover what upstreams do in
production: serve keys, rotate, fail (503, hang, reset, go away) and misbehave (publish a
private key, a symmetric key, garbage).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from .procs import REGISTRY
from .tokens import SigningKey, claims

T = TypeVar("T")


class Mode(enum.Enum):
    SERVE = "serve"              # 200 with the public keys (ETag, 304 on If-None-Match)
    UNAVAILABLE = "503"          # 503 Service Unavailable
    HANG = "hang"                # accept the request, never answer (until the mode changes)
    RESET = "reset"              # read the request, then reset the TCP connection (RST)
    PRIVATE_KEY = "private-key"  # publish the full private JWK, plus a valid new public key
    SYMMETRIC_KEY = "oct"        # publish an HS256 secret next to the real keys
    GARBAGE = "garbage"          # 200 with bytes that are not JSON


SYMMETRIC_SECRET = b"an attacker would love to sign tokens with this key!"
SYMMETRIC_KID = "shared-secret"


class PlainIssuer:
    """One identity provider's JWKS endpoint, plain HTTP on 127.0.0.1.

    ``keys`` is what it publishes; ``current`` signs new tokens. ``requests`` counts every
    request that reached the app, and ``last_headers`` keeps the last one's headers (the
    sidecar adds ``x-forwarded-client-cert`` naming the caller's SPIFFE identity).
    """

    def __init__(self, name: str, *, issuer_url: str | None = None) -> None:
        self.name = name
        self.issuer_url = issuer_url or f"https://{name}.example.test"
        self.keys: list[SigningKey] = [SigningKey(kid=f"{name}-1")]
        self.mode = Mode.SERVE
        self.requests = 0
        self.last_headers: dict[str, str] = {}
        self.port = 0
        self._generation = 1
        self._extra: SigningKey | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None

    # -- keys and tokens ----------------------------------------------------------------------

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self) -> tuple[SigningKey, SigningKey]:
        """Replace the signing key with a new one; the old one is no longer published."""
        with self._lock:
            old = self.current
            self._generation += 1
            new = SigningKey(kid=f"{self.name}-{self._generation}")
            self.keys = [new]
        return old, new

    def token(self, key: SigningKey | None = None, **kwargs: Any) -> str:
        """A token as this issuer would mint it (``iss`` set), signed by ``key``/current."""
        return (key or self.current).sign(claims(self.issuer_url, **kwargs))

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.public for k in self.keys]}

    @property
    def extra_key(self) -> SigningKey:
        """A valid new public key a hostile set carries next to its poison (made once)."""
        with self._lock:
            if self._extra is None:
                self._extra = SigningKey(kid=f"{self.name}-smuggled")
            return self._extra

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is not Mode.HANG and self._loop is not None:
            self._loop.call_soon_threadsafe(self._release_hung)

    def describe(self) -> str:
        """One line for failure reports: what the issuer was doing and who asked."""
        caller = self.last_headers.get("x-forwarded-client-cert", "-")
        return (f"mode={self.mode.value} listening={self._runner is not None} port={self.port} "
                f"requests={self.requests} kids={[k.kid for k in self.keys]} "
                f"last caller (xfcc)={caller}")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving (on the same port as before after :meth:`go_away`)."""
        if self._loop is None:
            REGISTRY.add(f"plain issuer {self.name}", self.describe)
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name=f"issuer-{self.name}", daemon=True
            )
            self._thread.start()
        self._call(self._start())

    def go_away(self) -> None:
        """Stop listening and drop every connection, as when the pod is deleted."""
        self._call(self._stop())

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self._loop.close()
            self._loop = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _start(self) -> None:
        if self._runner is not None:
            return
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def _stop(self) -> None:
        self._release_hung()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _release_hung(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = asyncio.Event()

    # -- the endpoint -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.last_headers = {k.lower(): v for k, v in request.headers.items()}
        mode = self.mode
        if mode is Mode.UNAVAILABLE:
            return web.Response(status=503, text="upstream is down for maintenance\n")
        if mode is Mode.HANG:
            assert self._release is not None
            release = self._release
            # Bounded so a forgotten hang cannot outlive the test by much.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 30)
            return web.Response(status=503, text="released from hang\n")
        if mode is Mode.RESET:
            transport = request.transport
            assert transport is not None
            sock: socket.socket | None = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close() sends RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            raise asyncio.CancelledError
        if request.path != "/jwks.json":
            return web.Response(status=404)
        if mode is Mode.GARBAGE:
            body = b"\x00\xff<html>not a key set{"
            return web.Response(body=body, content_type="application/json")
        document = self.jwks()
        if mode is Mode.PRIVATE_KEY:
            document = {"keys": [self.current.private, self.extra_key.public]}
        elif mode is Mode.SYMMETRIC_KEY:
            oct_key = {
                "kty": "oct", "kid": SYMMETRIC_KID, "alg": "HS256", "use": "sig",
                "k": _b64url(SYMMETRIC_SECRET),
            }
            document = {"keys": [*document["keys"], oct_key]}
        body = json.dumps(document).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
