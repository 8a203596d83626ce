"""Reading manifests in and writing them out, shared by ``rewrite``, ``pin`` and ``rotate``.

Inputs are files, directories (walked for ``*.yaml``, ``*.yml`` and ``*.json``) or stdin, read
as bytes (regular files only, within the manifest size bound) and decoded as UTF-8 so CRLF line
ends survive. Everything is read and parsed before anything is written, and :func:`write_all`
stages every file in a temporary file next to its target before renaming any of them, so a run
that writes several files writes all of them or none.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jwks_mirror import yamlsafe
from jwks_mirror.errors import ManifestError
from jwks_mirror.gitops.roundtrip import ManifestStream, parse_stream

__all__ = [
    "STDIN", "Input", "Output", "emit", "outputs_for", "read_inputs", "read_streams",
    "read_text", "write_all",
]

STDIN = "<stdin>"
# Comments and blank lines, then a document start marker.
_EXPLICIT_START = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\n)*---(?:[ \t\n]|$)")

# (path, display name, text); path is None for stdin
Input = tuple[Path | None, str, str]


@dataclass
class Output:
    """One file's text before and after; ``path`` is None for stdin."""

    path: Path | None
    name: str
    before: str
    after: str


def read_streams(paths: list[str]) -> tuple[list[Input], list[ManifestStream]]:
    """Read and parse every input (stdin when ``paths`` is empty) before anything is written.

    An unreadable path or invalid YAML raises :class:`ManifestError` (exit 2) naming
    ``file:line:col``.
    """
    inputs = read_inputs(paths or ["-"])
    return inputs, [parse_stream(text, source=name) for _, name, text in inputs]


def read_inputs(paths: list[str]) -> list[Input]:
    """``(path, display name, text)`` for each file; directories are walked for manifests.

    A directory is walked for ``*.yaml``, ``*.yml`` and ``*.json`` (what ``kubectl apply -f``
    and Argo CD apply), in sorted order, without following links to directories; a link to a
    file must stay inside the directory. Paths that start with a dot (``.git``, ``.github``)
    are skipped and listed on stderr; anything that cannot be listed or read is a
    :class:`ManifestError` (exit 2), never a silent pass.
    """
    found: list[Input] = []
    for raw in paths:
        if raw == "-":
            found.append((None, STDIN, _decode(_read_stdin(), STDIN)))
            continue
        path = Path(raw)
        files = _walk(path) if path.is_dir() else [path]
        for file in files:
            found.append((file, str(file), read_text(file)))
    return found


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    skipped: list[str] = []
    boundary = Path(os.path.realpath(root))
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            raise ManifestError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
        subdirectories: list[Path] = []
        for entry in listed:
            path = directory / entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError as exc:
                raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
            if entry.name.startswith("."):
                if is_dir or entry.name.endswith(MANIFEST_SUFFIXES):
                    skipped.append(f"{path}/" if is_dir else str(path))
            elif is_dir:
                subdirectories.append(path)
            elif entry.name.endswith(MANIFEST_SUFFIXES):
                if entry.is_symlink():
                    _inside(path, boundary)
                files.append(path)  # read_text refuses what is not a regular file
        pending.extend(reversed(subdirectories))
    for name in skipped:
        sys.stderr.write(f"jwks-mirror: skipped (starts with a dot): {_escape(name)}\n")
    return sorted(files)


def _inside(link: Path, boundary: Path) -> None:
    """Refuse a link in a walked directory that leads out of it (as Argo CD does): a pull
    request could otherwise have ``rewrite`` print any file the CI job can read."""
    target = Path(os.path.realpath(link))
    if target != boundary and boundary not in target.parents:
        raise ManifestError(f"{link}: a link that leads outside {boundary}")


def _escape(text: str) -> str:
    """``text`` with control characters (and line or paragraph separators) as escapes, so a
    file name cannot write to the terminal or forge a CI annotation."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _read_stdin() -> bytes:
    # Bytes, not text: universal newlines would turn CRLF into LF behind our back.
    limit = yamlsafe.MANIFEST.max_bytes
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise ManifestError(f"{STDIN}: larger than {limit} bytes (max_bytes)")
    return data


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{name}: not UTF-8 text") from None


def read_text(path: Path, *, max_bytes: int = yamlsafe.MANIFEST.max_bytes) -> str:
    """The file's text, line ends as they are. Only a regular file is read (a FIFO, device,
    socket, or a link to one is refused before anything is read), and at most ``max_bytes``
    of it; every refusal is a :class:`ManifestError` naming the path."""
    if not os.path.lexists(path):
        raise ManifestError(f"{path}: no such file or directory")
    data = yamlsafe.read_bounded(path, max_bytes=max_bytes, error=ManifestError)
    return _decode(data, str(path))


def outputs_for(inputs: list[Input], rendered: list[str]) -> list[Output]:
    """Pair each input with its new text."""
    return [
        Output(path, name, text, after)
        for (path, name, text), after in zip(inputs, rendered, strict=True)
    ]


def emit(
    outputs: list[Output], *, in_place: bool, diff: bool, config_out: Path | None = None
) -> None:
    """Show or write ``outputs``: a unified diff, every changed file (all or nothing), or the
    manifests on stdout (``config_out`` is written, never printed)."""
    if diff:
        for out in outputs:
            sys.stdout.writelines(
                difflib.unified_diff(
                    out.before.splitlines(keepends=True), out.after.splitlines(keepends=True),
                    f"a/{out.name.lstrip('/')}", f"b/{out.name.lstrip('/')}",
                )
            )
        return
    if in_place:
        write_all([o for o in outputs if o.path is not None and o.after != o.before])
        return
    manifests = [o for o in outputs if o.path is None or o.path != config_out]
    sys.stdout.write(_concatenate([o.after for o in manifests]))
    if config_out is not None:
        write_all([o for o in outputs if o.path == config_out and o.after != o.before])


def _concatenate(texts: list[str]) -> str:
    parts: list[str] = []
    for text in texts:
        if not text.strip():
            continue
        if parts:
            if not parts[-1].endswith("\n"):
                parts.append("\n")
            if not _EXPLICIT_START.match(text):
                parts.append("---\n")
        parts.append(text)
    return "".join(parts)


def write_all(outputs: list[Output]) -> None:
    """Write every output or none: all temporary files first, then the renames."""
    staged: list[tuple[str, Path]] = []
    try:
        for out in outputs:
            assert out.path is not None
            fd, temp = tempfile.mkstemp(prefix=f".{out.path.name}.", dir=out.path.parent or ".")
            staged.append((temp, out.path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(out.after)
            # mkstemp creates 0600; keep the file's mode, or give a new one the usual 0666-umask
            if out.path.exists():
                os.chmod(temp, out.path.stat().st_mode & 0o7777)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(temp, 0o666 & ~umask)
    except OSError as exc:
        for temp, _ in staged:
            Path(temp).unlink(missing_ok=True)
        raise ManifestError(f"cannot write: {exc.strerror}: {exc.filename}") from exc
    for temp, target in staged:
        os.replace(temp, target)
