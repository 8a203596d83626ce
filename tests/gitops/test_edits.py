"""Tree edits that undo exactly (jwks_mirror/gitops/edits.py): an edit and the edit in the
opposite direction give the original text back, comments and blank lines included."""

from __future__ import annotations

from jwks_mirror.gitops.edits import append_key, pop_key, replace_value
from jwks_mirror.gitops.roundtrip import parse_stream

TEXT = "spec:\n  a: 1  # one\n\n  b: http://x/jwks.json  # the upstream\n# trailing\n"


def render_after(edit) -> str:
    stream = parse_stream(TEXT, source="t.yaml")
    document = stream.documents[0]
    edit(document.data["spec"])
    document.changed = True
    return stream.render()


def test_append_then_pop_gives_the_original_text_back() -> None:
    def there_and_back(spec) -> None:
        append_key(spec, "c", "3")
        assert list(spec) == ["a", "b", "c"]
        pop_key([(spec, "c")])

    assert render_after(there_and_back) == TEXT


def test_replace_keeps_the_comment_after_the_value() -> None:
    text = render_after(lambda spec: replace_value(spec, "b", "http://mirror/k.json"))
    assert "  b: http://mirror/k.json  # the upstream\n" in text
    assert text.replace("http://mirror/k.json", "http://x/jwks.json") == TEXT
