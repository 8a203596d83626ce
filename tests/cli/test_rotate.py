"""``jwks-mirror rotate`` against real mirrors on loopback: refresh, report, pin in one step."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from jwks_mirror.cli import main
from jwks_mirror.serving.server import Running

from ..conftest import FakeIssuer, answer, config_text, jwks

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
MANIFEST = """\
# the web app's JWT policy
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: web-jwt
  namespace: web
  annotations:
    jwks-mirror.io/original-jwks-uri: '{{"0":"http://keys.myns.svc/jwks.json"}}'
spec:
  jwtRules:
  - issuer: iss
    jwksUri: {uri}  # via the mirror
"""

MakeIssuer = Callable[..., Awaitable[FakeIssuer]]
MakeMirror = Callable[..., Awaitable[Running]]


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def manifest(tmp: Path, query: str = "") -> Path:
    path = tmp / "ra.yaml"
    path.write_text(MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json{query}"))
    return path


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


async def published_version(running: Running) -> str:
    """What the mirror says its version is: a hash of the bytes it serves."""
    body = await asyncio.to_thread(get_bytes, f"{running.public_url}/keys-myns/jwks.json")
    return hashlib.sha256(body).hexdigest()[:16]


async def rotate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["rotate", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def started(
    fake_issuer: MakeIssuer,
    mirror_factory: MakeMirror,
    *,
    replicas: int = 1,
    kids: tuple[str, ...] = ("k1",),
) -> tuple[FakeIssuer, list[Running]]:
    """An issuer serving ``kids`` and ``replicas`` mirrors of it, each refreshed once."""
    issuer = await fake_issuer(document=jwks(*kids))
    config = config_text(
        f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n",
        defaults=", retain_removed_keys: 1h",
    )
    mirrors = [await mirror_factory(config) for _ in range(replicas)]
    for replica in mirrors:
        await replica.mirror.refresh(["keys-myns"])
    return issuer, mirrors


async def test_rotate_reports_kid_changes_and_pins_in_place(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer, [running] = await started(fake_issuer, mirror_factory)
    before = await published_version(running)
    source = manifest(tmp_path, f"?v={before}")

    issuer.document = jwks("k2")  # the issuer rotated: k1 gone upstream, k2 new
    code, out, err = await rotate(capsys, "keys-myns", str(source), "--admin", running.admin_url)
    assert (code, err) == (0, "")
    after = await published_version(running)
    assert after != before
    assert out.splitlines() == [
        "keys-myns: changed",
        "  added:     k2",
        "  retained:  k1",
        "  removed:   k1",
        "  published: k1, k2",
        f"version: {after}",
        "pinned: 1 jwksUris changed, 0 already current",
    ]
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json?v={after}")

    # Nothing new upstream: the same version, the file stays as it is.
    code, out, _ = await rotate(capsys, "keys-myns", str(source), "--admin", running.admin_url)
    assert code == 0
    assert "keys-myns: unchanged" in out and "  added:     -" in out
    assert "pinned: 0 jwksUris changed, 1 already current" in out
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json?v={after}")


async def test_purge_retained_revokes_and_pins_the_smaller_set(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer, [running] = await started(fake_issuer, mirror_factory)
    issuer.document = jwks("k2")
    await running.mirror.refresh(["keys-myns"])  # k1 retained
    with_retained = await published_version(running)
    source = manifest(tmp_path, f"?v={with_retained}")

    code, out, _ = await rotate(
        capsys, "keys-myns", str(source), "--admin", running.admin_url, "--purge-retained"
    )
    assert code == 0
    assert "  purged:    k1" in out.splitlines()
    assert "  published: k2" in out.splitlines()
    revoked = await published_version(running)
    assert revoked != with_retained
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json?v={revoked}")


async def test_failed_refresh_pins_nothing(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer, [running] = await started(fake_issuer, mirror_factory)
    source = manifest(tmp_path)
    issuer.behaviour = answer(503)
    code, out, err = await rotate(capsys, "keys-myns", str(source), "--admin", running.admin_url)
    assert code == 1
    assert out.startswith("keys-myns: failed: upstream:")
    assert "  published: k1" in out.splitlines()  # the last good set is still served
    assert err == "jwks-mirror: error: refreshing keys-myns failed: nothing pinned\n"
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json")


async def test_unknown_issuer_is_exit_1(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, [running] = await started(fake_issuer, mirror_factory)
    code, out, err = await rotate(capsys, "nope", "--admin", running.admin_url)
    assert (code, out) == (1, "")
    assert "unknown issuer: nope" in err and err.count("\n") == 1


async def test_diff_writes_nothing_and_no_paths_just_reports(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer, [running] = await started(fake_issuer, mirror_factory)
    source = manifest(tmp_path)
    issuer.document = jwks("k1", "k2")
    code, out, _ = await rotate(
        capsys, "keys-myns", str(source), "--admin", running.admin_url, "--diff"
    )
    version = await published_version(running)
    assert code == 0
    assert f"+    jwksUri: {MIRROR}/keys-myns/jwks.json?v={version}  # via the mirror" in out
    assert "pinned:" not in out
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json")

    code, out, _ = await rotate(capsys, "keys-myns", "--admin", running.admin_url)
    assert code == 0
    assert out.splitlines()[-1] == f"version: {version}"


async def test_rotate_pins_a_hand_written_uri_spelled_another_way(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No annotation, and the mirror written with the cluster domain: ``--mirror-url`` in its
    short form still names the same Service, so the URI is pinned."""
    _, [running] = await started(fake_issuer, mirror_factory)
    long_form = "http://jwks-mirror.jwks-mirror.svc.cluster.local:8080/keys-myns/jwks.json"
    source = tmp_path / "hand.yaml"
    text = MANIFEST.replace("  annotations:\n", "").replace(
        "    jwks-mirror.io/original-jwks-uri: '{{\"0\":\"http://keys.myns.svc/jwks.json\"}}'\n", ""
    )
    source.write_text(text.format(uri=long_form))
    code, out, err = await rotate(
        capsys, "keys-myns", str(source), "--admin", running.admin_url, "--mirror-url", MIRROR
    )
    assert (code, err) == (0, "")
    version = await published_version(running)
    assert "pinned: 1 jwksUris changed, 0 already current" in out
    assert read(source) == text.format(uri=f"{long_form}?v={version}")


async def test_every_replica_is_refreshed_before_pinning(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer, replicas = await started(fake_issuer, mirror_factory, replicas=2)
    source = manifest(tmp_path)
    issuer.document = jwks("k2")
    admins = [arg for r in replicas for arg in ("--admin", r.admin_url)]
    code, out, _ = await rotate(capsys, "keys-myns", str(source), *admins)
    assert code == 0
    for replica in replicas:
        assert f"{replica.admin_url}: keys-myns: changed" in out
    versions = {await published_version(r) for r in replicas}
    assert len(versions) == 1
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json?v={versions.pop()}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys-myns", "-"], "rotate pins files in place"),
        (["keys-myns", "--admin", "not a url"], "--admin: not an http(s) URL"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


async def test_removing_a_published_key_keeps_the_version_while_it_is_retained(
    fake_issuer: MakeIssuer, mirror_factory: MakeMirror, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The runbook's step 5: dropping the old key upstream moves it to "retained"; the
    # published set, and so the pinned version, stay the same until it is purged.
    issuer, [running] = await started(fake_issuer, mirror_factory)
    issuer.document = jwks("k1", "k2")
    await running.mirror.refresh(["keys-myns"])
    both = await published_version(running)
    source = manifest(tmp_path, f"?v={both}")

    issuer.document = jwks("k2")
    code, out, _ = await rotate(capsys, "keys-myns", str(source), "--admin", running.admin_url)
    assert code == 0
    assert "  removed:   k1" in out.splitlines() and "  retained:  k1" in out.splitlines()
    assert f"version: {both}" in out.splitlines()
    assert "pinned: 0 jwksUris changed, 1 already current" in out.splitlines()
    assert read(source) == MANIFEST.format(uri=f"{MIRROR}/keys-myns/jwks.json?v={both}")
