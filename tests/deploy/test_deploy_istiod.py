"""The istiod example in ``deploy/examples/istiod-jwks-refresh/``: one setting, four spellings.

istiod is not ours, so these files are data an operator merges into their own Istio install,
not a kustomization. Each must set ``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`` to the interval
docs/rotation.md recommends, in the shape its tool reads: the Deployment patch is applied by
``kubectl patch --local`` (strategic merge) to a stand-in istiod Deployment and the result is
checked against the Kubernetes schemas; the IstioOperator's ``k8s.env`` entries are checked as
Kubernetes EnvVars the same way (the IstioOperator CRD itself has no structural schema).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .test_deploy import DEPLOY, KUBERNETES_VERSIONS, ROOT, run, tool

# kubectl runs and schema validation: about a second.
pytestmark = pytest.mark.slow

EXAMPLE = DEPLOY / "examples" / "istiod-jwks-refresh"
VARIABLE = "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL"
RECOMMENDED = "1m"
# The istiod Deployment as the istiod chart renders it, reduced to what a patch touches.
ISTIOD = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "istiod", "namespace": "istio-system"},
    "spec": {
        "selector": {"matchLabels": {"app": "istiod"}},
        "template": {
            "metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{
                "name": "discovery",
                "image": "docker.io/istio/pilot:1.24.2",
                "env": [{"name": "PILOT_TRACE_SAMPLING", "value": "1"}],
            }]},
        },
    },
}
# A Go duration as istiod parses it (time.ParseDuration), e.g. 1m, 90s, 1m30s.
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLE / name).read_text(encoding="utf-8"))
    return document


def validate(obj: dict[str, Any]) -> None:
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_example_holds_these_files_and_no_kustomization() -> None:
    assert sorted(p.name for p in EXAMPLE.iterdir()) == [
        "helm-values.yaml", "istiod-env-patch.yaml", "istiooperator-k8s-env.yaml",
        "istiooperator.yaml",
    ]


def test_every_spelling_sets_the_recommended_interval() -> None:
    found = {
        "istiooperator.yaml": load("istiooperator.yaml")["spec"]["values"]["pilot"]["env"],
        "helm-values.yaml": load("helm-values.yaml")["pilot"]["env"],
        "istiooperator-k8s-env.yaml": {
            e["name"]: e["value"]
            for e in load("istiooperator-k8s-env.yaml")["spec"]["components"]["pilot"]["k8s"]["env"]
        },
        "istiod-env-patch.yaml": {
            e["name"]: e["value"]
            for e in load("istiod-env-patch.yaml")["spec"]["template"]["spec"]["containers"][0]["env"]
        },
    }
    for name, env in found.items():
        assert env == {VARIABLE: RECOMMENDED}, name
        # A string: the chart writes it into the container env as is, and YAML would read
        # an unquoted 1m as a string anyway but 60 as an integer (seconds are not a duration).
        assert isinstance(env[VARIABLE], str) and GO_DURATION.match(env[VARIABLE]), name
    for name in ("istiooperator.yaml", "istiooperator-k8s-env.yaml"):
        operator = load(name)
        assert (operator["apiVersion"], operator["kind"]) == (
            "install.istio.io/v1alpha1", "IstioOperator"), name


def test_the_docs_recommend_what_the_example_sets() -> None:
    rotation = (ROOT / "docs" / "rotation.md").read_text(encoding="utf-8")
    assert f"{VARIABLE}: \"{RECOMMENDED}\"" in rotation or f"{VARIABLE}={RECOMMENDED}" in rotation
    assert "deploy/examples/istiod-jwks-refresh" in rotation


def test_the_deployment_patch_merges_into_istiod(tmp_path: Path) -> None:
    standin = tmp_path / "istiod.yaml"
    standin.write_text(yaml.safe_dump(ISTIOD), encoding="utf-8")
    result = run(tool("kubectl"), "patch", "--local", "-f", str(standin), "--type", "strategic",
                 "--patch-file", str(EXAMPLE / "istiod-env-patch.yaml"), "-o", "yaml")
    assert result.returncode == 0, result.stderr
    patched = yaml.safe_load(result.stdout)
    (container,) = patched["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "discovery"
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "PILOT_TRACE_SAMPLING": "1", VARIABLE: RECOMMENDED,
    }
    validate(patched)


def test_the_istiooperator_k8s_env_entries_are_kubernetes_env_vars() -> None:
    env = load("istiooperator-k8s-env.yaml")["spec"]["components"]["pilot"]["k8s"]["env"]
    deployment = copy.deepcopy(ISTIOD)
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = env
    validate(deployment)


def test_schema_check_rejects_a_misspelt_env_entry() -> None:
    deployment = copy.deepcopy(ISTIOD)
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": VARIABLE, "valeu": RECOMMENDED}]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
