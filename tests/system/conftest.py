"""The system suite: ``jwks-mirror serve`` as a process, as the image runs it.

Every mirror here is started through ``cli_argv()`` (tests/e2e/harness/mirror.py): from the
image's locked environment when ``$JWKS_MIRROR_IMAGE_ENV`` names it (``.ci/run`` builds it and
sets it), so these tests exercise the shipped entrypoint, its dependencies and its event loop;
else this venv's ``jwks-mirror`` script. The upstreams are the unit suite's ``FakeIssuer``
(tests/conftest.py), served from an event loop on a background thread: one mirror process per
module fetches from them while the tests, synchronous or on their own loops, drive it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ..conftest import FakeIssuer
from ..e2e.harness.mirror import Mirror
from ..e2e.harness.procs import REGISTRY

T = TypeVar("T")


class Upstreams:
    """Fake issuers on an event loop of their own, in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._started: list[FakeIssuer] = []

    def run(self, coro: Coroutine[Any, Any, T], *, timeout_s: float = 30.0) -> T:
        """Run ``coro`` on the upstreams' loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Any, *args: Any) -> None:
        """Call ``fn(*args)`` on the upstreams' loop (how an ``asyncio.Event`` is set here)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def issuer(self, **kwargs: Any) -> FakeIssuer:
        async def start() -> FakeIssuer:
            return await FakeIssuer(**kwargs).start()

        issuer = self.run(start())
        self._started.append(issuer)
        return issuer

    def refused_url(self) -> str:
        """The URL of an issuer that has gone away: connections to it are refused."""
        issuer = self.issuer()
        self.run(issuer.stop())
        return issuer.url

    def close(self) -> None:
        for issuer in self._started:
            self.run(issuer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    running = Upstreams()
    try:
        yield running
    finally:
        running.close()


def start_mirror(workdir: Path, issuers: list[dict[str, Any]], **defaults: Any) -> Mirror:
    """``jwks-mirror serve`` with ``issuers``; returns once it logged ``listening``."""
    REGISTRY.clear()
    mirror = Mirror(workdir, issuers=issuers, defaults=defaults)
    mirror.start(ready=False, timeout=60)
    return mirror


def errors_logged(mirror: Mirror) -> list[dict[str, Any]]:
    """The mirror's log events at ERROR or above (a refusal must never be one)."""
    return [e for e in mirror.log_events() if e.get("level") in ("error", "critical")]
