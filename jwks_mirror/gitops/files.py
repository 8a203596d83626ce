"""Reading manifests in and writing them out, shared by ``rewrite``, ``pin`` and ``rotate``.

Inputs are files, directories (walked for ``*.yaml``, ``*.yml`` and ``*.json``) or stdin, read
as bytes (regular files only, within the manifest size bound) and decoded as UTF-8 so CRLF line
ends survive. Everything is read and parsed before anything is written, and :func:`write_all`
stages and fsyncs every file next to its target, commits with one journal, then renames, so a
run that writes several files writes all of them or none, even when killed; :func:`recover` is
how the next run finishes or cleans up after such a kill.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from jwks_mirror.core import yamlsafe
from jwks_mirror.core.errors import ManifestError
from jwks_mirror.core.text import inert
from jwks_mirror.gitops.roundtrip import ManifestStream, parse_stream

__all__ = [
    "STDIN", "Input", "Output", "emit", "outputs_for", "read_inputs", "read_streams",
    "read_text", "recover", "write_all",
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
        sys.stderr.write(f"jwks-mirror: skipped (starts with a dot): {inert(name)}\n")
    return sorted(files)


def _inside(link: Path, boundary: Path) -> None:
    """Refuse a link in a walked directory that leads out of it (as Argo CD does): a pull
    request could otherwise have ``rewrite`` print any file the CI job can read."""
    target = Path(os.path.realpath(link))
    if target != boundary and boundary not in target.parents:
        raise ManifestError(f"{link}: a link that leads outside {boundary}")



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


# -- all-or-nothing writes, even when killed ---------------------------------------------------
#
# ``write_all`` stages every file next to its target (``.<name>.jwks-mirror-staged-<run>``),
# fsyncs each and its directory, then commits by renaming ONE journal into place in the
# targets' common directory (``.jwks-mirror-commit-<run>``, listing every staged file), then
# renames the staged files over their targets and removes the journal. A run killed before the
# commit leaves staged files and no journal: the next run deletes them (nothing was applied).
# A run killed after it leaves a journal: the next run rolls forward, renaming what is still
# staged, because every new file is already on disk and the command asked for exactly that
# set; rolling back would need a copy of every old file. ``recover`` is that next-run step.

_STAGED = re.compile(r"\.(?P<name>.+)\.jwks-mirror-staged-(?P<run>[0-9a-f]+)")
_JOURNAL = re.compile(r"\.jwks-mirror-commit-(?P<run>[0-9a-f]+)(?P<partial>\.partial)?")


def write_all(outputs: list[Output]) -> None:
    """Write every output or none, even if the process is killed midway (see above)."""
    if not outputs:
        return
    run = f"{os.getpid():x}{secrets.token_hex(4)}"
    staged: list[tuple[Path, Path]] = []
    journal: Path | None = None
    try:
        for out in outputs:
            assert out.path is not None
            target = Path(os.path.abspath(out.path))
            temp = target.parent / f".{target.name}.jwks-mirror-staged-{run}"
            staged.append((temp, target))
            _write_synced(temp, out.after.encode("utf-8"), mode=_mode_for(target))
        directories = sorted({str(target.parent) for _, target in staged})
        for directory in directories:
            _sync_directory(Path(directory))
        home = Path(os.path.commonpath(directories))
        record = {
            "run": run,
            "files": [
                [os.path.relpath(temp, home), os.path.relpath(target, home)]
                for temp, target in staged
            ],
        }
        journal = partial = home / f".jwks-mirror-commit-{run}.partial"
        _write_synced(partial, json.dumps(record).encode(), mode=0o600)
        os.replace(partial, home / f".jwks-mirror-commit-{run}")  # the commit point
        journal = home / f".jwks-mirror-commit-{run}"
        _sync_directory(home)
    except (OSError, UnicodeError, ValueError) as exc:
        _discard(staged, journal)
        detail = getattr(exc, "strerror", None) or str(exc)
        where = getattr(exc, "filename", None)
        raise ManifestError(f"cannot write: {detail}" + (f": {where}" if where else "")) from exc
    except BaseException:
        _discard(staged, journal)
        raise
    for temp, target in staged:
        os.replace(temp, target)
    for directory in directories:
        _sync_directory(Path(directory))
    journal.unlink()
    _sync_directory(home)


def _mode_for(target: Path) -> int:
    # Keep an existing file's mode, or give a new one the usual 0666 less the umask.
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_synced(path: Path, data: bytes, *, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(staged: list[tuple[Path, Path]], journal: Path | None) -> None:
    if journal is not None:
        journal.unlink(missing_ok=True)
    for temp, _ in staged:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def recover(paths: list[str]) -> list[str]:
    """Finish or clean up what an interrupted ``write_all`` left under ``paths`` (files and
    directories, as given to the command); returns one line per action, for stderr.

    A staged file whose run committed (its journal is in one of its directory's ancestors)
    rolls that whole run forward; one whose run did not is deleted, as is a partial journal.
    """
    notes: list[str] = []
    staged: list[Path] = []
    journals: list[Path] = []
    for raw in paths:
        if raw == "-":
            continue
        path = Path(os.path.abspath(raw))
        if path.is_dir():
            for directory, subdirectories, names in os.walk(path):
                # Hidden directories (.git) hold no manifests, so nothing was staged there.
                subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
                for name in names:
                    if _STAGED.fullmatch(name):
                        staged.append(Path(directory, name))
                    elif _JOURNAL.fullmatch(name):
                        journals.append(Path(directory, name))
        elif path.parent.is_dir():
            staged += path.parent.glob(f".{glob.escape(path.name)}.jwks-mirror-staged-*")
    done: set[Path] = set()
    for temp in sorted(set(staged)):
        match = _STAGED.fullmatch(temp.name)
        if match is None or not temp.exists():
            continue
        journal = next(
            (d / f".jwks-mirror-commit-{match['run']}" for d in temp.parents
             if (d / f".jwks-mirror-commit-{match['run']}").is_file()),
            None,
        )
        if journal is None:
            temp.unlink(missing_ok=True)
            notes.append(f"removed {temp}, staged by an --in-place run that was interrupted")
        elif journal not in done:
            done.add(journal)
            notes.append(_roll_forward(journal))
    for journal in journals:
        match = _JOURNAL.fullmatch(journal.name)
        if journal in done or match is None or not journal.exists():
            continue
        if match["partial"]:
            journal.unlink(missing_ok=True)
        else:
            notes.append(_roll_forward(journal))
    return notes


def _roll_forward(journal: Path) -> str:
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        pairs = [(journal.parent / a, journal.parent / b) for a, b in record["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{journal}: unreadable record of an interrupted run: {exc}") from exc
    moved = 0
    for temp, target in pairs:
        if temp.exists():
            os.replace(temp, target)
            moved += 1
    for directory in {target.parent for _, target in pairs}:
        _sync_directory(directory)
    journal.unlink()
    return (
        f"completed an interrupted --in-place run: {moved} of {len(pairs)} files were still "
        "staged and are now written"
    )
