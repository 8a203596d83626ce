"""What ``analyze`` reports and the context its checks share.

PURE: no I/O. :data:`CODES` is the list of stable codes (documented in ``docs/analyze.md``); a
:class:`Finding` is one of them on one object, with file, line, message and fix, and prints
as two lines with every string from the input escaped (``text.inert``). :class:`Mirror` is
where the mirror is, as far as the input tells; :class:`Context` carries the input, the policy
and the findings through the checks of :mod:`~jwks_mirror.gitops.analyze` and
:mod:`~jwks_mirror.gitops.mirrorchecks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jwks_mirror.core.config.model import Settings
from jwks_mirror.core.text import inert
from jwks_mirror.gitops.inventory import MIRROR_LABEL, Inventory, Obj, mapping, text
from jwks_mirror.gitops.manifests import RuleRef
from jwks_mirror.gitops.mesh import MeshPolicy, http_url, under_mirror

__all__ = [
    "CODES", "NO_MIRROR", "SEVERITIES", "AtMirror", "Context", "Finding", "Mirror",
]

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
        where = inert(self.file or "-") + (f":{self.line}" if self.line else "")
        return (
            f"{where}: {self.severity} {self.code} {inert(self.object)}: {inert(self.message)}"
            f"\n    fix: {inert(self.fix)}"
        )


@dataclass(frozen=True)
class Mirror:
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
class Context:
    inventory: Inventory
    policy: MeshPolicy
    assume_strict: bool
    mirror: Mirror
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


NO_MIRROR = Mirror((), 8080, None, ())
# The rules that read from the mirror, with their jwksUri.
AtMirror = list[tuple[RuleRef, str]]
