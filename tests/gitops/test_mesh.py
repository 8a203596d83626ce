"""Which URLs are in-mesh, and what the mirror calls them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jwks_mirror.gitops.manifests import iter_rules
from jwks_mirror.gitops.mesh import MeshPolicy, Upstream, dns_label, mirror_name
from jwks_mirror.gitops.restoring import restore
from jwks_mirror.gitops.rewrite import plan_rewrite
from jwks_mirror.gitops.roundtrip import parse_stream

DATA = Path(__file__).parents[1] / "data" / "manifests"
MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"

LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://keys.myns.svc.cluster.local/jwks.json",
            ("http://keys.myns.svc.cluster.local/jwks.json", "keys", "myns"),
        ),
        ("https://keys.myns.svc:8443/k", ("https://keys.myns.svc:8443/k", "keys", "myns")),
        (
            "http://KEYS.MyNs.svc.cluster.local./k",
            ("http://KEYS.MyNs.svc.cluster.local./k", "keys", "myns"),
        ),
        ("http://keys.svc/k", ("http://keys.svc/k", "keys", "web")),
        ("http://keys/jwks.json", ("http://keys.web.svc.cluster.local/jwks.json", "keys", "web")),
        (
            "http://keys:8080/a?b=1",
            ("http://keys.web.svc.cluster.local:8080/a?b=1", "keys", "web"),
        ),
        ("http://localhost:8080/jwks.json", None),
        ("http://10.0.0.7/jwks.json", None),
        ("http://[fd00::1]/jwks.json", None),
        ("https://www.googleapis.com/oauth2/v3/certs", None),
        ("https://keys.myns.svc.corp.example/k", None),
        ("https://keys.svc.example.com/k", None),
        ("ftp://keys.myns.svc/k", None),
    ],
)
def test_in_mesh(url: str, expected: tuple[str, str, str] | None) -> None:
    upstream = MeshPolicy().upstream(url, kind="jwks", namespace="web")
    if expected is None:
        assert upstream is None
    else:
        assert upstream == Upstream("jwks", *expected)


def test_cluster_domain_and_match() -> None:
    corp = MeshPolicy(cluster_domain="corp.example")
    assert corp.upstream("https://idp.auth.svc.corp.example/k", kind="jwks", namespace=None) == (
        Upstream("jwks", "https://idp.auth.svc.corp.example/k", "idp", "auth")
    )
    # The default domain stays in-mesh: it is what every cluster answers to.
    assert corp.upstream("http://idp.auth.svc.cluster.local/k", kind="jwks", namespace=None)
    assert corp.upstream("http://idp/k", kind="jwks", namespace="a") == Upstream(
        "jwks", "http://idp.a.svc.corp.example/k", "idp", "a"
    )
    matched = MeshPolicy(match=re.compile(r"\.internal\.example/"))
    assert matched.upstream("https://keys.internal.example/k", kind="jwks", namespace="t") == (
        Upstream("jwks", "https://keys.internal.example/k", "keys", "t")
    )
    assert matched.upstream("https://keys.example/k", kind="jwks", namespace="t") is None


def test_no_namespace_means_default() -> None:
    upstream = MeshPolicy().upstream("http://keys/k", kind="jwks", namespace=None)
    assert upstream is not None
    assert (upstream.url, upstream.base_name) == (
        "http://keys.default.svc.cluster.local/k", "keys-default"
    )


@pytest.mark.parametrize(
    "text",
    ["keys-myns", "Keys_My.NS", "a" * 40 + "-" + "b" * 40, "---", "ünïcode-ns", "x" * 63],
)
def test_dns_label(text: str) -> None:
    label = dns_label(text)
    assert LABEL.fullmatch(label) and len(label) <= 63
    assert dns_label(text) == label
    salted = dns_label(text, salt="http://a/")
    assert LABEL.fullmatch(salted) and len(salted) <= 63
    assert salted != label and salted != dns_label(text, salt="http://b/")


def test_long_names_stay_distinct() -> None:
    a, b = "s" * 40 + "-" + "n" * 30, "s" * 40 + "-" + "n" * 29 + "m"
    assert dns_label(a) != dns_label(b)
    assert len(dns_label(a)) <= 63


RA = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: r
  namespace: {ns}
spec:
  jwtRules:
{rules}"""


def _names(*rule_uris: str, ns: str = "myns") -> list[str]:
    rules = "".join(f"  - issuer: i\n    jwksUri: {uri}\n" for uri in rule_uris)
    stream = parse_stream(RA.format(ns=ns, rules=rules), source="t.yaml")
    plan = plan_rewrite([stream], MeshPolicy(), mirror_url="http://m")
    return [plan.names[t.upstream.key] for t in plan.targets]


def test_colliding_upstreams_get_distinct_deterministic_names() -> None:
    v1 = "http://keys.myns.svc.cluster.local/jwks.json"
    v2 = "http://keys.myns.svc.cluster.local/v2/jwks.json"
    short = "http://keys.myns.svc/jwks.json"
    names = _names(v2, v1, short)
    assert len(set(names)) == 3
    assert names[1] == "keys-myns"  # the smallest URL keeps the plain name
    assert all(n.startswith("keys-myns-") for n in (names[0], names[2]))
    assert _names(short, v1, v2) == [names[2], names[1], names[0]]


def test_the_same_upstream_gets_one_name() -> None:
    names = _names("http://keys/jwks.json", "http://keys.myns.svc.cluster.local/jwks.json")
    assert names == ["keys-myns", "keys-myns"]


def test_rule_visitor_supports_pinning() -> None:
    # What `pin` will do: visit the rules, append ?v= to mirror URLs, keep everything else.
    expected = (DATA / "basic" / "expected.yaml").read_text()
    stream = parse_stream(expected, source="basic.yaml")
    pinned = 0
    for ref in iter_rules(stream):
        uri = str(ref.rule.get("jwksUri", ""))
        if uri.startswith(MIRROR + "/") and mirror_name(uri):
            ref.set_jwks_uri(uri + "?v=abc123")
            pinned += 1
    text = stream.render()
    assert pinned == 3
    mirror_uris = re.compile(rf"({re.escape(MIRROR)}/[a-z0-9-]+/jwks\.json)")
    assert text == mirror_uris.sub(r"\1?v=abc123", expected)
    # Pinned URLs still count as mirrored, and restore still gives the original input back.
    again = parse_stream(text, source="basic.yaml")
    assert plan_rewrite([again], MeshPolicy(), mirror_url=MIRROR).pending() == []
    restore(again)
    assert again.render() == (DATA / "basic" / "input.yaml").read_text()
