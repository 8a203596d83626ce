"""text: inert (untrusted text made safe to print) and one_line (an exception's text on one
line), the two helpers every printer and every error message uses."""

from __future__ import annotations

import pytest

from jwks_mirror.core.text import inert, one_line


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain ascii", "plain ascii"),
        ("café ünïcode", "café ünïcode"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b]8;;http://x\x07link", "\\x1b]8;;http://x\\x07link"),
        ("\x85\u2028\u2029", "\\x85\\u2028\\u2029"),
        ("\ud800", "\\ud800"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\U000e0041tag", "\\U000e0041tag"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_inert_escapes_what_would_move_the_cursor_or_break_the_line(value: str, shown: str) -> None:
    assert inert(value) == shown
    assert inert(value).isprintable()
    inert(value).encode("utf-8")  # always encodable


def test_inert_takes_any_object() -> None:
    assert inert(42) == "42"
    assert inert(ValueError("bad\nvalue")) == "bad\\nvalue"


def test_one_line_folds_whitespace_and_cuts() -> None:
    assert one_line(ValueError("first line\n  second\tline\r\n")) == "first line second line"
    assert one_line(ValueError("x" * 500)) == "x" * 200
    assert one_line(ValueError("y" * 500), 160) == "y" * 160


def test_one_line_names_an_exception_without_text() -> None:
    assert one_line(TimeoutError()) == "TimeoutError"
    assert one_line(KeyError("")) == "''"  # KeyError quotes its key: text, not a type name
    assert one_line(ValueError("   \n ")) == "ValueError"


def test_there_is_one_one_line_helper() -> None:
    """The four copies it replaced are gone (configfields.oneline, strictjson.one_line and two
    _oneline in fetching and peering)."""
    from jwks_mirror.core import strictjson
    from jwks_mirror.core.config import fields as configfields
    from jwks_mirror.serving import fetching, peering

    assert not hasattr(configfields, "oneline")
    assert getattr(strictjson, "one_line", one_line) is one_line
    assert not hasattr(fetching, "_oneline") and not hasattr(peering, "_oneline")
