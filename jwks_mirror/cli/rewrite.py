"""``jwks-mirror rewrite``: options, output and exit codes around :mod:`jwks_mirror.gitops.rewrite`.

Reads every input before writing anything, so ``--in-place`` is all or nothing: a file that
does not parse, a bad ``jwksUri`` or an invalid merged config stops the run with exit 2 and no
file touched (:mod:`jwks_mirror.gitops.files` does the reading and writing).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from jwks_mirror.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from jwks_mirror.core.text import inert
from jwks_mirror.gitops.files import Input, emit, outputs_for, read_streams, recover
from jwks_mirror.gitops.mesh import DEFAULT_MIRROR_URL, MeshPolicy, http_url
from jwks_mirror.gitops.restoring import check_restored, restore, restores
from jwks_mirror.gitops.rewrite import (
    Plan,
    apply_rewrite,
    known_names,
    merge_config,
    plan_rewrite,
    read_config,
)
from jwks_mirror.gitops.roundtrip import ManifestStream


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
    inputs, streams = read_manifests(args.paths, in_place=args.in_place)
    config_out = Path(args.config_out) if args.config_out else None
    policy = MeshPolicy(cluster_domain=args.cluster_domain, match=match)

    if args.restore:
        rendered = []
        for stream in streams:
            restored = restore(stream)
            text = stream.render()
            if restored:
                check_restored(stream, text, restored)
            rendered.append(text)
        outputs = outputs_for(inputs, rendered)
        emit(outputs, in_place=args.in_place, diff=args.diff, config_out=config_out)
        return EXIT_OK

    if config_out is not None:
        finish_interrupted([str(config_out)])
    config = read_config(config_out) if config_out else None
    # --check without --mirror-url compares with the Service deploy/ installs: a rule counts
    # as mirrored only if its jwksUri is the mirror's, never because of its annotation.
    mirror = mirror_url or DEFAULT_MIRROR_URL
    plan = plan_rewrite(
        streams, policy, mirror_url=mirror, known=known_names(config) if config else None
    )
    if args.check:
        return _check(plan, mirror_url=mirror)
    assert mirror_url is not None
    apply_rewrite(plan, mirror_url=mirror_url)
    outputs = outputs_for(inputs, [render_restorable(stream) for stream in streams])
    if config_out is not None:
        outputs.append(merge_config(config_out, config, plan))
    emit(outputs, in_place=args.in_place, diff=args.diff, config_out=config_out)
    return EXIT_OK


def mirror_url_option(value: str) -> str:
    """A valid ``--mirror-url`` without a trailing slash, or a UsageError."""
    parts = http_url(value)
    if parts is None or parts.query or parts.fragment or parts.username is not None:
        raise UsageError(
            f"--mirror-url: expected http:// or https://host[:port][/path], got {value!r}"
        )
    return value.rstrip("/")


def read_manifests(
    paths: list[str], *, in_place: bool
) -> tuple[list[Input], list[ManifestStream]]:
    """Every input read and parsed (stdin when ``paths`` is empty), or exit 2 before anything
    is written; shared by ``rewrite``, ``pin`` and ``rotate``."""
    if in_place and "-" in (paths or ["-"]):
        raise UsageError("--in-place needs file or directory paths, not stdin")
    finish_interrupted(paths)
    return read_streams(paths)


def finish_interrupted(paths: list[str]) -> None:
    """Roll forward or clean up what a killed ``--in-place`` run left under ``paths``
    (:func:`jwks_mirror.gitops.files.recover`), saying so on stderr."""
    for note in recover(paths):
        sys.stderr.write(f"jwks-mirror: {inert(note)}\n")


def render_restorable(stream: ManifestStream) -> str:
    """Render a rewritten stream, warning when ``--restore`` would not give its input back.

    If ruamel.yaml cannot keep some formatting (``True`` becomes ``true``, say), a warning
    names the file rather than the promise failing silently.
    """
    if not stream.changed:
        return stream.text
    rendered = stream.render()
    if not restores(stream, rendered):
        sys.stderr.write(
            f"jwks-mirror: warning: {inert(stream.source)}: --restore will not give this file "
            "back byte for byte (formatting ruamel.yaml cannot keep)\n"
        )
    return rendered


def _check(plan: Plan, *, mirror_url: str) -> int:
    pending = plan.pending()
    for target in pending:
        ref = target.ref
        if target.upstream.kind == "jwks":
            what = f"jwksUri {ref.rule.get('jwksUri')}"
        else:
            what = f"issuer {ref.rule.get('issuer')} (OIDC discovery)"
        why = ""
        if target.annotated:
            why = f" (annotated, but not a URL of the mirror {mirror_url})"
        print(inert(f"{ref.where}: {what} is not mirrored{why}"))
    mirrored = len(plan.targets) - len(pending)
    summary = f"{len(pending)} in-mesh rules not mirrored, {mirrored} mirrored"
    sys.stderr.write(f"jwks-mirror: {summary}\n")
    return EXIT_FAILED if pending else EXIT_OK
