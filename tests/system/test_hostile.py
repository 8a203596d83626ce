"""The hostile-upstream corpus (tests/serving/test_fetching_hostile.py), played through ``jwks-mirror serve``
running as a process (the image's entrypoint and event loop in CI).

One mirror process for the module, one upstream per case, all serving a good set at start.
For each case its upstream turns hostile and holds the fetch until the public port has
answered, so the answer provably came while the hostile fetch was in flight; then: the
refresh fails with the case's reason, the published bytes stay exactly as they were, the
reason is counted, and the mirror stays healthy and ready. The four kinds of TLS trouble
(wrong CA, wrong name, expired, client certificate refused) keep the last good set too.
(The end-to-end version, with a verifying Envoy and tokens, is tests/e2e/test_hostile.py;
it runs serve through the same ``cli_argv()``.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web

from jwks_mirror.demo.pki import MeshCA

from ..conftest import ISSUER_HOST, FakeIssuer, Pki, answer
from ..e2e.harness import http
from ..e2e.harness.mirror import Mirror
from ..e2e.harness.procs import wait_until
from ..serving.test_fetching_hostile import CASES, GOOD, Case
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


# -- TLS trouble: the unit suite's four cases (tests/serving/test_fetching_hostile.py), through serve ----------

TLS_TROUBLES = ["wrong-ca", "wrong-name", "expired", "no-client-cert-accepted"]


@pytest.fixture(scope="module")
def tls_hostile(
    upstreams: Upstreams, mesh_ca: MeshCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mirror, dict[str, FakeIssuer], Pki]]:
    """One mirror fetching over mTLS from one issuer per kind of trouble."""
    directory = tmp_path_factory.mktemp("tls-hostile")
    issuer_cert, issuer_key = mesh_ca.issue(
        namespace="myns", service_account="keys", dns_names=(ISSUER_HOST,)
    ).write(directory, "issuer")
    mirror_cert, mirror_key = mesh_ca.issue(
        namespace="jwks-mirror", service_account="jwks-mirror"
    ).write(directory, "mirror")
    pki = Pki(ca=mesh_ca, directory=directory, ca_file=mesh_ca.write_ca(directory),
              issuer_cert=issuer_cert, issuer_key=issuer_key, mirror_cert=mirror_cert,
              mirror_key=mirror_key)
    tls = {"ca_file": str(pki.ca_file), "cert_file": str(pki.mirror_cert),
           "key_file": str(pki.mirror_key), "server_name": ISSUER_HOST}

    async def start() -> FakeIssuer:
        return await FakeIssuer(document=GOOD).start(pki.server_context())

    issuers = {name: upstreams.run(start()) for name in TLS_TROUBLES}
    running = start_mirror(
        directory,
        [{"name": n, "jwks_uri": i.url, "tls": tls} for n, i in issuers.items()],
        refresh_interval="300s",
        timeout="2s",
    )
    try:
        running.wait_ready(timeout=60)
        yield running, issuers, pki
    finally:
        running.stop()
        for issuer in issuers.values():
            upstreams.run(issuer.stop())


def _troubled_context(trouble: str, pki: Pki, directory: Path) -> ssl.SSLContext:
    """The issuer's TLS gone wrong in one way (as tests/serving/test_fetching_hostile.py makes them)."""
    if trouble == "expired":
        return pki.expired_server_context()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if trouble == "wrong-ca":
        cert, key = MeshCA(name="another mesh").issue(
            namespace="myns", service_account="keys", dns_names=(ISSUER_HOST,)
        ).write(directory, "other")
        context.load_cert_chain(cert, key)
    elif trouble == "wrong-name":
        cert, key = pki.ca.issue(
            namespace="myns", service_account="keys", dns_names=("other.svc",)
        ).write(directory, "name")
        context.load_cert_chain(cert, key)
    else:  # the server now trusts another CA for clients: the mirror's certificate is refused
        other = MeshCA(name="client CA")
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(other.write_ca(directory, "other-ca"))
        )
        context.load_cert_chain(pki.issuer_cert, pki.issuer_key)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.mark.parametrize("trouble", TLS_TROUBLES)
def test_tls_trouble_keeps_the_last_good_set_under_serve(
    tls_hostile: tuple[Mirror, dict[str, FakeIssuer], Pki], upstreams: Upstreams,
    tmp_path: Path, trouble: str,
) -> None:
    mirror, issuers, pki = tls_hostile
    before = mirror.jwks(trouble)
    assert before.status == 200
    port = issuers[trouble].port
    upstreams.run(issuers[trouble].stop())
    context = _troubled_context(trouble, pki, tmp_path)

    async def restart() -> FakeIssuer:
        return await FakeIssuer(document=GOOD, port=port).start(context)

    issuers[trouble] = upstreams.run(restart())
    done = http.request("POST", f"{mirror.admin_url}/refresh/{trouble}", timeout=60)
    assert done.status == 502, done.text
    (result,) = done.json()["results"]
    assert result["outcome"] == "failed"
    assert result["reason"] in {"tls", "connection"}, result["error"]
    after = mirror.jwks(trouble)
    assert (after.status, after.body) == (200, before.body)
    assert mirror.readyz().status == 200
