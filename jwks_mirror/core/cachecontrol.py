"""How long an upstream says its answer stays fresh: ``Cache-Control: max-age`` less ``Age``.

Pure: header text in, seconds out; no I/O, no clock. The refresh schedule (refreshing.py) uses
it to bring the next fetch forward when an IdP says when its keys change (Dex sends ``max-age``
equal to the time to its next rotation), and the discovery cache (discovery.py) to keep a
discovery document no longer than its IdP allows.

The answer is None, "the response says nothing usable", for:

- no header, or ``no-store`` or ``no-cache`` (in any form, a field-qualified ``no-cache="..."``
  included: part of the answer must be revalidated, so none of it is trusted for longer);
- no ``max-age``, a ``max-age`` that is not a plain non-negative integer (token or quoted
  string, RFC 9111 section 5.2), or two ``max-age`` values that disagree (RFC 9111 section 4.2.1
  allows treating such a response as stale; we cannot tell which one the IdP meant, so the
  operator's ``refresh_interval`` decides);
- ``max-age=0``: it asks for the same as ``no-cache`` (revalidate every time) and says nothing
  about when the keys change.

Hostile values cannot hurt: numbers are read as at most ``MAX_DELTA_S`` (2^31, as RFC 9111
section 1.2.2 asks), before Python converts any digits, so a megabyte of digits costs a
length check; an ``Age`` that is not a plain non-negative integer (negative, fractional, listed
twice) is ignored, so it can never stretch the lifetime beyond ``max-age``. Callers bound the
result further (the schedule never waits longer than ``refresh_interval``).
"""

from __future__ import annotations

MAX_DELTA_S = 2**31
_MAX_DIGITS = len(str(MAX_DELTA_S))


def freshness_lifetime_s(cache_control: str | None, age: str | None = None) -> float | None:
    """Seconds the response stays fresh from now: ``max-age`` less ``Age``, at least 0
    (0: already as old as allowed). None when the response says nothing usable (module
    docstring)."""
    if not cache_control:
        return None
    max_ages: set[int | None] = set()
    for name, value in directives(cache_control):
        if name in ("no-store", "no-cache"):
            return None
        if name == "max-age":
            max_ages.add(delta_seconds(value))
    if len(max_ages) != 1:
        return None  # none, or values that disagree
    (max_age,) = max_ages
    if not max_age:
        return None  # invalid, or max-age=0 (revalidate every time: no-cache)
    current_age = delta_seconds(age.strip()) if age is not None else None
    return float(max(0, max_age - (current_age or 0)))


def delta_seconds(value: str | None) -> int | None:
    """RFC 9111 ``delta-seconds``: 1*DIGIT, read as at most ``MAX_DELTA_S``; None if invalid."""
    if not value or not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        return MAX_DELTA_S
    return min(int(digits), MAX_DELTA_S)


def directives(header: str) -> list[tuple[str, str | None]]:
    """``Cache-Control`` as ``(name, value)`` pairs: names lower-cased, quoted values
    unquoted, commas inside quoted strings kept (``no-cache="a, b"`` is one directive).
    Several header lines are one list joined with commas (RFC 9110 section 5.3)."""
    parts = header.split(",") if '"' not in header else _split_outside_quotes(header)
    result: list[tuple[str, str | None]] = []
    for part in parts:
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        value = raw.strip() if sep else None
        if value is not None and len(value) >= 2 and value[0] == value[-1] == '"':
            value = _unquote(value[1:-1])
        result.append((name, value))
    return result


def _split_outside_quotes(header: str) -> list[str]:
    """Split at commas that are not inside a quoted string (backslash escapes honoured)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in header:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)
