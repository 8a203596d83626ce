"""How Istio's PeerAuthentication and AuthorizationPolicy treat one request, from manifests.

PURE: inventory objects in, verdicts out. The request that matters is istiod's fetch of a key
set: plain text (istiod has no sidecar), so no principal, no namespace and no request
principal; a GET on a known port and path; from an address the manifests do not say. A
condition that depends on what the manifests cannot tell (the source address, a ``when``
clause) is *unknown*, and a finding is only reported when the answer is certain: a DENY rule
certainly matches, or every ALLOW rule certainly does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jwks_mirror.gitops.inventory import ROOT_NAMESPACE, Obj, mapping, selector_labels

__all__ = ["Request", "Verdict", "blocking_policy", "mtls_mode"]

# Source fields istiod's plain-text request certainly matches (True) or certainly does not.
_SOURCE = {
    "principals": False, "notPrincipals": True,
    "requestPrincipals": False, "notRequestPrincipals": True,
    "namespaces": False, "notNamespaces": True,
}


@dataclass(frozen=True)
class Request:
    """istiod's fetch: the workload's container ``port``, the Host header values it may send,
    and the paths (empty: not known)."""

    port: int
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    method: str = "GET"


@dataclass(frozen=True)
class Verdict:
    policy: Obj
    reason: str


def _selects(obj: Obj, *, namespace: str, pod_labels: dict[str, str] | None) -> bool | None:
    """Whether a namespaced policy applies to the workload: mesh-wide (root namespace, no
    selector), namespace-wide, or a selector the pod labels satisfy (None: cannot tell)."""
    spec = obj.spec
    if spec.get("targetRef") or spec.get("targetRefs"):
        return False  # bound to a gateway or waypoint, not to the workload's own proxy
    policy_ns = obj.namespace or "default"
    labels = selector_labels(spec)
    if labels is None or not labels:
        return policy_ns in (namespace, ROOT_NAMESPACE)
    if policy_ns != namespace:
        return False
    if pod_labels is None:
        return None
    return labels.items() <= pod_labels.items()


def mtls_mode(
    policies: Iterable[Obj],
    *,
    namespace: str,
    pod_labels: dict[str, str] | None,
    port: int | None,
    assume_strict: bool,
) -> tuple[str, Obj | None]:
    """The mTLS mode at ``port`` of the workload and the policy that decides it.

    Istio's order: a workload policy's port-level mode, its own mode, the namespace policy,
    the mesh-wide one (root namespace); ``UNSET`` defers to the next. Nothing set:
    ``PERMISSIVE``, or ``STRICT`` with ``assume_strict``.
    """
    workload: list[Obj] = []
    namespace_wide: list[Obj] = []
    mesh: list[Obj] = []
    for obj in policies:
        policy_ns = obj.namespace or "default"
        labels = selector_labels(obj.spec)
        if labels:
            if _selects(obj, namespace=namespace, pod_labels=pod_labels):
                workload.append(obj)
        elif policy_ns == namespace:
            namespace_wide.append(obj)
        elif policy_ns == ROOT_NAMESPACE:
            mesh.append(obj)
    for obj in workload:
        levels = mapping(obj.spec, "portLevelMtls") or {}
        for key, value in levels.items():
            if port is not None and str(key) == str(port):
                mode = _mode(value)
                if mode != "UNSET":
                    return mode, obj
    for group in (workload, namespace_wide, mesh):
        for obj in group:
            mode = _mode(obj.spec.get("mtls"))
            if mode != "UNSET":
                return mode, obj
    return ("STRICT" if assume_strict else "PERMISSIVE"), None


def _mode(value: object) -> str:
    mode = value.get("mode") if isinstance(value, dict) else None
    return mode.upper() if isinstance(mode, str) and mode else "UNSET"


def blocking_policy(
    policies: Iterable[Obj],
    *,
    namespace: str,
    pod_labels: dict[str, str] | None,
    request: Request,
) -> Verdict | None:
    """The AuthorizationPolicy that certainly refuses ``request``, or None.

    A DENY rule that certainly matches refuses it whatever any ALLOW says. Otherwise, when
    ALLOW policies apply to the workload (an empty ``spec: {}`` is allow-nothing) and none of
    their rules can match it, it is refused too.
    """
    allows: list[Obj] = []
    for obj in policies:
        if _selects(obj, namespace=namespace, pod_labels=pod_labels) is not True:
            continue
        action = obj.spec.get("action", "ALLOW")
        if action == "DENY":
            if any(_rule(rule, request) is True for rule in _rules(obj.spec.get("rules"))):
                return Verdict(obj, "a DENY rule matches a request without an mTLS identity")
        elif action == "ALLOW":
            allows.append(obj)
    if not allows:
        return None
    for obj in allows:
        rules = obj.spec.get("rules")
        if any(_rule(rule, request) is not False for rule in _rules(rules)):
            return None
    return Verdict(allows[0], "ALLOW policies apply and none admits a request without an identity")


def _rules(rules: object) -> list[object]:
    """A policy's ``rules``: a list, or none at all (Kubernetes would refuse anything else)."""
    return rules if isinstance(rules, list) else []


def _rule(rule: object, request: Request) -> bool | None:
    """True: the rule certainly matches; False: certainly not; None: cannot tell."""
    if not isinstance(rule, dict):
        return False
    parts = [
        _any(rule.get("from"), "source", lambda s: _source(s)),
        _any(rule.get("to"), "operation", lambda o: _operation(o, request)),
    ]
    when = rule.get("when")
    if isinstance(when, list) and when:
        parts.append(None)
    return _all(parts)


def _any(entries: object, key: str, check: Any) -> bool | None:
    """A rule's ``from`` or ``to``: absent matches; otherwise any entry."""
    if entries is None:
        return True
    if not isinstance(entries, list) or not entries:
        return isinstance(entries, list)
    results = [check(e.get(key)) if isinstance(e, dict) else False for e in entries]
    if any(r is True for r in results):
        return True
    return None if any(r is None for r in results) else False


def _all(results: list[bool | None]) -> bool | None:
    if any(r is False for r in results):
        return False
    return None if any(r is None for r in results) else True


def _source(source: object) -> bool | None:
    if not isinstance(source, dict):
        return source is None
    results: list[bool | None] = []
    for key, value in source.items():
        if value is None or value == []:
            continue
        # addresses: istiod's pod address is not in the manifests
        results.append(_SOURCE.get(str(key)))
    return _all(results)


def _operation(operation: object, request: Request) -> bool | None:
    if not isinstance(operation, dict):
        return operation is None
    results: list[bool | None] = []
    for key, value in operation.items():
        if value is None or value == []:
            continue
        values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        negate = str(key).startswith("not")
        field = str(key)[3:].lower() if negate else str(key)
        if field == "ports":
            hit: bool | None = str(request.port) in values
        elif field == "methods":
            hit = request.method in values or "*" in values
        elif field == "paths":
            hit = _matches_all(values, request.paths)
        elif field == "hosts":
            hit = _host_matches(values, request.hosts)
        else:
            hit = None
        results.append(None if hit is None else hit != negate)
    return _all(results)


def _matches_all(patterns: list[str], candidates: tuple[str, ...]) -> bool | None:
    """Whether every candidate matches one of ``patterns`` (Istio's exact, ``prefix*``,
    ``*suffix`` and ``*``); None when candidates are unknown or only some match."""
    if not candidates:
        return True if "*" in patterns else None
    hits = [any(_match(p, c) for p in patterns) for c in candidates]
    if all(hits):
        return True
    return False if not any(hits) else None


def _host_matches(patterns: list[str], hosts: tuple[str, ...]) -> bool | None:
    """``hosts`` patterns against the Host istiod sends, case aside, with or without the port
    (which one Envoy compares depends on the port): a match either way counts."""
    if not hosts:
        return True if "*" in patterns else None
    lowered = [p.lower() for p in patterns]
    hits = [
        any(_match(p, h.lower()) or _match(p, h.lower().rsplit(":", 1)[0]) for p in lowered)
        for h in hosts
    ]
    if all(hits):
        return True
    return False if not any(hits) else None


def _match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return bool(value)
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern
