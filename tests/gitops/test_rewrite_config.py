"""``jwks-mirror rewrite --config-out``: the mirror's issuer list, and stable names."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from jwks_mirror.cli import main
from jwks_mirror.core.config.loader import load_settings

from ..cli.test_rotate import get_bytes
from ..conftest import config_text, jwks
from .test_manifests import DATA, MIRROR, manifest, read, run

# -- the mirror config -----------------------------------------------------------------------

NEW_CONFIG = """\
issuers:
  - name: keys-myns
    jwks_uri: http://keys.myns.svc.cluster.local/jwks.json
    issuer: exampleIssuer
  - name: auth-other
    issuer: http://auth.other.svc.cluster.local
    discovery: true
  - name: keys-web
    jwks_uri: http://keys.web.svc.cluster.local:8080/.well-known/jwks.json
    issuer: local-keys
"""

EXISTING_CONFIG = """\
# jwks-mirror configuration (kept by hand)
public:
  port: 8080
defaults:
  refresh_interval: 5m   # istiod refreshes every 20 min anyway

issuers:
  # this name wins over the generated one
  - name: myns-keys
    jwks_uri: http://keys.myns.svc.cluster.local/jwks.json
    issuer: exampleIssuer
  - name: google
    jwks_uri: https://www.googleapis.com/oauth2/v3/certs
"""


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_config_out_writes_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mirror.yaml"
    code, out, _ = run(
        capsys, str(DATA / "basic" / "input.yaml"), "--mirror-url", MIRROR,
        "--config-out", str(config),
    )
    assert code == 0
    assert out == read(DATA / "basic" / "expected.yaml")
    assert read(config) == NEW_CONFIG
    assert config.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert main(["check-config", "--config", str(config)]) == 0
    assert "3 issuers" in capsys.readouterr().out


def test_config_out_merges_keeping_content_and_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text(EXISTING_CONFIG)
    source = tmp_path / "basic.yaml"
    shutil.copy(DATA / "basic" / "input.yaml", source)
    args = [str(source), "--mirror-url", MIRROR, "--config-out", str(config), "--in-place"]
    assert run(capsys, *args)[0] == 0
    assert read(config) == EXISTING_CONFIG + NEW_CONFIG.split("\n", 4)[4]
    # The name already in the config is reused rather than a new one invented.
    assert f'jwksUri: "{MIRROR}/myns-keys/jwks.json"' in read(source)
    assert [i.name for i in load_settings(config).issuers] == [
        "myns-keys", "google", "auth-other", "keys-web"
    ]
    merged = read(config)
    assert run(capsys, *args)[0] == 0
    assert read(config) == merged


def test_config_out_that_would_be_invalid_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text("issuers: []\nunknown_section: 1\n")
    source = manifest(tmp_path, "ra.yaml", "http://keys.myns.svc/jwks.json")
    before = read(source)
    code, _, err = run(
        capsys, str(source), "--mirror-url", MIRROR, "--config-out", str(config), "--in-place"
    )
    assert code == 2
    assert err.startswith("jwks-mirror: error: unknown_section: unknown key")
    assert read(source) == before
    assert read(config) == "issuers: []\nunknown_section: 1\n"


# -- naming ----------------------------------------------------------------------------------


def test_names_do_not_depend_on_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = manifest(tmp_path, "a.yaml", "http://keys.myns.svc.cluster.local/v2/jwks.json")
    b = manifest(tmp_path, "b.yaml", "http://keys.myns.svc.cluster.local/jwks.json")
    _, forward, _ = run(capsys, str(a), str(b), "--mirror-url", MIRROR)
    _, backward, _ = run(capsys, str(b), str(a), "--mirror-url", MIRROR)
    first, second = forward.split("---\n")
    assert backward == second + "---\n" + first
    assert "/keys-myns/jwks.json" in second
    assert "/keys-myns-" in first and "/keys-myns/" not in first


def test_names_stay_stable_across_runs_through_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mirror.yaml"
    v2 = manifest(tmp_path, "v2.yaml", "http://keys.myns.svc.cluster.local/v2/jwks.json")
    assert run(capsys, str(v2), "--mirror-url", MIRROR, "--config-out", str(config))[0] == 0
    v1 = manifest(tmp_path, "v1.yaml", "http://keys.myns.svc.cluster.local/jwks.json")
    _, out, _ = run(capsys, str(v1), str(v2), "--mirror-url", MIRROR, "--config-out", str(config))
    first, second = out.split("---\n")
    assert "/keys-myns/jwks.json" in second  # v2 had it first
    assert "/keys-myns-" in first
    names = {i.jwks_uri: i.name for i in load_settings(config).issuers}
    assert names["http://keys.myns.svc.cluster.local/v2/jwks.json"] == "keys-myns"
    assert names["http://keys.myns.svc.cluster.local/jwks.json"].startswith("keys-myns-")




def test_diff_shows_the_config_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = manifest(tmp_path, "ra.yaml", "http://keys.myns.svc/jwks.json")
    config = tmp_path / "mirror.yaml"
    code, out, _ = run(
        capsys, str(source), "--mirror-url", MIRROR, "--config-out", str(config), "--diff"
    )
    assert code == 0
    assert not config.exists()
    assert f"+++ b{config}\n@@ -0,0 +1,4 @@\n+issuers:\n+  - name: keys-myns\n" in out
    assert f"+++ b{source}\n" in out


# -- a discovery issuer named by a bare Service name -----------------------------------------

BARE_ISSUER = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: billing-jwt
  namespace: billing
spec:
  jwtRules:
  - issuer: http://auth:8080
"""

BARE_ENTRY = """\
issuers:
  - name: auth-billing
    issuer: http://auth:8080
    discovery: true
    discovery_url: http://auth.billing.svc.cluster.local:8080/.well-known/openid-configuration
"""


async def test_bare_name_discovery_issuer_is_kept_and_fetched_through_discovery_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_issuer, mirror_factory
) -> None:
    """``issuer: http://auth:8080`` in namespace billing: the config keeps the issuer as the
    IdP names itself (the OIDC check compares it) and fetches from the FQDN. A real IdP on
    loopback whose document says ``http://auth:8080`` for itself and its keys then serves
    the mirror, with only the FQDN's DNS answer stood in for by its loopback address."""
    source = tmp_path / "billing.yaml"
    source.write_text(BARE_ISSUER)
    config = tmp_path / "mirror.yaml"
    args = [str(source), "--mirror-url", MIRROR, "--config-out", str(config), "--in-place"]
    assert run(capsys, *args)[0] == 0
    assert read(config) == BARE_ENTRY
    assert f"jwksUri: {MIRROR}/auth-billing/jwks.json" in read(source)
    assert main(["check-config", "--config", str(config)]) == 0
    # A second run, and a new manifest for the same issuer, reuse the entry.
    other = manifest(tmp_path, "more.yaml", "http://keys.myns.svc/jwks.json")
    again = tmp_path / "again.yaml"
    again.write_text(BARE_ISSUER.replace("billing-jwt", "billing-jwt-2"))
    assert run(capsys, str(other), str(again), *args[1:])[0] == 0
    assert read(config).startswith(BARE_ENTRY)
    assert f"jwksUri: {MIRROR}/auth-billing/jwks.json" in read(again)
    capsys.readouterr()

    async def idp_behaviour(request: web.Request) -> web.StreamResponse:
        if request.path == "/.well-known/openid-configuration":
            return web.json_response(
                {"issuer": "http://auth:8080", "jwks_uri": "http://auth:8080/oauth2/keys"}
            )
        if request.path == "/oauth2/keys":
            return web.json_response(jwks("billing-1"))
        return web.Response(status=404)

    idp = await fake_issuer(behaviour=idp_behaviour)
    entry = load_settings(config).issuer("auth-billing")
    assert entry is not None and entry.discovery_url is not None
    discovery_url = entry.discovery_url.replace(
        "auth.billing.svc.cluster.local:8080", f"127.0.0.1:{idp.port}"
    )
    running = await mirror_factory(
        config_text(
            f"  - name: auth-billing\n    issuer: {entry.issuer}\n    discovery: true\n"
            f"    discovery_url: {discovery_url}\n"
        )
    )
    [outcome] = await running.mirror.refresh(["auth-billing"])
    assert outcome.outcome in ("changed", "unchanged"), outcome  # the start may fetch first
    body = await asyncio.to_thread(get_bytes, f"{running.public_url}/auth-billing/jwks.json")
    assert [k["kid"] for k in json.loads(body)["keys"]] == ["billing-1"]
    paths = [r.path for r in idp.requests]
    assert paths[:2] == ["/.well-known/openid-configuration", "/oauth2/keys"]
    assert set(paths) == {"/.well-known/openid-configuration", "/oauth2/keys"}
