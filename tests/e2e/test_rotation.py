"""Scenario 2: key rotation, and what istiod's resolver sees.

The mirror refreshes on its own only hourly here, so everything that changes is caused by
``jwks-mirror refresh``. Tokens signed just before the rotation keep verifying while the old
key is retained, and stop verifying when retention ends or an operator purges it.
"""

from __future__ import annotations

import pytest

from .harness import http
from .harness.mesh import Mesh
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOURLY = {"refresh_interval": "1h", "max_stale": "72h"}


def test_rotation_picked_up_by_refresh_old_tokens_kept_until_purged(mesh: Mesh) -> None:
    mirror, verifier = mesh.mirrored(["idp"], defaults={**HOURLY, "retain_removed_keys": "1h"})
    idp = mesh.issuers["idp"].app
    before_rotation = idp.token(subject="signed-before-rotation")
    assert verifier.accepts("idp", before_rotation)

    old, new = idp.rotate()
    after_rotation = idp.token(subject="signed-after-rotation")
    # Not refreshed yet: the mirror still publishes only the old key.
    assert mirror.kids("idp") == [old.kid]
    assert verifier.status("idp", after_rotation) == 401

    done = mirror.refresh("idp")
    assert "idp: changed" in done.stdout, done.stdout
    assert new.kid in done.stdout, done.stdout

    # istiod caches by exact URI: a new ?v= makes it fetch at once, and it must get the
    # current set at once. A plain client, no TLS identity, as istiod is.
    resolver = http.get(mirror.jwks_url("idp", "v=after-rotation"))
    assert resolver.status == 200, resolver.text
    assert sorted(k["kid"] for k in resolver.json()["keys"]) == sorted([old.kid, new.kid])

    wait_until(lambda: verifier.accepts("idp", after_rotation), timeout=10,
               what="the verifier to accept a token signed with the new key")
    assert verifier.accepts("idp", before_rotation), "token signed before rotation rejected"
    status = mirror.status("idp")
    assert status["retained_kids"] == [old.kid], status
    assert mirror.metric("jwks_mirror_retained_keys", issuer="idp") == 1

    done = mirror.refresh("idp", purge_retained=True)
    assert old.kid not in mirror.kids("idp")
    assert mirror.kids("idp") == [new.kid]
    wait_until(lambda: verifier.status("idp", before_rotation) == 401, timeout=10,
               what="the verifier to reject the purged key's token")
    assert verifier.accepts("idp", after_rotation)
    assert mirror.status("idp")["retained_kids"] == []


def test_retained_key_expires_by_itself(mesh: Mesh) -> None:
    retain_s = 4
    mirror, verifier = mesh.mirrored(
        ["idp"], defaults={**HOURLY, "retain_removed_keys": f"{retain_s}s"})
    idp = mesh.issuers["idp"].app
    before_rotation = idp.token(subject="signed-before-rotation")
    assert verifier.accepts("idp", before_rotation)

    old, new = idp.rotate()
    mirror.refresh("idp")
    after_rotation = idp.token()
    wait_until(lambda: verifier.accepts("idp", after_rotation), timeout=retain_s - 1,
               what="the verifier to accept a token signed with the new key")
    # Within the retention window (the verifier's cache is 1 s, retention 4 s).
    assert verifier.accepts("idp", before_rotation)
    assert mirror.status("idp")["retained_kids"] == [old.kid]

    # No refresh, no purge: retention ending alone must drop the key.
    wait_until(lambda: mirror.kids("idp") == [new.kid], timeout=retain_s + 5,
               what="the retained key to be dropped when retain_removed_keys passes",
               describe=lambda: str(mirror.kids("idp")))
    wait_until(lambda: verifier.status("idp", before_rotation) == 401, timeout=10,
               what="the verifier to reject the expired key's token")
    assert verifier.accepts("idp", after_rotation)
    assert mirror.status("idp")["retained_kids"] == []
