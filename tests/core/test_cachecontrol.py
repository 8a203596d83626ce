"""The upstream's Cache-Control, parsed without a server: ordinary, odd and hostile headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jwks_mirror.core.cachecontrol import (
    MAX_DELTA_S,
    delta_seconds,
    directives,
    freshness_lifetime_s,
)


@pytest.mark.parametrize(
    ("cache_control", "age", "expected"),
    [
        ("max-age=7", None, 7.0),
        ("max-age=21600, must-revalidate", None, 21600.0),  # what Dex sends
        ("public, max-age=300", "40", 260.0),
        ("MAX-AGE=60", None, 60.0),
        ("max-age = 60", None, 60.0),
        ('max-age="60"', None, 60.0),  # quoted-string form, RFC 9111 section 5.2
        ('private="x, max-age=5", max-age=60', None, 60.0),  # a comma inside quotes
        ('community="a\\"b, max-age=1", max-age=30', None, 30.0),  # an escaped quote
        ("max-age=60, max-age=60", None, 60.0),  # the same value twice
        ("max-age=60", "60", 0.0),  # already as old as allowed
        ("max-age=60", "999999999999999999999999", 0.0),  # a huge Age
        ("max-age=60", "-30", 60.0),  # a negative Age is invalid: ignored, never adds
        ("max-age=60", "1.5", 60.0),
        ("max-age=60", "5, 5", 60.0),  # two Age lines joined
        ("max-age=60", "", 60.0),
        ("max-age=007", None, 7.0),
        ("max-age=" + "9" * 40, None, float(MAX_DELTA_S)),  # huge: read as 2^31
        ("max-age=" + "0" * 50 + "12", None, 12.0),  # leading zeros are not magnitude
        (",,, max-age=5 ,,", None, 5.0),
    ],
)
def test_freshness_lifetime(cache_control: str, age: str | None, expected: float) -> None:
    assert freshness_lifetime_s(cache_control, age) == expected


@pytest.mark.parametrize(
    "cache_control",
    [
        None,
        "",
        "public",
        "no-store",
        "no-cache",
        "max-age=300, no-store",
        "NO-CACHE, max-age=300",
        'no-cache="Set-Cookie", max-age=300',  # field-qualified: still revalidate
        "max-age=0",  # revalidate every time, like no-cache
        "max-age=0, must-revalidate",
        "s-maxage=300",
        "max-age",
        "max-age=",
        "max-age=abc",
        "max-age=-5",
        "max-age=+5",
        "max-age=5.5",
        "max-age=0x10",
        "max-age=\u0667",  # a non-ASCII digit
        'max-age="5',  # unterminated quote
        "max-age=60, max-age=5",  # disagreeing duplicates: we cannot tell which is meant
        "max-age=60, max-age=abc",
    ],
)
def test_nothing_usable_leaves_the_interval(cache_control: str | None) -> None:
    assert freshness_lifetime_s(cache_control, "10") is None


def test_directives_keep_quoted_commas_and_lower_case_names() -> None:
    assert directives('Max-Age=5, no-cache="a, b", X="q\\"z",') == [
        ("max-age", "5"),
        ("no-cache", "a, b"),
        ("x", 'q"z'),
    ]


def test_delta_seconds_bounds() -> None:
    assert delta_seconds("0") == 0
    assert delta_seconds(str(MAX_DELTA_S + 1)) == MAX_DELTA_S
    assert delta_seconds(None) is None
    assert delta_seconds(" 5") is None


def test_a_megabyte_of_digits_is_read_as_the_bound() -> None:
    """Python refuses to convert more than 4,300 digits (ValueError) and is quadratic below
    that: the parser looks at the length first."""
    assert freshness_lifetime_s("max-age=" + "7" * 1_000_000) == float(MAX_DELTA_S)
    assert freshness_lifetime_s("max-age=" + "7" * 1_000_000, "9" * 1_000_000) == 0.0


@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=30)))
def test_any_header_gives_none_or_a_bounded_lifetime(header: str, age: str | None) -> None:
    lifetime = freshness_lifetime_s(header, age)
    assert lifetime is None or 0.0 <= lifetime <= MAX_DELTA_S
