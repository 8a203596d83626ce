"""``analyze``: what in a set of manifests will make istiod or Envoy reject tokens because of
where their keys live, found before it happens.

PURE: parsed streams (and the mirror's settings, if known) in, :class:`Finding` objects out;
no I/O, no network, no cluster. Each code is stable and documented in ``docs/analyze.md``;
:data:`CODES` is the list. The input is read by :mod:`~jwks_mirror.gitops.inventory`; which
URLs are in-mesh and which are the mirror's is :mod:`~jwks_mirror.gitops.mesh`'s answer, as
for ``rewrite`` and ``pin``; the Istio policy semantics are
:mod:`~jwks_mirror.gitops.istiopolicy`.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jwks_mirror.errors import ConfigError
from jwks_mirror.gitops.cidrs import IPNetwork, blocked_except, parse_cidr
from jwks_mirror.gitops.inventory import (
    ISTIOD_DEFAULT_REFRESH_S,
    MIRROR_LABEL,
    Inventory,
    Obj,
    Setting,
    go_duration,
    labels_of,
    mapping,
    selector_labels,
    text,
)
from jwks_mirror.gitops.istiopolicy import Request, blocking_policy, mtls_mode
from jwks_mirror.gitops.manifests import RuleRef, iter_rules
from jwks_mirror.gitops.mesh import MeshPolicy, http_url, mirror_name, under_mirror
from jwks_mirror.gitops.roundtrip import ManifestStream
from jwks_mirror.settings import Limits, Settings, parse_settings

__all__ = ["CODES", "SEVERITIES", "Finding", "analyze", "escape"]

SEVERITIES = ("error", "warning")
CODES: dict[str, tuple[str, str]] = {
    "JM001": ("error", "the mirror's config in the input does not load"),
    "JM101": ("error", "jwksUri names an in-cluster host that is not the mirror"),
    "JM102": ("error", "in-cluster issuer with neither jwksUri nor jwks: istiod runs discovery"),
    "JM103": ("error", "jwksUri at the mirror for a name it does not serve, or the wrong scheme"),
    "JM201": ("error", "BLOCKED_CIDRS_IN_JWKS_URIS covers the mirror's ClusterIP"),
    "JM202": ("warning", "BLOCKED_CIDRS_IN_JWKS_URIS blocks a private range; ClusterIP unknown"),
    "JM301": ("warning", "istiod's key refresh interval is unset or over 5m"),
    "JM401": ("error", "the mirror's public port is under STRICT mTLS"),
    "JM402": ("error", "an AuthorizationPolicy refuses istiod on the mirror's public port"),
    "JM501": ("warning", "RequestAuthentication selector in an ambient namespace"),
}
REFRESH_WARN_S = 300.0
# Where Service ClusterIPs come from: any of these may be a cluster's service CIDR.
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_SKIP_DISPLAY = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def escape(value: object) -> str:
    """``value`` as one printable line: control, format and separator characters (and the
    backslash) escaped, so input cannot forge output lines or reorder them on a terminal."""
    out: list[str] = []
    for char in str(value):
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif char == " " or unicodedata.category(char) not in _SKIP_DISPLAY:
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


@dataclass(frozen=True)
class Finding:
    code: str
    kind: str
    namespace: str | None
    name: str | None
    file: str | None
    line: int | None
    message: str
    fix: str
    severity: str = ""

    def __post_init__(self) -> None:
        if not self.severity:  # the code's own; JM101 is a warning without STRICT
            object.__setattr__(self, "severity", CODES[self.code][0])

    @property
    def object(self) -> str:
        return f"{self.kind} {self.namespace or '-'}/{self.name or '-'}"

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "object": {"kind": self.kind, "namespace": self.namespace, "name": self.name},
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }

    def render(self) -> str:
        where = escape(self.file or "-") + (f":{self.line}" if self.line else "")
        return (
            f"{where}: {self.severity} {self.code} {escape(self.object)}: {escape(self.message)}"
            f"\n    fix: {escape(self.fix)}"
        )


@dataclass(frozen=True)
class _Mirror:
    """Where the mirror is: its Services (or the default name), public port, settings."""

    services: tuple[tuple[str, str, int, Obj | None], ...]  # (name, namespace, port, obj)
    port: int
    settings: Settings | None
    workloads: tuple[Obj, ...]

    @property
    def scheme(self) -> str | None:
        if self.settings is None:
            return None
        return "https" if self.settings.public.tls is not None else "http"

    def spelled(self, uri: str, *, namespace: str | None) -> str | None:
        """The scheme ``uri`` uses if it points at the mirror (any spelling), else None."""
        parts = http_url(uri)
        if parts is None or parts.hostname is None:
            return None
        candidates = list(self.services)
        if not candidates:  # no Service in the input: the shipped name, in whatever namespace
            labels = parts.hostname.rstrip(".").split(".")
            ns = labels[1] if len(labels) > 1 else namespace or "default"
            candidates = [(MIRROR_LABEL[1], ns, self.port, None)]
        for name, ns, port, _ in candidates:
            for scheme in ("http", "https"):
                if under_mirror(uri, f"{scheme}://{name}.{ns}.svc:{port}", namespace=namespace):
                    return scheme
        return None


@dataclass
class _Run:
    inventory: Inventory
    policy: MeshPolicy
    assume_strict: bool
    mirror: _Mirror
    findings: list[Finding] = field(default_factory=list)

    def add(
        self, code: str, obj: Obj | RuleRef, line: int | None, message: str, fix: str,
        *, severity: str = "",
    ) -> None:
        if isinstance(obj, RuleRef):
            meta = mapping(obj.resource, "metadata") or {}
            kind, ns, name = "RequestAuthentication", obj.namespace, text(meta.get("name"))
        else:
            kind, ns, name = obj.kind, obj.namespace, obj.name
        finding = Finding(code, kind, ns, name, obj.source, line, message, fix, severity)
        self.findings.append(finding)


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
    run = _Run(inventory, MeshPolicy(cluster_domain=cluster_domain), assume_strict, _NO_MIRROR)
    settings = mirror_settings if mirror_settings is not None else _config_from_input(run)
    run.mirror = _find_mirror(inventory, settings)
    rules = [ref for stream in streams for ref in iter_rules(stream)]
    at_mirror = _check_rules(run, rules)
    _check_ambient(run)
    in_use = bool(at_mirror) or bool(run.mirror.services) or bool(run.mirror.workloads)
    if in_use:
        _check_blocked_cidrs(run)
        _check_mirror_port(run, at_mirror)
    if at_mirror:
        _check_refresh(run, at_mirror)
    return sorted(run.findings, key=lambda f: (f.file or "", f.line or 0, f.code))


_NO_MIRROR = _Mirror((), 8080, None, ())


def _config_from_input(run: _Run) -> Settings | None:
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


def _find_mirror(inventory: Inventory, settings: Settings | None) -> _Mirror:
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
    return _Mirror(tuple(services), public, settings, tuple(inventory.mirror_workloads))


# -- rules: JM101, JM102, JM103 ----------------------------------------------------------------


def _check_rules(run: _Run, rules: list[RuleRef]) -> list[tuple[RuleRef, str]]:
    """Check every jwtRule; returns the rules that point at the mirror, with their URIs."""
    at_mirror: list[tuple[RuleRef, str]] = []
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
    run: _Run, url: str, *, namespace: str | None, kind: str
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


def _check_in_mesh_uri(run: _Run, ref: RuleRef, uri: str) -> None:
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
    fix = (
        "mirror it: `jwks-mirror rewrite --mirror-url <mirror URL> --config-out <config>`, "
        "then apply the config and the rewritten rule"
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


def _check_mirror_uri(run: _Run, ref: RuleRef, uri: str, scheme: str) -> None:
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


# -- istiod's blocked ranges: JM201, JM202 -----------------------------------------------------


def _cluster_ips(run: _Run) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, Obj]]:
    found: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, Obj]] = []
    for _, _, _, obj in run.mirror.services:
        assert obj is not None
        values = [obj.spec.get("clusterIP")]
        extra = obj.spec.get("clusterIPs")
        values += extra if isinstance(extra, list) else []
        for value in values:
            try:
                address = ipaddress.ip_address(str(value)) if isinstance(value, str) else None
            except ValueError:
                address = None
            if address is not None and all(address != a for a, _ in found):
                found.append((address, obj))
    return found


def _check_blocked_cidrs(run: _Run) -> None:
    addresses = _cluster_ips(run)
    for setting in run.inventory.settings("BLOCKED_CIDRS_IN_JWKS_URIS"):
        nets: list[IPNetwork] = []
        for part in setting.value.split(","):
            try:
                nets.append(parse_cidr(part.strip()))
            except ValueError:
                continue  # istiod skips it too (and logs it)
        if not nets:
            continue
        where = setting.origin
        if addresses:
            for address, service in addresses:
                covering = next((n for n in nets if address in n), None)
                if covering is None:
                    continue
                value = ",".join(str(n) for n in blocked_except(nets, [address]))
                run.add(
                    "JM201", setting.where, setting.line,
                    f"BLOCKED_CIDRS_IN_JWKS_URIS ({where}) has {covering}, which holds the "
                    f"ClusterIP {address} of the mirror's Service "
                    f"{service.namespace or 'default'}/{service.name}: istiod refuses to fetch "
                    "from the mirror and pushes key sets that reject every token",
                    f"set it to {value} (`jwks-mirror blocked-cidrs --allow {address} --block "
                    "...` with your ranges)",
                )
            continue
        overlap = next(((n, p) for n in nets for p in _PRIVATE if _overlaps(n, p)), None)
        if overlap is not None:
            blocked, private = overlap
            within = "" if blocked == private else f", which overlaps the private range {private}"
            run.add(
                "JM202", setting.where, setting.line,
                f"BLOCKED_CIDRS_IN_JWKS_URIS ({where}) blocks {blocked}{within}; the mirror's "
                "ClusterIP is not in the input and Service ClusterIPs are private addresses, "
                "so istiod may refuse to fetch from the mirror",
                "give the mirror's Service a fixed clusterIP (deploy/components/fixed-clusterip) "
                "and set the list to `jwks-mirror blocked-cidrs --allow <that clusterIP>`",
            )


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    if isinstance(a, ipaddress.IPv4Network) and isinstance(b, ipaddress.IPv4Network):
        return a.overlaps(b)
    if isinstance(a, ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv6Network):
        return a.overlaps(b)
    return False


# -- the mirror's public port: JM401, JM402 ----------------------------------------------------


def _mirror_pods(run: _Run) -> list[tuple[str, dict[str, str] | None, Obj]]:
    """``(namespace, pod labels, object)`` for each mirror workload (Services as a fallback)."""
    pods: list[tuple[str, dict[str, str] | None, Obj]] = []
    for obj in run.mirror.workloads:
        template = mapping(obj.spec, "template")
        pods.append((obj.namespace or "default", labels_of(mapping(template, "metadata")), obj))
    if not pods:
        for _, namespace, _, service in run.mirror.services:
            assert service is not None
            pods.append((namespace, selector_labels(service.spec), service))
    return pods


def _check_mirror_port(run: _Run, at_mirror: list[tuple[RuleRef, str]]) -> None:
    port = run.mirror.port
    paths = tuple(sorted({urlsplit(uri).path for _, uri in at_mirror}))
    hosts = tuple(sorted({urlsplit(uri).netloc for _, uri in at_mirror}))
    for namespace, labels, workload in _mirror_pods(run):
        mode, decided = mtls_mode(
            run.inventory.peer_authentications, namespace=namespace, pod_labels=labels,
            port=port, assume_strict=run.assume_strict,
        )
        if mode == "STRICT":
            obj = decided or workload
            why = "--assume-strict and no PeerAuthentication" if decided is None else "it"
            run.add(
                "JM401", obj, obj.line,
                f"the mirror's public port {port} in namespace {namespace} is under STRICT mTLS "
                f"({why} decides): istiod has no client certificate, cannot connect, and every "
                "token of every mirrored issuer is rejected",
                f'add portLevelMtls: {{"{port}": {{mode: PERMISSIVE}}}} to a PeerAuthentication '
                "selecting the mirror (deploy/base/peerauthentication.yaml)",
            )
        verdict = blocking_policy(
            run.inventory.authorization_policies, namespace=namespace, pod_labels=labels,
            request=Request(port=port, hosts=hosts, paths=paths),
        )
        if verdict is not None:
            run.add(
                "JM402", verdict.policy, verdict.policy.line,
                f"istiod's plain-text GET on the mirror's public port {port} in namespace "
                f"{namespace} is refused: {verdict.reason}",
                "allow GET on the public port with no `from` (deploy/components/default-deny); "
                "exempt the port from any DENY on missing identity",
            )


# -- istiod's refresh interval: JM301 ----------------------------------------------------------


def _check_refresh(run: _Run, at_mirror: list[tuple[RuleRef, str]]) -> None:
    settings = run.mirror.settings
    mirror_s = Limits().refresh_interval_s
    if settings is not None:
        names = {mirror_name(uri) for _, uri in at_mirror}
        intervals = [i.limits.refresh_interval_s for i in settings.issuers if i.name in names]
        mirror_s = max(intervals, default=mirror_s)
    sources: list[tuple[float, Setting | None, str]] = []
    for found in run.inventory.settings("PILOT_JWT_PUB_KEY_REFRESH_INTERVAL"):
        seconds = go_duration(found.value)
        if seconds is None or seconds <= 0:
            sources.append((ISTIOD_DEFAULT_REFRESH_S, found, f"{found.value!r} is no duration"))
        else:
            sources.append((seconds, found, found.value))
    if not sources:
        sources.append((ISTIOD_DEFAULT_REFRESH_S, None, "unset"))
    istiod_s, setting, shown = max(sources, key=lambda s: s[0])
    if istiod_s <= REFRESH_WARN_S:
        return
    window = _duration(istiod_s + mirror_s)
    message = (
        f"istiod refreshes key sets every {_duration(istiod_s)} (PILOT_JWT_PUB_KEY_REFRESH_"
        f"INTERVAL {shown}); after a rotation that signs with the new key at once, tokens are "
        f"rejected for up to {window} (istiod {_duration(istiod_s)} + mirror "
        f"{_duration(mirror_s)})"
    )
    fix = (
        "set PILOT_JWT_PUB_KEY_REFRESH_INTERVAL=1m on istiod (IstioOperator spec.values.pilot."
        "env, Helm pilot.env) and run `jwks-mirror rotate` or `pin` when keys rotate"
    )
    if setting is not None:
        run.add("JM301", setting.where, setting.line, message, fix)
    else:
        ref = at_mirror[0][0]
        run.add("JM301", ref, ref.line, message, fix)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


# -- ambient: JM501 ----------------------------------------------------------------------------


def _check_ambient(run: _Run) -> None:
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
