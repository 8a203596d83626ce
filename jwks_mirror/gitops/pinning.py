"""Version-pinned mirror URLs: ``?v=<key-set version>`` so istiod fetches a new set at once.

PURE-ish: mirror ``/status`` documents and round-trip manifest trees in, edited trees out; no
I/O, no aiohttp (:mod:`jwks_mirror.cli.pin` does the reading, asking and writing).

istiod caches each JWKS by the exact ``jwksUri`` string and refreshes it only every 20
minutes, and Envoy never refetches on an unknown ``kid``. The mirror ignores query strings, so
a ``jwksUri`` of ``<mirror>/<name>/jwks.json?v=<version>`` serves the same keys while a new
``version`` is, to istiod, a URI it has never seen: it fetches it at the next push.

* **Which URIs** — a rule's ``jwksUri`` is the mirror's when it is under ``mirror_url``,
  spelled any way that names the same Service (:func:`~jwks_mirror.gitops.mesh.under_mirror`);
  without one, when ``rewrite`` left the original in the
  :data:`~jwks_mirror.gitops.manifests.ANNOTATION` annotation for that rule index *and* it is
  under :data:`~jwks_mirror.gitops.mesh.DEFAULT_MIRROR_URL`. The annotation alone never makes
  a URI the mirror's. Either way its path must be ``.../<name>/jwks.json``.
* **Which version** — the ``version`` of ``<name>`` in the mirror's ``/status``: the first 16
  hex digits of the SHA-256 of the published canonical bytes, so every replica holding the
  same keys reports the same one. Several replicas' statuses must agree.
* **The query** — the mirror owns its URLs' query: it becomes exactly ``v=<version>`` (any
  other parameter or fragment is dropped). A URI already at that value is left untouched, so
  pinning twice changes nothing and unchanged documents keep their bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from jwks_mirror.core.errors import ManifestError, UsageError
from jwks_mirror.gitops.manifests import MAX_JWKS_URI, RuleRef, iter_rules, read_originals
from jwks_mirror.gitops.mesh import DEFAULT_MIRROR_URL, mirror_name, under_mirror
from jwks_mirror.gitops.roundtrip import ManifestStream

__all__ = [
    "Pin", "Versions", "apply_pins", "behind", "describe", "pinned_uri", "pinned_version",
    "plan_pins", "versions_from_statuses",
]

PARAM = "v"
# What a version may look like in a URL; the mirror's are 16 lower-case hex digits.
_VERSION = re.compile(r"[0-9a-f]{8,64}")


@dataclass
class Versions:
    """Each issuer's current key-set version, agreed by every replica asked.

    ``problems`` says why an issuer has none: no published set yet, or replicas that disagree.
    """

    versions: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def lookup(self, name: str) -> tuple[str | None, str | None]:
        """``(version, None)``, or ``(None, why not)``."""
        if name in self.versions:
            return self.versions[name], None
        return None, self.problems.get(name, f"issuer {name} is not configured on the mirror")


def _issuers(status: Any, source: str) -> list[dict[str, Any]]:
    issuers = status.get("issuers") if isinstance(status, dict) else None
    if not isinstance(issuers, list):
        raise UsageError(f"{source}: not a jwks-mirror status (no \"issuers\" list)")
    return [i for i in issuers if isinstance(i, dict) and isinstance(i.get("name"), str)]


def versions_from_statuses(statuses: Iterable[tuple[str, Any]]) -> Versions:
    """Merge ``(source, /status document)`` pairs, one per replica, into :class:`Versions`.

    A document without an ``issuers`` list is a :class:`UsageError` naming its source. An
    issuer is pinnable only if every replica lists it and publishes the same version: a
    replica that has not refreshed yet would hand istiod the old set under the new URI, and
    istiod would keep it for 20 minutes.
    """
    seen: dict[str, dict[str, str | None]] = {}
    sources: list[str] = []
    for source, status in statuses:
        sources.append(source)
        for item in _issuers(status, source):
            version = item.get("version")
            usable = version if isinstance(version, str) and _VERSION.fullmatch(version) else None
            seen.setdefault(item["name"], {})[source] = usable
    result = Versions()
    for name, by_source in seen.items():
        values = set(by_source.values())
        absent = [s for s in sources if s not in by_source]
        if absent:  # a config change not rolled out everywhere: those replicas answer 404
            result.problems[name] = f"issuer {name} is not configured on {', '.join(absent)}"
        elif None in values:
            missing = ", ".join(s for s, v in by_source.items() if v is None)
            result.problems[name] = f"issuer {name} has no published key set (on {missing})"
        elif len(values) > 1:
            detail = ", ".join(f"{v} on {s}" for s, v in by_source.items())
            result.problems[name] = (
                f"replicas publish different key sets for {name} ({detail}): refresh every "
                "replica first"
            )
        else:
            result.versions[name] = values.pop()  # type: ignore[assignment]
    return result


def pinned_version(uri: str) -> str | None:
    """The ``v`` query parameter of ``uri`` (the last one if repeated), or None."""
    values = parse_qs(urlsplit(uri).query, keep_blank_values=True).get(PARAM)
    return values[-1] if values else None


def pinned_uri(uri: str, version: str) -> str:
    """``uri`` with its query set to exactly ``v=<version>`` and no fragment."""
    return urlunsplit(urlsplit(uri)._replace(query=f"{PARAM}={version}", fragment=""))


@dataclass(frozen=True)
class Pin:
    """One mirror ``jwksUri``: where it is, its issuer name, and what it should say."""

    ref: RuleRef
    name: str
    uri: str
    version: str | None
    problem: str | None

    @property
    def wanted(self) -> str | None:
        return pinned_uri(self.uri, self.version) if self.version is not None else None

    @property
    def current(self) -> bool:
        return self.version is not None and self.uri == self.wanted


def _mirror_rule(ref: RuleRef, mirror_url: str | None) -> tuple[str, str, str | None] | None:
    """``(uri, name, problem)`` when the rule's ``jwksUri`` is (or claims to be) a mirror URL.

    Only the URL decides: it must be under ``mirror_url``, or without one under
    :data:`~jwks_mirror.gitops.mesh.DEFAULT_MIRROR_URL`. The annotation is the manifest
    author's to write, so a rule that has one but points elsewhere is not pinned: it comes
    back with a ``problem`` (``pin`` fails, ``--check`` lists it) rather than passing quietly.
    """
    uri = ref.rule.get("jwksUri")
    if not isinstance(uri, str):  # absent, null (YamlNull) or not a string
        return None
    name = mirror_name(uri)
    if name is None:
        return None
    mirror = mirror_url or DEFAULT_MIRROR_URL
    annotated = str(ref.index) in read_originals(ref.resource, source=ref.source)
    if under_mirror(str(uri), mirror, namespace=ref.namespace):
        return (str(uri), name, None) if mirror_url is not None or annotated else None
    if annotated:
        hint = "" if mirror_url is not None else " (give --mirror-url if the mirror is elsewhere)"
        return str(uri), name, f"annotated as rewritten, but not a URL of the mirror {mirror}{hint}"
    return None


def plan_pins(
    streams: list[ManifestStream], versions: Versions, *, mirror_url: str | None = None
) -> list[Pin]:
    """Every mirror ``jwksUri`` in ``streams``, in file order, with its wanted version."""
    pins: list[Pin] = []
    for stream in streams:
        for ref in iter_rules(stream):
            found = _mirror_rule(ref, mirror_url)
            if found is None:
                continue
            uri, name, refused = found
            if refused is not None:
                pins.append(Pin(ref, name, uri, None, refused))
                continue
            version, problem = versions.lookup(name)
            pins.append(Pin(ref, name, uri, version, problem))
    return pins


def apply_pins(pins: list[Pin]) -> int:
    """Set every pin's ``jwksUri`` to its wanted value; returns how many changed.

    Every pin must have a version (callers report the others first). URIs already current are
    not touched, so their documents keep their bytes.
    """
    changed = 0
    for pin in pins:
        wanted = pin.wanted
        if wanted is None:
            raise ManifestError(f"{pin.ref.where}: {pin.problem}")
        if pin.uri == wanted:
            continue
        if len(wanted) > MAX_JWKS_URI:
            raise ManifestError(
                f"{pin.ref.where}: pinned URL longer than {MAX_JWKS_URI} characters"
            )
        pin.ref.set_jwks_uri(wanted)
        changed += 1
    return changed


def behind(pins: list[Pin]) -> list[Pin]:
    """The pins ``--check`` fails on: no version, or not the mirror's current one."""
    return [p for p in pins if not p.current]


def describe(pin: Pin) -> str:
    """One ``--check`` line: ``file:line: ns/name spec.jwtRules[i]: jwksUri ...: why``."""
    head = f"{pin.ref.where}: jwksUri {pin.uri}"
    if pin.problem is not None:
        return f"{head}: {pin.problem}"
    have = pinned_version(pin.uri)
    if have is None:
        return f"{head} is not pinned (mirror has v={pin.version})"
    return f"{head} is behind (pinned v={have}, mirror has v={pin.version})"
