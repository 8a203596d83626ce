"""``requestcounts``: requests answered per issuer and status code."""

from __future__ import annotations

from jwks_mirror.serving.http.requestcounts import RequestCounts


def test_counts_by_issuer_and_code_with_one_row_for_unknown_names():
    counts = RequestCounts()
    assert counts.of("a") == {} and counts.of(None) == {}
    a = counts["a"]
    a[200] = a.get(200, 0) + 1
    counts["a"][304] = 2
    counts[None][404] = 5
    assert counts.of("a") == {200: 1, 304: 2}
    assert counts.of(None) == {404: 5}
    assert counts["a"] is a  # the same dict: counted in place on the request path


def test_issuers_no_longer_configured_are_forgotten_but_not_the_unknown_row():
    counts = RequestCounts()
    counts["a"][200] = 1
    counts["b"][200] = 1
    counts[None][404] = 1
    counts.keep_only({"b"})
    assert counts.of("a") == {} and counts.of("b") == {200: 1} and counts.of(None) == {404: 1}
