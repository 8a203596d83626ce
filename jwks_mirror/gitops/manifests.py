"""RequestAuthentication manifests: find their JWT rules, and keep the originals of edited ones.

PURE-ish: round-trip trees in, edited trees out (:mod:`jwks_mirror.gitops.roundtrip` reads and
writes the text); no I/O, no aiohttp.

* **Walking** — :func:`iter_rules` visits every ``jwtRules`` entry of every
  ``RequestAuthentication`` (``security.istio.io`` v1 and v1beta1, inside ``kind: List`` too)
  with where it sits; ``rewrite`` and ``pin`` build on it.
* **The annotation** — a rewritten rule's original value goes into the :data:`ANNOTATION`
  annotation, a JSON object keyed by rule index (``null`` when the rule had no ``jwksUri``,
  ``{"null": spelling}`` when it was null, plus ``created`` naming a ``metadata``/``annotations``
  block it had to add), so ``restore`` needs nothing but the manifests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap

from jwks_mirror.core.errors import ManifestError
from jwks_mirror.gitops.edits import append_key, pop_key, replace_value, set_value
from jwks_mirror.gitops.roundtrip import Document, ManifestStream, YamlNull

__all__ = [
    "ANNOTATION", "API_VERSIONS", "MAX_JWKS_URI", "MAX_RULES", "RuleRef", "drop_originals",
    "iter_request_authentications", "iter_rules", "namespace_of", "read_originals",
    "write_originals",
]

ANNOTATION = "jwks-mirror.io/original-jwks-uri"
API_VERSIONS = frozenset({"security.istio.io/v1beta1", "security.istio.io/v1"})
MAX_JWKS_URI = 2048  # Istio's CRD: jwksUri maxLength
MAX_RULES = 4096  # Istio's CRD: jwtRules maxItems; the API server refuses more


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
    """Every RequestAuthentication in a document tree, looking inside lists of items.

    Each node is visited once, by identity, and without recursion: the items of a
    ``kind: List`` may alias each other (10 levels of 10 aliases stand for 10**10 items in
    under 1 KB), and aliased lists may nest as deep as the loader's depth bound allows."""
    seen: set[int] = set()
    pending: list[Any] = [data]
    while pending:
        node = pending.pop()
        if not isinstance(node, CommentedMap) or id(node) in seen:
            continue
        seen.add(id(node))
        kind = node.get("kind")
        items = node.get("items")
        # `kind: List` from kubectl, `RequestAuthenticationList` from API clients
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            if id(items) not in seen:
                seen.add(id(items))
                pending.extend(reversed(items))  # popped in file order
        elif kind == "RequestAuthentication":
            version = node.get("apiVersion")  # a list or mapping cannot be looked up in a set
            if isinstance(version, str) and version in API_VERSIONS:
                yield node


def namespace_of(resource: CommentedMap) -> str | None:
    meta = resource.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return str(namespace) if isinstance(namespace, str) and namespace else None


def iter_rules(stream: ManifestStream) -> Iterator[RuleRef]:
    """Visit each jwtRules entry of each RequestAuthentication in ``stream``, in file order.

    Each resource is visited once however often it is aliased, and in it a rule aliased into
    several places once, where it first appears; a rule shared by two resources is visited in
    each, since their namespaces may resolve it differently (the loader's bound on the nodes
    aliases stand for keeps those pairs few). More than :data:`MAX_RULES` rules in one
    resource is a :class:`ManifestError` naming the cap."""
    seen: set[tuple[int, int]] = set()
    for document in stream.documents:
        for resource in iter_request_authentications(document.data):
            spec = resource.get("spec")
            rules = spec.get("jwtRules") if isinstance(spec, dict) else None
            if not isinstance(rules, list):
                continue
            if len(rules) > MAX_RULES:
                line = int(resource.lc.line) + 1 + document.line
                raise ManifestError(
                    f"{stream.source}:{line}: more than {MAX_RULES} jwtRules in one "
                    "RequestAuthentication (max_rules, as Istio's CRD)"
                )
            namespace = namespace_of(resource)
            for index, rule in enumerate(rules):
                if isinstance(rule, CommentedMap) and (id(resource), id(rule)) not in seen:
                    seen.add((id(resource), id(rule)))
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
