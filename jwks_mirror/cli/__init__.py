"""The ``jwks-mirror`` command: parse arguments, build settings, delegate. Nothing else.

Exit codes: 0 success, 1 the operation failed (a fetch, a check), 2 usage or input error.
Every error is one line on stderr; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from jwks_mirror.core.config.loader import CONFIG_ENV, load_settings
from jwks_mirror.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, MirrorError, UsageError
from jwks_mirror.core.text import inert

DEFAULT_ADMIN = "http://127.0.0.1:9090"
DEFAULT_CONFIG = "/etc/jwks-mirror/config.yaml"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {inert(message)}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jwks-mirror",
        description="Mirror in-mesh JWKS endpoints over mTLS onto a plain port istiod can reach.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            default=None,
            help=f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
        )

    def admin_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--admin", default=DEFAULT_ADMIN, help=f"default {DEFAULT_ADMIN}")
        p.add_argument(
            "--token-file",
            default=None,
            help="bearer token for a non-loopback admin port (default: $JWKS_MIRROR_ADMIN_TOKEN)",
        )

    p = sub.add_parser("serve", help="run the mirror")
    config_arg(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="self-contained showcase: an mTLS-only issuer, mirrored")
    p.add_argument("--once", action="store_true", help="run the checks and exit")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check-config", help="validate a configuration file")
    config_arg(p)
    p.add_argument(
        "--offline",
        action="store_true",
        help="skip what only the pod has (the files and directories named), for CI",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("refresh", help="make a running mirror fetch now")
    p.add_argument("names", nargs="*", metavar="NAME", help="issuers to refresh (default: all)")
    p.add_argument("--purge-retained", action="store_true", help="drop retained keys at once")
    admin_arg(p)
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("status", help="show a running mirror's issuers")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_arg(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("explain", help="why Istio would accept or reject a JWT")
    p.add_argument("jwt", metavar="TOKEN", help="the JWT, or - to read it from stdin")
    admin_arg(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("rewrite", help="point in-mesh RequestAuthentication jwksUris at the mirror")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: stdin)")
    p.add_argument("--mirror-url", help="the mirror's public URL (http://host:port)")
    p.add_argument("--in-place", action="store_true", help="rewrite the files (all or nothing)")
    p.add_argument("--config-out", metavar="FILE", help="write or merge the issuers: entries here")
    p.add_argument("--match", metavar="REGEX", help="also treat jwksUris matching REGEX as in-mesh")
    p.add_argument("--cluster-domain", default="cluster.local", help="default: cluster.local")
    p.add_argument("--check", action="store_true", help="exit 1 listing unmirrored jwksUris")
    p.add_argument("--restore", action="store_true", help="put the original jwksUris back")
    p.add_argument("--diff", action="store_true", help="print a unified diff instead")
    p.set_defaults(func=cmd_rewrite)

    def replicas_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--admin", action="append", metavar="URL",
            help=f"a replica's admin URL; repeat for every replica (default {DEFAULT_ADMIN})",
        )
        p.add_argument(
            "--token-file", default=None,
            help="bearer token for a non-loopback admin port (default: $JWKS_MIRROR_ADMIN_TOKEN)",
        )
        p.add_argument(
            "--mirror-url", metavar="URL",
            help="also pin jwksUris under this URL that rewrite did not annotate (any "
            "spelling of the same Service: svc, svc.ns, svc.ns.svc[.<cluster domain>])",
        )

    p = sub.add_parser("pin", help="set ?v=<key-set version> on mirror jwksUris (istiod refetches)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: stdin)")
    replicas_arg(p)
    p.add_argument(
        "--from-status", action="append", metavar="FILE",
        help="a saved `jwks-mirror status --json` instead of --admin; repeat for every replica",
    )
    p.add_argument("--in-place", action="store_true", help="rewrite the files (all or nothing)")
    p.add_argument("--diff", action="store_true", help="print a unified diff instead")
    p.add_argument("--check", action="store_true", help="exit 1 listing jwksUris behind the mirror")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("rotate", help="refresh an issuer, show kid changes, pin the manifests")
    p.add_argument("name", metavar="NAME", help="the issuer to refresh")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories pinned in place")
    replicas_arg(p)
    p.add_argument("--purge-retained", action="store_true", help="drop retained keys at once")
    p.add_argument("--diff", action="store_true", help="show the pinning as a diff, write nothing")
    p.set_defaults(func=cmd_rotate)

    from jwks_mirror.cli.analyze import add_parsers

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # The one place errors become exit codes (the tree is drawn in jwks_mirror.core.errors).
    try:
        return func(args)
    except UsageError as exc:  # arguments, configuration, manifests, a token that is no JWT
        _error(str(exc))
        return EXIT_USAGE
    except MirrorError as exc:  # the operation failed: a fetch, the admin port, a check
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (``| head``): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _error(message: str) -> None:
    sys.stderr.write(f"jwks-mirror: error: {inert(message)}\n")


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(_config_path(args), offline=args.offline)
    names = ", ".join(i.name for i in settings.issuers) or "none"
    checked = " (offline: files not checked)" if args.offline else ""
    print(inert(f"{_config_path(args)}: ok{checked} ({len(settings.issuers)} issuers: {names})"))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from jwks_mirror.serving.server import run

    path = _config_path(args)
    return run(load_settings(path), config_path=path)


def cmd_demo(args: argparse.Namespace) -> int:
    from jwks_mirror.demo import run_demo

    return run_demo(once=args.once)


def cmd_refresh(args: argparse.Namespace) -> int:
    from jwks_mirror.cli.admin_client import REFRESH_DEADLINE_S, AdminClient, deadline_after

    client = AdminClient(
        args.admin, token=_admin_token(args), deadline=deadline_after(REFRESH_DEADLINE_S)
    )
    results = client.refresh(args.names, purge_retained=args.purge_retained)
    ok = True
    for item in results:
        outcome = item["outcome"]
        kids = ", ".join(str(k) for k in item.get("kids") or []) or "-"
        line = f"{item.get('name')}: {outcome} (kids: {kids})"
        if item.get("error"):
            line += f": {item['error']}"
        print(inert(line))
        ok = ok and outcome != "failed"
    return EXIT_OK if ok else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    from jwks_mirror.cli.admin_client import AdminClient, format_status

    status = AdminClient(args.admin, token=_admin_token(args)).status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    issuers = status.get("issuers", [])
    return EXIT_OK if all(i.get("servable") for i in issuers) else EXIT_FAILED


def cmd_explain(args: argparse.Namespace) -> int:
    import time

    from jwks_mirror.cli.admin_client import AdminClient
    from jwks_mirror.cli.explain import decode_unverified, explain

    jwt = sys.stdin.read() if args.jwt == "-" else args.jwt
    decode_unverified(jwt)  # input errors (exit 2) before any network call
    client = AdminClient(args.admin, token=_admin_token(args))
    verdict = explain(
        jwt, issuers=client.status().get("issuers", []), detail=client.detail, now=time.time()
    )
    print(verdict.render())
    return EXIT_OK if verdict.accepted else EXIT_FAILED

def cmd_rewrite(args: argparse.Namespace) -> int:
    from jwks_mirror.cli.rewrite import run

    return run(args)


def cmd_pin(args: argparse.Namespace) -> int:
    from jwks_mirror.cli.pin import run_pin

    return run_pin(args, token=_admin_token(args), default_admin=DEFAULT_ADMIN)


def cmd_rotate(args: argparse.Namespace) -> int:
    from jwks_mirror.cli.pin import run_rotate

    return run_rotate(args, token=_admin_token(args), default_admin=DEFAULT_ADMIN)


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise UsageError(f"--token-file: {exc.strerror}: {args.token_file}") from exc
    return os.environ.get("JWKS_MIRROR_ADMIN_TOKEN") or None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
