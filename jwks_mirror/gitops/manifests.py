"""RequestAuthentication manifests: walk them, point in-mesh rules at the mirror, restore.

PURE-ish: round-trip trees in, edited trees out (:mod:`jwks_mirror.gitops.roundtrip` reads and
writes the text); no I/O, no aiohttp.

* **Walking** — :func:`iter_rules` visits every ``jwtRules`` entry of every
  ``RequestAuthentication`` (``security.istio.io`` v1 and v1beta1, inside ``kind: List`` too)
  with where it sits; ``pin`` builds on it.
* **Policy** — :class:`MeshPolicy` decides which URLs are in-mesh and what the mirror calls
  them; :func:`plan_rewrite`, :func:`apply_rewrite` and :func:`restore` edit the trees. The
  original values go into the :data:`ANNOTATION` annotation, a JSON object keyed by rule index
  (``null`` when the rule had no ``jwksUri``, ``{"null": spelling}`` when it was null, plus
  ``created`` naming a ``metadata``/``annotations`` block it had to add), so ``restore`` needs
  nothing but the manifests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ruamel.yaml.comments import CommentedMap

from jwks_mirror.configfields import DNS_LABEL as _LABEL
from jwks_mirror.gitops.roundtrip import (
    Document,
    ManifestError,
    ManifestStream,
    YamlNull,
    append_key,
    parse_stream,
    pop_key,
    replace_value,
    set_value,
)
from jwks_mirror.settings import well_known_url

__all__ = [
    "ANNOTATION", "API_VERSIONS", "MAX_JWKS_URI", "ManifestError", "ManifestStream",
    "MeshPolicy", "Plan", "RuleRef", "Target", "Upstream", "apply_rewrite", "dns_label",
    "http_url", "iter_request_authentications", "iter_rules", "mirror_jwks_uri", "mirror_name",
    "parse_stream", "plan_rewrite", "restore", "under_mirror",
]

ANNOTATION = "jwks-mirror.io/original-jwks-uri"
API_VERSIONS = frozenset({"security.istio.io/v1beta1", "security.istio.io/v1"})
MAX_JWKS_URI = 2048  # Istio's CRD: jwksUri maxLength

_NOT_LABEL = re.compile(r"[^a-z0-9]+")


# -- walking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleRef:
    """One ``spec.jwtRules[index]`` of a RequestAuthentication, with where it sits."""

    document: Document
    resource: CommentedMap
    rule: CommentedMap
    index: int
    namespace: str | None
    source: str

    @property
    def line(self) -> int:
        """1-based line of the rule in its file."""
        return int(self.rule.lc.line) + 1 + self.document.line

    def set_jwks_uri(self, value: str) -> None:
        """Replace an existing ``jwksUri`` in place (quoting and comments kept); marks the
        document changed. What ``pin`` needs to add ``?v=``."""
        self.document.fix_layout()
        replace_value(self.rule, "jwksUri", value)
        self.document.changed = True

    @property
    def where(self) -> str:
        meta = self.resource.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        ident = f"{self.namespace or '-'}/{name or '-'}"
        return f"{self.source}:{self.line}: {ident} spec.jwtRules[{self.index}]"


def iter_request_authentications(data: Any) -> Iterator[CommentedMap]:
    """Every RequestAuthentication in a document tree, looking inside lists of items."""
    if not isinstance(data, CommentedMap):
        return
    kind = data.get("kind")
    # `kind: List` from kubectl, `RequestAuthenticationList` from API clients
    if isinstance(kind, str) and kind.endswith("List") and isinstance(data.get("items"), list):
        for item in data["items"]:
            yield from iter_request_authentications(item)
    elif kind == "RequestAuthentication" and data.get("apiVersion") in API_VERSIONS:
        yield data


def namespace_of(resource: CommentedMap) -> str | None:
    meta = resource.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return str(namespace) if isinstance(namespace, str) and namespace else None


def iter_rules(stream: ManifestStream) -> Iterator[RuleRef]:
    """Visit each jwtRules entry of each RequestAuthentication in ``stream``, in file order."""
    for document in stream.documents:
        for resource in iter_request_authentications(document.data):
            spec = resource.get("spec")
            rules = spec.get("jwtRules") if isinstance(spec, dict) else None
            if not isinstance(rules, list):
                continue
            namespace = namespace_of(resource)
            for index, rule in enumerate(rules):
                if isinstance(rule, CommentedMap):
                    yield RuleRef(document, resource, rule, index, namespace, stream.source)


# -- the annotation --------------------------------------------------------------------------


def read_originals(resource: CommentedMap, *, source: str) -> dict[str, Any]:
    """The annotation's JSON object (empty when absent); malformed JSON is a ManifestError."""
    meta = resource.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    raw = annotations.get(ANNOTATION) if isinstance(annotations, dict) else None
    if raw is None or isinstance(raw, YamlNull):
        return {}
    try:
        value = json.loads(str(raw))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ManifestError(f"{source}: annotation {ANNOTATION} is not a JSON object: {raw!r}")
    return value


def write_originals(resource: CommentedMap, originals: dict[str, Any]) -> None:
    """Store ``originals``, creating ``metadata``/``annotations`` (and noting that) if needed."""
    originals = dict(originals)
    meta = resource.get("metadata")
    if not isinstance(meta, CommentedMap):
        meta = CommentedMap()
        if "metadata" in resource:  # null, or not a mapping: Kubernetes would reject it anyway
            resource["metadata"] = meta
        else:
            position = list(resource).index("kind") + 1 if "kind" in resource else len(resource)
            resource.insert(position, "metadata", meta)
        originals.setdefault("created", "metadata")
    annotations = meta.get("annotations")
    created = not isinstance(annotations, CommentedMap)
    if created:
        if isinstance(annotations, YamlNull):
            originals.setdefault("created", "annotations=" + annotations.text)
        else:
            originals.setdefault("created", "annotations")
        annotations = CommentedMap()
    rules = sorted((k for k in originals if k.isdigit()), key=int)
    ordered = {k: originals[k] for k in rules} | {
        k: v for k, v in originals.items() if not k.isdigit()
    }
    value = json.dumps(ordered, separators=(",", ":"))
    if not created:
        if ANNOTATION in annotations:
            annotations[ANNOTATION] = value
        else:
            append_key(annotations, ANNOTATION, value)
        return
    annotations[ANNOTATION] = value
    if "annotations" in meta:  # it was null
        set_value(meta, "annotations", annotations)
    else:
        append_key(meta, "annotations", annotations)


def drop_originals(resource: CommentedMap, originals: dict[str, Any]) -> None:
    """Remove the annotation and whatever ``write_originals`` created for it."""
    meta = resource["metadata"]
    chain = [(resource, "metadata"), (meta, "annotations"), (meta["annotations"], ANNOTATION)]
    pop_key(chain)
    created = str(originals.get("created", ""))
    if created == "metadata" and not meta["annotations"]:
        pop_key(chain[:2])
        if not meta:
            pop_key(chain[:1])
    elif created == "annotations" and not meta["annotations"]:
        pop_key(chain[:2])
    elif created.startswith("annotations=") and not meta["annotations"]:
        meta["annotations"] = YamlNull(created.removeprefix("annotations="))


# -- policy ----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Target:
    """A rule to mirror (``mirrored`` False) or already mirrored, and its upstream."""

    ref: RuleRef
    upstream: Upstream
    mirrored: bool


@dataclass
class Plan:
    """Every in-mesh rule of a run and the mirror name of each upstream."""

    targets: list[Target]
    names: dict[tuple[str, str], str]

    def pending(self) -> list[Target]:
        return [t for t in self.targets if not t.mirrored]

    def issuer_entries(self) -> list[dict[str, Any]]:
        """``issuers:`` entries for the mirror config, one per upstream, in input order."""
        entries: dict[tuple[str, str], dict[str, Any]] = {}
        for target in self.targets:
            up = target.upstream
            if up.key in entries:
                continue
            entry: dict[str, Any] = {"name": self.names[up.key]}
            issuer = target.ref.rule.get("issuer")
            if up.kind == "jwks":
                entry["jwks_uri"] = up.url
                if isinstance(issuer, str) and issuer.strip():
                    entry["issuer"] = str(issuer)
            elif up.issuer is not None:
                # The OIDC check wants the issuer as it names itself; only the fetch moves.
                entry["issuer"] = up.issuer
                entry["discovery"] = True
                entry["discovery_url"] = well_known_url(up.url)
            else:
                entry["issuer"] = up.url
                entry["discovery"] = True
            entries[up.key] = entry
        return list(entries.values())


def plan_rewrite(
    streams: list[ManifestStream],
    policy: MeshPolicy,
    *,
    mirror_url: str | None,
    known: dict[tuple[str, str], str] | None = None,
) -> Plan:
    """Find the in-mesh rules and name their upstreams.

    A rule counts as mirrored when the annotation holds its original, or its ``jwksUri`` is
    under ``mirror_url`` (any query string: ``pin`` adds ``?v=``). Names come from ``known``
    (an existing mirror config) and from already mirrored rules first, so the same upstream
    keeps its name; new upstreams are named in sorted order and get a hash suffix only when
    their ``<service>-<namespace>`` already belongs to another upstream.
    """
    names = dict(known or {})
    targets: list[Target] = []
    for stream in streams:
        for ref in iter_rules(stream):
            target = _classify(ref, policy, mirror_url, names)
            if target is not None:
                targets.append(target)
    owners = {name: key for key, name in names.items()}
    fresh = {t.upstream.key: t.upstream for t in targets if t.upstream.key not in names}
    for key in sorted(fresh):
        base = fresh[key].base_name
        name = base if owners.get(base, key) == key else dns_label(base, salt="\0".join(key))
        names[key], owners[name] = name, key
    return Plan(targets, names)


def _classify(
    ref: RuleRef, policy: MeshPolicy, mirror_url: str | None, names: dict[tuple[str, str], str]
) -> Target | None:
    rule, index = ref.rule, str(ref.index)
    if rule.get("jwks"):
        return None  # inline keys: istiod fetches nothing
    issuer = rule.get("issuer")
    uri = rule.get("jwksUri")
    if uri is None or isinstance(uri, YamlNull):  # istiod runs OIDC discovery on the issuer
        if http_url(issuer) is None:
            return None
        upstream = policy.upstream(str(issuer), kind="discovery", namespace=ref.namespace)
        return Target(ref, upstream, mirrored=False) if upstream else None
    if http_url(uri) is None:
        raise ManifestError(f"{ref.where}.jwksUri: not an http(s) URL: {str(uri)!r}")
    originals = read_originals(ref.resource, source=ref.source)
    if index in originals:
        original = originals[index]
        if isinstance(original, str):
            upstream = policy.upstream(original, kind="jwks", namespace=ref.namespace)
        else:
            upstream = policy.upstream(str(issuer), kind="discovery", namespace=ref.namespace)
        if upstream is None:  # edited by hand since; --match may differ from the first run
            upstream = Upstream("jwks", str(original or issuer), "upstream", "unknown")
        names.setdefault(upstream.key, mirror_name(str(uri)) or upstream.base_name)
        return Target(ref, upstream, mirrored=True)
    if mirror_url is not None and under_mirror(str(uri), mirror_url, namespace=ref.namespace):
        return None  # the mirror's own URL, written by hand: nothing to do
    upstream = policy.upstream(str(uri), kind="jwks", namespace=ref.namespace)
    return Target(ref, upstream, mirrored=False) if upstream else None


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


def apply_rewrite(plan: Plan, *, mirror_url: str) -> int:
    """Point every pending rule at the mirror, keeping originals; returns how many changed."""
    for target in plan.pending():
        ref = target.ref
        new = mirror_jwks_uri(mirror_url, plan.names[target.upstream.key])
        if len(new) > MAX_JWKS_URI:
            raise ManifestError(f"{ref.where}: mirror URL longer than {MAX_JWKS_URI} characters")
        originals = read_originals(ref.resource, source=ref.source)
        ref.document.fix_layout()
        rule = ref.rule
        old = rule.get("jwksUri")
        if old is None:  # absent: istiod ran discovery; put the new key after the issuer
            originals[str(ref.index)] = None
            keys = list(rule)
            rule.insert(keys.index("issuer") + 1 if "issuer" in keys else len(keys), "jwksUri", new)
        else:
            kept = {"null": old.text} if isinstance(old, YamlNull) else str(old)
            originals[str(ref.index)] = kept
            ref.set_jwks_uri(new)
        write_originals(ref.resource, originals)
        ref.document.changed = True
    return len(plan.pending())


def restore(stream: ManifestStream) -> int:
    """Put back every value the annotation holds and remove it; returns resources restored."""
    count = 0
    for document in stream.documents:
        for resource in iter_request_authentications(document.data):
            originals = read_originals(resource, source=stream.source)
            if not originals:
                continue
            document.fix_layout()
            spec = resource.get("spec")
            rules = spec.get("jwtRules") if isinstance(spec, dict) else None
            for key, original in originals.items():
                if not key.isdigit():
                    continue
                if not isinstance(rules, list) or int(key) >= len(rules):
                    raise ManifestError(
                        f"{stream.source}:{document.line + 1}: {ANNOTATION} names rule {key}, "
                        "which does not exist"
                    )
                rule = rules[int(key)]
                if original is None:
                    if "jwksUri" in rule:
                        pop_key([(rule, "jwksUri")])
                elif isinstance(original, dict):
                    replace_value(rule, "jwksUri", YamlNull(str(original.get("null", ""))))
                else:
                    replace_value(rule, "jwksUri", str(original))
            drop_originals(resource, originals)
            document.changed = True
            count += 1
    return count
