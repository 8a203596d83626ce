"""``analyze``: what in a set of manifests will make istiod or Envoy reject tokens because of
where their keys live, found before it happens.

PURE: parsed streams (and the mirror's settings, if known) in, findings out; no I/O, no
network, no cluster. This module finds the mirror and checks the rules (JM001, JM101-JM103)
and ambient namespaces (JM501); :mod:`~jwks_mirror.gitops.mirrorchecks` checks the mirror
itself; :mod:`~jwks_mirror.gitops.findings` lists the codes (documented in
``docs/analyze.md``). The input is read by :mod:`~jwks_mirror.gitops.inventory`; which URLs
are in-mesh and which are the mirror's is :mod:`~jwks_mirror.gitops.mesh`'s answer, as for
``rewrite`` and ``pin``; the Istio policy semantics are :mod:`~jwks_mirror.gitops.istiopolicy`.
"""

from __future__ import annotations

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import Settings
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.gitops.findings import NO_MIRROR, AtMirror, Context, Finding, Mirror
from jwks_mirror.gitops.inventory import Inventory, Obj, mapping, selector_labels
from jwks_mirror.gitops.istiopolicy import mtls_mode
from jwks_mirror.gitops.manifests import RuleRef, iter_rules
from jwks_mirror.gitops.mesh import MeshPolicy, http_url, mirror_name
from jwks_mirror.gitops.mirrorchecks import check_blocked_cidrs, check_mirror_port, check_refresh
from jwks_mirror.gitops.roundtrip import ManifestStream

__all__ = ["analyze"]


def analyze(
    streams: list[ManifestStream],
    *,
    mirror_settings: Settings | None = None,
    assume_strict: bool = False,
    cluster_domain: str = "cluster.local",
) -> list[Finding]:
    """Every finding in ``streams``, in file and line order.

    ``mirror_settings`` is the mirror's config (``--mirror-config``); without it the config is
    read from the mirror's ConfigMap in the input, if there is one.
    """
    inventory = Inventory.of(streams)
    run = Context(inventory, MeshPolicy(cluster_domain=cluster_domain), assume_strict, NO_MIRROR)
    settings = mirror_settings if mirror_settings is not None else _config_from_input(run)
    run.mirror = _find_mirror(inventory, settings)
    rules = [ref for stream in streams for ref in iter_rules(stream)]
    at_mirror = _check_rules(run, rules)
    _check_ambient(run)
    in_use = bool(at_mirror) or bool(run.mirror.services) or bool(run.mirror.workloads)
    if in_use:
        check_blocked_cidrs(run)
        check_mirror_port(run, at_mirror)
    if at_mirror:
        check_refresh(run, at_mirror)
    return sorted(run.findings, key=lambda f: (f.file or "", f.line or 0, f.code))


def _config_from_input(run: Context) -> Settings | None:
    for obj in run.inventory.mirror_configmaps:
        body = (mapping(obj.data, "data") or {}).get("config.yaml")
        assert isinstance(body, str)
        try:
            return parse_settings(body, source="config.yaml", offline=True)
        except ConfigError as exc:
            run.add(
                "JM001", obj, obj.line, f"data.config.yaml does not load: {exc}",
                "fix the config; `jwks-mirror check-config --offline` shows the same error",
            )
    return None


def _find_mirror(inventory: Inventory, settings: Settings | None) -> Mirror:
    public = settings.public.port if settings is not None else 8080
    services: list[tuple[str, str, int, Obj | None]] = []
    for obj in inventory.mirror_services:
        ports = obj.spec.get("ports")
        for entry in ports if isinstance(ports, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("port"), int):
                continue
            target = entry.get("targetPort", entry.get("port"))
            if target in (public, "http-jwks") or entry.get("name") == "http-jwks":
                assert obj.name is not None
                services.append((obj.name, obj.namespace or "default", entry["port"], obj))
                break
    return Mirror(tuple(services), public, settings, tuple(inventory.mirror_workloads))


# -- rules: JM101, JM102, JM103 ----------------------------------------------------------------


def _check_rules(run: Context, rules: list[RuleRef]) -> AtMirror:
    """Check every jwtRule; returns the rules that point at the mirror, with their URIs."""
    at_mirror: AtMirror = []
    for ref in rules:
        uri, issuer = ref.rule.get("jwksUri"), ref.rule.get("issuer")
        if isinstance(uri, str) and uri.strip():
            scheme = run.mirror.spelled(uri, namespace=ref.namespace)
            if scheme is not None:
                at_mirror.append((ref, uri))
                _check_mirror_uri(run, ref, uri, scheme)
            else:
                _check_in_mesh_uri(run, ref, uri)
        elif not ref.rule.get("jwks") and isinstance(issuer, str):
            target = _in_cluster(run, issuer, namespace=ref.namespace, kind="discovery")
            if target is not None:
                run.add(
                    "JM102", ref, ref.line,
                    f"issuer {issuer} is in-cluster and the rule has neither jwksUri nor jwks: "
                    "istiod fetches its discovery document itself, outside the mesh, and pushes "
                    "a key set that rejects every token",
                    "`jwks-mirror rewrite --mirror-url <mirror URL> --config-out <config>` "
                    "points the rule at the mirror (discovery: true)",
                )
    return at_mirror


def _in_cluster(
    run: Context, url: str, *, namespace: str | None, kind: str
) -> tuple[str, str, int | None] | None:
    """``(service, namespace, port)`` if ``url`` names a Service of the cluster."""
    parts = http_url(url)
    if parts is None or parts.hostname is None:
        return None
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    upstream = run.policy.upstream(url, kind=kind, namespace=namespace)
    if upstream is not None:
        return upstream.service, upstream.namespace, port
    labels = parts.hostname.rstrip(".").split(".")
    if len(labels) == 2 and (labels[0], labels[1]) in run.inventory.services:
        return labels[0], labels[1], port
    return None


def _check_in_mesh_uri(run: Context, ref: RuleRef, uri: str) -> None:
    target = _in_cluster(run, uri, namespace=ref.namespace, kind="jwks")
    if target is None:
        return
    service, namespace, port = target
    obj = run.inventory.services.get((service, namespace))
    pod_labels = selector_labels(obj.spec) if obj is not None else None
    container_port = _target_port(obj, port)
    mode, decided = mtls_mode(
        run.inventory.peer_authentications, namespace=namespace, pod_labels=pod_labels,
        port=container_port, assume_strict=run.assume_strict,
    )
    # rewrite's own policy does not take <service>.<namespace>: --match makes it
    match = "" if run.policy.upstream(uri, kind="jwks", namespace=ref.namespace) else (
        f" --match '//{service}[.]{namespace}[:/]'"
    )
    fix = (
        f"mirror it: `jwks-mirror rewrite --mirror-url <mirror URL> --config-out <config>{match}`"
        ", then apply the config and the rewritten rule"
    )
    if mode == "STRICT":
        why = f"PeerAuthentication {decided.namespace or '-'}/{decided.name or '-'}" if decided \
            else "--assume-strict"
        run.add(
            "JM101", ref, ref.line,
            f"jwksUri {uri} is served inside the mesh under STRICT mTLS ({why}): istiod has no "
            "client certificate, its fetch fails and every token is rejected", fix,
        )
    else:
        run.add(
            "JM101", ref, ref.line,
            f"jwksUri {uri} is served inside the mesh, not through the mirror; no STRICT "
            "PeerAuthentication covers it in the input, but under STRICT mTLS istiod "
            "cannot fetch it (--assume-strict makes this an error)", fix, severity="warning",
        )


def _target_port(service: Obj | None, port: int | None) -> int | None:
    """The container port behind ``port`` of ``service`` (when numeric), else ``port``."""
    entries = service.spec.get("ports") if service is not None else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("port") == port:
            target = entry.get("targetPort", port)
            return target if isinstance(target, int) else port
    return port


def _check_mirror_uri(run: Context, ref: RuleRef, uri: str, scheme: str) -> None:
    settings = run.mirror.settings
    name = mirror_name(uri)
    if name is None:
        run.add(
            "JM103", ref, ref.line,
            f"jwksUri {uri} points at the mirror but not at a key set (/<name>/jwks.json): "
            "istiod gets 404 and every token is rejected",
            "use <mirror URL>/<issuer name>/jwks.json (`jwks-mirror rewrite` writes it)",
        )
    elif settings is not None and settings.issuer(name) is None:
        served = ", ".join(sorted(i.name for i in settings.issuers)) or "none"
        run.add(
            "JM103", ref, ref.line,
            f"jwksUri {uri} asks the mirror for {name!r}, which its config does not serve "
            f"(serves: {served}): istiod gets 404 and every token is rejected",
            "add the issuer to the mirror's config (`jwks-mirror rewrite --config-out`) or fix "
            "the name in the jwksUri",
        )
    expected = run.mirror.scheme
    if expected is not None and scheme != expected:
        tls = "set" if expected == "https" else "not set"
        run.add(
            "JM103", ref, ref.line,
            f"jwksUri {uri} uses {scheme}:// but the mirror serves {expected}:// "
            f"(public.tls is {tls}): istiod's fetch fails and every token is rejected",
            f"write the jwksUri as {expected}://",
        )


# -- ambient: JM501 ----------------------------------------------------------------------------


def _check_ambient(run: Context) -> None:
    for obj in run.inventory.objects:
        if obj.kind == "RequestAuthentication" and obj.api_group == "security.istio.io":
            namespace = obj.namespace or "default"
            labels = run.inventory.namespace_labels.get(namespace, {})
            if labels.get("istio.io/dataplane-mode") != "ambient":
                continue
            if selector_labels(obj.spec) and not obj.spec.get("targetRefs"):
                run.add(
                    "JM501", obj, obj.line,
                    f"namespace {namespace} is ambient (istio.io/dataplane-mode=ambient): "
                    "waypoints ignore a RequestAuthentication with a selector, so its rules "
                    "are not applied there",
                    "replace spec.selector with spec.targetRefs naming the waypoint's Gateway "
                    "or the Service",
                )
