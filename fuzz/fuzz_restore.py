"""Coverage-guided fuzzing of ``rewrite --restore`` with atheris (libFuzzer).

    python fuzz/fuzz_restore.py -max_total_time=60 [CORPUS_DIR ...]

The bytes are a manifest file as a pull request could hold it, annotation included. Whatever
they are, parsing, :func:`~jwks_mirror.gitops.restoring.restore` and the re-parse check
(:func:`~jwks_mirror.gitops.restoring.check_restored`) either refuse with a ``UsageError`` (one
line, exit 2) or give a text that parses again, in which no restored RequestAuthentication
keeps the annotation and every restored ``jwksUri`` reads back as its original. Any other
exception is a crash. With no corpus directory given, the seed corpus is the real manifests
of ``tests/data/manifests`` (rewritten ones carry the annotation) plus forged annotations.
"""

from __future__ import annotations

import json
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from jwks_mirror.core.errors import UsageError
    from jwks_mirror.gitops.manifests import ANNOTATION, iter_request_authentications
    from jwks_mirror.gitops.restoring import check_restored, restore
    from jwks_mirror.gitops.roundtrip import parse_stream

MAX_BYTES = 1 << 14
DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "manifests"


def check(data: bytes) -> None:
    if len(data) > MAX_BYTES:
        return
    text = harness.text(data)
    if text is None:
        return
    try:
        stream = parse_stream(text, source="fuzz.yaml")
        restored = restore(stream)
        rendered = stream.render()
        if restored:
            check_restored(stream, rendered, restored)
    except UsageError:
        return
    if not restored:
        return
    again = parse_stream(rendered, source="fuzz.yaml")  # check_restored proved it parses
    touched = {(r.document, r.resource) for r in restored}
    for number, document in enumerate(again.documents):
        for ordinal, resource in enumerate(iter_request_authentications(document.data)):
            if (number, ordinal) in touched:
                meta = resource.get("metadata")
                annotations = meta.get("annotations") if isinstance(meta, dict) else None
                assert not (isinstance(annotations, dict) and ANNOTATION in annotations), rendered


def seed(directory: Path) -> None:
    for path in sorted(DATA.glob("*/*.yaml")):
        (directory / f"{path.parent.name}-{path.stem}").write_bytes(path.read_bytes())
    mirror = "http://jwks-mirror.jwks-mirror.svc:8080/keys-myns/jwks.json"
    forged = [
        {"0": "http://169.254.169.254/latest/meta-data/"},
        {"0": "http://keys.myns.svc/a\u2028b"},
        {"0": "http://keys.myns.svc/\x1b]0;x\x07"},
        {"0": "http://keys.myns.svc/\ud800"},
        {"0": {"null": "~"}, "created": "metadata"},
        {"0": {"null": "x\nevil: 1"}},
        {"0": None, "1": "http://keys:8080/jwks.json", "created": "annotations=null"},
        {"7": "http://keys.myns.svc/jwks.json"},
    ]
    for index, original in enumerate(forged):
        annotation = json.dumps(original).replace("'", "''")
        (directory / f"forged-{index}").write_text(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n"
            f"  name: web\n  namespace: myns\n  annotations:\n    {ANNOTATION}: '{annotation}'\n"
            f"spec:\n  jwtRules:\n  - issuer: iss\n    jwksUri: |-\n      {mirror}\n"
            f"  - issuer: http://auth.myns.svc\n    jwksUri: {mirror}\n",
            encoding="utf-8", errors="surrogatepass",
        )


def main() -> None:
    harness.run(check, seed, name="restore")


if __name__ == "__main__":
    main()
