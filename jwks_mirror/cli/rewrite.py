"""``jwks-mirror rewrite``: the I/O around :mod:`jwks_mirror.gitops.manifests`.

Reads every input before writing anything, so ``--in-place`` is all or nothing: a file that
does not parse, a bad ``jwksUri`` or an invalid merged config stops the run with exit 2 and no
file touched. Writes go to a temporary file next to the target and are renamed into place.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from jwks_mirror.errors import EXIT_FAILED, EXIT_OK, UsageError
from jwks_mirror.gitops.manifests import (
    MeshPolicy,
    Plan,
    apply_rewrite,
    http_url,
    plan_rewrite,
    restore,
)
from jwks_mirror.gitops.roundtrip import (
    ManifestError,
    ManifestStream,
    dump_yaml,
    guess_layout,
    parse_stream,
)
from jwks_mirror.settings import parse_settings

STDIN = "<stdin>"
# Comments and blank lines, then a document start marker.
_EXPLICIT_START = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\n)*---(?:[ \t\n]|$)")


@dataclass
class Output:
    """One file's text before and after; ``path`` is None for stdin."""

    path: Path | None
    name: str
    before: str
    after: str


def run(args: argparse.Namespace) -> int:
    """Carry out ``rewrite`` as the parsed arguments say; returns the exit code."""
    mirror_url = mirror_url_option(args.mirror_url) if args.mirror_url else None
    if args.restore and (args.check or args.config_out):
        raise UsageError("--restore cannot be combined with --check or --config-out")
    if args.in_place and args.diff:
        raise UsageError("--in-place and --diff are exclusive")
    if mirror_url is None and not (args.restore or args.check):
        raise UsageError("--mirror-url is required (except with --restore or --check)")
    match = None
    if args.match:
        try:
            match = re.compile(args.match)
        except re.error as exc:
            raise UsageError(f"--match: invalid regular expression: {exc}") from exc
    inputs, streams = read_streams(args.paths, in_place=args.in_place)

    if args.restore:
        for stream in streams:
            restore(stream)
        return _emit(outputs_for(inputs, [s.render() for s in streams]), args)

    config_path = Path(args.config_out) if args.config_out else None
    config = _read_config(config_path) if config_path else None
    policy = MeshPolicy(cluster_domain=args.cluster_domain, match=match)
    plan = plan_rewrite(
        streams, policy, mirror_url=mirror_url, known=_known_names(config) if config else None
    )
    if args.check:
        return _check(plan)
    assert mirror_url is not None
    apply_rewrite(plan, mirror_url=mirror_url)
    outputs = outputs_for(inputs, [render_restorable(stream) for stream in streams])
    if config_path is not None:
        outputs.append(_config_output(config_path, config, plan))
    return _emit(outputs, args)


def mirror_url_option(value: str) -> str:
    """A valid ``--mirror-url`` without a trailing slash, or a UsageError."""
    parts = http_url(value)
    if parts is None or parts.query or parts.fragment or parts.username is not None:
        raise UsageError(
            f"--mirror-url: expected http:// or https://host[:port][/path], got {value!r}"
        )
    return value.rstrip("/")


def read_streams(
    paths: list[str], *, in_place: bool
) -> tuple[list[tuple[Path | None, str, str]], list[ManifestStream]]:
    """Read and parse every input (stdin when ``paths`` is empty) before anything is written.

    Shared by ``rewrite`` and ``pin``: an unreadable path or invalid YAML raises
    :class:`ManifestError` (exit 2) naming ``file:line:col``.
    """
    paths = paths or ["-"]
    if in_place and "-" in paths:
        raise UsageError("--in-place needs file or directory paths, not stdin")
    inputs = read_inputs(paths)
    return inputs, [parse_stream(text, source=name) for _, name, text in inputs]


def read_inputs(paths: list[str]) -> list[tuple[Path | None, str, str]]:
    """``(path, display name, text)`` for each file; directories are walked for YAML files."""
    found: list[tuple[Path | None, str, str]] = []
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
            found.append((file, str(file), _read_text(file)))
    return found


def _read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file or directory") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc


def outputs_for(
    inputs: list[tuple[Path | None, str, str]], rendered: list[str]
) -> list[Output]:
    return [
        Output(path, name, text, after)
        for (path, name, text), after in zip(inputs, rendered, strict=True)
    ]


def render_restorable(stream: ManifestStream) -> str:
    """Render a rewritten stream, making sure ``--restore`` gives its input back.

    The result is restored in memory and compared with the input. If ruamel.yaml cannot keep
    some formatting (``True`` becomes ``true``, say), a warning names the file rather than
    the promise failing silently.
    """
    if not stream.changed:
        return stream.text
    rendered = stream.render()
    if not _restores(stream, rendered):
        sys.stderr.write(
            f"jwks-mirror: warning: {stream.source}: --restore will not give this file back "
            "byte for byte (formatting ruamel.yaml cannot keep)\n"
        )
    return rendered


def _restores(stream: ManifestStream, rendered: str) -> bool:
    again = parse_stream(rendered, source=stream.source)
    for document in again.documents:  # a guess suffices: the comparison below checks it
        document.layout = guess_layout(document.body)
    restore(again)
    if again.render() == stream.text:
        return True
    again = parse_stream(rendered, source=stream.source)
    restore(again)
    return again.render() == stream.text


def _check(plan: Plan) -> int:
    pending = plan.pending()
    for target in pending:
        ref = target.ref
        if target.upstream.kind == "jwks":
            what = f"jwksUri {ref.rule.get('jwksUri')}"
        else:
            what = f"issuer {ref.rule.get('issuer')} (OIDC discovery)"
        print(f"{ref.where}: {what} is not mirrored")
    mirrored = len(plan.targets) - len(pending)
    summary = f"{len(pending)} in-mesh rules not mirrored, {mirrored} mirrored"
    sys.stderr.write(f"jwks-mirror: {summary}\n")
    return EXIT_FAILED if pending else EXIT_OK


# -- the mirror config -----------------------------------------------------------------------


def _read_config(path: Path) -> ManifestStream | None:
    if not path.exists():
        return None
    stream = parse_stream(_read_text(path), source=str(path))
    documents = [d for d in stream.documents if d.data is not None]
    if len(documents) > 1 or (documents and not isinstance(documents[0].data, CommentedMap)):
        raise ManifestError(f"{path}: expected one YAML mapping (a jwks-mirror config)")
    return stream


def _known_names(config: ManifestStream) -> dict[tuple[str, str], str]:
    """Upstream → name of the issuers an existing config already mirrors."""
    known: dict[tuple[str, str], str] = {}
    for entry in _issuer_list(config) or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        if entry.get("discovery") is True and isinstance(entry.get("issuer"), str):
            known.setdefault(("discovery", _discovery_upstream(entry)), entry["name"])
        elif isinstance(entry.get("jwks_uri"), str):
            known.setdefault(("jwks", entry["jwks_uri"]), entry["name"])
    return known


def _discovery_upstream(entry: dict[str, Any]) -> str:
    """The URL a discovery entry's upstream is known by: its issuer, or for an issuer named
    by a bare Service name, that issuer on its ``discovery_url``'s host (what
    :class:`~jwks_mirror.gitops.manifests.MeshPolicy` resolves it to)."""
    issuer = str(entry["issuer"])
    discovery_url = entry.get("discovery_url")
    if not isinstance(discovery_url, str) or http_url(discovery_url) is None:
        return issuer
    target = urlsplit(discovery_url)
    return urlunsplit(urlsplit(issuer)._replace(scheme=target.scheme, netloc=target.netloc))


def _issuer_list(config: ManifestStream) -> Any:
    documents = [d for d in config.documents if isinstance(d.data, CommentedMap)]
    return documents[0].data.get("issuers") if documents else None


def _config_output(path: Path, config: ManifestStream | None, plan: Plan) -> Output:
    """The merged config text, validated the way ``check-config`` would validate it.

    Entries whose name the config already has are left as they are (the name was taken from
    them); new ones are appended. Everything else in the file, comments included, stays.
    """
    entries = [CommentedMap(e) for e in plan.issuer_entries()]
    before = config.text if config is not None else ""
    documents = [d for d in config.documents if d.data] if config is not None else []
    if not documents:
        # A new (or empty, or comments-only) file: the layout of docs/configuration.md.
        data = CommentedMap(issuers=CommentedSeq(entries))
        after = before + ("\n" if before and not before.endswith("\n") else "")
        after += dump_yaml(data, (2, 4, 2))
    else:
        assert config is not None
        document = documents[0]
        document.fix_layout()
        issuers = document.data.get("issuers")
        if not isinstance(issuers, CommentedSeq):
            if issuers:
                raise ManifestError(f"{path}: issuers: expected a list")
            issuers = document.data["issuers"] = CommentedSeq()
        existing = {e.get("name") for e in issuers if isinstance(e, dict)}
        added = [e for e in entries if e["name"] not in existing]
        if added:
            issuers.fa.set_block_style()  # `issuers: []` would otherwise stay a flow list
            issuers.extend(added)
            document.changed = True
        after = config.render()
    # Offline: the file is written where the manifests live (a GitOps checkout, CI), not in
    # the pod, so the state directory and the files it names are not here to check.
    parse_settings(after, source=str(path), base_dir=path.parent, offline=True)
    return Output(path, str(path), before, after)


# -- writing ---------------------------------------------------------------------------------


def _emit(outputs: list[Output], args: argparse.Namespace) -> int:
    config_out = Path(args.config_out) if args.config_out else None
    return emit(outputs, in_place=args.in_place, diff=args.diff, config_out=config_out)


def emit(
    outputs: list[Output], *, in_place: bool, diff: bool, config_out: Path | None = None
) -> int:
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
        return EXIT_OK
    if in_place:
        write_all([o for o in outputs if o.path is not None and o.after != o.before])
        return EXIT_OK
    manifests = [o for o in outputs if o.path is None or o.path != config_out]
    sys.stdout.write(_concatenate([o.after for o in manifests]))
    if config_out is not None:
        write_all([o for o in outputs if o.path == config_out and o.after != o.before])
    return EXIT_OK


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
