"""Properties of rewriting over generated manifests: restore undoes it, a second run is a no-op.

Manifests are built as round-trip trees (quoting styles, comments, ``kind: List``, several
indentation layouts), dumped to text, then sprinkled with blank lines and comments between
documents, so the text is what people and kubectl write rather than what one writer emits.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from jwks_mirror.cli.rewrite import render_restorable
from jwks_mirror.gitops.manifests import ANNOTATION, iter_rules
from jwks_mirror.gitops.mesh import MeshPolicy
from jwks_mirror.gitops.restoring import restore
from jwks_mirror.gitops.rewrite import apply_rewrite, plan_rewrite
from jwks_mirror.gitops.roundtrip import parse_stream

# Hypothesis runs of the rewriter over generated manifests: tens of seconds.
pytestmark = pytest.mark.slow

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
LAYOUTS = [(2, 2, 0), (2, 4, 2), (4, 4, 2)]

labels = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
paths = st.sampled_from(["/jwks.json", "/.well-known/jwks.json", "/keys", "/v2/jwks.json?a=1"])
quotes = st.sampled_from([str, SingleQuotedScalarString, DoubleQuotedScalarString])


@st.composite
def urls(draw: st.DrawFn) -> str:
    svc, ns, path = draw(labels), draw(labels), draw(paths)
    form = draw(st.sampled_from(["fqdn", "svc", "bare", "external"]))
    host = {
        "fqdn": f"{svc}.{ns}.svc.cluster.local",
        "svc": f"{svc}.{ns}.svc:8443",
        "bare": svc,
        "external": f"{svc}.example.com",
    }[form]
    scheme = draw(st.sampled_from(["http", "https"]))
    return f"{scheme}://{host}{path}"


@st.composite
def rules(draw: st.DrawFn) -> CommentedMap:
    rule = CommentedMap()
    quote = draw(quotes)
    issuer = draw(st.one_of(labels, urls()))
    shape = draw(st.sampled_from(["uri", "uri-first", "none", "null", "inline"]))
    if shape == "uri-first":
        rule["jwksUri"] = quote(draw(urls()))
    rule["issuer"] = quote(issuer)
    if shape == "uri":
        rule["jwksUri"] = quote(draw(urls()))
    elif shape == "null":
        rule["jwksUri"] = None
    elif shape == "inline":
        rule["jwks"] = SingleQuotedScalarString('{"keys": []}')
    if draw(st.booleans()):
        rule["audiences"] = CommentedSeq([draw(labels)])
    if draw(st.booleans()):
        rule["forwardOriginalToken"] = True
    if draw(st.booleans()):
        rule.yaml_add_eol_comment("# " + draw(labels), draw(st.sampled_from(list(rule))))
    return rule


@st.composite
def resources(draw: st.DrawFn) -> CommentedMap:
    resource = CommentedMap()
    resource["apiVersion"] = draw(
        st.sampled_from(
            ["security.istio.io/v1", "security.istio.io/v1beta1", "security.istio.io/v1alpha1"]
        )
    )
    resource["kind"] = draw(st.sampled_from(["RequestAuthentication"] * 4 + ["ConfigMap"]))
    meta = resource["metadata"] = CommentedMap(name=draw(labels))
    if draw(st.booleans()):
        meta["namespace"] = draw(labels)
    annotations = draw(st.sampled_from(["absent", "owner", "empty-flow", "null"]))
    if annotations == "owner":
        meta["annotations"] = CommentedMap(owner=draw(labels))
    elif annotations == "empty-flow":
        meta["annotations"] = CommentedMap()
        meta["annotations"].fa.set_flow_style()
    elif annotations == "null":
        meta["annotations"] = None
    resource["spec"] = CommentedMap(jwtRules=CommentedSeq(draw(st.lists(rules(), max_size=4))))
    if draw(st.booleans()):
        resource.yaml_set_comment_before_after_key("spec", before=draw(labels))
    return resource


def dump(data: Any, layout: tuple[int, int, int]) -> str:
    yaml = YAML()
    yaml.indent(mapping=layout[0], sequence=layout[1], offset=layout[2])
    yaml.width = 1 << 30
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


@st.composite
def manifests(draw: st.DrawFn) -> str:
    layout = draw(st.sampled_from(LAYOUTS))
    items = draw(st.lists(resources(), min_size=1, max_size=4))
    if draw(st.booleans()):
        wrapped = CommentedMap(apiVersion="v1", items=CommentedSeq(items), kind="List")
        documents = [dump(wrapped, layout)]
    else:
        documents = [dump(item, layout) for item in items]
    text = ""
    for index, document in enumerate(documents):
        lines = document.splitlines(keepends=True)
        if draw(st.booleans()):  # a blank line between two keys of the top level
            at = draw(st.integers(1, len(lines)))
            if at == len(lines) or not lines[at].startswith(" "):
                lines.insert(at, "\n")
        for _ in range(draw(st.integers(0, 2))):  # a comment line, indented like the next line
            at = draw(st.integers(0, len(lines) - 1))
            indent = len(lines[at]) - len(lines[at].lstrip(" "))
            lines.insert(at, " " * indent + "# " + draw(labels) + "\n")
        if index == 0:
            text += draw(st.sampled_from(["", "---\n", "# first\n---\n"]))
        else:
            text += draw(st.sampled_from(["---\n", "# next\n---\n", "\n---\n"]))
        text += "".join(lines)
    return text


def rewrite_text(text: str) -> str:
    """What the CLI does to one file, failing on its warning that restore would not be exact."""
    stream = parse_stream(text, source="generated.yaml")
    plan = plan_rewrite([stream], MeshPolicy(), mirror_url=MIRROR)
    apply_rewrite(plan, mirror_url=MIRROR)
    warnings = io.StringIO()
    with contextlib.redirect_stderr(warnings):
        rendered = render_restorable(stream)
    assert warnings.getvalue() == ""
    return rendered


def restore_text(text: str) -> str:
    stream = parse_stream(text, source="generated.yaml")
    restore(stream)
    return stream.render()


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(manifests())
def test_restore_undoes_rewrite(text: str) -> None:
    assert restore_text(rewrite_text(text)) == text


@PROPERTY
@given(manifests())
def test_rewrite_is_idempotent(text: str) -> None:
    once = rewrite_text(text)
    assert rewrite_text(once) == once


@PROPERTY
@given(manifests())
def test_rewrite_touches_only_in_mesh_rules(text: str) -> None:
    before = parse_stream(text, source="generated.yaml")
    plan = plan_rewrite([before], MeshPolicy(), mirror_url=MIRROR)
    pending = {id(t.ref.rule) for t in plan.pending()}
    rewritten = rewrite_text(text)
    after = parse_stream(rewritten, source="generated.yaml")
    old_rules, new_rules = list(iter_rules(before)), list(iter_rules(after))
    assert len(old_rules) == len(new_rules)
    for old, new in zip(old_rules, new_rules, strict=True):
        if id(old.rule) in pending:
            uri = str(new.rule["jwksUri"])
            assert uri.startswith(MIRROR + "/") and uri.endswith("/jwks.json")
            assert {k: v for k, v in new.rule.items() if k != "jwksUri"} == {
                k: v for k, v in old.rule.items() if k != "jwksUri"
            }
        else:
            assert dict(new.rule) == dict(old.rule)
    assert (rewritten == text) == (not pending)
    assert (ANNOTATION in rewritten) == bool(pending)
