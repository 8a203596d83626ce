"""The install walkthrough and runbook of ``deploy/README.md``, run here where they can be.

The README's commands are taken from the README itself (a command the tests run must appear
there verbatim), in a throwaway GitOps checkout: ``apps/`` with a RequestAuthentication as an
application team writes it, ``jwks-mirror/`` with the overlay of step 2. What needs a cluster
(docker, ``kubectl apply``/``exec``/``port-forward``) is syntax-checked with ``bash -n`` only.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy import DEPLOY, NAMESPACE, run, tool
from tests.e2e.harness.mirror import cli_argv
from tests.e2e.harness.procs import wait_until

# Runs the install walkthrough's commands (kubectl kustomize, the CLI, a real serve).
pytestmark = pytest.mark.slow

README = (DEPLOY / "README.md").read_text(encoding="utf-8")
MIRROR_URL = f"http://jwks-mirror.{NAMESPACE}.svc.cluster.local:8080"
DIGEST = "sha256:" + "ab" * 32


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def documented(command: str) -> list[str]:
    """``command`` split into argv, after checking the README shows it verbatim."""
    assert any(command in line for b in blocks("sh") for line in b.splitlines()), command
    return shlex.split(command)


def jwks_mirror(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "jwks-mirror"
    return run(tool("jwks-mirror"), *argv[1:], cwd=cwd)


def kubectl(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "kubectl"
    return run(tool("kubectl"), *argv[1:], cwd=cwd)


def rendered(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture
def gitops(tmp_path: Path) -> Path:
    """A GitOps checkout as the walkthrough has it after step 2."""
    apps = tmp_path / "apps"
    apps.mkdir()
    # The issuer example's RequestAuthentication before the mirror: the issuer's own jwksUri.
    example = (DEPLOY / "examples" / "issuer" / "requestauthentication.yaml").read_text()
    original = re.sub(r"jwksUri: \S+", "jwksUri: http://keys.auth.svc.cluster.local/jwks.json", example)
    assert original != example
    (apps / "api.yaml").write_text(original, encoding="utf-8")

    overlay = tmp_path / "jwks-mirror"
    overlay.mkdir()
    shutil.copy(DEPLOY / "examples" / "install" / "config.yaml", overlay / "config.yaml")
    (kustomization,) = [b for b in blocks("yaml") if "configMapGenerator" in b]
    # The remote base of the README, pointed at this checkout (no network here).
    local = os.path.relpath(DEPLOY, overlay)
    text = re.sub(r"https://github\.com/ORG/jwks-mirror//deploy/(\S+)\?ref=v0\.1\.0", local + r"/\1", kustomization)
    assert text != kustomization
    (overlay / "kustomization.yaml").write_text(text.replace("sha256:...", DIGEST), encoding="utf-8")
    return tmp_path


def test_step_2_overlay_renders_with_the_image_pinned_by_digest(gitops: Path) -> None:
    objects = rendered(kubectl(*documented("kubectl kustomize jwks-mirror"), cwd=gitops))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (mirror,) = deployment["spec"]["template"]["spec"]["containers"]
    assert mirror["image"] == f"REGISTRY/jwks-mirror@{DIGEST}"
    # The component of the README's example (ambient) is applied on top of the install.
    assert deployment["spec"]["template"]["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {NAMESPACE}


def test_steps_3_4_6_generate_validate_and_point_at_the_mirror(gitops: Path) -> None:
    generate = documented(
        f"jwks-mirror rewrite apps/ --mirror-url {MIRROR_URL} --config-out jwks-mirror/config.yaml"
    )
    validate = documented("jwks-mirror check-config --offline --config jwks-mirror/config.yaml")
    render = documented("kubectl kustomize jwks-mirror > rendered.yaml")
    analyze = documented("jwks-mirror analyze rendered.yaml apps/")
    check = documented(f"jwks-mirror rewrite apps/ --mirror-url {MIRROR_URL} --check")
    point = documented(f"jwks-mirror rewrite apps/ --mirror-url {MIRROR_URL} --in-place")
    before = (gitops / "apps" / "api.yaml").read_text()

    # Step 3: the shipped config (a pod's state_dir, which does not exist here) gets the issuer.
    result = jwks_mirror(*generate, cwd=gitops)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((gitops / "jwks-mirror" / "config.yaml").read_text())
    assert config["issuers"] == [
        {
            "name": "keys-auth",
            "issuer": "https://keys.auth.svc.cluster.local",
            "jwks_uri": "http://keys.auth.svc.cluster.local/jwks.json",
        }
    ]
    assert (gitops / "apps" / "api.yaml").read_text() == before, "step 3 writes only the config"

    # Step 4, as CI runs it: the config and the overlay pass; --check fails until step 6.
    result = jwks_mirror(*validate, cwd=gitops)
    assert result.returncode == 0, result.stderr
    assert "1 issuers: keys-auth" in result.stdout
    objects = rendered(kubectl(*documented("kubectl kustomize jwks-mirror"), cwd=gitops))
    (config_map,) = [o for o in objects if o["metadata"]["name"] == "jwks-mirror-config"]
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == config
    assert jwks_mirror(*check, cwd=gitops).returncode == 1
    # analyze beside them: the rendered overlay (its ConfigMap is the config) and apps/. Before
    # step 6 the in-mesh jwksUri is a warning (nothing in the input makes it STRICT), not a
    # failure; nothing else is found.
    assert render[-2:] == [">", "rendered.yaml"]
    (gitops / "rendered.yaml").write_text(kubectl(*render[:-2], cwd=gitops).stdout)
    result = jwks_mirror(*analyze, cwd=gitops)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " warning JM101 RequestAuthentication app/api-jwt: " in result.stdout
    assert result.stdout.endswith("0 errors, 1 warning in 2 files\n"), result.stdout

    # Step 6: the RequestAuthentication now names exactly what the issuer example shows.
    result = jwks_mirror(*point, cwd=gitops)
    assert result.returncode == 0, result.stderr
    rule = yaml.safe_load((gitops / "apps" / "api.yaml").read_text())["spec"]["jwtRules"][0]
    example = yaml.safe_load((DEPLOY / "examples" / "issuer" / "requestauthentication.yaml").read_text())
    assert rule["jwksUri"] == example["spec"]["jwtRules"][0]["jwksUri"]
    assert rule["jwksUri"] == f"{MIRROR_URL}/keys-auth/jwks.json"
    result = jwks_mirror(*check, cwd=gitops)
    assert result.returncode == 0, result.stdout + result.stderr
    # analyze after step 6: the rule reads from the mirror, which serves its name; what is left
    # is istiod's refresh interval, which the input does not set (a warning).
    result = jwks_mirror(*analyze, cwd=gitops)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "JM101" not in result.stdout and "JM103" not in result.stdout
    assert " warning JM301 " in result.stdout and "0 errors" in result.stdout


def test_analyze_in_ci_fails_on_a_rule_the_mirror_does_not_serve(gitops: Path) -> None:
    """A jwksUri at the mirror for a name missing from the config: istiod would get 404."""
    api = gitops / "apps" / "api.yaml"
    api.write_text(re.sub(r"jwksUri: \S+", f"jwksUri: {MIRROR_URL}/keys-auth/jwks.json", api.read_text()))
    render = documented("kubectl kustomize jwks-mirror > rendered.yaml")
    (gitops / "rendered.yaml").write_text(kubectl(*render[:-2], cwd=gitops).stdout)
    result = jwks_mirror(*documented("jwks-mirror analyze rendered.yaml apps/"), cwd=gitops)
    assert result.returncode == 1
    assert " error JM103 RequestAuthentication app/api-jwt: " in result.stdout
    assert "'keys-auth', which its config does not serve (serves: none)" in result.stdout


def test_check_config_offline_catches_a_broken_config_in_ci(gitops: Path) -> None:
    config = gitops / "jwks-mirror" / "config.yaml"
    config.write_text(config.read_text().replace("issuers: []", "issuers: [{name: Bad_Name}]"))
    validate = documented("jwks-mirror check-config --offline --config jwks-mirror/config.yaml")
    result = jwks_mirror(*validate, cwd=gitops)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "issuers[0]" in result.stderr


def test_step_7_release_label_patch(gitops: Path) -> None:
    (patch,) = [b for b in blocks("yaml") if "/metadata/labels/release" in b]
    kustomization = gitops / "jwks-mirror" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + patch)
    objects = rendered(kubectl("kubectl", "kustomize", "jwks-mirror", cwd=gitops))
    releases = {o["kind"]: o["metadata"].get("labels", {}).get("release") for o in objects}
    assert releases["PodMonitor"] == releases["PrometheusRule"] == "my-release"


def test_every_shell_block_parses() -> None:
    sh = blocks("sh")
    assert len(sh) >= 8
    for block in sh:
        result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{result.stderr}\n{block}"


def test_revocations_go_through_every_replica() -> None:
    """A replica serves what it fetched itself: refresh/rotate through one `kubectl exec`
    would leave the others serving the revoked key."""
    lines = [line for b in blocks("sh") for line in b.splitlines()]
    for line in lines:
        if "kubectl" in line and "exec" in line:
            assert not re.search(r"\b(refresh|rotate)\b|--purge-retained", line), line
    (loop,) = [b for b in blocks("sh") if "--purge-retained" in b]
    assert "for pod in $(kubectl -n jwks-mirror get pods -l app.kubernetes.io/name=jwks-mirror" in loop
    assert "port-forward" in loop and '"${admins[@]}"' in loop
    assert "jwks-mirror rotate NAME" in loop


def test_runbook_log_grep_matches_a_real_failed_fetch(tmp_path: Path) -> None:
    """Run the mirror against a refused upstream and grep its real log lines as the runbook does."""
    (command,) = [
        line for b in blocks("sh") for line in b.splitlines() if line.startswith("kubectl") and " logs " in line
    ]
    assert "-l app.kubernetes.io/name=jwks-mirror" in command, "every replica, not one pod"
    assert "--tail=-1" in command, "with a selector kubectl logs keeps 10 lines per pod"
    pattern = re.search(r"grep '([^']+)'", command)
    assert pattern
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there now: connections are refused.
    config = tmp_path / "config.yaml"
    config.write_text(
        "public: {host: 127.0.0.1, port: 0}\n"
        "admin: {host: 127.0.0.1, port: 0}\n"
        f"issuers: [{{name: gone, jwks_uri: 'http://127.0.0.1:{port}/jwks.json'}}]\n"
    )
    lines: list[str] = []
    with subprocess.Popen(
        [*cli_argv(), "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            stdout = process.stdout
            os.set_blocking(stdout.fileno(), False)

            def fetched_or_ended() -> bool:
                for line in iter(stdout.readline, ""):
                    lines.append(line)
                    if '"event":"fetch"' in line:
                        return True
                return process.poll() is not None

            wait_until(fetched_or_ended, timeout=60, what="a fetch event in the log",
                       describe=lambda: "".join(lines[-5:]))
        finally:
            process.terminate()
            os.set_blocking(process.stdout.fileno(), True)
            _, errors = process.communicate(timeout=30)
    fetches = [line for line in lines if '"event":"fetch"' in line]
    assert fetches, "".join(lines) + errors
    assert pattern.group(1) in fetches[0], fetches[0]
    assert "outcome" in fetches[0] and '"outcome": "failed"' not in fetches[0]


def deploy_texts() -> dict[str, str]:
    return {
        str(p.relative_to(DEPLOY)): p.read_text(encoding="utf-8")
        for p in sorted(DEPLOY.rglob("*"))
        if p.is_file() and p.suffix in {".md", ".yaml", ".yml", ".json"}
    }


def test_deploy_files_stand_on_their_own() -> None:
    """Users have only the repository: no pointer to the team's design notes or tracker."""
    texts = deploy_texts()
    assert len(texts) > 30
    for name, text in texts.items():
        assert "DESIGN.md" not in text and "../shared" not in text, name
        assert not re.search(r"(?i)\bissues?\s*#?\d+\b|(?<![\w&/])#\d+\b", text), name
    assert not re.search(r"\]\((https?:)?//", README), "README links outside the repository"


def test_one_spelling_of_the_mirror_url() -> None:
    """`pin` and `rotate` match mirror URLs by prefix: one spelling everywhere."""
    found = 0
    for name, text in deploy_texts().items():
        assert not re.search(r"https?://jwks-mirror\.jwks-mirror\.svc(?!\.cluster\.local)", text), name
        assert not re.search(r"https?://jwks-mirror(:|/)", text), name
        found += len(re.findall(r"https?://jwks-mirror\.jwks-mirror\.svc\.cluster\.local:8080", text))
    assert found >= 8
