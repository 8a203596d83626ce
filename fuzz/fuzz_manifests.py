"""Coverage-guided fuzzing of the manifest reader and walker with atheris (libFuzzer).

    python fuzz/fuzz_manifests.py -max_total_time=60 [CORPUS_DIR ...]

Whatever the bytes, ``parse_stream`` (through ``jwks_mirror.core.yamlsafe``'s bounds) either raises
``ManifestError`` with a one-line message or gives a stream that renders back to the same
text, and whose walk (``iter_rules``) visits each rule once: no other exception, no crash, no
stall. The seeds are the real manifests of tests/data/manifests, plus the hostile shapes of
tests/hostile_yaml.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import harness

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports():
    from jwks_mirror.core.errors import ManifestError
    from jwks_mirror.gitops.manifests import iter_rules
    from jwks_mirror.gitops.roundtrip import parse_stream


def check(data: bytes) -> None:
    text = harness.text(data)
    if text is None:
        return
    try:
        stream = parse_stream(text, source="fuzz.yaml")
        rules = list(iter_rules(stream))
    except ManifestError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    assert stream.render() == text
    assert len({id(ref.rule) for ref in rules}) == len(rules)


def seed(directory: Path) -> None:
    from tests import hostile_yaml

    for path in sorted((ROOT / "tests" / "data" / "manifests").glob("*/*.yaml")):
        (directory / f"{path.parent.name}-{path.stem}").write_bytes(path.read_bytes())
    (directory / "alias-list").write_text(hostile_yaml.alias_list(3, 3))
    (directory / "deep").write_text(hostile_yaml.deep_manifest(50))


def main() -> None:
    harness.run(check, seed, name="manifests")


if __name__ == "__main__":
    main()
