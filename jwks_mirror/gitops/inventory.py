"""What a set of manifests holds, as ``analyze`` needs it: every object with where it is, the
Services, Namespaces and Istio policies, istiod's settings, and the mirror itself.

PURE: parsed streams in, a read-only :class:`Inventory` out; no I/O. Anything of an unknown
kind is kept as an object and otherwise ignored, and every field is type-checked before use:
the input is pull-request content.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jwks_mirror.gitops.roundtrip import Document, ManifestStream

__all__ = [
    "HELM_VALUES", "ISTIOD_DEFAULT_REFRESH_S", "MIRROR_LABEL", "ROOT_NAMESPACE", "Inventory", "Obj",
    "Setting", "go_duration", "labels_of", "mapping", "selector_labels", "text",
]

ROOT_NAMESPACE = "istio-system"  # Istio's default root namespace: mesh-wide policies live here
MIRROR_LABEL = ("app.kubernetes.io/name", "jwks-mirror")
ISTIOD_DEFAULT_REFRESH_S = 20 * 60.0  # PILOT_JWT_PUB_KEY_REFRESH_INTERVAL when unset
HELM_VALUES = "HelmValues"  # the kind shown for a document with no kind: a Helm values file
ISTIOD_KEYS = ("BLOCKED_CIDRS_IN_JWKS_URIS", "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL")
_MAX_DEPTH = 4  # lists of lists: kubectl never nests them, a hostile file might
_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_MAX_S = (1 << 63) / 1e9
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def mapping(value: object, *keys: str) -> dict[Any, Any] | None:
    """``value[keys[0]][keys[1]]...`` if every step is a mapping, else None."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, dict) else None


def text(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def labels_of(meta: object) -> dict[str, str]:
    labels = mapping(meta, "labels")
    return {k: v for k, v in (labels or {}).items() if isinstance(k, str) and isinstance(v, str)}


def selector_labels(spec: object) -> dict[str, str] | None:
    """``spec.selector.matchLabels`` (None when there is no selector)."""
    selector = mapping(spec, "selector")
    if selector is None:
        return None
    return labels_of({"labels": selector.get("matchLabels")})


def go_duration(value: str) -> float | None:
    """Seconds in a Go duration (``20m``, ``1h30m``, ``500ms``, ``0``), None if it is not one."""
    value = value.strip()
    if value in ("0", "+0", "-0"):
        return 0.0
    position, total = 0, 0.0
    for match in _GO_DURATION.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    # Go refuses what overflows int64 nanoseconds (about 292 years)
    return total if position == len(value) and position > 0 and total < _GO_MAX_S else None


@dataclass(frozen=True)
class Obj:
    """One Kubernetes object (or a Helm values document) and where it is."""

    data: dict[Any, Any]
    source: str
    line: int | None

    @property
    def kind(self) -> str:
        if "kind" not in self.data and "apiVersion" not in self.data:
            return HELM_VALUES
        return text(self.data.get("kind")) or "-"

    @property
    def api_group(self) -> str:
        api = text(self.data.get("apiVersion")) or ""
        return api.rsplit("/", 1)[0] if "/" in api else ""

    @property
    def name(self) -> str | None:
        return text((mapping(self.data, "metadata") or {}).get("name"))

    @property
    def namespace(self) -> str | None:
        return text((mapping(self.data, "metadata") or {}).get("namespace"))

    @property
    def labels(self) -> dict[str, str]:
        return labels_of(mapping(self.data, "metadata"))

    @property
    def spec(self) -> dict[Any, Any]:
        return mapping(self.data, "spec") or {}

    def line_of(self, node: object, key: object = None) -> int | None:
        """The line of ``node`` (of its ``key`` if given) inside this object, when known."""
        if self.line is None:
            return None
        lc, top = getattr(node, "lc", None), getattr(self.data, "lc", None)
        if lc is None or top is None:
            return self.line
        try:
            row = lc.key(key)[0] if key is not None else lc.line
        except (KeyError, AttributeError, TypeError, IndexError):
            row = lc.line
        return self.line + int(row) - int(top.line)


@dataclass(frozen=True)
class Setting:
    """An istiod environment variable as one source sets it."""

    name: str
    value: str
    where: Obj
    line: int | None
    origin: str  # "Deployment env", "IstioOperator spec.values.pilot.env", ...


@dataclass
class Inventory:
    objects: list[Obj] = field(default_factory=list)
    services: dict[tuple[str, str], Obj] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    peer_authentications: list[Obj] = field(default_factory=list)
    authorization_policies: list[Obj] = field(default_factory=list)
    istiod: list[Setting] = field(default_factory=list)
    istiod_sources: list[Obj] = field(default_factory=list)  # where istiod's settings would go
    mirror_services: list[Obj] = field(default_factory=list)
    mirror_workloads: list[Obj] = field(default_factory=list)
    mirror_configmaps: list[Obj] = field(default_factory=list)

    @classmethod
    def of(cls, streams: list[ManifestStream]) -> Inventory:
        inventory = cls()
        for stream in streams:
            for document in stream.documents:
                for obj in _objects(document, stream.source):
                    inventory._add(obj)
        return inventory

    def settings(self, name: str) -> list[Setting]:
        return [s for s in self.istiod if s.name == name]

    def _add(self, obj: Obj) -> None:
        self.objects.append(obj)
        kind, group, data = obj.kind, obj.api_group, obj.data
        mirror = dict([MIRROR_LABEL]).items() <= obj.labels.items()
        if "kind" not in data and "apiVersion" not in data:
            self._helm_values(obj)
        elif kind == "Service" and group == "" and obj.name:
            self.services[(obj.name, obj.namespace or "default")] = obj
            if (mirror or obj.name == MIRROR_LABEL[1]) and obj.spec.get("clusterIP") != "None":
                self.mirror_services.append(obj)
        elif kind == "Namespace" and group == "" and obj.name:
            self.namespace_labels[obj.name] = obj.labels
        elif kind == "PeerAuthentication" and group == "security.istio.io":
            self.peer_authentications.append(obj)
        elif kind == "AuthorizationPolicy" and group == "security.istio.io":
            self.authorization_policies.append(obj)
        elif kind == "ConfigMap" and group == "" and isinstance(
            (mapping(data, "data") or {}).get("config.yaml"), str
        ):
            if mirror or "jwks-mirror" in (obj.name or ""):
                self.mirror_configmaps.append(obj)
        elif kind == "IstioOperator" and group == "install.istio.io":
            self._istio_operator(obj)
        elif kind == "Deployment" and group == "apps":
            template = mapping(obj.spec, "template")
            pod_labels = labels_of(mapping(template, "metadata"))
            if mirror or dict([MIRROR_LABEL]).items() <= pod_labels.items():
                self.mirror_workloads.append(obj)
            if (obj.name or "").startswith("istiod") or pod_labels.get("app") == "istiod":
                self._istiod_deployment(obj, template)

    def _istiod_deployment(self, obj: Obj, template: dict[Any, Any] | None) -> None:
        self.istiod_sources.append(obj)
        containers = (mapping(template, "spec") or {}).get("containers")
        for container in containers if isinstance(containers, list) else []:
            if isinstance(container, dict) and container.get("name") in ("discovery", None):
                self._env_list(obj, container.get("env"), "Deployment env")

    def _istio_operator(self, obj: Obj) -> None:
        self.istiod_sources.append(obj)
        env = mapping(obj.spec, "values", "pilot", "env")
        for key, value in (env or {}).items():
            self._set(obj, key, value, obj.line_of(env, key), "IstioOperator spec.values.pilot.env")
        k8s = mapping(obj.spec, "components", "pilot", "k8s")
        self._env_list(obj, (k8s or {}).get("env"), "IstioOperator spec.components.pilot.k8s.env")

    def _helm_values(self, obj: Obj) -> None:
        if mapping(obj.data, "pilot") is not None:
            self.istiod_sources.append(obj)
        env = mapping(obj.data, "pilot", "env")
        for key, value in (env or {}).items():
            self._set(obj, key, value, obj.line_of(env, key), "Helm values pilot.env")

    def _env_list(self, obj: Obj, env: object, origin: str) -> None:
        for entry in env if isinstance(env, list) else []:
            if isinstance(entry, dict):
                self._set(obj, entry.get("name"), entry.get("value"), obj.line_of(entry), origin)

    def _set(self, obj: Obj, key: object, value: object, line: int | None, origin: str) -> None:
        if key not in ISTIOD_KEYS or value is None or isinstance(value, (dict, list)):
            return
        self.istiod.append(Setting(str(key), str(value), obj, line, origin))


def _objects(document: Document, source: str) -> Iterator[Obj]:
    """Every object of a document, looking inside ``kind: *List`` (each node once)."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(document.data, 0)]
    while stack:
        data, depth = stack.pop(0)
        if not isinstance(data, dict) or id(data) in seen:
            continue
        seen.add(id(data))
        kind, items = data.get("kind"), data.get("items")
        lc = getattr(data, "lc", None)
        line = document.line + int(lc.line) + 1 if lc is not None else None
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            if depth < _MAX_DEPTH:
                stack.extend((item, depth + 1) for item in items)
            continue
        yield Obj(data, source, line)
