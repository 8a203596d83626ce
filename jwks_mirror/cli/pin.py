"""``jwks-mirror pin`` and ``rotate``: the I/O around :mod:`jwks_mirror.gitops.pinning`.

Inputs are read and parsed before the mirror is asked anything, and the mirror is asked
before anything is written, so ``--in-place`` stays all or nothing (the reading and writing
are :mod:`jwks_mirror.gitops.files`'s). Exit codes: 0 done; 1 the mirror could not be asked,
a refresh failed, an issuer has no version to pin (unknown to the mirror, nothing published,
replicas that disagree) or ``--check`` found URIs behind; 2 bad input or options.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jwks_mirror.cli.admin_client import (
    DEADLINE_S,
    MAX_ANSWER_BYTES,
    REFRESH_DEADLINE_S,
    AdminClient,
    deadline_after,
)
from jwks_mirror.cli.rewrite import mirror_url_option, read_manifests
from jwks_mirror.core.errors import EXIT_FAILED, EXIT_OK, KeySetRejected, UsageError
from jwks_mirror.core.strictjson import parse_json
from jwks_mirror.core.text import inert
from jwks_mirror.gitops.files import emit, outputs_for
from jwks_mirror.gitops.pinning import (
    Pin,
    apply_pins,
    behind,
    describe,
    plan_pins,
    versions_from_statuses,
)


def _stderr(line: str) -> None:
    sys.stderr.write(f"jwks-mirror: {inert(line)}\n")


def _clients(
    args: argparse.Namespace, *, token: str | None, default: str, deadline_s: float = DEADLINE_S
) -> list[AdminClient]:
    """One client per distinct ``--admin`` (each a replica), or for ``default``; they share
    the command's one deadline."""
    deadline = deadline_after(deadline_s)
    urls = dict.fromkeys(args.admin or [default])
    return [AdminClient(url, token=token, deadline=deadline) for url in urls]


def _read_status_file(path: str) -> Any:
    """A saved ``status --json``, read as strictly as the admin port's own answer."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ANSWER_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"--from-status: no such file: {path}") from None
    except OSError as exc:
        raise UsageError(f"--from-status: cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_ANSWER_BYTES:
        raise UsageError(f"--from-status: {path}: larger than {MAX_ANSWER_BYTES} bytes")
    try:
        return parse_json(data)
    except KeySetRejected as exc:
        raise UsageError(f"--from-status: {path}: not JSON: {exc}") from exc


def _unpinnable(pins: list[Pin]) -> bool:
    """Report pins without a version (stderr, one line each); True if there are any."""
    bad = [p for p in pins if p.problem is not None]
    for pin in bad:
        _stderr(f"error: {pin.ref.where}: cannot pin {pin.uri}: {pin.problem}")
    return bool(bad)


def _warn_normalised(pins: list[Pin]) -> None:
    seen: set[str] = set()
    for pin in pins:
        document = pin.ref.document
        if document.changed and document.normalised and pin.ref.source not in seen:
            seen.add(pin.ref.source)
            _stderr(
                f"warning: {pin.ref.source}: formatting ruamel.yaml cannot keep was normalised "
                "in the pinned documents"
            )


def run_pin(args: argparse.Namespace, *, token: str | None, default_admin: str) -> int:
    """Carry out ``pin`` as the parsed arguments say; returns the exit code."""
    if args.in_place and args.diff:
        raise UsageError("--in-place and --diff are exclusive")
    if args.check and (args.in_place or args.diff):
        raise UsageError("--check writes nothing: it cannot be combined with --in-place or --diff")
    if args.from_status and args.admin:
        raise UsageError("--admin and --from-status are exclusive")
    mirror_url = _mirror_url(args.mirror_url)
    inputs, streams = read_manifests(args.paths, in_place=args.in_place)
    if args.from_status:
        versions = versions_from_statuses(
            (path, _read_status_file(path)) for path in dict.fromkeys(args.from_status)
        )
    else:
        clients = _clients(args, token=token, default=default_admin)
        versions = versions_from_statuses((c.base_url, c.status()) for c in clients)
    pins = plan_pins(streams, versions, mirror_url=mirror_url)

    if args.check:
        late = behind(pins)
        for pin in late:
            print(inert(describe(pin)))
        _stderr(f"{len(late)} mirror jwksUris behind the mirror, {len(pins) - len(late)} current")
        return EXIT_FAILED if late else EXIT_OK
    if _unpinnable(pins):
        return EXIT_FAILED
    if not pins:
        _stderr("warning: no mirror jwksUri found (run `jwks-mirror rewrite` first?)")
    apply_pins(pins)
    _warn_normalised(pins)
    outputs = outputs_for(inputs, [stream.render() for stream in streams])
    emit(outputs, in_place=args.in_place, diff=args.diff)
    return EXIT_OK


def _mirror_url(value: str | None) -> str | None:
    return mirror_url_option(value) if value else None


# -- rotate ----------------------------------------------------------------------------------


def _kids(values: object) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) and values else "-"


def _report(result: dict[str, Any], *, replica: str | None, purge: bool) -> list[str]:
    head = f"{result.get('name')}: {result.get('outcome', 'failed')}"
    if replica is not None:
        head = f"{replica}: {head}"
    if result.get("error"):
        head += f": {result['error']}"
    lines = [head]
    fields = ["added", "retained", "removed"] + (["purged"] if purge else [])
    lines += [f"  {name + ':':<11}{_kids(result.get(name))}" for name in fields]
    lines.append(f"  {'published:':<11}{_kids(result.get('kids'))}")
    return lines


def run_rotate(args: argparse.Namespace, *, token: str | None, default_admin: str) -> int:
    """Refresh NAME on every ``--admin`` replica, report the kid changes, pin the PATHs.

    PATHs are pinned in place (all or nothing), or shown as a diff with ``--diff``; a failed
    refresh pins nothing.
    """
    if "-" in args.paths:
        raise UsageError("rotate pins files in place: give file or directory paths, not stdin")
    mirror_url = _mirror_url(args.mirror_url)
    inputs, streams = read_manifests(args.paths, in_place=True) if args.paths else ([], [])
    clients = _clients(args, token=token, default=default_admin, deadline_s=REFRESH_DEADLINE_S)
    several = len(clients) > 1
    failed = False
    for client in clients:
        for result in client.refresh([args.name], purge_retained=args.purge_retained):
            for line in _report(
                result, replica=client.base_url if several else None, purge=args.purge_retained
            ):
                print(inert(line))
            failed = failed or result.get("outcome") not in ("changed", "unchanged")
    if failed:
        _stderr(f"error: refreshing {args.name} failed: nothing pinned")
        return EXIT_FAILED

    versions = versions_from_statuses((c.base_url, c.status()) for c in clients)
    version, problem = versions.lookup(args.name)
    if version is None:
        _stderr(f"error: {problem}")
        return EXIT_FAILED
    print(f"version: {inert(version)}")
    if not args.paths:
        return EXIT_OK
    pins = plan_pins(streams, versions, mirror_url=mirror_url)
    if _unpinnable(pins):
        return EXIT_FAILED
    if not any(p.name == args.name for p in pins):
        _stderr(f"warning: no mirror jwksUri for {args.name} in the given paths")
    changed = apply_pins(pins)
    _warn_normalised(pins)
    outputs = outputs_for(inputs, [stream.render() for stream in streams])
    emit(outputs, in_place=not args.diff, diff=args.diff)
    if not args.diff:
        print(f"pinned: {changed} jwksUris changed, {len(pins) - changed} already current")
    return EXIT_OK
