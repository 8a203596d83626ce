"""RequestAuthentication manifests on round-trip YAML: read, walk, rewrite, restore.

PURE-ish: text in, text out, no I/O and no aiohttp. Two layers:

* **Round trip** — :func:`parse_stream` splits a multi-document YAML text into
  :class:`Document` objects, each holding its verbatim text and a ruamel.yaml round-trip tree.
  A document nobody marks ``changed`` renders as its original bytes; a changed one is dumped by
  ruamel.yaml with the indentation layout that reproduces its original text, so comments, key
  order, quoting and blank lines survive. :func:`iter_rules` visits every ``jwtRules`` entry of
  every ``RequestAuthentication`` (inside ``kind: List`` too); ``pin`` builds on the same two.
* **Policy** — :class:`MeshPolicy` decides which URLs are in-mesh and what the mirror calls
  them; :func:`plan_rewrite`, :func:`apply_rewrite` and :func:`restore` edit the trees. The
  original values go into the :data:`ANNOTATION` annotation, a JSON object keyed by rule index
  (``null`` when the rule had no ``jwksUri``), so ``restore`` needs nothing but the manifests.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import ScalarString
from ruamel.yaml.tokens import CommentToken

from jwks_mirror.errors import ConfigError

ANNOTATION = "jwks-mirror.io/original-jwks-uri"
API_VERSIONS = frozenset({"security.istio.io/v1beta1", "security.istio.io/v1"})
MAX_JWKS_URI = 2048  # Istio's CRD: jwksUri maxLength

# Layouts (mapping indent, sequence indent, dash offset) tried in order: kubectl's output
# first, then the common hand-written styles. The first that reproduces a document is used.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NOT_LABEL = re.compile(r"[^a-z0-9]+")

_LAYOUTS = ((2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (4, 4, 0), (3, 3, 0))


class ManifestError(ConfigError):
    """A manifest cannot be read or processed; the message starts with ``file:line``."""


# -- round trip ------------------------------------------------------------------------------


class YamlNull:
    """A YAML null that remembers its spelling (``null``, ``~`` or nothing) for the dump.

    ruamel.yaml writes every None the same way; kubectl prints ``creationTimestamp: null``
    while people write ``key:``, and both must survive a rewrite.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, YamlNull)

    def __hash__(self) -> int:
        return hash(None)


class _Constructor(RoundTripConstructor):
    def construct_spelled_null(self, node: ScalarNode) -> YamlNull:
        return YamlNull(str(node.value))


class _Representer(RoundTripRepresenter):
    def represent_spelled_null(self, data: YamlNull) -> ScalarNode:
        node: ScalarNode = self.represent_scalar("tag:yaml.org,2002:null", data.text)
        return node


_Constructor.add_constructor("tag:yaml.org,2002:null", _Constructor.construct_spelled_null)
_Representer.add_representer(YamlNull, _Representer.represent_spelled_null)


@functools.lru_cache(maxsize=len(_LAYOUTS) + 1)
def _yaml(layout: tuple[int, int, int] = _LAYOUTS[0]) -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.Constructor = _Constructor
    yaml.Representer = _Representer
    yaml.preserve_quotes = True
    # Never fold: kubectl's last-applied-configuration annotation is one very long line.
    yaml.width = 1 << 30
    mapping, sequence, offset = layout
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def dump_yaml(data: Any, layout: tuple[int, int, int] = _LAYOUTS[0]) -> str:
    """Round-trip dump of ``data``; ``layout`` is (mapping indent, sequence indent, offset)."""
    buffer = io.StringIO()
    _yaml(layout).dump(data, buffer)
    return buffer.getvalue()


def yaml_error(exc: YAMLError, source: str, line_offset: int = 0) -> ManifestError:
    """``file:line:col: problem`` for a ruamel.yaml error (lines and columns from 1)."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            line, col = mark.line + 1 + line_offset, mark.column + 1
            return ManifestError(f"{source}:{line}:{col}: {problem}")
        return ManifestError(f"{source}: {problem}")
    return ManifestError(f"{source}: invalid YAML: {' '.join(str(exc).split())[:200]}")


@dataclass
class Document:
    """One document of a stream: verbatim text around a round-trip tree.

    ``render()`` is ``prefix + body`` unless ``changed`` is set, in which case the body is
    dumped from ``data`` with ``layout``; without one, the layout that reproduces the original
    body is searched for (``normalised`` tells if none did). ``line`` is the 0-based line of
    ``body`` in its file.
    """

    prefix: str
    body: str
    line: int
    data: Any
    changed: bool = False
    layout: tuple[int, int, int] | None = None
    normalised: bool = False

    def render(self) -> str:
        if not self.changed:
            return self.prefix + self.body
        layout = self.layout or self.search_layout()
        text = dump_yaml(self.data, layout)
        if not self.body.endswith("\n"):
            text = text.removesuffix("\n")
        return self.prefix + (text.replace("\n", "\r\n") if _is_crlf(self.body) else text)

    def search_layout(self) -> tuple[int, int, int]:
        """The first layout whose dump of the original body is that body (costs a parse)."""
        body = self.body.replace("\r\n", "\n")
        wanted = body if body.endswith("\n") else body + "\n"
        fresh = _yaml().load(body)
        layout = next((lay for lay in _LAYOUTS if dump_yaml(fresh, lay) == wanted), None)
        self.normalised = layout is None
        return layout or guess_layout(self.body)


def _is_crlf(text: str) -> bool:
    # Windows line endings: ruamel.yaml writes "\n", so they are put back after the dump.
    return "\r\n" in text


def guess_layout(body: str) -> tuple[int, int, int]:
    """A cheap guess at a body's layout from its first nested mapping and block sequence."""
    mapping = sequence_offset = None
    parent: int | None = None  # indentation of the last line that opened a block
    for line in body.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if parent is not None and indent > parent:
            if stripped.startswith("- ") and sequence_offset is None:
                sequence_offset = indent - parent
            elif not stripped.startswith("- ") and mapping is None:
                mapping = indent - parent
        if mapping is not None and sequence_offset is not None:
            break
        parent = indent if stripped.rstrip().endswith(":") else None
    mapping = mapping or 2
    offset = sequence_offset if sequence_offset is not None else 0
    return (mapping, offset + 2, offset)


@dataclass
class ManifestStream:
    """A parsed file (or stdin): its documents in order and the text after the last one."""

    source: str
    text: str
    documents: list[Document] = field(default_factory=list)
    trailer: str = ""

    def render(self) -> str:
        return "".join(d.render() for d in self.documents) + self.trailer

    @property
    def changed(self) -> bool:
        return any(d.changed for d in self.documents)


# YAML forbids a line starting with a document marker inside any scalar, so these lines split
# a stream into documents without parsing it twice.
_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)[ \t]*", re.MULTILINE)
_NO_CONTENT = re.compile(r"(?:[ \t]*(?:[#%][^\n]*)?(?:\n|$))*")


def parse_stream(text: str, *, source: str) -> ManifestStream:
    """Split ``text`` into documents and load each one; YAML errors become ``file:line:col``.

    Text that holds no content (markers, comments, directives, blank lines) is kept verbatim
    in the prefix of the next document or in the trailer.
    """
    stream = ManifestStream(source=source, text=text)
    prefix_from = body_from = 0
    line = counted_to = 0
    for match in [*_MARKER.finditer(text), None]:
        body_to = match.start() if match else len(text)
        body = text[body_from:body_to]
        if _NO_CONTENT.fullmatch(body) is None:
            line += text.count("\n", counted_to, body_from)
            counted_to = body_from
            try:
                data = _yaml().load(body.replace("\r\n", "\n") if _is_crlf(body) else body)
            except YAMLError as exc:
                raise yaml_error(exc, source, line) from exc
            stream.documents.append(Document(text[prefix_from:body_from], body, line, data))
            prefix_from = body_to
        if match is None:
            break
        # The marker line belongs to the next prefix; so does the rest of a `...` line, while
        # content after `--- ` on the same line (`--- !tag`, `--- {}`) starts the next body.
        rest = text.find("\n", match.end())
        line_end = len(text) if rest < 0 else rest + 1
        if text.startswith("---", match.start()) and text[match.end() : line_end].strip():
            body_from = match.end()
        else:
            body_from = line_end
    stream.trailer = text[prefix_from:]
    return stream


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

    @property
    def where(self) -> str:
        meta = self.resource.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        ident = f"{self.namespace or '-'}/{name or '-'}"
        return f"{self.source}:{self.line}: {ident} spec.jwtRules[{self.index}]"


def iter_request_authentications(data: Any) -> Iterator[CommentedMap]:
    """Every RequestAuthentication in a document tree, looking inside ``kind: List``."""
    if not isinstance(data, CommentedMap):
        return
    if data.get("kind") == "List" and isinstance(data.get("items"), list):
        for item in data["items"]:
            yield from iter_request_authentications(item)
    elif data.get("kind") == "RequestAuthentication" and data.get("apiVersion") in API_VERSIONS:
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
            _append_key(annotations, ANNOTATION, value)
        return
    annotations[ANNOTATION] = value
    if "annotations" in meta:  # it was null: what followed it now follows the new block
        moved = _following(meta, "annotations", take=True)
        meta["annotations"] = annotations
        if moved:
            _attach_following(meta, "annotations", moved)
    else:
        _append_key(meta, "annotations", annotations)


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


# A comment or blank line after a value is stored with that value in ruamel.yaml. When a key is
# added after it, or removed, these helpers move that "following" text so it stays where it was
# in the file: otherwise a rewrite would put a blank line inside a block, and a restore would
# drop a comment that happened to follow the annotation.


def _following(mapping: CommentedMap, key: Any, *, take: bool) -> str:
    """The comment lines after ``mapping[key]``'s line (not its end-of-line comment)."""
    entry = mapping.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is None or not isinstance(token.value, str) or "\n" not in token.value:
        return ""
    eol, rest = token.value.split("\n", 1)
    if take and rest:
        if eol:
            token.value = eol + "\n"
        else:
            entry[2] = None
    return rest


def _attach_following(mapping: CommentedMap, key: Any, text: str) -> None:
    while True:  # the text follows the last line of a nested block mapping
        value = mapping[key]
        if not isinstance(value, CommentedMap) or not value or value.fa.flow_style():
            break
        mapping, key = value, list(value)[-1]
    entry = mapping.ca.items.setdefault(key, [None, None, None, None])
    if entry[2] is None:
        entry[2] = CommentToken("\n" + text, CommentMark(0), None)
    else:
        entry[2].value = entry[2].value + text


def _last_leaf(mapping: CommentedMap) -> tuple[CommentedMap, Any] | None:
    while mapping:
        key = list(mapping)[-1]
        value = mapping[key]
        if isinstance(value, CommentedSeq):
            return None  # comments after a block sequence live elsewhere; leave them
        if not isinstance(value, CommentedMap) or not value or value.fa.flow_style():
            return mapping, key
        mapping = value
    return None


def _append_key(mapping: CommentedMap, key: str, value: Any) -> None:
    """``mapping[key] = value`` as the last key, keeping what followed the old last line."""
    leaf = _last_leaf(mapping)
    moved = _following(*leaf, take=True) if leaf else ""
    mapping[key] = value
    if moved:
        _attach_following(mapping, key, moved)


def pop_key(chain: list[tuple[CommentedMap, Any]]) -> None:
    """Delete ``chain[-1]`` (a mapping and key; earlier entries are its ancestors), keeping
    the comment lines that followed it in the file: before the next key, or else after the
    previous one."""
    mapping, key = chain[-1]
    value = mapping[key]
    if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
        leaf = _last_leaf(value)
        moved = _following(*leaf, take=False) if leaf else ""
    else:
        moved = _following(mapping, key, take=False)
    keys = list(mapping)
    position = keys.index(key)
    del mapping[key]
    mapping.ca.items.pop(key, None)
    if not moved:
        return
    for ancestor, ancestor_key in reversed(chain):
        later = list(ancestor)
        if ancestor_key in ancestor:
            after = later[later.index(ancestor_key) + 1 :]
        else:  # the key just deleted
            after = later[position:]
        if after:
            entry = ancestor.ca.items.setdefault(after[0], [None, None, None, None])
            entry[1] = [CommentToken(moved, CommentMark(0), None), *(entry[1] or [])]
            return
    if position > 0:
        _attach_following(mapping, keys[position - 1], moved)


def replace_value(mapping: CommentedMap, key: str, new: str | YamlNull) -> None:
    """Set ``mapping[key]`` to ``new`` in the old value's quoting style.

    An end-of-line comment moves by the change in length, keeping its gap: ruamel.yaml would
    otherwise write it one space after the longer value, and a restore could not put it back.
    """
    old = mapping.get(key)
    mapping[key] = new if isinstance(new, YamlNull) else styled(old, new)
    comment = mapping.ca.items.get(key)
    token = comment[2] if comment and len(comment) > 2 else None
    if token is not None and getattr(token, "start_mark", None) is not None:
        token.column = max(0, token.column + _width(new) - _width(old))


def _width(value: Any) -> int:
    return len(value.text) if isinstance(value, YamlNull) else len(str(value))


def styled(old: Any, new: str) -> Any:
    """``new`` in the quoting style of ``old``, so restore gives the original bytes back."""
    if isinstance(old, ScalarString):
        return type(old)(new)
    return new


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
            return Upstream(kind, urlunsplit(parts._replace(netloc=netloc)), host, local_ns)
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
        names.setdefault(upstream.key, _mirror_name(str(uri)) or upstream.base_name)
        return Target(ref, upstream, mirrored=True)
    if mirror_url is not None and str(uri).startswith(mirror_url + "/"):
        return None  # the mirror's own URL, written by hand: nothing to do
    upstream = policy.upstream(str(uri), kind="jwks", namespace=ref.namespace)
    return Target(ref, upstream, mirrored=False) if upstream else None


def _mirror_name(uri: str) -> str | None:
    segments = urlsplit(uri).path.split("/")
    if len(segments) >= 3 and segments[-1] == "jwks.json" and _LABEL.fullmatch(segments[-2]):
        return segments[-2]
    return None


def mirror_jwks_uri(mirror_url: str, name: str) -> str:
    return f"{mirror_url}/{name}/jwks.json"


def apply_rewrite(plan: Plan, *, mirror_url: str) -> int:
    """Point every pending rule at the mirror, keeping originals; returns how many changed."""
    for target in plan.pending():
        ref = target.ref
        new = mirror_jwks_uri(mirror_url, plan.names[target.upstream.key])
        if len(new) > MAX_JWKS_URI:
            raise ManifestError(f"{ref.where}: mirror URL longer than {MAX_JWKS_URI} characters")
        originals = read_originals(ref.resource, source=ref.source)
        rule = ref.rule
        old = rule.get("jwksUri")
        if isinstance(old, YamlNull):
            originals[str(ref.index)] = {"null": old.text}
            replace_value(rule, "jwksUri", new)
        elif old is None:
            originals[str(ref.index)] = None
            keys = list(rule)
            rule.insert(keys.index("issuer") + 1 if "issuer" in keys else len(keys), "jwksUri", new)
        else:
            originals[str(ref.index)] = str(old)
            replace_value(rule, "jwksUri", new)
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
