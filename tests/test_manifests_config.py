"""``jwks-mirror rewrite --config-out``: the mirror's issuer list, and stable names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jwks_mirror.cli import main
from jwks_mirror.settings import load_settings

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
