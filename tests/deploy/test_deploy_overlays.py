"""What each overlay in ``deploy/`` promises, checked on the objects ``kubectl kustomize`` renders.

Schemas, checkov and the agreement between every configuration and its manifests are checked
for every example in ``tests/deploy/test_deploy.py``; this module checks what is particular to each
component: ambient mode (L4 policies only), default-deny (what istiod, with no identity, may
reach), private-CA TLS, locked-down egress, graceful drain, and the identities the policies name.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from jwks_mirror.core.config.fields import parse_duration
from jwks_mirror.core.config.loader import parse_settings
from tests.deploy.test_deploy import (
    CONFIG_MAP,
    KUSTOMIZATIONS,
    NAMESPACE,
    container,
    objects,
    one,
)

# Every check renders kustomizations with kubectl: seconds in all.
pytestmark = pytest.mark.slow

MIRROR_EXAMPLES = [k for k in KUSTOMIZATIONS if k.startswith("examples/") and k != "examples/issuer"]
# Upper bound of the mirror's drain of in-flight requests after shutdown_delay.
DRAIN_S = 10.0
# Operation and source fields only a proxy that parses HTTP (sidecar, waypoint) can enforce.
L7_OPERATION = {"methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"}
L7_SOURCE = {"requestPrincipals", "notRequestPrincipals"}


def config_of(kustomization: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        one(kustomization, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"]
    )
    return data


def pod_labels(kustomization: str) -> dict[str, str]:
    labels: dict[str, str] = one(kustomization, "Deployment")["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def mirror_policies(kustomization: str) -> list[dict[str, Any]]:
    """AuthorizationPolicies that select the mirror's pods."""
    labels = pod_labels(kustomization)
    return [
        p
        for p in objects(kustomization, "AuthorizationPolicy")
        if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]


def l7_fields(policy: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for rule in policy["spec"].get("rules", []):
        for to in rule.get("to", []):
            found |= set(to["operation"]) & L7_OPERATION
        for source in rule.get("from", []):
            found |= set(source["source"]) & L7_SOURCE
        for condition in rule.get("when", []):
            if condition["key"].startswith("request."):
                found.add(condition["key"])
    return found


def allows(policy: dict[str, Any], *, port: int, principal: str | None, namespace: str | None) -> bool:
    """Whether an ALLOW policy's L4 rules match a connection (Istio's semantics for the fields
    used here: rules are ORed; within a rule, `from` and `to` are ANDed, their list items ORed;
    a connection without mTLS has no principal and no namespace)."""
    assert policy["spec"]["action"] == "ALLOW" and not l7_fields(policy)

    def source_matches(source: dict[str, Any]) -> bool:
        for key, value in source.items():
            if key == "principals" and principal not in value:
                return False
            if key == "namespaces" and namespace not in value:
                return False
            if key not in {"principals", "namespaces"}:
                raise AssertionError(f"allows() does not model source field {key}")
        return True

    for rule in policy["spec"]["rules"]:
        froms = rule.get("from")
        if froms is not None and not any(source_matches(f["source"]) for f in froms):
            continue
        tos = rule.get("to")
        if tos is None or any(str(port) in t["operation"]["ports"] for t in tos):
            return True
    return False


# -- identities ------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", MIRROR_EXAMPLES)
def test_policies_name_the_mirror_as_installed(kustomization: str) -> None:
    """Every principal a mirror-side policy names is the installed mirror's own identity."""
    deployment = one(kustomization, "Deployment")
    namespace = deployment["metadata"]["namespace"]
    assert namespace == NAMESPACE
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    expected = f"cluster.local/ns/{namespace}/sa/{account}"
    named = [
        principal
        for policy in mirror_policies(kustomization)
        for rule in policy["spec"]["rules"]
        for source in rule.get("from", [])
        for key in ("principals", "notPrincipals")
        for principal in source["source"].get(key, [])
    ]
    assert named and set(named) == {expected}


@pytest.mark.parametrize("kustomization", MIRROR_EXAMPLES)
def test_sidecar_peers_must_present_the_mirrors_own_identity(kustomization: str) -> None:
    """The asking side pins the peers' identity (sidecar mode): ISTIO_MUTUAL with
    subjectAltNames naming the installed mirror's SPIFFE ID, on the Service ``peers.dns``
    names, used only by the mirror's own namespace. Ambient mode has no such rule."""
    rules = objects(kustomization, "DestinationRule")
    if pod_labels(kustomization).get("istio.io/dataplane-mode") == "ambient":
        assert rules == []
        return
    (rule,) = rules
    deployment = one(kustomization, "Deployment")
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    peers_service = one(kustomization, "Service", "jwks-mirror-peers")
    assert rule["metadata"]["namespace"] == namespace
    assert rule["spec"]["host"] == peers_service["metadata"]["name"] == config_of(kustomization)[
        "peers"
    ]["dns"]
    assert rule["spec"]["exportTo"] == ["."]
    assert rule["spec"]["trafficPolicy"] == {
        "tls": {
            "mode": "ISTIO_MUTUAL",
            "subjectAltNames": [f"spiffe://cluster.local/ns/{namespace}/sa/{account}"],
        }
    }
    assert "portLevelSettings" not in rule["spec"]["trafficPolicy"]


# -- graceful drain ----------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", MIRROR_EXAMPLES)
def test_grace_periods_cover_the_drain(kustomization: str) -> None:
    deployment = one(kustomization, "Deployment")
    settings = parse_settings(
        one(kustomization, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"], offline=True
    )
    mirror_s = settings.shutdown_delay_s + DRAIN_S
    pod = deployment["spec"]["template"]
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    annotations = pod["metadata"].get("annotations", {})
    if pod["metadata"]["labels"].get("istio.io/dataplane-mode") == "ambient":
        assert "proxy.istio.io/config" not in annotations
        assert grace > mirror_s
        return
    proxy = yaml.safe_load(annotations["proxy.istio.io/config"])
    assert proxy["holdApplicationUntilProxyStarts"] is True
    # The sidecar drains for terminationDrainDuration, then exits: it must outlive the mirror's
    # shutdown_delay and drain, or it cuts the public port under the mirror.
    sidecar_s = parse_duration(proxy["terminationDrainDuration"], field="terminationDrainDuration")
    assert sidecar_s > mirror_s
    assert grace > sidecar_s
    assert "EXIT_ON_ZERO_ACTIVE_CONNECTIONS" not in str(annotations)


# -- ambient mode ----------------------------------------------------------------------------


def test_l7_detection_sees_the_sidecar_policies() -> None:
    """The ambient check below would pass vacuously if it could not see an L7 rule."""
    (admin,) = [p for p in mirror_policies("examples/install") if p["metadata"]["name"] == "jwks-mirror-admin"]
    assert l7_fields(admin) == {"notMethods", "paths"}


def test_ambient_pod_has_no_sidecar_and_joins_ztunnel() -> None:
    pod = one("examples/ambient", "Deployment")["spec"]["template"]["metadata"]
    assert pod["labels"]["istio.io/dataplane-mode"] == "ambient"
    assert pod["labels"]["sidecar.istio.io/inject"] == "false"
    assert not {"proxy.istio.io/config", "prometheus.istio.io/merge-metrics"} & set(
        pod.get("annotations", {})
    )


@pytest.mark.parametrize("kustomization", ["examples/ambient", "examples/default-deny"])
def test_policies_that_ztunnel_enforces_are_l4_only(kustomization: str) -> None:
    """ztunnel drops all traffic of a pod with an L7 policy and no waypoint. The default-deny
    component is meant for both modes, so it must be L4 too."""
    ambient = pod_labels(kustomization).get("istio.io/dataplane-mode") == "ambient"
    for policy in mirror_policies(kustomization):
        if ambient or policy["metadata"]["name"] == "jwks-mirror-allow":
            assert not l7_fields(policy), policy["metadata"]["name"]


def test_ambient_admin_port_admits_replicas_and_monitoring_only() -> None:
    (policy,) = mirror_policies("examples/ambient")
    assert policy["spec"]["action"] == "DENY"
    (rule,) = policy["spec"]["rules"]
    (source,) = rule["from"]
    assert source["source"]["notNamespaces"] == ["monitoring"]
    assert rule["to"] == [{"operation": {"ports": ["9090"]}}]


def test_ambient_network_policy_admits_hbone_and_probes() -> None:
    ingress = one("examples/ambient", "NetworkPolicy", "jwks-mirror")["spec"]["ingress"]
    ports = [{p["port"] for p in rule["ports"]} for rule in ingress]
    assert {15008} in ports, "HBONE from ztunnel"
    probes = next(r for r in ingress if r.get("from", [{}])[0].get("ipBlock"))
    assert probes["from"] == [{"ipBlock": {"cidr": "169.254.7.127/32"}}]
    admin = container(one("examples/ambient", "Deployment"))["livenessProbe"]["httpGet"]["port"]
    assert admin == "http-admin" and {p["port"] for p in probes["ports"]} == {9090}


def test_ambient_scrapes_the_admin_port_directly() -> None:
    (endpoint,) = one("examples/ambient", "PodMonitor")["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for p in container(one("examples/ambient", "Deployment"))["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert "portNumber" not in endpoint


# -- default-deny authorization --------------------------------------------------------------


def test_default_deny_lets_istiod_fetch_and_keeps_the_admin_port_closed() -> None:
    (policy,) = [p for p in mirror_policies("examples/default-deny") if p["spec"]["action"] == "ALLOW"]
    settings = parse_settings(config_of_text("examples/default-deny"), offline=True)
    public, admin = settings.public.port, settings.admin.port
    mirror = f"cluster.local/ns/{NAMESPACE}/sa/jwks-mirror"
    # istiod has no sidecar and no certificate: no principal, no namespace.
    assert allows(policy, port=public, principal=None, namespace=None)
    assert not allows(policy, port=admin, principal=None, namespace=None)
    assert allows(policy, port=admin, principal=mirror, namespace=NAMESPACE)
    assert allows(policy, port=admin, principal="cluster.local/ns/monitoring/sa/prometheus", namespace="monitoring")
    other = "cluster.local/ns/app/sa/default"
    assert not allows(policy, port=admin, principal=other, namespace="app")
    assert allows(policy, port=public, principal=other, namespace="app")


def config_of_text(kustomization: str) -> str:
    text: str = one(kustomization, "ConfigMap", CONFIG_MAP)["data"]["config.yaml"]
    return text


# -- private-CA TLS on the public port --------------------------------------------------------


def test_public_tls_serves_the_cert_manager_certificate() -> None:
    example = "examples/public-tls"
    certificate = one(example, "Certificate")["spec"]
    deployment = one(example, "Deployment")
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == certificate["secretName"]
    )
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True and "subPath" not in mount
    assert not mount["mountPath"].startswith("/etc/jwks-mirror/"), "nested in the ConfigMap"
    tls = config_of(example)["public"]["tls"]
    # cert-manager writes the chain and the key as tls.crt and tls.key.
    assert tls == {
        "cert_file": f"{mount['mountPath']}/tls.crt",
        "key_file": f"{mount['mountPath']}/tls.key",
    }
    service = one(example, "Service", "jwks-mirror")
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local" in certificate["dnsNames"]
    assert certificate["issuerRef"]["name"]
    assert "server auth" in certificate["usages"]
    names = [p["name"] for p in service["spec"]["ports"]]
    assert "https-jwks" in names and "http-jwks" not in names


# -- locked-down egress ----------------------------------------------------------------------


def issuer_hosts(config: dict[str, Any]) -> list[str]:
    hosts = []
    for issuer in config["issuers"]:
        url = issuer.get("jwks_uri") or issuer.get("discovery_url") or issuer["issuer"]
        host = urlsplit(url).hostname
        assert host
        hosts.append(host)
    return hosts


def test_egress_lockdown_opens_exactly_what_the_mirror_needs() -> None:
    example = "examples/egress-lockdown"
    config = config_of(example)
    hosts = issuer_hosts(config)
    assert hosts, "the example must show an issuer rule"
    egress = one(example, "NetworkPolicy", "jwks-mirror-egress")["spec"]
    assert egress["policyTypes"] == ["Egress"]
    assert egress["podSelector"]["matchLabels"].items() <= pod_labels(example).items()

    def rule_to(namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
        for rule in egress["egress"]:
            for peer in rule["to"]:
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if ns.get("kubernetes.io/metadata.name") == namespace and (
                    peer.get("podSelector", {}).get("matchLabels") == labels
                ):
                    return rule
        raise AssertionError(f"no egress rule to {namespace} {labels}")

    dns = rule_to("kube-system", {"k8s-app": "kube-dns"})
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    istiod = rule_to("istio-system", {"app": "istiod"})
    assert {p["port"] for p in istiod["ports"]} == {15012}
    peers = rule_to(None, {"app.kubernetes.io/name": "jwks-mirror"})
    assert config["peers"]["port"] in {p["port"] for p in peers["ports"]}

    sidecar = one(example, "Sidecar")["spec"]
    assert sidecar["workloadSelector"]["labels"].items() <= pod_labels(example).items()
    assert sidecar["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}
    (listener,) = sidecar["egress"]
    assert "./*" in listener["hosts"]
    for host in hosts:
        namespace = host.split(".")[1]
        assert f"{namespace}/{host}" in listener["hosts"], host
        namespaces = {
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            for rule in egress["egress"]
            for peer in rule["to"]
        }
        assert namespace in namespaces, f"no egress rule to the issuer namespace {namespace}"
