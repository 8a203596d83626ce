"""Every HTTP/1.1 conformance vector (tests/serving/http/test_http1_conformance.py), sent to the public port
of ``jwks-mirror serve`` running as a process (the image's entrypoint and event loop in CI).

The unit suite sends the same vectors to a mirror started in-process; this one proves that
the shipped entrypoint answers them the same way. Each vector gets a fresh connection and
must draw exactly its answers: refusals are 400 or 431 with ``Connection: close``, never a
500, and nothing is logged at ERROR. A connection that stays open answers one more request
in step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import jwks
from ..e2e.harness.mirror import Mirror
from ..e2e.harness.procs import wait_until
from ..rawhttp import closed, read_response
from ..serving.http.test_http1_conformance import PROBE, VECTORS, Vector
from .conftest import Upstreams, errors_logged, start_mirror

# One serve process for the module (a second or two to start), then milliseconds a vector.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mirror(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    good = upstreams.issuer(document=jwks("k1"))
    running = start_mirror(
        tmp_path_factory.mktemp("conformance"),
        [
            {"name": "keys-myns", "jwks_uri": good.url},
            {"name": "broken", "jwks_uri": upstreams.refused_url()},
        ],
        refresh_interval="300s",
        timeout="2s",
    )
    try:
        # /readyz stays 503 while "broken" has no set; the vectors need only keys-myns.
        wait_until(lambda: running.jwks("keys-myns").status == 200, timeout=60,
                   what="keys-myns to be served")
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
async def test_vector_under_serve(mirror: Mirror, vector: Vector) -> None:
    errors_before = len(errors_logged(mirror))
    reader, writer = await asyncio.open_connection("127.0.0.1", mirror.public_port)
    try:
        writer.write(vector.payload)
        answers: list[tuple[int, dict[str, Any]]] = []
        for _ in vector.statuses:
            status, headers, _ = await read_response(reader)
            answers.append((status, headers))
        statuses = tuple(status for status, _ in answers)
        assert statuses == vector.statuses, f"{vector.id}: {statuses} ({vector.why})"
        for status, headers in answers:
            if status >= 400 and status not in (404, 405):
                assert headers["connection"] == "close", f"{vector.id}: {vector.why}"
        if vector.closes:
            assert await closed(reader), f"{vector.id}: open or more bytes after the answers"
        else:
            writer.write(PROBE)
            status, _, body = await read_response(reader)
            assert status == 200 and b'"k1"' in body, f"{vector.id}: out of step after the vector"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert errors_logged(mirror)[errors_before:] == [], f"{vector.id}: logged at ERROR"
