"""``jwks-mirror analyze`` and ``jwks-mirror blocked-cidrs``: options, output and exit codes
around :mod:`jwks_mirror.gitops.analyze` and :mod:`jwks_mirror.gitops.cidrs`.

``analyze`` reads manifests as ``rewrite`` does (files, directories, stdin, ``kind: List``),
never contacts a cluster, prints text for people or JSON for CI (the schema is in
docs/analyze.md), and exits 0 when nothing is at or above ``--fail-on``, 1 when something is,
2 when the input cannot be read.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from jwks_mirror.core.config.loader import load_settings
from jwks_mirror.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from jwks_mirror.gitops.analyze import analyze
from jwks_mirror.gitops.cidrs import (
    DEFAULT_BLOCKED,
    IPAddress,
    IPNetwork,
    blocked_except,
    parse_cidr,
)
from jwks_mirror.gitops.files import read_streams
from jwks_mirror.gitops.findings import SEVERITIES, Finding

JSON_VERSION = 1


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``analyze`` and ``blocked-cidrs`` on the main parser."""
    p = sub.add_parser(
        "analyze", help="offline: what in these manifests will make istiod or Envoy reject tokens"
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: stdin)")
    p.add_argument("--mirror-config", metavar="FILE", help="the mirror's config (default: its "
                   "ConfigMap in the input, if any)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--fail-on", choices=(*SEVERITIES, "never"), default="error",
                   help="exit 1 when a finding is at least this severe (default: error)")
    p.add_argument("--assume-strict", action="store_true",
                   help="treat the mesh as STRICT mTLS where the input has no PeerAuthentication")
    p.add_argument("--cluster-domain", default="cluster.local", help="default: cluster.local")
    p.set_defaults(func=run_analyze)

    p = sub.add_parser(
        "blocked-cidrs", help="a BLOCKED_CIDRS_IN_JWKS_URIS value that keeps the mirror reachable"
    )
    p.add_argument("--allow", action="append", required=True, metavar="IP",
                   help="an address istiod must still reach (the mirror's ClusterIP); repeatable")
    p.add_argument("--block", action="append", metavar="CIDR",
                   help="a range to block; repeatable (default: RFC 1918, loopback, link-local, "
                   "CGNAT, ::1/128, fc00::/7, fe80::/10)")
    p.set_defaults(func=run_blocked_cidrs)


def run_analyze(args: argparse.Namespace) -> int:
    settings = None
    if args.mirror_config:
        settings = load_settings(args.mirror_config, offline=True)
    inputs, streams = read_streams(args.paths)
    findings = analyze(
        streams, mirror_settings=settings, assume_strict=args.assume_strict,
        cluster_domain=args.cluster_domain,
    )
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    if args.format == "json":
        document = {
            "version": JSON_VERSION,
            "findings": [f.as_json() for f in findings],
            "summary": {**counts, "files": len(inputs)},
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        for finding in findings:
            print(finding.render())
        print(_summary(counts, files=len(inputs)))
    return EXIT_FAILED if _fails(findings, args.fail_on) else EXIT_OK


def _fails(findings: list[Finding], fail_on: str) -> bool:
    if fail_on == "never":
        return False
    worst = SEVERITIES.index(fail_on)
    return any(SEVERITIES.index(f.severity) <= worst for f in findings)


def _summary(counts: dict[str, int], *, files: int) -> str:
    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (
        f"{plural(counts['error'], 'error')}, {plural(counts['warning'], 'warning')} "
        f"in {plural(files, 'file')}"
    )


def run_blocked_cidrs(args: argparse.Namespace) -> int:
    allowed: list[IPAddress] = []
    for value in args.allow:
        try:
            allowed.append(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise UsageError(f"--allow: not an IP address: {value!r}") from None
    blocked: list[IPNetwork] = list(DEFAULT_BLOCKED)
    if args.block:
        blocked = []
        for value in args.block:
            try:
                blocked.append(parse_cidr(value))
            except ValueError:
                raise UsageError(f"--block: not a CIDR (address/prefix): {value!r}") from None
    for address in allowed:
        if not any(address in net for net in blocked):
            sys.stderr.write(f"jwks-mirror: note: {address} is in no blocked range\n")
    print(",".join(str(net) for net in blocked_except(blocked, allowed)))
    return EXIT_OK
