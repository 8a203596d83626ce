"""Editing round-trip trees so that they restore exactly: :func:`append_key`, :func:`pop_key`,
:func:`set_value` and :func:`replace_value` edit a ruamel.yaml tree of
:mod:`~jwks_mirror.gitops.roundtrip` so that a later edit in the opposite direction gives the
original text back. No I/O here.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarstring import ScalarString
from ruamel.yaml.tokens import CommentToken

from jwks_mirror.gitops.roundtrip import YamlNull

# A comment or blank line after a value is stored with that value in ruamel.yaml. When a key is
# added after it, or removed, these helpers move that "following" text so it stays where it was
# in the file: otherwise a rewrite would put a blank line inside a block, and a restore would
# drop a comment that happened to follow the annotation.


def _following(mapping: CommentedMap, key: Any, *, take: bool) -> str:
    """The comment lines after ``mapping[key]``'s line (not its end-of-line comment)."""
    entry = mapping.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is None or not isinstance(token.value, str) or "\n" not in token.value:
        return ""
    eol, rest = token.value.split("\n", 1)
    if take and rest:
        if eol:
            token.value = eol + "\n"
        else:
            entry[2] = None
    return rest


def _attach_following(mapping: CommentedMap, key: Any, text: str) -> None:
    while True:  # the text follows the last line of a nested block mapping
        value = mapping[key]
        if not isinstance(value, CommentedMap) or not value or value.fa.flow_style():
            break
        mapping, key = value, list(value)[-1]
    entry = mapping.ca.items.setdefault(key, [None, None, None, None])
    if entry[2] is None:
        entry[2] = CommentToken("\n" + text, CommentMark(0), None)
    else:
        entry[2].value = entry[2].value + text


def _last_leaf(mapping: CommentedMap) -> tuple[CommentedMap, Any] | None:
    while mapping:
        key = list(mapping)[-1]
        value = mapping[key]
        if isinstance(value, CommentedSeq):
            return None  # comments after a block sequence live elsewhere; leave them
        if not isinstance(value, CommentedMap) or not value or value.fa.flow_style():
            return mapping, key
        mapping = value
    return None


def append_key(mapping: CommentedMap, key: str, value: Any) -> None:
    """``mapping[key] = value`` as the last key, keeping what followed the old last line."""
    leaf = _last_leaf(mapping)
    moved = _following(*leaf, take=True) if leaf else ""
    mapping[key] = value
    if moved:
        _attach_following(mapping, key, moved)


def set_value(mapping: CommentedMap, key: Any, value: Any) -> None:
    """Replace the value of an existing key (a null by a block, say), keeping what followed."""
    moved = _following(mapping, key, take=True)
    mapping[key] = value
    if moved:
        _attach_following(mapping, key, moved)


def pop_key(chain: list[tuple[CommentedMap, Any]]) -> None:
    """Delete ``chain[-1]`` (a mapping and key; earlier entries are its ancestors), keeping
    the comment lines that followed it in the file: before the next key, or else after the
    previous one."""
    mapping, key = chain[-1]
    value = mapping[key]
    if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
        leaf = _last_leaf(value)
        moved = _following(*leaf, take=False) if leaf else ""
    else:
        moved = _following(mapping, key, take=False)
    keys = list(mapping)
    position = keys.index(key)
    del mapping[key]
    mapping.ca.items.pop(key, None)
    if not moved:
        return
    for ancestor, ancestor_key in reversed(chain):
        later = list(ancestor)
        if ancestor_key in ancestor:
            after = later[later.index(ancestor_key) + 1 :]
        else:  # the key just deleted
            after = later[position:]
        if after:
            entry = ancestor.ca.items.setdefault(after[0], [None, None, None, None])
            entry[1] = [CommentToken(moved, CommentMark(0), None), *(entry[1] or [])]
            return
    if position > 0:
        _attach_following(mapping, keys[position - 1], moved)


def replace_value(mapping: CommentedMap, key: str, new: str | YamlNull) -> None:
    """Set ``mapping[key]`` to ``new`` in the old value's quoting style.

    An end-of-line comment moves by the change in length, keeping its gap: ruamel.yaml would
    otherwise write it one space after the longer value, and a restore could not put it back.
    """
    old = mapping.get(key)
    mapping[key] = new if isinstance(new, YamlNull) else styled(old, new)
    comment = mapping.ca.items.get(key)
    token = comment[2] if comment and len(comment) > 2 else None
    if token is not None and getattr(token, "start_mark", None) is not None:
        token.column = max(0, token.column + _width(new) - _width(old))


def _width(value: Any) -> int:
    return len(value.text) if isinstance(value, YamlNull) else len(str(value))


def styled(old: Any, new: str) -> Any:
    """``new`` in the quoting style of ``old``, so restore gives the original bytes back."""
    if isinstance(old, ScalarString):
        return type(old)(new)
    return new
