"""Coverage-guided fuzzing of ``analyze`` with atheris (libFuzzer).

    python fuzz/fuzz_analyze.py -max_total_time=60 [CORPUS_DIR ...]

Whatever the bytes, once they parse as YAML, ``analyze`` returns findings and never raises
(nor hangs: libFuzzer's per-input timeout catches that); each finding names a known code and
severity, renders as exactly two lines with no control character, and serialises to JSON.
Text that is not UTF-8 or not YAML is the reader's to refuse (``ManifestError``, exit 2).
With no corpus directory given, the seed corpus is every analyze fixture of the tests (the
real projects' manifests and one trigger and near miss per code), the per-code ones also with
the mirror's manifests in front of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports():
    from jwks_mirror.core.errors import ManifestError
    from jwks_mirror.gitops.analyze import analyze
    from jwks_mirror.gitops.findings import CODES, SEVERITIES
    from jwks_mirror.gitops.roundtrip import parse_stream

MAX_BYTES = 1 << 16
DATA = Path(__file__).parent.parent / "tests" / "data" / "analyze"


def check(data: bytes) -> None:
    if len(data) > MAX_BYTES:
        return
    try:
        stream = parse_stream(data.decode("utf-8"), source="fuzz.yaml")
    except (UnicodeDecodeError, ManifestError, RecursionError):
        return
    # --assume-strict on half the inputs: both paths of the mTLS checks, at one run's cost
    for finding in analyze([stream], assume_strict=len(data) % 2 == 1):
        assert finding.code in CODES and finding.severity in SEVERITIES, finding
        text = finding.render()
        assert text.count("\n") == 1, text
        assert not any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in text), text
        json.dumps(finding.as_json())


def seed(directory: Path) -> None:
    mirror = (DATA / "cases" / "mirror.yaml").read_bytes() + b"\n---\n"
    mirror += (DATA / "cases" / "rule-at-mirror.yaml").read_bytes() + b"\n---\n"
    for path in sorted(DATA.rglob("*.yaml")):
        name = "-".join(path.relative_to(DATA).parts)
        (directory / name).write_bytes(path.read_bytes())
        if path.parent.name == "cases":  # the codes about the mirror need it in the input
            (directory / f"with-mirror-{name}").write_bytes(mirror + path.read_bytes())


def main() -> None:
    harness.run(check, seed, name="analyze")


if __name__ == "__main__":
    main()
