"""Bounded YAML input: the one reader and loader for configs and manifests.

Every YAML text the service or the GitOps tools parse is measured first, on the parser's event
stream, and refused before anything is composed when it passes a bound (:class:`Bounds`):
size, nesting depth, documents, aliases, merge keys, and the nodes its aliases stand for. The
event parsers are state machines (libyaml's, and ruamel.yaml's pure one): neither recurses, so
a file nested 40,000 deep costs a few events here, where composing it recursed until
ruamel.yaml.clib crashed. Only a measured text is composed, by whichever loader the caller
uses, so recursion in the composers and constructors is bounded by ``max_depth``.

* **Depth** counts aliases as what they stand for: ``[*deep]`` is one deeper than ``deep``.
* **Alias nodes** counts each alias as the size of its anchored node, aliases inside it
  included: the merge-key bomb ``<<: [*prev, *prev]`` doubles it per level, and ruamel.yaml's
  safe constructor copies every merged entry, so this is the work the load would do.
* An alias inside the node it names (a recursive structure) is refused: no manifest or config
  needs one, and every walker would need a cycle check.

:func:`read_bounded` is the file side: only a regular file is read (links are followed, as
Kubernetes mounts a ConfigMap through a symlink, but what they lead to must be a regular file),
opened without blocking so a FIFO never hangs, and never more than the size bound.

PURE apart from :func:`read_bounded`'s file reading: no network framework, no serving or gitops
import.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    MappingStartEvent,
    ScalarEvent,
)

from jwks_mirror.core.errors import UsageError

__all__ = ["CONFIG", "MANIFEST", "Bounds", "MiB", "load_safe", "measure", "read_bounded"]

MiB = 1 << 20
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Bounds:
    """What one YAML text may hold. Each field's name is the bound a refusal names."""

    max_bytes: int
    max_depth: int
    max_documents: int
    max_aliases: int
    max_merge_keys: int
    max_alias_nodes: int


# A config is one small document. 10,000 issuers take 0.77 MB; 10,000 aliased tls blocks
# stand for about 90,000 nodes. ruamel's safe constructor copies merged entries at about 5 us
# each, so 100,000 alias nodes is a load of well under a second.
CONFIG = Bounds(
    max_bytes=1 * MiB,
    max_depth=100,
    max_documents=1,
    max_aliases=10_000,
    max_merge_keys=10_000,
    max_alias_nodes=100_000,
)

# Manifests hold CRDs too: the largest real bundle we measured (kubeflow's kserve, 65
# documents) is 3.7 MB and CRDs nest about 50 deep. The round-trip parser reads about
# 0.4 MB/s, so 8 MiB is about 20 s of CI time, at most, per file. The rest as a config.
MANIFEST = replace(CONFIG, max_bytes=8 * MiB, max_documents=10_000)


def _where(source: str, event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


def _events(text: str, *, pure: bool) -> Any:
    return YAML(typ="safe", pure=pure).parse(text)


def measure(text: str, bounds: Bounds, *, source: str, error: type[UsageError]) -> None:
    """Refuse ``text`` with ``error("source[:line:col]: ... (max_xxx N)")`` when it passes a
    bound. A text the event parser cannot read raises the parser's :class:`YAMLError` (the
    pure parser's, whose messages are the precise ones), for the caller to report."""
    text = str(text)  # libyaml reads only an exact str: a YAML scalar from a manifest is a subclass
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > bounds.max_bytes:
        raise error(f"{source}: larger than {bounds.max_bytes} bytes (max_bytes)")
    try:
        _scan(_events(text, pure=False), bounds, source=source, error=error)
    except YAMLError:
        # libyaml and the pure parser differ on a few inputs; what counts is what the
        # composers read, and their messages come from the pure parser
        _scan(_events(text, pure=True), bounds, source=source, error=error)


class _Scan:
    """The counts of one :func:`_scan`, one method per kind of event.

    A frame per open collection: [is_mapping, expecting_key, nodes, height, anchor].
    """

    def __init__(self, bounds: Bounds, *, source: str, error: type[UsageError]) -> None:
        self.bounds, self.source, self.error = bounds, source, error
        self.stack: list[list[Any]] = []
        self.anchors: dict[str, tuple[int, int]] = {}  # name -> (nodes, height) of a closed node
        self.open_anchors: set[str] = set()
        self.documents = self.aliases = self.merges = self.alias_nodes = 0

    def fail(self, event: Any, message: str) -> UsageError:
        return self.error(f"{_where(self.source, event)}: {message}")

    def scalar(self, event: Any) -> tuple[int, int]:
        stack, bounds = self.stack, self.bounds
        if stack:
            top = stack[-1]
            if top[0] and top[1] and event.value == "<<" and (
                event.tag == _MERGE_TAG or (event.tag is None and event.implicit[0])
            ):
                self.merges += 1
                if self.merges > bounds.max_merge_keys:
                    raise self.fail(
                        event, f"more than {bounds.max_merge_keys} merge keys (max_merge_keys)"
                    )
        if event.anchor is not None:  # a name may be reused: the latest counts
            self.open_anchors.discard(event.anchor)
            self.anchors[event.anchor] = (1, 0)
        return 1, 0

    def alias(self, event: Any) -> tuple[int, int]:
        bounds = self.bounds
        self.aliases += 1
        if self.aliases > bounds.max_aliases:
            raise self.fail(event, f"more than {bounds.max_aliases} aliases (max_aliases)")
        name = event.anchor
        if name in self.open_anchors:
            raise self.fail(
                event, f"alias *{name} inside the node it names (recursive aliases are refused)"
            )
        nodes, height = self.anchors.get(name, (1, 0))
        self.alias_nodes += nodes
        if self.alias_nodes > bounds.max_alias_nodes:
            raise self.fail(
                event,
                f"aliases stand for more than {bounds.max_alias_nodes} nodes (max_alias_nodes)",
            )
        if len(self.stack) + height > bounds.max_depth:
            raise self.fail(
                event, f"nested deeper than {bounds.max_depth} levels through an alias (max_depth)"
            )
        return nodes, height

    def open(self, event: Any) -> None:
        if len(self.stack) >= self.bounds.max_depth:
            raise self.fail(event, f"nested deeper than {self.bounds.max_depth} levels (max_depth)")
        self.stack.append([type(event) is MappingStartEvent, True, 1, 1, event.anchor])
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)

    def close(self) -> tuple[int, int]:
        _, _, nodes, height, anchor = self.stack.pop()
        if anchor is not None:
            self.open_anchors.discard(anchor)
            self.anchors[anchor] = (nodes, height)
        return nodes, height

    def document(self, event: Any) -> None:
        self.documents += 1
        most = self.bounds.max_documents
        if self.documents > most:
            raise self.fail(
                event, f"more than {most} YAML document{'s' if most != 1 else ''} (max_documents)"
            )
        self.anchors.clear()

    def ended(self, nodes: int, height: int) -> None:
        """A node ended: count it in its parent."""
        if self.stack:
            top = self.stack[-1]
            top[2] += nodes
            if height + 1 > top[3]:
                top[3] = height + 1
            if top[0]:
                top[1] = not top[1]


def _scan(events: Any, bounds: Bounds, *, source: str, error: type[UsageError]) -> None:
    scan = _Scan(bounds, source=source, error=error)
    for event in events:
        kind = type(event)
        if kind is ScalarEvent:
            scan.ended(*scan.scalar(event))
        elif kind is AliasEvent:
            scan.ended(*scan.alias(event))
        elif isinstance(event, CollectionStartEvent):
            scan.open(event)
        elif isinstance(event, CollectionEndEvent):
            scan.ended(*scan.close())
        elif kind is DocumentStartEvent:
            scan.document(event)


def load_safe(text: str, bounds: Bounds, *, source: str, error: type[UsageError]) -> object:
    """The one document in ``text`` as plain data, after :func:`measure`. libyaml composes
    when it is installed (a 10,000-issuer config in 0.4 s instead of 2.2 s); a text it
    refuses is loaded again by the pure parser, whose messages are the ones reported. YAML
    errors propagate for the caller to place."""
    text = str(text)
    measure(text, bounds, source=source, error=error)
    try:
        return YAML(typ="safe").load(text)
    except Exception:
        return YAML(typ="safe", pure=True).load(text)


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bounded(
    path: str | os.PathLike[str], *, max_bytes: int, error: type[UsageError]
) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them.

    Links are followed (a ConfigMap volume is a chain of symlinks), but whatever the path leads
    to must be a regular file: a FIFO, device, socket or directory is refused before it is
    opened, and again after (``fstat`` of the open file, so a swap in between cannot get one
    read). The open never blocks (``O_NONBLOCK``) and never makes a terminal ours
    (``O_NOCTTY``). Every refusal is ``error("path: reason")``.
    """
    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{name}: not a regular file ({_kind(mode)})")
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except OSError as exc:
        raise error(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise error(f"{name}: larger than {max_bytes} bytes (max_bytes)")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # it grew since the fstat
            raise error(f"{name}: larger than {max_bytes} bytes (max_bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{name}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
