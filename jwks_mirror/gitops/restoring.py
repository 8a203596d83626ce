"""Restoring: put back the ``jwksUri`` values a rewrite recorded in the
:data:`~jwks_mirror.gitops.manifests.ANNOTATION` annotation, and prove the rendered text reads
back as them before anything is written.

Pure, like :mod:`~jwks_mirror.gitops.rewrite`: round-trip trees in, edited trees out. The
annotation is pull-request content, so each original is checked with
:func:`~jwks_mirror.gitops.rewrite.original_upstream` before it is written back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap

from jwks_mirror.core.errors import ManifestError
from jwks_mirror.gitops.edits import pop_key, replace_value
from jwks_mirror.gitops.manifests import (
    ANNOTATION,
    drop_originals,
    iter_request_authentications,
    namespace_of,
    read_originals,
)
from jwks_mirror.gitops.mesh import MeshPolicy
from jwks_mirror.gitops.rewrite import original_upstream
from jwks_mirror.gitops.roundtrip import (
    ManifestStream,
    YamlNull,
    guess_layout,
    parse_stream,
)

__all__ = ["Restored", "check_restored", "restore", "restores"]

_ANY_URL = MeshPolicy(match=re.compile(""))


@dataclass(frozen=True)
class Restored:
    """One value :func:`restore` put back: where (document, RequestAuthentication ordinal in
    it, rule index) and what (a string, None for no ``jwksUri``, or a :class:`YamlNull`)."""

    document: int
    resource: int
    rule: int
    value: str | YamlNull | None
    where: str


def _annotated_rule(rules: object, key: str, where: str) -> CommentedMap:
    """The rule the annotation's ``key`` names, or ManifestError when there is none."""
    if not isinstance(rules, list) or int(key) >= len(rules):
        raise ManifestError(f"{where}: {ANNOTATION} names rule {key}, which does not exist")
    rule = rules[int(key)]
    if not isinstance(rule, CommentedMap):
        raise ManifestError(f"{where}: {ANNOTATION} names rule {key}, not a mapping")
    return rule


def _restored_value(original: object) -> str | YamlNull | None:
    """The value to write back for an annotation's recorded original."""
    if original is None:
        return None
    if isinstance(original, dict):
        return YamlNull(str(original["null"]))
    return str(original)


def _put_back(
    rule: CommentedMap, entry: Restored, shared: dict[int, Restored], *, key: str
) -> bool:
    """Write ``entry``'s original into ``rule``; False when an earlier resource sharing the
    rule (a YAML anchor) already put back the same value, ManifestError when they disagree."""
    earlier = shared.get(id(rule))
    if earlier is not None:
        if _same(earlier.value, entry.value):
            return False
        raise ManifestError(
            f"{entry.where}: spec.jwtRules[{key}] is shared (a YAML anchor) with the "
            f"resource at {earlier.where}, and their {ANNOTATION} annotations "
            "disagree on its original: restore it by hand"
        )
    shared[id(rule)] = entry
    if entry.value is None:
        if "jwksUri" in rule:
            pop_key([(rule, "jwksUri")])
    else:
        replace_value(rule, "jwksUri", entry.value)
    return True


def restore(stream: ManifestStream, policy: MeshPolicy | None = None) -> list[Restored]:
    """Put back every value the annotation holds and remove it; returns what was put back.

    Each original is checked first (:func:`original_upstream`, with ``policy``): by default
    any printable http(s) URL, since restoring writes into the manifest only what its author
    could have written there anyway (``--check`` and ``--config-out``, which act on it, want
    an in-mesh one). A rule shared by
    several resources (a YAML anchor) is restored once when their annotations agree on it,
    and refused when they do not. :func:`check_restored` then proves the rendered text reads
    back as these values before anything is written.
    """
    policy = policy or _ANY_URL
    done: list[Restored] = []
    shared: dict[int, Restored] = {}
    for number, document in enumerate(stream.documents):
        for ordinal, resource in enumerate(iter_request_authentications(document.data)):
            originals = read_originals(resource, source=stream.source)
            if not originals:
                continue
            document.fix_layout()
            spec = resource.get("spec")
            rules = spec.get("jwtRules") if isinstance(spec, dict) else None
            where = f"{stream.source}:{document.line + 1}"
            for key, original in originals.items():
                if not key.isdigit():
                    continue
                rule = _annotated_rule(rules, key, where)
                original_upstream(
                    original, rule=rule, policy=policy, namespace=namespace_of(resource),
                    where=f"{where}: spec.jwtRules[{key}]",
                )
                entry = Restored(number, ordinal, int(key), _restored_value(original), where)
                if _put_back(rule, entry, shared, key=key):
                    done.append(entry)
            drop_originals(resource, originals)
            document.changed = True
    return done


def _same(a: str | YamlNull | None, b: str | YamlNull | None) -> bool:
    if isinstance(a, YamlNull) or isinstance(b, YamlNull):
        return isinstance(a, YamlNull) and isinstance(b, YamlNull) and a.text == b.text
    return a == b


def check_restored(stream: ManifestStream, rendered: str, restored: list[Restored]) -> None:
    """Parse ``rendered`` again and find every restored value in it, and no annotation; a
    :class:`ManifestError` otherwise, before anything is written. An original the YAML
    writer cannot write so that it reads back (a control character in a block scalar, say)
    is refused here, whatever let it through before."""
    try:
        again = parse_stream(rendered, source=stream.source)
    except ManifestError as exc:
        raise ManifestError(
            f"{stream.source}: --restore would write YAML that does not parse ({exc}): "
            "refused, nothing written"
        ) from None
    for entry in restored:
        rule = _rule_at(again, entry)
        found = rule.get("jwksUri", _ABSENT) if isinstance(rule, dict) else _ABSENT
        if entry.value is None:
            ok = isinstance(rule, dict) and found is _ABSENT
        elif isinstance(entry.value, YamlNull):
            ok = isinstance(found, YamlNull)
        else:
            ok = isinstance(found, str) and str(found) == entry.value
        if not ok:
            raise ManifestError(
                f"{entry.where}: spec.jwtRules[{entry.rule}]: --restore would not read back "
                f"as the original jwksUri {entry.value!r}: refused, nothing written"
            )


_ABSENT = object()


def _rule_at(stream: ManifestStream, entry: Restored) -> Any:
    if entry.document >= len(stream.documents):
        return None
    resources = list(iter_request_authentications(stream.documents[entry.document].data))
    if entry.resource >= len(resources):
        return None
    spec = resources[entry.resource].get("spec")
    rules = spec.get("jwtRules") if isinstance(spec, dict) else None
    return rules[entry.rule] if isinstance(rules, list) and entry.rule < len(rules) else None


def restores(stream: ManifestStream, rendered: str) -> bool:
    """Whether restoring ``rendered`` (``stream`` rewritten) gives ``stream``'s text back byte
    for byte; ruamel.yaml cannot keep every spelling (``True`` becomes ``true``, say)."""
    try:
        again = parse_stream(rendered, source=stream.source)
        for document in again.documents:  # a guess suffices: the comparison below checks it
            document.layout = guess_layout(document.body)
        restore(again)
        if again.render() == stream.text:
            return True
        again = parse_stream(rendered, source=stream.source)
        restore(again)
    except ManifestError:
        return False
    return again.render() == stream.text
