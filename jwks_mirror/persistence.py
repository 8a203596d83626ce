"""The state file: what one issuer's state looks like on disk, and how it is written.

A file in ``state_dir`` is input like any other (a tampered volume, a file from an older
version with a looser policy): :func:`decode` re-validates every key through the one policy
(:func:`jwks_mirror.keysets.validate_keys`, strict), so a restored set is refused for the same
rule and reason an upstream body would be. What a restored set *does* to the issuer (retention,
staleness, publishing) is :meth:`jwks_mirror.state.IssuerState.restore`'s business, not this
module's; this one only reads and writes documents.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwks_mirror.errors import KeySetRejected
from jwks_mirror.keysets import Key, key_from_jwk, validate_keys

STATE_FORMAT = 1
_VALIDATORS = ("upstream_etag", "upstream_last_modified", "upstream_digest")


@dataclass(frozen=True)
class Snapshot:
    """One issuer's persistent state, as data: the file's content after validation."""

    current: tuple[Key, ...]
    retained: tuple[tuple[Key, float], ...]  # (key, removed_at)
    first_seen: Mapping[tuple[str | None, str], float]
    last_success: float | None  # never None in a decoded snapshot
    last_change: float | None
    upstream_etag: str | None = None
    upstream_last_modified: str | None = None
    upstream_digest: str | None = None


def encode(snapshot: Snapshot, *, name: str, upstream: str) -> dict[str, Any]:
    """A JSON-ready document for :class:`StateStore`."""
    return {
        "format": STATE_FORMAT,
        "name": name,
        "upstream": upstream,
        "last_success": snapshot.last_success,
        "last_change": snapshot.last_change,
        "upstream_etag": snapshot.upstream_etag,
        "upstream_last_modified": snapshot.upstream_last_modified,
        "upstream_digest": snapshot.upstream_digest,
        "keys": [dict(k.jwk) for k in snapshot.current],
        "retained": [{"jwk": dict(k.jwk), "removed_at": at} for k, at in snapshot.retained],
        "first_seen": [[kid, ident, ts] for (kid, ident), ts in snapshot.first_seen.items()],
    }


def decode(document: Mapping[str, Any], *, upstream: str, max_keys: int) -> Snapshot:
    """The validated content of a document. Raises ValueError when it is unusable."""
    if document.get("format") != STATE_FORMAT:
        raise ValueError(f"unknown format {document.get('format')!r}")
    if document.get("upstream") != upstream:
        raise ValueError("written for another upstream")
    last_success = document.get("last_success")
    if not isinstance(last_success, int | float) or isinstance(last_success, bool):
        raise ValueError("no last_success")
    # json.loads accepts NaN and Infinity: an infinite last_success would never go stale
    # (max_stale fails open) and a NaN removal time would retain a key for ever.
    if not math.isfinite(last_success):
        raise ValueError(f"last_success {last_success!r} is not a finite time")
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError('no "keys" list')
    try:
        current = validate_keys(keys, max_keys=max_keys, strict=True).keys
    except KeySetRejected as exc:
        raise ValueError(f"invalid key set ({exc.reason}): {exc}") from exc
    retained: list[tuple[Key, float]] = []
    items = document.get("retained", [])
    if not isinstance(items, list):
        raise ValueError('"retained" is not a list')
    for index, item in enumerate(items):
        try:
            key = key_from_jwk(item["jwk"])
            removed_at = float(item["removed_at"])
        except KeySetRejected as exc:
            raise ValueError(f"invalid retained[{index}] ({exc.reason}): {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid retained[{index}]: {exc!r}") from exc
        if not math.isfinite(removed_at):
            raise ValueError(f"retained[{index}].removed_at {removed_at!r} is not a finite time")
        retained.append((key, removed_at))
    last_change = document.get("last_change")
    validators = {n: v if isinstance(v := document.get(n), str) else None for n in _VALIDATORS}
    return Snapshot(
        current=current,
        retained=tuple(retained),
        first_seen=_first_seen(document.get("first_seen")),
        last_success=float(last_success),
        last_change=(
            float(last_change)
            if isinstance(last_change, int | float) and math.isfinite(last_change)
            else None
        ),
        **validators,
    )


def _first_seen(value: object) -> dict[tuple[str | None, str], float]:
    """Best effort: a malformed entry only loses a timestamp shown by ``explain``."""
    out: dict[tuple[str | None, str], float] = {}
    if isinstance(value, list):
        for item in value:
            if (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str | None)
                and isinstance(item[1], str)
                and isinstance(item[2], int | float)
                and math.isfinite(item[2])
            ):
                out[(item[0], item[1])] = float(item[2])
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write then rename, so a crash leaves the old file or the new one, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class StateStore:
    """One JSON file per issuer in ``state_dir``, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def save(self, name: str, document: Mapping[str, Any]) -> None:
        """Replace the issuer's file atomically (see :func:`write_atomic`)."""
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        write_atomic(self.path(name), data)

    def load(self, name: str) -> dict[str, Any] | None:
        """The stored document, None if there is none. Raises ValueError if it is corrupt."""
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"cannot read: {exc.strerror}") from exc
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError("not JSON") from exc
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document
