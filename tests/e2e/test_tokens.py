"""Scenario 1: through the mirror, the verifier accepts the issuer's valid tokens and only
those. Each rejection is a token the verifier would accept if the check it exercises were
missing (a forged token carries a published kid, a wrong-issuer token a valid signature)."""

from __future__ import annotations

import pytest

from .harness.mesh import Mesh
from .harness.tokens import SigningKey, claims

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_valid_token_accepted_missing_forged_expired_wrong_issuer_rejected(mesh: Mesh) -> None:
    mirror, verifier = mesh.mirrored(["idp"])
    idp = mesh.issuers["idp"].app
    assert mirror.kids("idp") == [idp.current.kid]

    assert verifier.accepts("idp", idp.token())

    missing = verifier.call("idp", None)
    assert missing.status == 401 and "Jwt is missing" in missing.text, missing.text

    # Same kid as the published key, signed by a key the issuer never had.
    forged = SigningKey(kid=idp.current.kid).sign(claims(idp.issuer_url))
    resp = verifier.call("idp", forged)
    assert resp.status == 401 and "verification fail" in resp.text, resp.text

    expired = idp.token(issued_ago=3600, lifetime=600)
    resp = verifier.call("idp", expired)
    assert resp.status == 401 and "expired" in resp.text, resp.text

    # Signed by the issuer's real key, but claiming to be someone else.
    wrong_issuer = idp.current.sign(claims("https://someone-else.example.test"))
    resp = verifier.call("idp", wrong_issuer)
    assert resp.status == 401, resp.text

    garbage = verifier.call("idp", "not.a.jwt")
    assert garbage.status == 401, garbage.text

    # The valid token still passes after all that (nothing got cached as a rejection).
    assert verifier.accepts("idp", idp.token())
    assert mirror.served("idp") >= 1
