"""The hostile-upstream corpus (tests/test_hostile.py), played through ``jwks-mirror serve``
running as a process (the image's entrypoint and event loop in CI).

One mirror process for the module, one upstream per case, all serving a good set at start.
For each case its upstream turns hostile and holds the fetch until the public port has
answered, so the answer provably came while the hostile fetch was in flight; then: the
refresh fails with the case's reason, the published bytes stay exactly as they were, the
reason is counted, and the mirror stays healthy and ready. (The end-to-end version, with a
verifying Envoy and tokens, is tests/e2e/test_hostile.py; it runs serve through the same
``cli_argv()``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp import web

from ..conftest import FakeIssuer, answer
from ..e2e.harness import http
from ..e2e.harness.mirror import Mirror
from ..e2e.harness.procs import wait_until
from ..test_hostile import CASES, GOOD, Case
from .conftest import Upstreams, errors_logged, start_mirror

# One serve process with an issuer per case; each case then takes a fraction of a second
# (the two timeout cases their 2 s timeout).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hostile(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mirror, dict[str, FakeIssuer]]]:
    issuers = {case.id: upstreams.issuer(document=GOOD) for case in CASES}
    running = start_mirror(
        tmp_path_factory.mktemp("hostile"),
        [{"name": name, "jwks_uri": issuer.url} for name, issuer in issuers.items()],
        refresh_interval="300s",
        timeout="2s",
    )
    try:
        running.wait_ready(timeout=60)
        yield running, issuers
    finally:
        running.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upstream_publishes_nothing_new_under_serve(
    hostile: tuple[Mirror, dict[str, FakeIssuer]], upstreams: Upstreams, case: Case
) -> None:
    mirror, issuers = hostile
    issuer = issuers[case.id]
    before = mirror.jwks(case.id)
    assert before.status == 200
    if case.behaviour is not None:
        bad = case.behaviour(issuer)
    else:
        assert case.body is not None
        bad = answer(200, case.body, **{"Content-Type": "application/json"})
    asked = asyncio.Event()  # bound to the upstreams' loop by its first wait there

    async def held(request: web.Request) -> web.StreamResponse:
        await asked.wait()
        return await bad(request)

    seen = len(issuer.requests)
    issuer.behaviour = held
    try:
        with ThreadPoolExecutor(1) as pool:
            refresh = pool.submit(
                http.request, "POST", f"{mirror.admin_url}/refresh/{case.id}", timeout=60
            )
            wait_until(lambda: len(issuer.requests) > seen, timeout=30, what="the hostile fetch")
            during = mirror.jwks(case.id)
            assert not refresh.done(), "the hostile fetch ended before the public port answered"
            assert (during.status, during.body) == (200, before.body)
            upstreams.call(asked.set)
            done = refresh.result(timeout=60)
    finally:
        issuer.behaviour = None
        upstreams.call(issuer.released.set)
    assert done.status == 502, done.text
    (result,) = done.json()["results"]
    assert (result["outcome"], result["reason"]) == ("failed", case.reason), result["error"]
    after = mirror.jwks(case.id)
    assert (after.status, after.body) == (200, before.body)
    assert b'"d"' not in after.body and b'"k"' not in after.body
    counted = mirror.metric("jwks_mirror_fetch_errors_total", issuer=case.id, reason=case.reason)
    assert counted is not None and counted >= 1
    assert http.get(f"{mirror.admin_url}/healthz").status == 200
    assert mirror.readyz().status == 200
    assert errors_logged(mirror) == []
