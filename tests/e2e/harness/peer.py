"""Hostile peers: admin ports that answer a replica's ``GET /peer/{name}`` with poison.

Each :class:`HostilePeer` is a real aiohttp server on 127.0.0.1 with one misbehaviour, run
on its own event loop in a background thread (as the plain issuer is), so a synchronous test
can start several and read what each was asked. The poison is built from the real issuer's
keys, so the only thing wrong with each answer is the one thing under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from .procs import REGISTRY

T = TypeVar("T")


class Poison(enum.Enum):
    GARBAGE = "garbage"          # 200 with bytes that are not JSON
    PRIVATE_KEY = "private-key"  # a well-formed answer whose set holds the private JWK
    TOO_OLD = "too-old"          # a valid set whose upstream success is past max_stale
    HANG = "hang"                # accept the request, never answer (until closed)
    PLANTED = "planted"          # a valid answer that carries a key of the answerer's own


class HostilePeer:
    """One peer admin port with one :class:`Poison`; ``requests`` lists the paths asked."""

    def __init__(self, poison: Poison, offer: Callable[[], dict[str, Any]]) -> None:
        self.poison = poison
        self._offer = offer
        self.requests: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"peer-{poison.value}", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._closed: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        return f"poison={self.poison.value} port={self.port} requests={self.requests}"

    def start(self) -> HostilePeer:
        REGISTRY.add(f"hostile peer {self.poison.value}", self.describe)
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _start(self) -> None:
        self._closed = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._closed is not None:
            self._closed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        poison = self.poison
        if poison is Poison.GARBAGE:
            return web.Response(body=b"<html>not an answer{", content_type="text/html")
        if poison is Poison.HANG:
            assert self._closed is not None
            with contextlib.suppress(TimeoutError):  # bounded: a hang never outlives a test
                await asyncio.wait_for(self._closed.wait(), 30)
            return web.Response(status=503)
        return web.json_response(self._offer())


def offer(*, name: str, upstream: str, keys: list[dict[str, Any]],
          last_success: float | None = None) -> dict[str, Any]:
    """A ``/peer/{name}`` answer in the format ``jwks_mirror.serving.offers.share`` writes."""
    return {
        "name": name,
        "upstream": upstream,
        "source": "upstream",
        "last_success": time.time() - 1 if last_success is None else last_success,
        "jwks": json.dumps({"keys": keys}),
        "retained": [],
    }
