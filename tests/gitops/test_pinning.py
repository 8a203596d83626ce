"""``jwks-mirror pin`` through the real CLI: golden round trips, versions, --check, errors.

Versions come from a saved status (``--from-status``) where the manifests are the subject,
and from real mirrors on loopback where the version itself is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jwks_mirror.cli import main
from jwks_mirror.gitops.mesh import under_mirror
from jwks_mirror.gitops.pinning import pinned_uri, pinned_version, versions_from_statuses

from ..cli.test_rotate import MakeIssuer, MakeMirror, get_bytes, started
from ..conftest import jwks

DATA = Path(__file__).parents[1] / "data" / "manifests"
MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())
MIRROR_URI = re.compile(rf"({re.escape(MIRROR)}/([a-z0-9-]+)/jwks\.json)(\?[^\s'\"]*)?")

REWRITTEN = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: {name}
  namespace: myns
  annotations:
    jwks-mirror.io/original-jwks-uri: '{{"0":"http://keys.myns.svc/jwks.json"}}'
spec:
  jwtRules:
  - issuer: iss   # the issuer
    jwksUri: "{uri}"   # pinned by jwks-mirror
"""


def version(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def status_file(tmp: Path, versions: dict[str, str | None]) -> Path:
    path = tmp / "status.json"
    issuers = [{"name": n, "version": v, "kids": ["k1"]} for n, v in versions.items()]
    path.write_text(json.dumps({"now": 1.0, "issuers": issuers}))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["pin", *args])
    out, err = capsys.readouterr()
    return code, out, err


def rewritten(tmp: Path, filename: str, uri: str) -> Path:
    path = tmp / filename
    path.write_text(REWRITTEN.format(name=path.stem, uri=uri))
    return path


# -- round trips on the rewrite golden files -------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_pin_changes_only_mirror_uris_and_restores(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = read(DATA / case / "expected.yaml")
    names = {m.group(2) for m in MIRROR_URI.finditer(expected)}
    status = status_file(tmp_path, {n: version(n) for n in names})
    source = tmp_path / "expected.yaml"
    shutil.copy(DATA / case / "expected.yaml", source)

    code, out, err = run(capsys, str(source), "--from-status", str(status))
    assert code == 0, err
    # Exactly the mirror URIs changed, each to ?v=<its issuer's version>; all else byte for byte.
    assert out == MIRROR_URI.sub(lambda m: f"{m.group(1)}?v={version(m.group(2))}", expected)
    assert (out == expected) == (not names)
    assert ("no mirror jwksUri found" in err) == (not names)

    source.write_text(out)
    assert run(capsys, str(source), "--from-status", str(status)) == (0, out, err)  # idempotent
    assert run(capsys, str(source), "--from-status", str(status), "--check")[0] == 0
    # Pinned manifests are still mirrored for rewrite (given the first run's --match or
    # --cluster-domain: an original is trusted only if it is in-mesh), and restore still gives
    # the input back.
    args = DATA / case / "args"
    first_run = args.read_text().split() if args.exists() else []
    assert main(["rewrite", str(source), "--check", *first_run]) == 0
    assert main(["rewrite", str(source), "--restore"]) == 0
    restored = DATA / case / "restored.yaml"
    out = capsys.readouterr().out
    assert out == read(restored if restored.exists() else DATA / case / "input.yaml")


def test_untouched_documents_and_lines_keep_their_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = read(DATA / "nothing-to-change" / "input.yaml")
    pinned = REWRITTEN.format(name="b", uri=f"{MIRROR}/keys-myns/jwks.json")
    source = tmp_path / "mixed.yaml"
    source.write_text(odd + "---\n" + pinned)
    status = status_file(tmp_path, {"keys-myns": "00112233aabbccdd"})
    code, out, _ = run(capsys, str(source), "--from-status", str(status), "--diff")
    assert code == 0
    changes = [line for line in out.splitlines() if line[:1] in "+-"]
    assert changes == [
        f"--- a/{str(source).lstrip('/')}",
        f"+++ b/{str(source).lstrip('/')}",
        f'-    jwksUri: "{MIRROR}/keys-myns/jwks.json"   # pinned by jwks-mirror',
        f'+    jwksUri: "{MIRROR}/keys-myns/jwks.json?v=00112233aabbccdd"   # pinned by jwks-mirror',
    ]
    assert read(source) == odd + "---\n" + pinned  # --diff writes nothing


def test_crlf_and_stdin(tmp_path: Path) -> None:
    status = status_file(tmp_path, {"keys-myns": "00112233aabbccdd"})
    text = REWRITTEN.format(name="a", uri=f"{MIRROR}/keys-myns/jwks.json").replace("\n", "\r\n")
    done = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "pin", "--from-status", str(status)],
        input=text.encode(), capture_output=True, check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    wanted = text.replace("keys-myns/jwks.json", "keys-myns/jwks.json?v=00112233aabbccdd")
    assert done.stdout == wanted.encode()


# -- the query -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"{MIRROR}/a/jwks.json", f"{MIRROR}/a/jwks.json?v=0123abcd0123abcd"),
        (f"{MIRROR}/a/jwks.json?v=old", f"{MIRROR}/a/jwks.json?v=0123abcd0123abcd"),
        (f"{MIRROR}/a/jwks.json?x=1&v=old&v=2#frag", f"{MIRROR}/a/jwks.json?v=0123abcd0123abcd"),
        ("http://m/prefix/a/jwks.json?", "http://m/prefix/a/jwks.json?v=0123abcd0123abcd"),
    ],
)
def test_the_mirror_owns_the_query(uri: str, expected: str) -> None:
    assert pinned_uri(uri, "0123abcd0123abcd") == expected
    assert pinned_version(expected) == "0123abcd0123abcd"


def test_other_query_parameters_are_replaced_in_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/keys-myns/jwks.json?v=1&debug=1")
    status = status_file(tmp_path, {"keys-myns": "00112233aabbccdd"})
    assert run(capsys, str(source), "--from-status", str(status), "--in-place")[0] == 0
    assert f'jwksUri: "{MIRROR}/keys-myns/jwks.json?v=00112233aabbccdd"   #' in read(source)


# -- which URIs ------------------------------------------------------------------------------


def test_only_annotated_or_named_mirror_uris_are_pinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hand_written = (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        "metadata: {name: h, namespace: myns}\nspec:\n  jwtRules:\n"
        f"  - issuer: iss\n    jwksUri: {MIRROR}/keys-myns/jwks.json\n"
        "  - issuer: ext\n    jwksUri: https://idp.example.com/ext/jwks.json\n"
    )
    source = tmp_path / "h.yaml"
    source.write_text(hand_written)
    status = status_file(tmp_path, {"keys-myns": "00112233aabbccdd", "ext": "99"})
    code, out, err = run(capsys, str(source), "--from-status", str(status))
    assert (code, out) == (0, hand_written)  # no annotation: not known to be the mirror's
    assert "no mirror jwksUri found" in err
    code, out, _ = run(capsys, str(source), "--from-status", str(status), "--mirror-url", MIRROR)
    assert code == 0
    assert out == hand_written.replace("keys-myns/jwks.json", "keys-myns/jwks.json?v=00112233aabbccdd")


SPELLINGS = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: spellings, namespace: jwks-mirror}}
spec:
  jwtRules:
  - issuer: a
    jwksUri: http://jwks-mirror.jwks-mirror.svc.cluster.local:8080/keys-myns/jwks.json
  - issuer: b
    jwksUri: http://jwks-mirror:8080/keys-myns/jwks.json{query}
  - issuer: c
    jwksUri: http://JWKS-MIRROR.jwks-mirror.svc.example.org.:8080/keys-myns/jwks.json
  - issuer: d
    jwksUri: http://jwks-mirror.jwks-mirror.svc:8081/keys-myns/jwks.json
  - issuer: e
    jwksUri: http://jwks-mirror.other.svc.cluster.local:8080/keys-myns/jwks.json
"""


def test_pin_treats_every_spelling_of_the_mirror_service_as_one_mirror(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--mirror-url ...svc:8080`` pins manifests written with ``...svc.cluster.local:8080``,
    a bare name in the mirror's namespace and another cluster domain; another port or
    namespace is another Service and stays as it is."""
    source = tmp_path / "spellings.yaml"
    source.write_text(SPELLINGS.format(query="?v=0000000000000000"))
    status = status_file(tmp_path, {"keys-myns": "00112233aabbccdd"})
    code, out, err = run(capsys, str(source), "--from-status", str(status), "--mirror-url", MIRROR)
    assert (code, err) == (0, "")
    pinned = [line.strip() for line in out.splitlines() if "jwksUri" in line]
    assert pinned == [
        "jwksUri: http://jwks-mirror.jwks-mirror.svc.cluster.local:8080/keys-myns/jwks.json"
        "?v=00112233aabbccdd",
        "jwksUri: http://jwks-mirror:8080/keys-myns/jwks.json?v=00112233aabbccdd",
        "jwksUri: http://JWKS-MIRROR.jwks-mirror.svc.example.org.:8080/keys-myns/jwks.json"
        "?v=00112233aabbccdd",
        "jwksUri: http://jwks-mirror.jwks-mirror.svc:8081/keys-myns/jwks.json",
        "jwksUri: http://jwks-mirror.other.svc.cluster.local:8080/keys-myns/jwks.json",
    ]
    # The same mirror, given in its long form with a trailing slash: the same result.
    code, again, _ = run(
        capsys, str(source), "--from-status", str(status),
        "--mirror-url", "http://jwks-mirror.jwks-mirror.svc.cluster.local:8080/",
    )
    assert (code, again) == (0, out)
    # --check sees the same three: the stale ?v= and the two unpinned ones.
    code, listed, _ = run(
        capsys, str(source), "--from-status", str(status), "--mirror-url", MIRROR, "--check"
    )
    assert code == 1
    assert len(listed.splitlines()) == 3


def test_rewrite_leaves_the_mirror_alone_under_any_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand-written mirror URL on the Service's long name is the mirror's own, not an
    in-mesh upstream to mirror (which would make the mirror fetch from itself)."""
    source = tmp_path / "spellings.yaml"
    source.write_text(SPELLINGS.format(query=""))
    assert main(["rewrite", str(source), "--mirror-url", MIRROR, "--check"]) == 1
    listed = capsys.readouterr().out.splitlines()
    # Only the two that are another Service (port 8081, namespace other) are upstreams.
    assert [line.split("jwksUri ")[1] for line in listed] == [
        "http://jwks-mirror.jwks-mirror.svc:8081/keys-myns/jwks.json is not mirrored",
        "http://jwks-mirror.other.svc.cluster.local:8080/keys-myns/jwks.json is not mirrored",
    ]


@pytest.mark.parametrize(
    ("uri", "mirror", "namespace", "same"),
    [
        ("http://m.ns.svc.cluster.local:8080/a/jwks.json", "http://m.ns.svc:8080", "x", True),
        ("http://m.ns.svc:8080/a/jwks.json", "http://m.ns.svc.cluster.local:8080/", "x", True),
        ("http://m.ns:8080/a/jwks.json", "http://m.ns.svc.corp.internal:8080", "x", True),
        ("http://m:8080/a/jwks.json", "http://m.ns.svc:8080", "ns", True),
        ("http://m:8080/a/jwks.json", "http://m.ns.svc:8080", "other", False),
        ("http://m:8080/a/jwks.json", "http://m:8080", None, True),  # both in "default"
        ("http://m.default.svc:8080/a/jwks.json", "http://m:8080", None, True),
        ("http://m.ns.svc.cluster.local/a/jwks.json", "http://m.ns.svc:80", "x", True),
        ("https://m.ns.svc:443/a/jwks.json", "https://m.ns.svc", "x", True),
        ("https://m.ns.svc/a/jwks.json", "http://m.ns.svc", "x", False),  # another scheme
        ("http://m.ns.svc:8081/a/jwks.json", "http://m.ns.svc:8080", "x", False),
        ("http://m.other.svc:8080/a/jwks.json", "http://m.ns.svc:8080", "x", False),
        ("http://n.ns.svc:8080/a/jwks.json", "http://m.ns.svc:8080", "x", False),
        ("http://m.ns.svc:8080/mirror/a/jwks.json", "http://m.ns.svc:8080/mirror", "x", True),
        ("http://m.ns.svc:8080/mirrored/a/jwks.json", "http://m.ns.svc:8080/mirror", "x", False),
        ("http://m.ns.svc:8080", "http://m.ns.svc:8080", "x", False),  # no path below it
        ("http://10.0.0.7:8080/a/jwks.json", "http://10.0.0.7:8080", "x", True),
        ("http://10.0.0.8:8080/a/jwks.json", "http://10.0.0.7:8080", "x", False),
        ("https://keys.example.com/a/jwks.json", "https://KEYS.example.com.", "x", True),
        ("https://keys.example.org/a/jwks.json", "https://keys.example.com", "x", False),
        ("not a url", "http://m.ns.svc:8080", "x", False),
    ],
)
def test_under_mirror(uri: str, mirror: str, namespace: str | None, same: bool) -> None:
    assert under_mirror(uri, mirror, namespace=namespace) is same


# -- --check ---------------------------------------------------------------------------------


def test_check_lists_uris_behind_the_mirror_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = rewritten(tmp_path, "current.yaml", f"{MIRROR}/a/jwks.json?v=aaaaaaaaaaaaaaaa")
    old = rewritten(tmp_path, "old.yaml", f"{MIRROR}/a/jwks.json?v=0000000000000000")
    unpinned = rewritten(tmp_path, "unpinned.yaml", f"{MIRROR}/b/jwks.json")
    unknown = rewritten(tmp_path, "unknown.yaml", f"{MIRROR}/c/jwks.json?v=cccccccccccccccc")
    status = status_file(tmp_path, {"a": "aaaaaaaaaaaaaaaa", "b": "bbbbbbbbbbbbbbbb"})
    before = {p: read(p) for p in tmp_path.glob("*.yaml")}

    code, out, err = run(capsys, str(tmp_path), "--from-status", str(status), "--check")
    assert code == 1
    assert out.splitlines() == [
        f"{old}:10: myns/old spec.jwtRules[0]: jwksUri {MIRROR}/a/jwks.json?v=0000000000000000 "
        "is behind (pinned v=0000000000000000, mirror has v=aaaaaaaaaaaaaaaa)",
        f"{unknown}:10: myns/unknown spec.jwtRules[0]: jwksUri {MIRROR}/c/jwks.json?v=cccccccccccccccc: "
        "issuer c is not configured on the mirror",
        f"{unpinned}:10: myns/unpinned spec.jwtRules[0]: jwksUri {MIRROR}/b/jwks.json "
        "is not pinned (mirror has v=bbbbbbbbbbbbbbbb)",
    ]
    assert err == "jwks-mirror: 3 mirror jwksUris behind the mirror, 1 current\n"
    assert {p: read(p) for p in tmp_path.glob("*.yaml")} == before

    code, out, err = run(capsys, str(current), "--from-status", str(status), "--check")
    assert (code, out) == (0, "")
    assert err == "jwks-mirror: 0 mirror jwksUris behind the mirror, 1 current\n"


# -- writing ---------------------------------------------------------------------------------


def test_in_place_writes_changed_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = rewritten(tmp_path, "current.yaml", f"{MIRROR}/a/jwks.json?v=aaaaaaaaaaaaaaaa")
    behind = rewritten(tmp_path, "behind.yaml", f"{MIRROR}/a/jwks.json?v=0000000000000000")
    status = status_file(tmp_path, {"a": "aaaaaaaaaaaaaaaa"})
    current_stat = current.stat()
    code, out, err = run(capsys, str(tmp_path), "--from-status", str(status), "--in-place")
    assert (code, out, err) == (0, "", "")
    assert read(behind) == read(current).replace("name: current", "name: behind")
    assert current.stat().st_mtime_ns == current_stat.st_mtime_ns  # not rewritten


def test_unknown_issuer_fails_and_in_place_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = rewritten(tmp_path, "a.yaml", f"{MIRROR}/a/jwks.json")
    missing = rewritten(tmp_path, "b.yaml", f"{MIRROR}/gone/jwks.json")
    empty = rewritten(tmp_path, "c.yaml", f"{MIRROR}/empty/jwks.json")
    before = {p: read(p) for p in (good, missing, empty)}
    status = status_file(tmp_path, {"a": "aaaaaaaaaaaaaaaa", "empty": None})
    code, out, err = run(capsys, str(tmp_path), "--from-status", str(status), "--in-place")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"jwks-mirror: error: {missing}:10: myns/b spec.jwtRules[0]: cannot pin "
        f"{MIRROR}/gone/jwks.json: issuer gone is not configured on the mirror",
        f"jwks-mirror: error: {empty}:10: myns/c spec.jwtRules[0]: cannot pin "
        f"{MIRROR}/empty/jwks.json: issuer empty has no published key set (on {status})",
    ]
    assert {p: read(p) for p in before} == before


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--in-place", "--diff"], "--in-place and --diff are exclusive"),
        (["--check", "--in-place"], "--check writes nothing"),
        (["--admin", "http://127.0.0.1:9"], "--admin and --from-status are exclusive"),
        (["--mirror-url", "ftp://m"], "--mirror-url: expected http:// or https://"),
    ],
)
def test_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/a/jwks.json")
    status = status_file(tmp_path, {"a": "aaaaaaaaaaaaaaaa"})
    code, out, err = run(capsys, str(source), "--from-status", str(status), *args)
    assert (code, out) == (2, "")
    assert err.startswith("jwks-mirror: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--from-status: no such file"),
        ("{not json", "not JSON"),
        ('{"kids": []}', 'not a jwks-mirror status (no "issuers" list)'),
    ],
)
def test_bad_status_files(
    content: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/a/jwks.json")
    status = tmp_path / "status.json"
    if content is not None:
        status.write_text(content)
    code, _, err = run(capsys, str(source), "--from-status", str(status))
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_invalid_yaml_is_reported_before_the_mirror_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [\n")
    # The admin port is unreachable: asking it would be exit 1, the YAML error is exit 2.
    code, _, err = run(capsys, str(bad), "--admin", "http://127.0.0.1:9")
    assert code == 2
    assert err.startswith(f"jwks-mirror: error: {bad}:") and err.count("\n") == 1


def test_unreachable_mirror_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/a/jwks.json")
    code, _, err = run(capsys, str(source), "--admin", "http://127.0.0.1:9", "--in-place")
    assert code == 1
    assert "cannot reach the mirror at http://127.0.0.1:9" in err
    assert read(source) == REWRITTEN.format(name="a", uri=f"{MIRROR}/a/jwks.json")


# -- versions from real mirrors --------------------------------------------------------------


async def test_version_is_the_published_sets_and_the_same_on_every_replica(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, replicas = await started(fake_issuer, mirror_factory, replicas=2, kids=("k1", "k2"))
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/keys-myns/jwks.json")
    admins = [arg for r in replicas for arg in ("--admin", r.admin_url)]
    code = await asyncio.to_thread(main, ["pin", str(source), *admins, "--in-place"])
    assert code == 0, capsys.readouterr().err
    pinned = pinned_version(re.findall(r'jwksUri: "([^"]+)"', read(source))[0])
    # Each replica serves the same bytes, whose hash is the version, whatever the query.
    bodies = {
        await asyncio.to_thread(get_bytes, f"{r.public_url}/keys-myns/jwks.json?v={pinned}")
        for r in replicas
    }
    assert len(bodies) == 1
    assert pinned == hashlib.sha256(bodies.pop()).hexdigest()[:16]


async def test_replicas_that_disagree_are_not_pinned(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer, replicas = await started(fake_issuer, mirror_factory, replicas=2, kids=("k1", "k2"))
    issuer.document = jwks("k2", "k3")
    await replicas[0].mirror.refresh(["keys-myns"])  # the other replica has not caught up
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/keys-myns/jwks.json")
    admins = [arg for r in replicas for arg in ("--admin", r.admin_url)]
    code = await asyncio.to_thread(main, ["pin", str(source), *admins, "--in-place"])
    err = capsys.readouterr().err
    assert code == 1
    assert "replicas publish different key sets for keys-myns" in err
    assert "refresh every replica first" in err
    assert read(source) == REWRITTEN.format(name="a", uri=f"{MIRROR}/keys-myns/jwks.json")

    await replicas[1].mirror.refresh(["keys-myns"])
    code = await asyncio.to_thread(main, ["pin", str(source), *admins, "--check"])
    assert code == 1  # not pinned yet
    assert await asyncio.to_thread(main, ["pin", str(source), *admins, "--in-place"]) == 0
    assert await asyncio.to_thread(main, ["pin", str(source), *admins, "--check"]) == 0


def test_saved_statuses_of_every_replica_must_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewritten(tmp_path, "a.yaml", f"{MIRROR}/a/jwks.json")
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    r1 = status_file(tmp_path / "r1", {"a": "aaaaaaaaaaaaaaaa"})
    r2 = status_file(tmp_path / "r2", {"a": "bbbbbbbbbbbbbbbb"})
    code, _, err = run(capsys, str(source), "--from-status", str(r1), "--from-status", str(r2))
    assert code == 1
    assert f"(aaaaaaaaaaaaaaaa on {r1}, bbbbbbbbbbbbbbbb on {r2})" in err
    r2.write_text(r1.read_text())
    code, out, _ = run(capsys, str(source), "--from-status", str(r1), "--from-status", str(r2))
    assert code == 0
    assert f"{MIRROR}/a/jwks.json?v=aaaaaaaaaaaaaaaa" in out


def test_versions_merge_rules() -> None:
    one: dict[str, Any] = {"issuers": [{"name": "a", "version": "aaaaaaaaaaaaaaaa"}]}
    two: dict[str, Any] = {"issuers": [{"name": "a", "version": "bbbbbbbbbbbbbbbb"}]}
    assert versions_from_statuses([("r1", one), ("r2", one)]).lookup("a") == (
        "aaaaaaaaaaaaaaaa", None
    )
    merged = versions_from_statuses([("r1", one), ("r2", two)])
    version_, problem = merged.lookup("a")
    assert version_ is None and problem is not None
    assert "aaaaaaaaaaaaaaaa on r1, bbbbbbbbbbbbbbbb on r2" in problem
    other: dict[str, Any] = {"issuers": [{"name": "b", "version": "bbbbbbbbbbbbbbbb"}]}
    merged = versions_from_statuses([("r1", one), ("r2", other)])
    assert merged.lookup("a") == (None, "issuer a is not configured on r2")
    assert merged.lookup("b") == (None, "issuer b is not configured on r1")
    odd: dict[str, Any] = {"issuers": [{"name": "a", "version": "x&v=evil"}]}
    assert versions_from_statuses([("r1", odd)]).lookup("a")[0] is None


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"issuers": [1, {"name": 5}], "x": NaN}', b'{"issuers": "x"}'],
    ids=["deep", "nan", "typed"],
)
def test_a_hostile_saved_status_is_one_line_and_exit_2(tmp_path: Path, capsys, body: bytes) -> None:
    """A saved ``status --json`` is an admin answer at one remove: read as strictly."""
    status = tmp_path / "status.json"
    status.write_bytes(body)
    source = tmp_path / "ra.yaml"
    shutil.copy(DATA / "basic" / "expected.yaml", source)
    code = main(["pin", str(source), "--from-status", str(status)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("jwks-mirror: error: --from-status") or "not a jwks-mirror status" in err
    assert err.count("\n") == 1
