"""Round-trip YAML streams (jwks_mirror/gitops/roundtrip.py): what no manifest can hold is
refused with one ManifestError line, never an exception from inside ruamel.yaml."""

from __future__ import annotations

import pytest

from jwks_mirror.core.errors import ManifestError
from jwks_mirror.gitops.roundtrip import parse_stream


def test_a_block_mapping_as_a_key_is_refused_with_its_line() -> None:
    """Found by fuzz_restore.py (seed 1): ruamel.yaml hashes a block-mapping key that holds a
    nested mapping and raised TypeError, which ``rewrite`` would report as a crash."""
    text = "kind: Y\n---\nkind: X\nmetadata:\n? a: 1\n  b:\n    c: d\n: v\n"
    with pytest.raises(ManifestError, match=r"^m\.yaml:3: a key that is itself a mapping"):
        parse_stream(text, source="m.yaml")


def test_a_flow_mapping_as_a_key_still_loads() -> None:
    """The refusal is for what cannot be loaded; a hashable complex key loads as before."""
    stream = parse_stream("a: 1\n? {x: 1}\n: 2\n", source="m.yaml")
    assert len(stream.documents) == 1
