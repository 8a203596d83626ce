"""Round-trip YAML streams: split, load, edit and dump documents, keeping what people wrote.

:func:`parse_stream` splits a multi-document text into :class:`Document` objects, each holding
its verbatim text and a ruamel.yaml round-trip tree. A document nobody marks ``changed``
renders as its original bytes; a changed one is dumped with the indentation layout of its
original text, so comments, key order, quoting and blank lines survive. The edits themselves
are :mod:`~jwks_mirror.gitops.edits`. No I/O here.
"""

from __future__ import annotations

import functools
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarbool import ScalarBoolean

from jwks_mirror.core import yamlsafe
from jwks_mirror.core.errors import ManifestError
from jwks_mirror.core.text import one_line

# Layouts (mapping indent, sequence indent, dash offset) tried in order: kubectl's output
# first, then the common hand-written styles. The first that reproduces a document is used.
_LAYOUTS = ((2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (4, 4, 0), (3, 3, 0))


class YamlNull:
    """A YAML null that remembers its spelling (``null``, ``~`` or nothing) for the dump.

    ruamel.yaml writes every None the same way; kubectl prints ``creationTimestamp: null``
    while people write ``key:``, and both must survive a rewrite.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, YamlNull)

    def __hash__(self) -> int:
        return hash(None)


class _Constructor(RoundTripConstructor):
    def construct_spelled_null(self, node: ScalarNode) -> YamlNull:
        return YamlNull(str(node.value))


class _Representer(RoundTripRepresenter):
    def represent_spelled_null(self, data: YamlNull) -> ScalarNode:
        node: ScalarNode = self.represent_scalar("tag:yaml.org,2002:null", data.text)
        return node


_Constructor.add_constructor("tag:yaml.org,2002:null", _Constructor.construct_spelled_null)
_Representer.add_representer(YamlNull, _Representer.represent_spelled_null)


@functools.lru_cache(maxsize=len(_LAYOUTS) + 1)
def _yaml(layout: tuple[int, int, int] = _LAYOUTS[0]) -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.Constructor = _Constructor
    yaml.Representer = _Representer
    yaml.preserve_quotes = True
    # Never fold: kubectl's last-applied-configuration annotation is one very long line.
    yaml.width = 1 << 30
    mapping, sequence, offset = layout
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def dump_yaml(data: Any, layout: tuple[int, int, int] = _LAYOUTS[0]) -> str:
    """Round-trip dump of ``data``; ``layout`` is (mapping indent, sequence indent, offset)."""
    buffer = io.StringIO()
    _yaml(layout).dump(data, buffer)
    return buffer.getvalue()


def yaml_error(
    exc: YAMLError, source: str, line_offset: int = 0, column_offset: int = 0
) -> ManifestError:
    """``file:line:col: problem`` for a ruamel.yaml error (lines and columns from 1)."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            # the offsets place a document's first line within its file
            line = mark.line + 1 + line_offset
            col = mark.column + 1 + (column_offset if mark.line == 0 else 0)
            return ManifestError(f"{source}:{line}:{col}: {problem}")
        return ManifestError(f"{source}: {problem}")
    return ManifestError(f"{source}: invalid YAML: {one_line(exc)}")


@dataclass
class Document:
    """One document of a stream: verbatim text around a round-trip tree.

    ``render()`` is ``prefix + body`` unless ``changed`` is set, in which case the body is
    dumped from ``data`` with ``layout``, the indentation that reproduces the original body:
    editors call :meth:`fix_layout` before they change ``data``. ``line`` is the 0-based line
    of ``body`` in its file. A body that is JSON (``json_indent`` is not None) is dumped as
    JSON with its indentation (0: all on one line): kubectl reads a file that starts with
    ``{`` as JSON, so YAML written there would no longer apply.
    """

    prefix: str
    body: str
    line: int
    data: Any
    changed: bool = False
    layout: tuple[int, int, int] | None = None
    normalised: bool = False
    json_indent: int | None = None

    def render(self) -> str:
        if not self.changed:
            return self.prefix + self.body
        if self.json_indent is not None:
            text = dump_json(self.data, self.json_indent)
        else:
            text = dump_yaml(self.data, self.layout or self.search_layout())
        if not self.body.endswith("\n"):
            text = text.removesuffix("\n")
        return self.prefix + (text.replace("\n", "\r\n") if _is_crlf(self.body) else text)

    def fix_layout(self) -> None:
        """Choose the layout that reproduces the body, from the tree as loaded.

        Call it before the first edit of ``data``: the check then costs a dump, not a parse.
        The layout guessed from the text is tried first; ``normalised`` tells if none fits.
        """
        if self.layout is not None or self.changed:
            return
        if self.json_indent is not None:
            self.normalised = dump_json(self.data, self.json_indent) != _with_newline(self.body)
            return
        body = self.body.replace("\r\n", "\n")
        wanted = body if body.endswith("\n") else body + "\n"
        guess = guess_layout(body)
        for layout in (guess, *(lay for lay in _LAYOUTS if lay != guess)):
            if dump_yaml(self.data, layout) == wanted:
                self.layout = layout
                return
        self.layout, self.normalised = guess, True

    def search_layout(self) -> tuple[int, int, int]:
        """Like :meth:`fix_layout` after ``data`` was edited: it costs a parse of the body."""
        body = self.body.replace("\r\n", "\n")
        wanted = body if body.endswith("\n") else body + "\n"
        fresh = _yaml().load(body)
        layout = next((lay for lay in _LAYOUTS if dump_yaml(fresh, lay) == wanted), None)
        self.normalised = layout is None
        return layout or guess_layout(self.body)


def _with_newline(body: str) -> str:
    body = body.replace("\r\n", "\n")
    return body if body.endswith("\n") else body + "\n"


def _json_indent(body: str) -> int | None:
    """The indentation of a body that is one JSON value (0 when it is on one line), or None
    when it is not JSON. Called only on measured text, so ``json.loads`` cannot nest deep."""
    if body.lstrip()[:1] not in ("{", "["):
        return None
    try:
        json.loads(body)
    except ValueError:
        return None
    for line in body.strip().splitlines()[1:]:
        if line.strip():
            return len(line) - len(line.lstrip(" "))
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, YamlNull):
        return None
    if isinstance(value, ScalarBoolean):  # an int subclass: json would write 0 or 1
        return bool(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def dump_json(data: Any, indent: int) -> str:
    """``data`` as JSON with ``indent`` (0: one line, as ``json.dumps`` writes it)."""
    return json.dumps(_plain(data), indent=indent or None, ensure_ascii=False) + "\n"


def _is_crlf(text: str) -> bool:
    # Windows line endings: ruamel.yaml writes "\n", so they are put back after the dump.
    return "\r\n" in text


def guess_layout(body: str) -> tuple[int, int, int]:
    """A cheap guess at a body's layout from its first nested mapping and block sequence."""
    mapping = sequence_offset = None
    parent: int | None = None  # indentation of the last line that opened a block
    for line in body.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if parent is not None and indent > parent:
            if stripped.startswith("- ") and sequence_offset is None:
                sequence_offset = indent - parent
            elif not stripped.startswith("- ") and mapping is None:
                mapping = indent - parent
        if mapping is not None and sequence_offset is not None:
            break
        parent = indent if stripped.rstrip().endswith(":") else None
    mapping = mapping or 2
    offset = sequence_offset if sequence_offset is not None else 0
    return (mapping, offset + 2, offset)


@dataclass
class ManifestStream:
    """A parsed file (or stdin): its documents in order and the text after the last one."""

    source: str
    text: str
    documents: list[Document] = field(default_factory=list)
    trailer: str = ""

    def render(self) -> str:
        return "".join(d.render() for d in self.documents) + self.trailer

    @property
    def changed(self) -> bool:
        return any(d.changed for d in self.documents)


# YAML forbids a line starting with a document marker inside any scalar, so these lines split
# a stream into documents without parsing it twice.
_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)[ \t]*", re.MULTILINE)
_NO_CONTENT = re.compile(r"(?:[ \t]*(?:[#%][^\n]*)?(?:\n|$))*")


def parse_stream(
    text: str, *, source: str, bounds: yamlsafe.Bounds = yamlsafe.MANIFEST
) -> ManifestStream:
    """Split ``text`` into documents and load each one; YAML errors become ``file:line:col``.

    The whole text is measured against ``bounds`` first (:func:`jwks_mirror.core.yamlsafe.measure`:
    size, depth, documents, aliases, merge keys), so the recursive round-trip composer only
    ever sees what fits. Text that holds no content (markers, comments, directives, blank
    lines) is kept verbatim in the prefix of the next document or in the trailer.
    """
    try:
        yamlsafe.measure(text, bounds, source=source, error=ManifestError)
    except YAMLError as exc:
        raise yaml_error(exc, source) from exc
    stream = ManifestStream(source=source, text=text)
    prefix_from = body_from = 0
    line = counted_to = 0
    for match in [*_MARKER.finditer(text), None]:
        body_to = match.start() if match else len(text)
        body = text[body_from:body_to]
        if _NO_CONTENT.fullmatch(body) is None:
            line += text.count("\n", counted_to, body_from)
            counted_to = body_from
            try:
                with warnings.catch_warnings():
                    # YAML lets a later anchor reuse a name; ruamel's warning would print
                    # manifest text, unescaped, on stderr
                    warnings.simplefilter("ignore", ReusedAnchorWarning)
                    data = _yaml().load(body.replace("\r\n", "\n") if _is_crlf(body) else body)
            except YAMLError as exc:
                column = body_from - (text.rfind("\n", 0, body_from) + 1)
                raise yaml_error(exc, source, line, column) from exc
            except TypeError as exc:  # ruamel.yaml hashes a block-mapping key: unhashable
                raise ManifestError(
                    f"{source}:{line + 1}: a key that is itself a mapping or a list, in the "
                    "document starting here (not valid in a manifest)"
                ) from exc
            stream.documents.append(
                Document(
                    text[prefix_from:body_from], body, line, data, json_indent=_json_indent(body)
                )
            )
            prefix_from = body_to
        if match is None:
            break
        # The marker line belongs to the next prefix; so does the rest of a `...` line, while
        # content after `--- ` on the same line (`--- !tag`, `--- {}`) starts the next body.
        rest = text.find("\n", match.end())
        line_end = len(text) if rest < 0 else rest + 1
        if text.startswith("---", match.start()) and text[match.end() : line_end].strip():
            body_from = match.end()
        else:
            body_from = line_end
    stream.trailer = text[prefix_from:]
    return stream
