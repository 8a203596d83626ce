"""Scenario 4: the issuer turns hostile or broken; nothing of what it serves is published.

Each poisoned set also carries something a verifier *would* use if the mirror passed it on:
a new public key next to a leaked private one, an HS256 secret anyone holding it could sign
with. Tokens made with those are rejected, and valid tokens keep verifying.
"""

from __future__ import annotations

import pytest

from .harness.issuer import SYMMETRIC_KID, SYMMETRIC_SECRET, Mode
from .harness.mesh import Mesh
from .harness.procs import wait_until
from .harness.tokens import claims, hs256_token

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {"refresh_interval": "1s", "timeout": "1s", "max_stale": "1h"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
FETCH_OK = "http.workload.jwt_authn.jwks_fetch_success"


@pytest.mark.parametrize("mode", [Mode.PRIVATE_KEY, Mode.SYMMETRIC_KEY, Mode.GARBAGE],
                         ids=lambda m: m.value)
def test_hostile_upstream_publishes_nothing_and_tokens_keep_verifying(
    mesh: Mesh, mode: Mode
) -> None:
    mirror, verifier = mesh.mirrored(["idp"], defaults=FAST)
    idp = mesh.issuers["idp"].app
    token = idp.token()
    assert verifier.accepts("idp", token)
    before = mirror.jwks("idp")
    smuggled = idp.extra_key  # made before the switch: the hostile handler only reads it
    attack = {
        Mode.PRIVATE_KEY: smuggled.sign(claims(idp.issuer_url, subject="mallory")),
        Mode.SYMMETRIC_KEY: hs256_token(SYMMETRIC_SECRET, claims(idp.issuer_url),
                                        kid=SYMMETRIC_KID),
        Mode.GARBAGE: None,
    }[mode]

    idp.set_mode(mode)
    requests_before = idp.requests
    done = mirror.refresh("idp", expect=1)
    assert "idp: failed" in done.stdout, done.stdout
    assert idp.requests > requests_before, "the mirror did not fetch the hostile body"
    # And on its own schedule, again and again.
    wait_until(lambda: mirror.status("idp")["consecutive_failures"] >= 3, timeout=10,
               what="scheduled fetches of the hostile set to fail",
               describe=lambda: str(mirror.status("idp")))

    after = mirror.jwks("idp")
    assert after.status == 200
    assert after.body == before.body
    assert after.headers["etag"] == before.headers["etag"]
    for key in after.json()["keys"]:
        assert key["kty"] == "RSA" and not PRIVATE_MEMBERS & key.keys(), key
    assert mirror.kids("idp") == [idp.current.kid]
    status = mirror.status("idp")
    assert status["servable"] is True and status["last_error"], status
    if mode is not Mode.GARBAGE:
        rejected = mirror.metric("jwks_mirror_keys_rejected_total", issuer="idp")
        assert rejected and rejected >= 1

    # The verifier keeps re-fetching (1 s cache) and keeps getting only the good set.
    # Every call until it has re-fetched twice: none may reject the good token or accept the
    # attack (wait_until retries a failing probe, so failures are collected, not asserted).
    fetched = verifier.jwks_fetches().get(FETCH_OK, 0)
    wrong: list[str] = []

    def refetched_twice() -> bool:
        if not verifier.accepts("idp", token):
            wrong.append("the good token was rejected")
        if attack is not None and (resp := verifier.call("idp", attack)).status != 401:
            wrong.append(f"attack token answered {resp.status}: {resp.text}")
        return verifier.jwks_fetches().get(FETCH_OK, 0) >= fetched + 2

    wait_until(refetched_twice, timeout=10, interval=0.1,
               what="the verifier to re-fetch the mirror's set twice")
    assert not wrong, wrong

    idp.set_mode(Mode.SERVE)
    wait_until(lambda: mirror.status("idp")["consecutive_failures"] == 0, timeout=10,
               what="the mirror to accept the issuer's good set again")
    assert mirror.jwks("idp").body == before.body
