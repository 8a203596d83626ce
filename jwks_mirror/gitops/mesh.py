"""Which URLs are in-mesh, and which are the mirror's own.

PURE: strings in, answers out; no YAML, no I/O. The rewrite asks :class:`MeshPolicy` whether
a ``jwksUri`` (or an issuer istiod would run OIDC discovery on) is served inside the mesh,
where istiod cannot fetch it, and what the mirror should call that upstream; ``rewrite`` and
``pin`` ask :func:`under_mirror` and :func:`mirror_name` whether a URL already points at the
mirror, however the mirror's Service is spelled.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from jwks_mirror.core.config.fields import DNS_LABEL as _LABEL

__all__ = [
    "DEFAULT_MIRROR_URL", "MeshPolicy", "Upstream", "dns_label", "http_url", "mirror_jwks_uri",
    "mirror_name", "under_mirror",
]

_NOT_LABEL = re.compile(r"[^a-z0-9]+")

# The Service deploy/ installs: the mirror ``rewrite --check`` and ``pin`` compare against
# when no --mirror-url is given (a rule counts as mirrored only if its jwksUri is the mirror's).
DEFAULT_MIRROR_URL = "http://jwks-mirror.jwks-mirror.svc.cluster.local:8080"


def http_url(value: object) -> SplitResult | None:
    """``value`` split as an http(s) URL with a host, or None if it is not one."""
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


def dns_label(text: str, *, salt: str | None = None) -> str:
    """A DNS label (RFC 1123, at most 63) from ``text``; ``salt`` adds a short stable hash."""
    label = _NOT_LABEL.sub("-", text.lower()).strip("-") or "upstream"
    if salt is None and len(label) <= 63:
        return label
    digest = hashlib.sha256((salt or text).encode()).hexdigest()[:8]
    return f"{label[:54].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class Upstream:
    """What the mirror fetches for a rule: a JWKS URL, or an OIDC issuer (``discovery``).

    ``url`` is what the mirror's own sidecar can resolve: a single-label host, which istiod
    would resolve in the resource's namespace, is written out in full.
    """

    kind: str  # "jwks" | "discovery"
    url: str
    service: str
    namespace: str
    # A discovery issuer named by a bare Service name (``http://auth:8080``): the name the
    # manifest (and the issuer's discovery document) uses, while ``url`` is where to fetch.
    issuer: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.url)

    @property
    def base_name(self) -> str:
        return dns_label(f"{self.service}-{self.namespace}")


class MeshPolicy:
    """Which URLs are in-mesh: ``*.svc``, ``*.svc.<cluster-domain>``, a bare service name in
    the resource's namespace, or anything ``match`` finds in the URL."""

    def __init__(
        self, *, cluster_domain: str = "cluster.local", match: re.Pattern[str] | None = None
    ) -> None:
        self.cluster_domain = cluster_domain.strip(".").lower()
        self.match = match
        self._suffixes = tuple(
            dict.fromkeys((".svc", ".svc.cluster.local", f".svc.{self.cluster_domain}"))
        )

    def upstream(self, url: str, *, kind: str, namespace: str | None) -> Upstream | None:
        """The upstream behind ``url`` if it is in-mesh, else None (istiod can reach it)."""
        parts = http_url(url)
        if parts is None or parts.hostname is None:
            return None
        host = parts.hostname.rstrip(".")
        local_ns = namespace or "default"
        if _LABEL.fullmatch(host) and host != "localhost":
            fqdn = f"{host}.{local_ns}.svc.{self.cluster_domain}"
            netloc = fqdn + (f":{parts.port}" if parts.port is not None else "")
            issuer = url if kind == "discovery" else None
            return Upstream(
                kind, urlunsplit(parts._replace(netloc=netloc)), host, local_ns, issuer
            )
        for suffix in self._suffixes:
            if host.endswith(suffix):
                labels = host.removesuffix(suffix).split(".")
                service_ns = labels[1] if len(labels) > 1 else local_ns
                return Upstream(kind, url, labels[0], service_ns)
        if self.match is not None and self.match.search(url):
            return Upstream(kind, url, host.split(".")[0], local_ns)
        return None


def _service_origin(
    parts: SplitResult, *, namespace: str | None
) -> tuple[str, tuple[str, ...], int | None]:
    """``(scheme, host, port)`` where every in-cluster spelling of a Service has one host:
    ``svc``, ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.<any cluster domain>`` all become
    ``(svc, ns)`` (a bare name is in ``namespace``, ``default`` without one, as for
    :class:`MeshPolicy`); the port is filled in from the scheme."""
    host = (parts.hostname or "").rstrip(".")
    labels = host.split(".")
    key: tuple[str, ...] = (host,)
    if all(_LABEL.fullmatch(label) for label in labels[:2]):
        if len(labels) == 1 and host != "localhost":
            key = (host, namespace or "default")
        elif len(labels) == 2 or (len(labels) >= 3 and labels[2] == "svc"):
            key = (labels[0], labels[1])
    port = parts.port if parts.port is not None else {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, key, port


def under_mirror(uri: str, mirror_url: str, *, namespace: str | None) -> bool:
    """True when ``uri`` is under ``mirror_url`` however either spells the mirror's Service.

    ``http://jwks-mirror.jwks-mirror.svc:8080`` and
    ``http://jwks-mirror.jwks-mirror.svc.cluster.local:8080/`` are one mirror; so are the
    default port written out or left off. Any other host (an IP, an external name) must match
    exactly, case aside. The path must continue ``mirror_url``'s own path at a ``/``.
    """
    parts, mirror = http_url(uri), http_url(mirror_url)
    if parts is None or mirror is None:
        return False
    if _service_origin(parts, namespace=namespace) != _service_origin(mirror, namespace=namespace):
        return False
    return parts.path.startswith(mirror.path.rstrip("/") + "/")


def mirror_name(uri: str) -> str | None:
    """The issuer name in a mirror URL (``.../<name>/jwks.json[?v=...]``), else None."""
    segments = urlsplit(uri).path.split("/")
    if len(segments) >= 3 and segments[-1] == "jwks.json" and _LABEL.fullmatch(segments[-2]):
        return segments[-2]
    return None


def mirror_jwks_uri(mirror_url: str, name: str) -> str:
    """Where the mirror publishes ``name``: ``<mirror_url>/<name>/jwks.json``."""
    return f"{mirror_url}/{name}/jwks.json"
