"""Untrusted text made safe to print: one helper every printer of the CLI and the GitOps tools
uses for strings that came from input (names, namespaces, paths, URIs, admin answers, token
claims).

PURE. A name holding a newline would start a new line in a CI log, where a line such as
``::error file=...::`` is read as an annotation; ESC and the other C0/C1 controls drive the
terminal (colours, titles, OSC 8 links, cursor moves). :func:`inert` escapes them, and the
characters that end a line for some readers (U+2028, U+2029, U+0085) or cannot be encoded at
all (a lone surrogate from a ``\\ud800`` escape), and the invisible format characters that
reorder or hide text on screen (bidirectional overrides such as U+202E, zero-width characters,
Unicode tags), the way Python spells them in a string literal. Everything else, non-ASCII
letters included, is printed as it is.

:func:`one_line` is the other half: an exception's text folded onto one line and cut short,
for error messages that quote what a library said (which may quote untrusted input).
"""

from __future__ import annotations

import unicodedata

__all__ = ["inert", "one_line"]


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}.get(char, f"\\x{code:02x}")
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(char: str) -> bool:
    code = ord(char)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or code in (0x2028, 0x2029)
        or 0xD800 <= code <= 0xDFFF  # lone surrogates: no encoder writes them
        or char == "\\"
        or unicodedata.category(char) == "Cf"  # bidi overrides, zero-width, tags
    )


# Most strings need nothing: one scan with str.translate is cheap, and the table is built once
# (the Basic Multilingual Plane, which holds every control, separator, surrogate and
# bidirectional or zero-width character, and the tag block).
_TABLE = {
    code: _escaped(chr(code))
    for code in (*range(0x10000), *range(0xE0000, 0xE0080))
    if _needs_escape(chr(code))
}


def inert(value: object) -> str:
    """``str(value)`` with every control character (C0, DEL, C1), U+2028/U+2029, lone
    surrogates and the backslash escaped (``\\n``, ``\\x1b``, ``\\u2028``, ``\\ud800``,
    ``\\\\``): one line, no terminal control, always encodable as UTF-8. The backslash is
    escaped too, so an escape in the output always means the character, never input that
    looked like one."""
    return str(value).translate(_TABLE)


def one_line(exc: object, limit: int = 200) -> str:
    """``str(exc)`` with every run of whitespace (newlines included) made one space, cut to
    ``limit`` characters; the exception's type name when it has no text. The one helper every
    error message uses to quote a library's exception."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
