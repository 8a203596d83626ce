"""Undoing a rewrite (jwks_mirror/gitops/restoring.py), on small hand-written manifests: the
annotation's originals go back and the annotation goes, the result passes the read-back proof,
and an annotation naming a rule that is not there is refused. The golden and property
runs over real manifests are tests/gitops/test_manifests.py and tests/gitops/test_rewrite_properties.py."""

from __future__ import annotations

import json

import pytest

from jwks_mirror.core.errors import ManifestError
from jwks_mirror.gitops.manifests import ANNOTATION
from jwks_mirror.gitops.restoring import check_restored, restore
from jwks_mirror.gitops.roundtrip import parse_stream

MIRRORED = "http://jwks-mirror.jwks-mirror.svc:8080/keys-ns/jwks.json"
ORIGINAL = "http://keys.ns.svc/jwks.json"


def manifest(name: str, originals: dict[str, str], rules: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        f"metadata:\n  name: {name}\n  namespace: ns\n  annotations:\n"
        f"    {ANNOTATION}: '{json.dumps(originals)}'\n"
        f"spec:\n  jwtRules:\n{rules}"
    )


def test_the_original_goes_back_and_the_annotation_goes() -> None:
    text = manifest("a", {"0": ORIGINAL}, f"  - issuer: iss\n    jwksUri: {MIRRORED}\n")
    stream = parse_stream(text, source="a.yaml")
    done = restore(stream)
    assert [(r.document, r.resource, r.rule, r.value) for r in done] == [(0, 0, 0, ORIGINAL)]
    rendered = stream.render()
    assert ORIGINAL in rendered and MIRRORED not in rendered and ANNOTATION not in rendered
    check_restored(stream, rendered, done)
    with pytest.raises(ManifestError):  # the proof refuses a text that does not read back
        check_restored(stream, rendered.replace(ORIGINAL, "http://elsewhere.ns.svc/k"), done)


def test_a_rule_named_but_missing_is_refused() -> None:
    text = manifest("a", {"3": ORIGINAL}, f"  - issuer: iss\n    jwksUri: {MIRRORED}\n")
    with pytest.raises(ManifestError, match="names rule 3, which does not exist"):
        restore(parse_stream(text, source="a.yaml"))
