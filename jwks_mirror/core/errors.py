"""The exceptions jwks-mirror raises, and the one place each foreign error is translated.

Every failure the service reports to an operator is one of these, with a one-line human
message; the fetch, key and peer errors also carry a short machine-readable ``reason`` (a
metrics label). The CLI maps them to exit codes in one place (``jwks_mirror.cli.main``): a
:class:`UsageError` is exit 2, any other :class:`MirrorError` exit 1::

    MirrorError                                                                   exit code
    ├── UsageError             a command-line value or an input document is invalid      2
    │   ├── ConfigError        the configuration file; the message starts with the field
    │   └── ManifestError      a manifest cannot be read or rewritten; it starts with file:line
    ├── FetchError             one upstream fetch failed; the last good key set stays    1
    │   ├── UpstreamError      transport or protocol: timeout, connect, tls, status, redirect,
    │   │                      too_large, encoding, discovery
    │   └── KeySetRejected     the body arrived but fails the validation policy as a whole
    ├── KeyDropped             one key fails the policy; it is left out and counted
    ├── UnknownIssuer          a refresh named an issuer that is not configured (admin: 404)
    ├── PeerError              a peer's answer gave no usable set (peer fill); it is ignored
    ├── StateRefused           a state file is not restored; the issuer starts without it
    └── AdminError             talking to a running mirror's admin port failed (CLI)     1

Aiohttp, ssl and jwcrypto exceptions never escape a module boundary: ``fetching``, ``tls`` and
``keysets`` raise these with ``raise ... from exc`` so the cause is kept for debugging.
"""

from __future__ import annotations

# Exit codes of every command, defined here once.
EXIT_OK = 0  # success
EXIT_FAILED = 1  # the operation failed: a fetch, a check, a token Istio would reject
EXIT_USAGE = 2  # usage or input error: arguments, configuration, manifests, a token that is no JWT


class MirrorError(Exception):
    """Base class of every error jwks-mirror raises on purpose."""


class UsageError(MirrorError):
    """The operator asked for something that cannot be done as given: a bad argument (an
    admin URL, a token that is no JWT, exclusive flags) or an unreadable input document."""


class ConfigError(UsageError):
    """Invalid configuration. The message starts with the field's path when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)


class ManifestError(UsageError):
    """A manifest cannot be read or processed; the message starts with ``file:line``."""


class FetchError(MirrorError):
    """A fetch did not produce a new key set.

    ``reason`` is a stable, low-cardinality token for metrics and JSON outputs; the message
    is for humans and never holds more than a truncated excerpt of an upstream body.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class UpstreamError(FetchError):
    """The upstream could not be reached or did not answer with a usable 200."""


class KeySetRejected(FetchError):
    """The upstream answered, but the body fails the validation policy as a whole."""


class KeyDropped(MirrorError):
    """One key fails the policy; ``reason`` is its metrics label. The rest of the set may
    still be published; only :class:`KeySetRejected` refuses a whole set."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class UnknownIssuer(MirrorError):
    """A refresh named issuers that are not configured; ``args[0]`` lists them."""


class PeerError(MirrorError):
    """A peer's ``/peer/{name}`` answer was unusable; ``reason`` is its metrics label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class StateRefused(MirrorError):
    """A file in ``state_dir`` was not restored; ``reason`` is its metrics label (see
    ``persistence.StateStore.load`` and ``persistence.decode``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class AdminError(MirrorError):
    """A CLI command could not talk to the mirror's admin endpoint."""
