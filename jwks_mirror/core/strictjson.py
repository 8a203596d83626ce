"""Strict JSON for untrusted bytes: what an upstream, a peer or a discovery document sends.

Pure. Python's ``json`` accepts things a verifier's parser may read differently (duplicate
members, where parsers disagree on which one wins; ``NaN``/``Infinity``; a byte-order mark),
so they are refused here, with a :class:`KeySetRejected` reason that is a metrics label.
"""

from __future__ import annotations

import json
from typing import Any

from jwks_mirror.core.errors import KeySetRejected
from jwks_mirror.core.text import one_line


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no duplicate members, no NaN/Infinity, bounded nesting."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeySetRejected("invalid_utf8", f"body is not UTF-8 (byte {exc.start})") from exc
    if text.startswith("\ufeff"):
        raise KeySetRejected("invalid_json", "body starts with a byte-order mark")
    try:
        return json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constants)
    except _DuplicateMember as exc:
        raise KeySetRejected("duplicate_member", f"duplicate JSON member {exc}") from None
    except RecursionError:
        raise KeySetRejected("invalid_json", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, over-long integers
        raise KeySetRejected("invalid_json", f"invalid JSON: {one_line(exc)}") from None


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateMember(repr(key[:64]))
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
