"""Coverage-guided fuzzing of the key-set validator with atheris (libFuzzer).

    python fuzz/fuzz_keysets.py -max_total_time=60 [CORPUS_DIR ...]

Whatever the bytes, ``validate`` either raises ``KeySetRejected`` or returns keys whose
rendering holds no private or symmetric member, only the key types Envoy verifies with, and
re-validates to the same bytes. Any other exception or a failed check is a crash. With no
corpus directory given, a seed corpus of real key sets is written to a temporary directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports():
    from jwks_mirror.core.errors import KeySetRejected
    from jwks_mirror.core.keysets import PRIVATE_MEMBERS, render, validate

MAX_BYTES = 1 << 16


def check(data: bytes) -> None:
    try:
        validated = validate(data, max_bytes=MAX_BYTES, max_keys=100)
    except KeySetRejected:
        return
    body = render(validated.keys)
    for key in json.loads(body)["keys"]:
        assert not PRIVATE_MEMBERS.intersection(key), key
        assert key["kty"] in {"RSA", "EC", "OKP"}, key
    assert render(validate(body, max_bytes=MAX_BYTES, max_keys=100).keys) == body


def seed(directory: Path) -> None:
    from jwcrypto import jwk

    keys = [
        jwk.JWK.generate(kty="RSA", size=2048, kid="rsa"),
        jwk.JWK.generate(kty="EC", crv="P-256", kid="ec"),
        jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed"),
    ]
    public = [json.loads(k.export_public()) for k in keys]
    (directory / "valid").write_text(json.dumps({"keys": public}))
    (directory / "private").write_text(json.dumps({"keys": [json.loads(keys[1].export_private())]}))
    (directory / "one").write_text(json.dumps({"keys": public[1:2]}))
    # Real providers' published sets: the loose encodings the validator must read.
    for published in (Path(__file__).parent.parent / "tests" / "fixtures" / "jwks").glob("*.json"):
        (directory / f"corpus-{published.stem}").write_bytes(published.read_bytes())


def main() -> None:
    harness.run(check, seed, name="keysets")


if __name__ == "__main__":
    main()
