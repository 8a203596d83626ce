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

__all__ = ["inert", "one_line"]


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}.get(char, f"\\x{code:02x}")
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(value: object) -> str:
    """``str(value)`` with every character that is not printable (controls, U+2028/U+2029,
    format, private-use and unassigned characters, lone surrogates) and the backslash
    escaped (``\\n``, ``\\x1b``, ``\\u2028``, ``\\ud800``, ``\\\\``): one line, no terminal
    control, always encodable as UTF-8. The backslash is escaped too, so an escape in the
    output always means the character, never input that looked like one."""
    text = str(value)
    if text.isprintable() and "\\" not in text:  # most strings: one C-level scan
        return text
    # Unicode's "other" and separator categories, space apart: controls, format characters
    # (bidirectional overrides, zero-width), surrogates, private use, unassigned, U+2028.
    return "".join(_escaped(c) if c == "\\" or not c.isprintable() else c for c in text)


def one_line(exc: object, limit: int = 200) -> str:
    """``str(exc)`` with every run of whitespace (newlines included) made one space, cut to
    ``limit`` characters; the exception's type name when it has no text. The one helper every
    error message uses to quote a library's exception."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
