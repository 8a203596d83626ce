"""``jwks-mirror rewrite`` through the real CLI: golden files, inputs, outputs and errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jwks_mirror.cli import main

DATA = Path(__file__).parents[1] / "data" / "manifests"
MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())

IN_MESH = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: {name}
  namespace: {namespace}
spec:
  jwtRules:
  - issuer: {issuer}
    jwksUri: {uri}
"""


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["rewrite", *args])
    out, err = capsys.readouterr()
    return code, out, err


def case_args(case: str) -> list[str]:
    args = DATA / case / "args"
    return args.read_text().split() if args.exists() else []


def manifest(tmp: Path, name: str, uri: str, *, namespace: str = "myns") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(IN_MESH.format(name=path.stem, namespace=namespace, issuer="iss", uri=uri))
    return path


# -- golden files ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_rewrite(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "input.yaml"
    shutil.copy(DATA / case / "input.yaml", source)
    code, out, err = run(capsys, str(source), "--mirror-url", MIRROR, *case_args(case))
    assert (code, err) == (0, "")
    assert out == read(DATA / case / "expected.yaml")


@pytest.mark.parametrize("case", CASES)
def test_golden_second_run_changes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "expected.yaml"
    shutil.copy(DATA / case / "expected.yaml", source)
    code, out, err = run(capsys, str(source), "--mirror-url", MIRROR, *case_args(case))
    assert (code, err) == (0, "")
    assert out == read(DATA / case / "expected.yaml")


@pytest.mark.parametrize("case", CASES)
def test_golden_restore_gives_input_back(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "expected.yaml"
    shutil.copy(DATA / case / "expected.yaml", source)
    code, out, err = run(capsys, str(source), "--restore")
    assert (code, err) == (0, "")
    restored = DATA / case / "restored.yaml"
    assert out == read(restored if restored.exists() else DATA / case / "input.yaml")


def test_unchanged_documents_are_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = read(DATA / "nothing-to-change" / "input.yaml")
    changed = read(DATA / "basic" / "input.yaml")
    source = tmp_path / "mixed.yaml"
    source.write_text(odd + "---\n" + changed)
    code, out, _ = run(capsys, str(source), "--mirror-url", MIRROR)
    assert code == 0
    assert out.startswith(odd + "---\n")
    assert out.removeprefix(odd + "---\n") == read(DATA / "basic" / "expected.yaml")


EDGE_STREAM = (
    "%YAML 1.2\n---\n" + IN_MESH.format(name="a", namespace="b", issuer="x", uri="http://k.b.svc/j")
    + "...\n# between documents\n--- {a: 1}\n--- !!map\nb: 2\n---\n"
    "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
    "metadata: {name: c, namespace: b}\n"
    'spec:\n  jwtRules: [{issuer: y, jwksUri: "http://k.b.svc/j"}]'  # no final newline
)


@pytest.mark.parametrize(
    "text",
    [EDGE_STREAM, IN_MESH.format(name="w", namespace="b", issuer="x", uri="http://k/j")],
    ids=["markers-directives-flow", "crlf"],
)
def test_stream_edge_cases_round_trip(
    text: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if request.node.callspec.id == "crlf":
        text = text.replace("\n", "\r\n")
    source = tmp_path / "edge.yaml"
    source.write_bytes(text.encode())
    code, rewritten, err = run(capsys, str(source), "--mirror-url", MIRROR)
    assert (code, err) == (0, "")
    assert rewritten.count(f"{MIRROR}/k-b/jwks.json") == (2 if "--- {a: 1}" in text else 1)
    assert ("\r\n" in rewritten) == ("\r\n" in text)
    source.write_bytes(rewritten.encode())
    assert run(capsys, str(source), "--mirror-url", MIRROR) == (0, rewritten, "")
    assert run(capsys, str(source), "--restore") == (0, text, "")


# -- inputs ----------------------------------------------------------------------------------


def test_directories_are_walked_for_yaml_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest(tmp_path, "b/deep/second.yml", "http://two.myns.svc/jwks.json")
    manifest(tmp_path, "a-first.yaml", "http://one.myns.svc/jwks.json")
    manifest(tmp_path, "notes.txt", "http://txt.myns.svc/jwks.json")
    manifest(tmp_path, ".github/hidden.yaml", "http://hidden.myns.svc/jwks.json")
    code, out, _ = run(capsys, str(tmp_path), "--mirror-url", MIRROR)
    assert code == 0
    assert out.count("---\n") == 1
    first, second = out.split("---\n")
    assert f"jwksUri: {MIRROR}/one-myns/jwks.json" in first
    assert f"jwksUri: {MIRROR}/two-myns/jwks.json" in second
    assert "txt-myns" not in out and "hidden" not in out


@pytest.mark.parametrize(("args", "newline"), [([], "\n"), (["-"], "\r\n")])
def test_stdin(args: list[str], newline: str) -> None:
    text = read(DATA / "basic" / "input.yaml").replace("\n", newline)
    proc = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "rewrite", *args, "--mirror-url", MIRROR],
        input=text.encode(), capture_output=True, check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, b"")
    expected = read(DATA / "basic" / "expected.yaml").replace("\n", newline)
    assert proc.stdout.decode() == expected


# -- outputs ---------------------------------------------------------------------------------


def test_in_place_writes_changed_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = tmp_path / "basic.yaml"
    shutil.copy(DATA / "basic" / "input.yaml", changed)
    changed.chmod(0o640)
    untouched = tmp_path / "external.yaml"
    shutil.copy(DATA / "nothing-to-change" / "input.yaml", untouched)
    os.utime(untouched, (1_000_000_000, 1_000_000_000))
    code, out, err = run(capsys, str(tmp_path), "--mirror-url", MIRROR, "--in-place")
    assert (code, out, err) == (0, "", "")
    assert read(changed) == read(DATA / "basic" / "expected.yaml")
    assert changed.stat().st_mode & 0o777 == 0o640
    assert untouched.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basic.yaml", "external.yaml"]


@pytest.mark.parametrize(
    ("bad_text", "message"),
    [
        ("a: [1, 2\nb: 3\n", "bad.yaml:2:2: expected ',' or ']', but got ':'"),
        (
            "key: 1\nkey: 2\n",
            'bad.yaml:2:1: found duplicate key "key" with value "2" (original value: "1")',
        ),
        (
            IN_MESH.format(name="x", namespace="ns", issuer="i", uri="keys.ns.svc/jwks"),
            "bad.yaml:8: ns/bad spec.jwtRules[0].jwksUri: not an http(s) URL: 'keys.ns.svc/jwks'",
        ),
    ],
)
def test_in_place_is_all_or_nothing(
    bad_text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = manifest(tmp_path, "a-good.yaml", "http://keys.myns.svc/jwks.json")
    bad = tmp_path / "bad.yaml"
    bad.write_text(bad_text.replace("name: x", "name: bad"))
    before = {p: read(p) for p in (good, bad)}
    code, out, err = run(capsys, str(good), str(bad), "--mirror-url", MIRROR, "--in-place")
    assert (code, out) == (2, "")
    assert err.startswith(f"jwks-mirror: error: {tmp_path}/")
    assert err.endswith(f"{message}\n") and err.count("\n") == 1, err
    assert {p: read(p) for p in (good, bad)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-good.yaml", "bad.yaml"]


def test_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = manifest(tmp_path, "ra.yaml", "http://keys.myns.svc/jwks.json")
    before = read(source)
    code, out, _ = run(capsys, str(source), "--mirror-url", MIRROR, "--diff")
    assert code == 0
    assert read(source) == before
    lines = out.splitlines()
    assert lines[:2] == [f"--- a{source}", f"+++ b{source}"]  # source is absolute
    assert "-    jwksUri: http://keys.myns.svc/jwks.json" in lines
    assert f"+    jwksUri: {MIRROR}/keys-myns/jwks.json" in lines
    # `annotations:`, the annotation and the jwksUri
    assert sum(line.startswith("+") for line in lines[2:]) == 3


def test_check_lists_unmirrored_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "basic.yaml"
    shutil.copy(DATA / "basic" / "input.yaml", source)
    config = tmp_path / "mirror.yaml"
    code, out, err = run(capsys, str(source), "--check", "--config-out", str(config))
    assert code == 1
    assert out.splitlines() == [
        f"{source}:13: web/web-jwt spec.jwtRules[0]: "
        "jwksUri http://keys.myns.svc.cluster.local/jwks.json is not mirrored",
        f"{source}:21: web/web-jwt spec.jwtRules[2]: "
        "issuer http://auth.other.svc.cluster.local (OIDC discovery) is not mirrored",
        f"{source}:24: web/web-jwt spec.jwtRules[3]: "
        "jwksUri http://keys:8080/.well-known/jwks.json is not mirrored",
    ]
    assert err == "jwks-mirror: 3 in-mesh rules not mirrored, 0 mirrored\n"
    assert read(source) == read(DATA / "basic" / "input.yaml")
    assert not config.exists()

    assert run(capsys, str(source), "--mirror-url", MIRROR, "--in-place")[0] == 0
    code, out, err = run(capsys, str(source), "--check")
    assert (code, out) == (0, "")
    assert err == "jwks-mirror: 0 in-mesh rules not mirrored, 3 mirrored\n"


def test_check_accepts_pinned_mirror_urls(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(DATA / "already-mirrored" / "input.yaml"), "--check")
    assert (code, out) == (0, "")


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mirror-url", "ftp://mirror/"], "--mirror-url: expected http:// or https://"),
        (["--mirror-url", "mirror:8080"], "--mirror-url: expected http:// or https://"),
        (["--mirror-url", "http://mirror/?a=1"], "--mirror-url: expected http:// or https://"),
        (["--mirror-url", "http://u:p@mirror/"], "--mirror-url: expected http:// or https://"),
        ([], "--mirror-url is required (except with --restore or --check)"),
        (["--mirror-url", MIRROR, "--match", "("], "--match: invalid regular expression"),
        (["--restore", "--check"], "--restore cannot be combined with --check or --config-out"),
        (["--mirror-url", MIRROR, "--diff", "--in-place"], "--in-place and --diff are exclusive"),
        (
            ["--mirror-url", "http://m/" + "x" * 2048],
            "spec.jwtRules[0]: mirror URL longer than 2048 characters",
        ),
    ],
)
def test_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = manifest(tmp_path, "ra.yaml", "http://keys.myns.svc/jwks.json")
    code, out, err = run(capsys, str(source), *args)
    assert (code, out) == (2, "")
    assert err.startswith("jwks-mirror: error: ") and err.count("\n") == 1
    assert message in err


def test_unreadable_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    code, _, err = run(capsys, str(missing), "--mirror-url", MIRROR)
    assert (code, err) == (2, f"jwks-mirror: error: {missing}: no such file or directory\n")
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"a: \xe9\n")
    code, _, err = run(capsys, str(binary), "--mirror-url", MIRROR)
    assert (code, err) == (2, f"jwks-mirror: error: {binary}: not UTF-8 text\n")


def test_in_place_refuses_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-", "--mirror-url", MIRROR, "--in-place")
    assert code == 2
    assert err == "jwks-mirror: error: --in-place needs file or directory paths, not stdin\n"


def test_malformed_annotation_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = read(DATA / "already-mirrored" / "input.yaml").replace('{"0":', '["0":')
    source = tmp_path / "ra.yaml"
    source.write_text(text)
    code, _, err = run(capsys, str(source), "--restore")
    assert code == 2
    assert err.startswith(f"jwks-mirror: error: {source}: annotation jwks-mirror.io/")


def test_typed_lists_are_walked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    item = IN_MESH.format(name="a", namespace="b", issuer="x", uri="http://k.b.svc/j")
    indented = "".join(
        ("- " if i == 0 else "  ") + line for i, line in enumerate(item.splitlines(True))
    )
    source = tmp_path / "list.yaml"
    source.write_text(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthenticationList\nitems:\n" + indented
    )
    code, out, _ = run(capsys, str(source), "--mirror-url", MIRROR)
    assert code == 0
    assert f"    jwksUri: {MIRROR}/k-b/jwks.json\n" in out


@pytest.mark.parametrize("api_version", ["[security.istio.io/v1]", "{security.istio.io: v1}"])
def test_an_api_version_that_is_not_a_string_is_not_a_request_authentication(
    api_version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sequence or mapping is unhashable: the walker's set lookup raised TypeError, and
    ``rewrite --check`` and ``analyze`` ended in a traceback on a 7-line pull request."""
    item = IN_MESH.format(name="a", namespace="b", issuer="x", uri="http://k.b.svc/j")
    source = tmp_path / "ra.yaml"
    source.write_text(item.replace("security.istio.io/v1", api_version, 1))
    code, out, err = run(capsys, "--check", str(source))
    assert code == 0, (out, err)
    assert "0 in-mesh rules not mirrored, 0 mirrored" in err
    assert main(["analyze", str(source)]) == 0
    capsys.readouterr()


def test_restore_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "ra.yaml"
    shutil.copy(DATA / "basic" / "expected.yaml", source)
    code, out, _ = run(capsys, str(source), "--restore", "--diff")
    assert code == 0
    assert '+    jwksUri: "http://keys.myns.svc.cluster.local/jwks.json"\n' in out
    assert read(source) == read(DATA / "basic" / "expected.yaml")


def test_formatting_ruamel_cannot_keep_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ruamel.yaml writes a capitalised boolean in lower case: the rewrite is still right, but
    # --restore could not give this file back byte for byte, and the operator is told so.
    text = IN_MESH.format(name="r", namespace="b", issuer="x", uri="http://k.b.svc/j")
    source = tmp_path / "ra.yaml"
    source.write_text(text + "    forwardOriginalToken: True\n")
    code, out, err = run(capsys, str(source), "--mirror-url", MIRROR)
    assert code == 0
    assert f"jwksUri: {MIRROR}/k-b/jwks.json\n" in out
    assert err == (
        f"jwks-mirror: warning: {source}: --restore will not give this file back byte for "
        "byte (formatting ruamel.yaml cannot keep)\n"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: 1\n---\n# c\nb: 1\n  c: 2\n", "5:4: mapping values are not allowed here"),
        ("a: 1\n--- {b: [1, 2}\n", "2:14: expected ',' or ']', but got '}'"),
        ("a: 1\n...\n%YAML 1.2\n---\nb: 'x\n", "6:1: found unexpected end of stream"),
    ],
)
def test_yaml_errors_point_into_the_file(
    text: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(text)
    code, out, err = run(capsys, str(source), "--mirror-url", MIRROR)
    assert (code, out) == (2, "")
    assert err == f"jwks-mirror: error: {source}:{where}\n"
