"""Reading manifests in and writing them out, shared by ``rewrite``, ``pin`` and ``rotate``.

Inputs are files, directories (walked for ``*.yaml``/``*.yml``) or stdin, read as bytes and
decoded as UTF-8 so CRLF line ends survive. Everything is read and parsed before anything is
written, and :func:`write_all` stages every file in a temporary file next to its target before
renaming any of them, so a run that writes several files writes all of them or none.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jwks_mirror.errors import ManifestError
from jwks_mirror.gitops.roundtrip import ManifestStream, parse_stream
from jwks_mirror.text import inert

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
    """``(path, display name, text)`` for each file; directories are walked for YAML files."""
    found: list[Input] = []
    for raw in paths:
        if raw == "-":
            # Bytes, not text: universal newlines would turn CRLF into LF behind our back.
            try:
                found.append((None, STDIN, sys.stdin.buffer.read().decode("utf-8")))
            except UnicodeDecodeError:
                raise ManifestError(f"{STDIN}: not UTF-8 text") from None
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.suffix in (".yaml", ".yml") and p.is_file()
                # .git, .github and the like are not manifests
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            files = [path]
        for file in files:
            found.append((file, str(file), read_text(file)))
    return found


def read_text(path: Path) -> str:
    """The file's text, line ends as they are; a missing or unreadable file is a
    :class:`ManifestError` naming it."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file or directory") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc


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
                    f"a/{inert(out.name.lstrip('/'))}", f"b/{inert(out.name.lstrip('/'))}",
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
