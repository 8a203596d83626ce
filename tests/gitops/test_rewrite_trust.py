"""Nothing a manifest's author could forge is trusted by ``rewrite``, ``--restore`` and ``pin``.

The ``jwks-mirror.io/original-jwks-uri`` annotation is pull-request content like the rest of
the file: it never makes a rule mirrored by itself, an "original" taken from it must be an
in-mesh http(s) URL before it reaches the mirror's config, ``--restore`` proves that what it
writes reads back before it replaces anything, and anchored rules shared by several resources
are restored correctly or refused. Everything runs through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jwks_mirror.cli import main

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"

ANNOTATED = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: web
  namespace: myns
  annotations:
    jwks-mirror.io/original-jwks-uri: '{annotation}'
spec:
  jwtRules:
  - issuer: iss
    jwksUri: {uri}
"""


def annotated(tmp: Path, original: object, uri: str, *, name: str = "ra.yaml") -> Path:
    path = tmp / name
    annotation = json.dumps({"0": original, "created": "annotations"}).replace("'", "''")
    path.write_text(ANNOTATED.format(annotation=annotation, uri=uri), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- the annotation does not make a rule mirrored ----------------------------------------------


@pytest.mark.parametrize("mirror_args", [["--mirror-url", MIRROR], []], ids=["mirror-url", "default"])
def test_check_fails_an_in_mesh_uri_with_a_forged_annotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mirror_args: list[str]
) -> None:
    uri = "http://keys.myns.svc/jwks.json"
    source = annotated(tmp_path, uri, uri)
    code, out, err = run(capsys, "rewrite", str(source), "--check", *mirror_args)
    assert code == 1, (out, err)
    assert f"jwksUri {uri} is not mirrored (annotated, but not a URL of the mirror " in out
    assert "1 in-mesh rules not mirrored, 0 mirrored" in err


def test_check_fails_a_mirror_shaped_uri_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Shaped like a mirror URL, annotated, on another in-mesh Service: not the mirror.
    uri = "http://evil.myns.svc:8080/keys-myns/jwks.json"
    source = annotated(tmp_path, "http://keys.myns.svc/jwks.json", uri)
    code, out, _ = run(capsys, "rewrite", str(source), "--check", "--mirror-url", MIRROR)
    assert code == 1
    assert f"jwksUri {uri} is not mirrored" in out


def test_rewrite_replaces_a_forged_original(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = "http://keys.myns.svc/jwks.json"
    source = annotated(tmp_path, "http://other.myns.svc/forged.json", uri)
    code, out, _ = run(capsys, "rewrite", str(source), "--mirror-url", MIRROR)
    assert code == 0
    assert f'{{"0":"{uri}","created":"annotations"}}' in out
    assert f"jwksUri: {MIRROR}/keys-myns/jwks.json" in out


# -- an original from the annotation must be an in-mesh http(s) URL -----------------------------


@pytest.mark.parametrize(
    "original",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://keys.example.com/jwks.json",
        "file:///etc/passwd",
        "http://localhost:9090/status",
        f"{MIRROR}/keys-myns/jwks.json",
        {"null": "x\nevil: 1"},
        ["http://keys.myns.svc/jwks.json"],
    ],
    ids=["metadata-ip", "metadata-name", "external", "file", "localhost", "the-mirror", "bad-null", "list"],
)
def test_config_out_refuses_an_original_that_is_not_in_mesh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], original: object
) -> None:
    source = annotated(tmp_path, original, f"{MIRROR}/keys-myns/jwks.json")
    config = tmp_path / "mirror.yaml"
    code, out, err = run(
        capsys, "rewrite", str(source), "--mirror-url", MIRROR, "--config-out", str(config)
    )
    assert (code, out) == (2, ""), err
    assert err.startswith("jwks-mirror: error: ") and err.count("\n") == 1
    assert not config.exists()
    code, _, err = run(capsys, "rewrite", str(source), "--check", "--mirror-url", MIRROR)
    assert code == 2, err


def test_metadata_original_never_reaches_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's chain: a forged original copied into --config-out, accepted by
    check-config, fetched by the mirror. It stops at the first step."""
    source = annotated(tmp_path, "http://169.254.169.254/latest/meta-data/", f"{MIRROR}/meta/jwks.json")
    config = tmp_path / "mirror.yaml"
    code, _, err = run(capsys, "rewrite", str(source), "--mirror-url", MIRROR, "--config-out", str(config))
    assert code == 2
    assert "169.254.169.254" in err and "not an in-mesh http(s) URL" in err
    assert not config.exists()


# -- pin trusts the URL, not the annotation ----------------------------------------------------


def test_pin_does_not_pin_an_annotated_uri_that_is_not_the_mirror(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "http://evil.myns.svc:8080/keys-myns/jwks.json"
    source = annotated(tmp_path, "http://keys.myns.svc/jwks.json", uri)
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"issuers": [{"name": "keys-myns", "version": "0123456789abcdef"}]}))
    before = source.read_text()
    code, out, err = run(capsys, "pin", str(source), "--from-status", str(status))
    assert code == 1, (out, err)
    assert "not a URL of the mirror" in err
    assert "?v=" not in out
    code, out, _ = run(capsys, "pin", str(source), "--from-status", str(status), "--in-place")
    assert code == 1
    assert source.read_text() == before
    code, out, _ = run(capsys, "pin", str(source), "--from-status", str(status), "--check")
    assert code == 1 and "not a URL of the mirror" in out


# -- --restore writes only what reads back -----------------------------------------------------


@pytest.mark.parametrize(
    ("original", "uri"),
    [
        ("http://keys.myns.svc/a\u2028b", "|-\n      {mirror}/keys-myns/jwks.json"),
        ("http://keys.myns.svc/a\x85b", "|-\n      {mirror}/keys-myns/jwks.json"),
        ("http://keys.myns.svc/a\x1bb", "|-\n      {mirror}/keys-myns/jwks.json"),
        ("http://keys.myns.svc/a\x1bb", "{mirror}/keys-myns/jwks.json"),
        ("http://keys.myns.svc/\ud800", "{mirror}/keys-myns/jwks.json"),
        ("http://keys.myns.svc/\ud800", "|-\n      {mirror}/keys-myns/jwks.json"),
    ],
    ids=["u2028-literal", "nel-literal", "esc-literal", "esc-plain", "surrogate", "surrogate-literal"],
)
def test_restore_refuses_an_original_that_would_not_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], original: str, uri: str
) -> None:
    path = tmp_path / "ra.yaml"
    annotation = json.dumps({"0": original, "created": "annotations"})  # ASCII: \\u escapes
    path.write_text(ANNOTATED.format(annotation=annotation, uri=uri.format(mirror=MIRROR)))
    before = path.read_bytes()
    code, out, err = run(capsys, "rewrite", str(path), "--restore", "--in-place")
    assert code == 2, (out, err)
    assert err.startswith("jwks-mirror: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    code, out, err = run(capsys, "rewrite", str(path), "--restore")  # stdout: same refusal
    assert (code, out) == (2, "")


def test_restore_surrogate_through_the_entrypoint_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ra.yaml"
    annotation = json.dumps({"0": "http://keys.myns.svc/\ud800", "created": "annotations"})
    path.write_text(ANNOTATED.format(annotation=annotation, uri=f"{MIRROR}/keys-myns/jwks.json"))
    before = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "rewrite", str(path), "--restore", "--in-place"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


# -- anchored rules shared by several resources -------------------------------------------------

SHARED = """\
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: RequestAuthentication
  metadata:
    name: a
    namespace: ns1
  spec:
    jwtRules: &rules
    - issuer: iss
      jwksUri: {uri}
- apiVersion: security.istio.io/v1
  kind: RequestAuthentication
  metadata:
    name: b
    namespace: ns2
  spec:
    jwtRules: *rules
"""


def test_shared_rules_round_trip_or_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "shared.yaml"
    original = SHARED.format(uri="http://keys.ns1.svc/jwks.json")
    source.write_text(original)
    code, _, err = run(capsys, "rewrite", str(source), "--mirror-url", MIRROR, "--in-place")
    assert code == 0, err
    rewritten = source.read_text()
    assert f"jwksUri: {MIRROR}/keys-ns1/jwks.json" in rewritten
    assert rewritten.count("jwks-mirror.io/original-jwks-uri") == 1  # the rule is edited once
    code, out, err = run(capsys, "rewrite", str(source), "--restore")
    assert code == 0, err
    assert out == original


def test_shared_rules_needing_two_upstreams_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bare Service name resolves in each resource's own namespace: two upstreams, one rule.
    source = tmp_path / "shared.yaml"
    source.write_text(SHARED.format(uri="http://keys/jwks.json"))
    code, out, err = run(capsys, "rewrite", str(source), "--mirror-url", MIRROR)
    assert (code, out) == (2, "")
    assert "shared (a YAML anchor)" in err


def test_restore_refuses_shared_rules_whose_annotations_disagree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the old rewrite wrote for an anchored rule: the second resource's annotation
    holds the mirror URL the first edit had just put there. Restoring both silently put the
    mirror URL back (exit 0); now the disagreement is refused."""
    mirror_uri = f"{MIRROR}/keys-ns1/jwks.json"
    text = SHARED.format(uri=mirror_uri)
    text = text.replace(
        "    name: a\n    namespace: ns1\n",
        "    name: a\n    namespace: ns1\n    annotations:\n      jwks-mirror.io/original-jwks-uri: "
        "'{\"0\":\"http://keys.ns1.svc/jwks.json\",\"created\":\"annotations\"}'\n",
    ).replace(
        "    name: b\n    namespace: ns2\n",
        "    name: b\n    namespace: ns2\n    annotations:\n      jwks-mirror.io/original-jwks-uri: "
        f"'{{\"0\":\"{mirror_uri}\",\"created\":\"annotations\"}}'\n",
    )
    source = tmp_path / "shared.yaml"
    source.write_text(text)
    code, out, err = run(capsys, "rewrite", str(source), "--restore", "--in-place")
    assert code == 2, (out, err)
    assert "shared (a YAML anchor)" in err
    assert source.read_text() == text
