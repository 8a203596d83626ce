"""Rewriting: point in-mesh ``jwksUri`` rules at the mirror, undo it, and write the mirror's
``issuers:`` from the same run.

PURE-ish: round-trip trees in, edited trees out, no aiohttp; the only file read is the mirror
config :func:`read_config` is given. :class:`~jwks_mirror.gitops.mesh.MeshPolicy` says which
URLs are in-mesh; :func:`plan_rewrite` finds the rules and names their upstreams,
:func:`apply_rewrite` edits them (the originals go into the
:data:`~jwks_mirror.gitops.manifests.ANNOTATION` annotation; :mod:`~jwks_mirror.gitops.restoring`
puts them back), :func:`merge_config` adds the matching ``issuers:`` entries to a mirror
config.

The manifests are pull-request content: the annotation is as forgeable as the rest, so it
never makes a rule mirrored (only a ``jwksUri`` under the mirror's URL does), and an original
taken from it is checked (:func:`original_upstream`) before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import well_known_url
from jwks_mirror.core.errors import ManifestError
from jwks_mirror.gitops.files import Output, read_text
from jwks_mirror.gitops.manifests import (
    ANNOTATION,
    MAX_JWKS_URI,
    RuleRef,
    iter_rules,
    read_originals,
    write_originals,
)
from jwks_mirror.gitops.mesh import (
    MeshPolicy,
    Upstream,
    dns_label,
    http_url,
    mirror_jwks_uri,
    mirror_name,
    under_mirror,
)
from jwks_mirror.gitops.roundtrip import (
    ManifestStream,
    YamlNull,
    dump_yaml,
    parse_stream,
)

__all__ = [
    "Plan", "Target", "apply_rewrite", "known_names", "merge_config", "original_upstream",
    "plan_rewrite", "read_config",
]

# How a null jwksUri may have been spelled; anything else in {"null": ...} is not ours.
_NULL_SPELLINGS = frozenset({"", "~", "null", "Null", "NULL"})
# Every http(s) URL with a host: what restore() asks of an original (see there).


@dataclass(frozen=True)
class Target:
    """A rule to mirror (``mirrored`` False) or already mirrored, and its upstream."""

    ref: RuleRef
    upstream: Upstream
    mirrored: bool
    # Not mirrored although the annotation names this rule: its jwksUri is not the mirror's.
    annotated: bool = False


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
    mirror_url: str,
    known: dict[tuple[str, str], str] | None = None,
) -> Plan:
    """Find the in-mesh rules and name their upstreams.

    A rule counts as mirrored only when its ``jwksUri`` is under ``mirror_url`` (any spelling
    of the mirror's Service, any query string: ``pin`` adds ``?v=``) and the annotation holds
    its original, which must itself be an in-mesh http(s) URL (:func:`original_upstream`):
    the annotation is the manifest author's to write, so it never makes a rule mirrored on its
    own. Names come from ``known`` (an existing mirror config) and from already mirrored rules
    first, so the same upstream keeps its name; new upstreams are named in sorted order and
    get a hash suffix only when their ``<service>-<namespace>`` already belongs to another
    upstream. A rule shared by several resources (a YAML anchor) is planned once, or refused
    when the resources would need different upstreams for it.
    """
    names = dict(known or {})
    targets: list[Target] = []
    seen: dict[int, Target] = {}
    for stream in streams:
        for ref in iter_rules(stream):
            target = _classify(ref, policy, mirror_url, names)
            if target is None:
                continue
            first = seen.setdefault(id(ref.rule), target)
            if first is not target:
                if first.upstream.key != target.upstream.key:
                    raise ManifestError(
                        f"{ref.where}: this rule is shared (a YAML anchor) with "
                        f"{first.ref.where}, and the two resources need different upstreams "
                        "for it: write the rule out in each resource"
                    )
                continue
            targets.append(target)
    owners = {name: key for key, name in names.items()}
    fresh = {t.upstream.key: t.upstream for t in targets if t.upstream.key not in names}
    for key in sorted(fresh):
        base = fresh[key].base_name
        name = base if owners.get(base, key) == key else dns_label(base, salt="\0".join(key))
        names[key], owners[name] = name, key
    return Plan(targets, names)


def original_upstream(
    original: Any,
    *,
    rule: CommentedMap,
    policy: MeshPolicy,
    namespace: str | None,
    where: str,
    mirror_url: str | None = None,
) -> Upstream | None:
    """The upstream an annotation's ``original`` names, or a :class:`ManifestError`.

    The annotation is as forgeable as the rest of the manifest. A string original must be an
    in-mesh http(s) URL (printable, at most :data:`MAX_JWKS_URI` characters, not the mirror
    itself), or it would be copied into the mirror's config (``--config-out``) and fetched
    with the mirror's identity; ``null`` and ``{"null": spelling}`` (the rule had no
    ``jwksUri``, or a null one) need a null spelling YAML has. Returns None for a null
    original whose issuer is not an in-mesh URL (nothing for the mirror to fetch).
    """
    if isinstance(original, str):
        parts = http_url(original)
        upstream = None
        if parts is not None and original.isprintable() and len(original) <= MAX_JWKS_URI:
            upstream = policy.upstream(original, kind="jwks", namespace=namespace)
        if upstream is None:
            raise ManifestError(
                f"{where}: {ANNOTATION} holds {original!r} as the original jwksUri, which is "
                "not an in-mesh http(s) URL: refused (if the first run used --match, give the "
                "same --match)"
            )
        if mirror_url is not None and under_mirror(original, mirror_url, namespace=namespace):
            raise ManifestError(
                f"{where}: {ANNOTATION} holds the mirror's own URL {original!r} as the "
                "original jwksUri: refused"
            )
        return upstream
    if original is None or (
        isinstance(original, dict)
        and set(original) == {"null"}
        and isinstance(original["null"], str)
        and original["null"] in _NULL_SPELLINGS
    ):
        issuer = rule.get("issuer")
        if not isinstance(issuer, str) or http_url(issuer) is None:
            return None
        return policy.upstream(issuer, kind="discovery", namespace=namespace)
    raise ManifestError(f"{where}: {ANNOTATION} holds {original!r}, which is no original jwksUri")


def _classify(
    ref: RuleRef, policy: MeshPolicy, mirror_url: str, names: dict[tuple[str, str], str]
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
    if under_mirror(str(uri), mirror_url, namespace=ref.namespace):
        originals = read_originals(ref.resource, source=ref.source)
        if index not in originals:
            return None  # the mirror's own URL, written by hand: nothing to do
        upstream = original_upstream(
            originals[index], rule=rule, policy=policy, namespace=ref.namespace,
            where=ref.where, mirror_url=mirror_url,
        )
        if upstream is None:
            raise ManifestError(
                f"{ref.where}: {ANNOTATION} says the rule had no jwksUri, but its issuer "
                f"{str(issuer)!r} is not an in-mesh http(s) URL: refused"
            )
        names.setdefault(upstream.key, mirror_name(str(uri)) or upstream.base_name)
        return Target(ref, upstream, mirrored=True)
    # Not the mirror's URL, whatever the annotation says: judged by the URL itself.
    upstream = policy.upstream(str(uri), kind="jwks", namespace=ref.namespace)
    if upstream is None:
        return None
    annotated = index in read_originals(ref.resource, source=ref.source)
    return Target(ref, upstream, mirrored=False, annotated=annotated)


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



# -- the mirror config -----------------------------------------------------------------------


def read_config(path: Path) -> ManifestStream | None:
    """The mirror config at ``path`` as a round-trip stream, or None when there is no file."""
    if not path.exists():
        return None
    stream = parse_stream(read_text(path), source=str(path))
    documents = [d for d in stream.documents if d.data is not None]
    if len(documents) > 1 or (documents and not isinstance(documents[0].data, CommentedMap)):
        raise ManifestError(f"{path}: expected one YAML mapping (a jwks-mirror config)")
    return stream


def known_names(config: ManifestStream) -> dict[tuple[str, str], str]:
    """Upstream → name of the issuers an existing config already mirrors."""
    known: dict[tuple[str, str], str] = {}
    for entry in _issuer_list(config) or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        if entry.get("discovery") is True and isinstance(entry.get("issuer"), str):
            known.setdefault(("discovery", _discovery_upstream(entry)), entry["name"])
        elif isinstance(entry.get("jwks_uri"), str):
            known.setdefault(("jwks", entry["jwks_uri"]), entry["name"])
    return known


def _discovery_upstream(entry: dict[str, Any]) -> str:
    """The URL a discovery entry's upstream is known by: its issuer, or for an issuer named
    by a bare Service name, that issuer on its ``discovery_url``'s host (what
    :class:`~jwks_mirror.gitops.mesh.MeshPolicy` resolves it to)."""
    issuer = str(entry["issuer"])
    discovery_url = entry.get("discovery_url")
    if not isinstance(discovery_url, str) or http_url(discovery_url) is None:
        return issuer
    target = urlsplit(discovery_url)
    return urlunsplit(urlsplit(issuer)._replace(scheme=target.scheme, netloc=target.netloc))


def _issuer_list(config: ManifestStream) -> Any:
    documents = [d for d in config.documents if isinstance(d.data, CommentedMap)]
    return documents[0].data.get("issuers") if documents else None


def merge_config(path: Path, config: ManifestStream | None, plan: Plan) -> Output:
    """The merged config text, validated the way ``check-config`` would validate it.

    Entries whose name the config already has are left as they are (the name was taken from
    them); new ones are appended. Everything else in the file, comments included, stays.
    """
    entries = [CommentedMap(e) for e in plan.issuer_entries()]
    before = config.text if config is not None else ""
    documents = [d for d in config.documents if d.data] if config is not None else []
    if not documents:
        # A new (or empty, or comments-only) file: the layout of docs/configuration.md.
        data = CommentedMap(issuers=CommentedSeq(entries))
        after = before + ("\n" if before and not before.endswith("\n") else "")
        after += dump_yaml(data, (2, 4, 2))
    else:
        assert config is not None
        document = documents[0]
        document.fix_layout()
        issuers = document.data.get("issuers")
        if not isinstance(issuers, CommentedSeq):
            if issuers:
                raise ManifestError(f"{path}: issuers: expected a list")
            issuers = document.data["issuers"] = CommentedSeq()
        existing = {e.get("name") for e in issuers if isinstance(e, dict)}
        added = [e for e in entries if e["name"] not in existing]
        if added:
            issuers.fa.set_block_style()  # `issuers: []` would otherwise stay a flow list
            issuers.extend(added)
            document.changed = True
        after = config.render()
    # Offline: the file is written where the manifests live (a GitOps checkout, CI), not in
    # the pod, so the state directory and the files it names are not here to check.
    parse_settings(after, source=str(path), base_dir=path.parent, offline=True)
    return Output(path, str(path), before, after)
