"""The ``analyze`` checks about the mirror itself: istiod's blocked ranges (JM201, JM202),
its refresh interval against the mirror's (JM301), and whether istiod can reach the public
port through mTLS and authorization (JM401, JM402).

PURE: the :class:`~jwks_mirror.gitops.findings.Context` in, findings added to it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from jwks_mirror.core.config.model import Limits
from jwks_mirror.gitops.cidrs import IPNetwork, blocked_except, parse_cidr
from jwks_mirror.gitops.findings import AtMirror, Context
from jwks_mirror.gitops.inventory import (
    ISTIOD_DEFAULT_REFRESH_S,
    Obj,
    Setting,
    go_duration,
    labels_of,
    mapping,
    selector_labels,
)
from jwks_mirror.gitops.istiopolicy import Request, blocking_policy, mtls_mode
from jwks_mirror.gitops.mesh import mirror_name

__all__ = ["check_blocked_cidrs", "check_mirror_port", "check_refresh"]

REFRESH_WARN_S = 300.0
# Where Service ClusterIPs come from: any of these may be a cluster's service CIDR.
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


# -- istiod's blocked ranges: JM201, JM202 -----------------------------------------------------


def _cluster_ips(run: Context) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, Obj]]:
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


def check_blocked_cidrs(run: Context) -> None:
    """JM201 for each blocked range holding a known ClusterIP of the mirror; without one in
    the input, JM202 for a blocked range overlapping a private one."""
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


def _mirror_pods(run: Context) -> list[tuple[str, dict[str, str] | None, Obj]]:
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


def check_mirror_port(run: Context, at_mirror: AtMirror) -> None:
    """JM401 when the public port is STRICT for each mirror workload, JM402 when an
    AuthorizationPolicy certainly refuses istiod's GET there."""
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


def check_refresh(run: Context, at_mirror: AtMirror) -> None:
    """JM301 when istiod's slowest refresh interval in the input (or its default) is over
    :data:`REFRESH_WARN_S`, with the worst-case window after a rotation."""
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
    elif run.inventory.istiod_sources:  # istiod is in the input, without the setting
        istiod = run.inventory.istiod_sources[0]
        run.add("JM301", istiod, istiod.line, message, fix)
    else:
        ref = at_mirror[0][0]
        run.add("JM301", ref, ref.line, message, fix)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"
