"""Coverage-guided fuzzing of the peer-offer parser with atheris (libFuzzer).

    python fuzz/fuzz_peer_offer.py -max_total_time=60 [CORPUS_DIR ...]

The bytes are a peer's answer to ``GET /peer/{name}``, checked by ``offers.parse_offer`` as
the asking replica checks it. Whatever the bytes, either a ``PeerError`` is raised, or the
offer:

* names no time after now, and its ``last_success`` is within ``max_stale``;
* holds at most ``max_keys`` current and at most ``max_keys`` retained keys, none with a
  private or symmetric member;
* adopted into an empty issuer (``IssuerState.adopt_from_peer``), is then replaced whole by
  an upstream set: nothing of the offer stays published or retained.

With no corpus directory given, the seed corpus is real ``/peer`` answers: what ``share``
returns for an issuer that fetched a set, rotated (a retained key) and was restored, serialized
as the admin port serializes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from jwks_mirror.core.config.model import IssuerSettings, Limits
    from jwks_mirror.core.errors import PeerError
    from jwks_mirror.core.keysets import PRIVATE_MEMBERS, validate
    from jwks_mirror.serving.fetching import Validators
    from jwks_mirror.serving.offers import parse_offer, share
    from jwks_mirror.serving.state import IssuerState

UPSTREAM = "http://keys.myns.svc.cluster.local/jwks.json"
NOW = 1_800_000_000.0
LIMITS = Limits(max_keys=4, retain_removed_keys_s=3600.0, max_stale_s=7200.0)
ISSUER = IssuerSettings(name="keys", jwks_uri=UPSTREAM, limits=LIMITS)
OWN = b'{"keys":[{"kty":"EC","crv":"P-256","kid":"own",' \
    b'"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",' \
    b'"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'


def check(data: bytes) -> None:
    try:
        offer = parse_offer(data, issuer=ISSUER, peer="http://10.0.0.7:9090", now=NOW)
    except PeerError:
        return
    assert offer.last_success <= NOW
    assert offer.last_success + LIMITS.max_stale_s > NOW
    assert len(offer.validated.keys) <= LIMITS.max_keys
    assert len(offer.retained) <= LIMITS.max_keys
    for key in [*offer.validated.keys, *(k for k, _ in offer.retained)]:
        assert not PRIVATE_MEMBERS.intersection(key.jwk), key.jwk
        assert key.kty != "oct", key.jwk
    assert all(at <= NOW for _, at in offer.retained)
    state = IssuerState(ISSUER)
    state.adopt_from_peer(
        offer.validated, retained=offer.retained, last_success=offer.last_success,
        peer=offer.peer, now=NOW,
    )
    own = validate(OWN, max_bytes=LIMITS.max_response_bytes, max_keys=LIMITS.max_keys)
    state.apply(own, now=NOW + 1)
    assert state.current == own.keys and not state.retained, state.retained
    assert state.published is not None and state.published.kids == ("own",)
    assert share(state, NOW + 1)[0] == 200


def seed(directory: Path) -> None:
    from jwcrypto import jwk

    def keyset(*keys: jwk.JWK) -> bytes:
        return json.dumps({"keys": [json.loads(k.export_public()) for k in keys]}).encode()

    def answer(state: IssuerState, now: float) -> bytes:
        _, document = share(state, now)
        return json.dumps(document, separators=(",", ":")).encode()  # as admin.peer does

    rsa = jwk.JWK.generate(kty="RSA", size=2048, kid="rsa")
    ec = jwk.JWK.generate(kty="EC", crv="P-256", kid="ec")
    ed = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed")
    state = IssuerState(ISSUER)
    for index, body in enumerate([keyset(rsa, ec), keyset(ec, ed), keyset(ed)]):
        state.apply(validate(body, max_bytes=1 << 20, max_keys=4), now=NOW - 300 + index)
        (directory / f"upstream-{index}").write_bytes(answer(state, NOW))
    restored = IssuerState(ISSUER)
    restored.restore(json.loads(json.dumps(state.snapshot(Validators()))), now=NOW)
    (directory / "restored").write_bytes(answer(restored, NOW))
    (directory / "no-set").write_bytes(answer(IssuerState(ISSUER), NOW))
    private = json.loads(ec.export_private())
    spoiled = json.loads(answer(state, NOW))
    spoiled["retained"] = [{"jwk": private, "removed_at": NOW - 5}]
    (directory / "private-retained").write_bytes(json.dumps(spoiled).encode())


def main() -> None:
    harness.run(check, seed, name="peer-offer")


if __name__ == "__main__":
    main()
