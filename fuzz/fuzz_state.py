"""Coverage-guided fuzzing of the state-file reader with atheris (libFuzzer).

    python fuzz/fuzz_state.py -max_total_time=60 [CORPUS_DIR ...]

The bytes are a state file's content, read as ``StateStore.load`` reads it
(``persistence.parse_document``) and restored into a fresh issuer as at start
(``IssuerState.restore``). Whatever the bytes, either the file is refused with a
``StateRefused`` (the reason is one the metric documents) and the issuer is left empty, or
the restored issuer holds:

* no time after now (``last_success``, ``last_change``, every ``removed_at``): a file cannot
  keep a set servable, or a removed key published, past its limits;
* at most ``max_keys`` current and at most ``max_keys`` retained keys;
* a published set with no private or symmetric member, which re-validates to the same bytes.

With no corpus directory given, the seed corpus is state files the mirror itself wrote
(``IssuerState.apply`` then ``StateStore.save``): a first set, a rotation with a retained key,
keys without ``kid``, an x5c key.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from jwks_mirror.core.config.model import IssuerSettings, Limits
    from jwks_mirror.core.errors import KeySetRejected, StateRefused
    from jwks_mirror.core.keysets import PRIVATE_MEMBERS, validate
    from jwks_mirror.serving.fetching import Validators
    from jwks_mirror.serving.persistence import StateStore, parse_document
    from jwks_mirror.serving.state import IssuerState

UPSTREAM = "http://keys.myns.svc.cluster.local/jwks.json"
NOW = 1_800_000_000.0
LIMITS = Limits(max_keys=4, retain_removed_keys_s=3600.0, max_stale_s=7200.0)
ISSUER = IssuerSettings(name="keys", jwks_uri=UPSTREAM, limits=LIMITS)
REASONS = {"not_json", "format", "other_upstream", "invalid"}


def check(data: bytes) -> None:
    state = IssuerState(ISSUER)
    try:
        state.restore(parse_document(data), now=NOW)
    except StateRefused as exc:
        assert exc.reason in REASONS, exc.reason
        assert state.published is None and state.current == () and not state.retained
        return
    assert state.last_success is not None and state.last_success <= NOW
    assert state.last_change is None or state.last_change <= NOW
    assert all(r.removed_at <= NOW for r in state.retained.values())
    assert len(state.current) <= LIMITS.max_keys and len(state.retained) <= LIMITS.max_keys
    if state.published is not None:
        for key in json.loads(state.published.body)["keys"]:
            assert not PRIVATE_MEMBERS.intersection(key), key
            assert key["kty"] != "oct", key
        again = validate(state.published.body, max_bytes=1 << 22, max_keys=1000)
        assert len(again.keys) == len(json.loads(state.published.body)["keys"])


def seed(directory: Path) -> None:
    from jwcrypto import jwk

    def keyset(*keys: jwk.JWK) -> bytes:
        return json.dumps({"keys": [json.loads(k.export_public()) for k in keys]}).encode()

    rsa = jwk.JWK.generate(kty="RSA", size=2048, kid="rsa")
    ec = jwk.JWK.generate(kty="EC", crv="P-256", kid="ec")
    ed = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed")
    anonymous = jwk.JWK.generate(kty="EC", crv="P-256")
    bodies = [keyset(rsa), keyset(rsa, ec), keyset(ec, ed), keyset(ed, anonymous)]
    x5c = Path(__file__).parent.parent / "tests" / "fixtures" / "jwks"
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp))
        state = IssuerState(ISSUER)
        for index, body in enumerate(bodies):
            state.apply(validate(body, max_bytes=1 << 20, max_keys=4), now=NOW - 600 + index)
            store.save("keys", state.snapshot(Validators(etag=f'"v{index}"')))
            (directory / f"written-{index}").write_bytes(store.path("keys").read_bytes())
        for index, published in enumerate(sorted(x5c.glob("*.json"))[:3]):
            try:
                validated = validate(published.read_bytes(), max_bytes=1 << 20, max_keys=4)
            except KeySetRejected:
                continue
            one = IssuerState(ISSUER)
            one.apply(validated, now=NOW - 60)
            store.save("keys", one.snapshot(Validators()))
            (directory / f"corpus-{index}").write_bytes(store.path("keys").read_bytes())


def main() -> None:
    harness.run(check, seed, name="state")


if __name__ == "__main__":
    main()
