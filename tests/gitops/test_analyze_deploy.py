"""``analyze`` on what deploy/ renders (``kubectl kustomize``, as tests/deploy/test_deploy.py does).

The clean case: the install example, a config ``rewrite --config-out`` generated and the
RequestAuthentications ``rewrite`` pointed at the mirror give no error. Each overlay answers
the finding it exists for: default-deny for a mesh that denies by default (JM402), the fixed
ClusterIP for an istiod that blocks private ranges (JM201), and the base's port-level
PERMISSIVE for a STRICT mesh (JM401).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_deploy import DEPLOY, run, tool

pytestmark = pytest.mark.slow  # kubectl kustomize and the CLI as subprocesses

DATA = Path(__file__).parents[1] / "data" / "analyze"
MIRROR_URL = "http://jwks-mirror.jwks-mirror.svc.cluster.local:8080"
ISTIOD_1M = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: control-plane, namespace: istio-system}
spec:
  values:
    pilot:
      env:
        PILOT_JWT_PUB_KEY_REFRESH_INTERVAL: 1m
"""


def rendered(kustomization: Path | str, into: Path) -> Path:
    result = run(tool("kubectl"), "kustomize", str(kustomization))
    assert result.returncode == 0, result.stderr
    into.write_text(result.stdout, encoding="utf-8")
    return into


def analyze(*argv: str, cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    result = run(tool("jwks-mirror"), "analyze", "--format", "json", *argv, cwd=cwd)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


@pytest.fixture
def gitops(tmp_path: Path) -> Path:
    """The walkthrough's layout: apps/ with rules rewritten to the mirror, and an overlay of
    examples/install whose config.yaml ``rewrite --config-out`` wrote."""
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "api.yaml").write_text(
        (DEPLOY / "examples" / "issuer" / "requestauthentication.yaml").read_text().replace(
            f"{MIRROR_URL}/keys-auth/jwks.json", "http://keys.auth.svc.cluster.local/jwks.json"
        )
    )
    (apps / "dex.yaml").write_text((DATA / "cases" / "JM102-trigger.yaml").read_text())
    overlay = tmp_path / "jwks-mirror"
    overlay.mkdir()
    shutil.copy(DEPLOY / "examples" / "install" / "config.yaml", overlay / "config.yaml")
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: jwks-mirror\nresources:\n  - {os.path.relpath(DEPLOY / 'examples' / 'install', overlay)}\n"
        "configMapGenerator:\n  - name: jwks-mirror-config\n    behavior: replace\n"
        "    files:\n      - config.yaml\n"
    )
    result = run(
        tool("jwks-mirror"), "rewrite", "apps/", "--mirror-url", MIRROR_URL,
        "--config-out", "jwks-mirror/config.yaml", "--in-place", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_clean_case_deploy_rewrite_config_and_rules_yield_no_error(gitops: Path) -> None:
    install = rendered(gitops / "jwks-mirror", gitops / "install.yaml")
    code, findings = analyze("install.yaml", "apps/", cwd=gitops)
    assert code == 0
    assert [f for f in findings if f["severity"] == "error"] == []
    # The one warning left is istiod's default refresh interval, which the input does not set.
    assert [f["code"] for f in findings] == ["JM301"]
    # Set it, and nothing is left at all; the same with the config given as a file.
    (gitops / "istiod.yaml").write_text(ISTIOD_1M)
    code, findings = analyze("install.yaml", "apps/", "istiod.yaml", "--fail-on", "warning", cwd=gitops)
    assert (code, findings) == (0, [])
    code, findings = analyze(
        "apps/", "istiod.yaml", "--mirror-config", "jwks-mirror/config.yaml", cwd=gitops
    )
    assert (code, findings) == (0, [])
    assert install.read_text().count("kind: ") > 5


def test_before_the_rewrite_the_rules_are_the_findings(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(
        (DEPLOY / "examples" / "issuer" / "requestauthentication.yaml").read_text().replace(
            f"{MIRROR_URL}/keys-auth/jwks.json", "http://keys.auth.svc.cluster.local/jwks.json"
        )
    )
    rendered(DEPLOY / "examples" / "install", tmp_path / "install.yaml")
    code, findings = analyze("install.yaml", "api.yaml", "--assume-strict", cwd=tmp_path)
    assert code == 1
    # --assume-strict: the mesh is STRICT, yet the base keeps the public port PERMISSIVE
    assert [(f["code"], f["severity"]) for f in findings] == [("JM101", "error")]


def test_default_deny_mesh_needs_the_default_deny_overlay(gitops: Path) -> None:
    deny_all = DATA / "real" / "kubeflow" / "deny_all_authorizationpolicy.yaml"
    shutil.copy(deny_all, gitops / "deny-all.yaml")
    rendered(DEPLOY / "examples" / "install", gitops / "install.yaml")
    code, findings = analyze("install.yaml", "apps/", "deny-all.yaml", cwd=gitops)
    assert code == 1 and "JM402" in {f["code"] for f in findings}
    rendered(DEPLOY / "examples" / "default-deny", gitops / "install.yaml")
    code, findings = analyze("install.yaml", "apps/", "deny-all.yaml", cwd=gitops)
    assert "JM402" not in {f["code"] for f in findings}, findings


def test_fixed_cluster_ip_and_the_blocked_cidrs_value(tmp_path: Path) -> None:
    rendered(DEPLOY / "examples" / "fixed-clusterip", tmp_path / "install.yaml")
    (tmp_path / "api.yaml").write_text((DEPLOY / "examples" / "issuer" / "requestauthentication.yaml").read_text())
    istiod = ISTIOD_1M + "        BLOCKED_CIDRS_IN_JWKS_URIS: VALUE\n"
    (tmp_path / "istiod.yaml").write_text(istiod.replace("VALUE", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"))
    code, findings = analyze("install.yaml", "api.yaml", "istiod.yaml", cwd=tmp_path)
    (finding,) = [f for f in findings if f["code"].startswith("JM2")]
    assert code == 1 and finding["code"] == "JM201" and "10.96.100.100" in finding["message"]
    value = subprocess.run(
        [tool("jwks-mirror"), "blocked-cidrs", "--allow", "10.96.100.100"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (tmp_path / "istiod.yaml").write_text(istiod.replace("VALUE", value))
    _, findings = analyze("install.yaml", "api.yaml", "istiod.yaml", cwd=tmp_path)
    assert not [f for f in findings if f["code"].startswith("JM2")], findings
    # Without the fixed address the same private ranges are only a possibility: JM202.
    rendered(DEPLOY / "examples" / "install", tmp_path / "install.yaml")
    _, findings = analyze("install.yaml", "api.yaml", "istiod.yaml", cwd=tmp_path)
    assert [f["code"] for f in findings if f["code"].startswith("JM2")] == ["JM202"]


def test_strict_mesh_keeps_the_public_port_permissive(tmp_path: Path) -> None:
    (tmp_path / "strict.yaml").write_text(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n"
    )
    rendered(DEPLOY / "examples" / "install", tmp_path / "install.yaml")
    _, findings = analyze("install.yaml", "strict.yaml", cwd=tmp_path)
    assert "JM401" not in {f["code"] for f in findings}
    # Drop the base's PeerAuthentication (a hand-edited install): the public port is STRICT.
    text = (tmp_path / "install.yaml").read_text()
    documents = [d for d in text.split("\n---\n") if "kind: PeerAuthentication" not in d]
    (tmp_path / "install.yaml").write_text("\n---\n".join(documents))
    _, findings = analyze("install.yaml", "strict.yaml", cwd=tmp_path)
    assert "JM401" in {f["code"] for f in findings}
