"""The state file: what one issuer's state looks like on disk, and how it is written.

A file in ``state_dir`` is input like any other (a tampered volume, a file from an older
version with a looser policy): :func:`decode` re-validates every key through the one policy
(:func:`jwks_mirror.core.keysets.validate_keys`, strict), so a restored set is refused for the same
rule and reason an upstream body would be. What a restored set *does* to the issuer (retention,
staleness, publishing) is :meth:`jwks_mirror.serving.state.IssuerState.restore`'s business, not this
module's; this one only reads and writes documents.

Reading a file is bounded before a byte is parsed (:meth:`StateStore.load`): it is opened
without following a symbolic link and without blocking (a FIFO would otherwise hang the
open until a writer came), and read only if it is a regular file no larger than
:func:`max_file_bytes`. Times are clamped to now and the retained list to ``max_keys``
(:func:`decode`): the tolerated repairs. Anything else refuses the file with a
:class:`StateRefused` whose ``reason`` the caller logs and counts; the issuer then starts as if
there were no file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwks_mirror.core.errors import KeySetRejected, StateRefused
from jwks_mirror.core.keysets import Key, key_from_jwk, validate_keys

STATE_FORMAT = 1
# Room for the JSON around the keys: names, times, validators and first_seen entries.
_ENVELOPE_BYTES = 65_536


def max_file_bytes(*, max_response_bytes: int) -> int:
    """The largest state file read for an issuer (1.06 MiB with the defaults).

    The file holds the current set (what the upstream served, within ``max_response_bytes``)
    and the retained keys (each once part of such a set): four upstream bodies and an envelope
    hold both with room to spare. A larger file is refused, never read: a link to a device or
    a runaway file must cost neither memory nor time. A mirror whose own set outgrew the cap
    only fetches afresh after a restart, as with no ``state_dir``.
    """
    return 4 * max_response_bytes + _ENVELOPE_BYTES
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
        "retained": encode_retained(snapshot.retained),
        "first_seen": [[kid, ident, ts] for (kid, ident), ts in snapshot.first_seen.items()],
    }


def decode(
    document: Mapping[str, Any], *, upstream: str, max_keys: int, now: float
) -> Snapshot:
    """The validated content of a document. Raises :class:`StateRefused` when it is unusable.

    Every time is clamped to ``now``: a clock that went back, or a tampered file, must not
    extend how long a set is served (``last_success``) or a removed key is published
    (``removed_at``). The retained list keeps the ``max_keys`` keys removed last.
    """
    try:
        return _decode(document, upstream=upstream, max_keys=max_keys, now=now)
    except StateRefused:
        raise
    except ValueError as exc:
        raise StateRefused("invalid", str(exc)) from exc


def _decode(
    document: Mapping[str, Any], *, upstream: str, max_keys: int, now: float
) -> Snapshot:
    if document.get("format") != STATE_FORMAT:
        raise StateRefused("format", f"unknown format {document.get('format')!r}")
    if document.get("upstream") != upstream:
        raise StateRefused("other_upstream", "written for another upstream")
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
    try:
        retained = decode_retained(document.get("retained", []), max_keys=max_keys, now=now)
    except KeySetRejected as exc:
        raise ValueError(f"invalid {exc}") from exc
    last_change = document.get("last_change")
    validators = {n: v if isinstance(v := document.get(n), str) else None for n in _VALIDATORS}
    return Snapshot(
        current=current,
        retained=retained,
        first_seen=_first_seen(document.get("first_seen")),
        last_success=min(float(last_success), now),
        last_change=(
            min(float(last_change), now)
            if isinstance(last_change, int | float) and math.isfinite(last_change)
            else None
        ),
        **validators,
    )


def encode_retained(retained: Iterable[tuple[Key, float]]) -> list[dict[str, Any]]:
    """A ``retained: [{jwk, removed_at}]`` list, in a state file or a peer's offer
    (:func:`decode_retained` reads both)."""
    return [{"jwk": dict(key.jwk), "removed_at": at} for key, at in retained]


def decode_retained(value: object, *, max_keys: int, now: float) -> tuple[tuple[Key, float], ...]:
    """The one rule for a ``retained: [{jwk, removed_at}]`` list, in a state file or a peer's
    offer: each key passes the policy strictly on its own (two retained keys may share a kid),
    and any key it refuses refuses the whole list, as the writer kept only keys it published.
    Every ``removed_at`` must be a finite time and is clamped to ``now``, so neither a clock
    that went back nor a tampered input extends how long a removed key is published; the list
    keeps the ``max_keys`` keys removed last (a stable sort keeps the input's order among equal
    times). Raises :class:`KeySetRejected`: its reason is the policy's (``weak_key``,
    ``private_key``...) or ``malformed``, its message starts ``retained[i] (reason): ``."""
    if not isinstance(value, list):
        raise KeySetRejected("malformed", "retained (malformed): not a list")
    out: list[tuple[Key, float]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("jwk"), dict):
            raise KeySetRejected("malformed", f"retained[{index}] (malformed): no jwk")
        removed_at = item.get("removed_at")
        if (
            isinstance(removed_at, bool)
            or not isinstance(removed_at, int | float)
            or not math.isfinite(removed_at)
        ):
            detail = f"removed_at {removed_at!r} is not a finite time"
            raise KeySetRejected("malformed", f"retained[{index}] (malformed): {detail}")
        try:
            key = key_from_jwk(item["jwk"])
        except KeySetRejected as exc:
            raise KeySetRejected(exc.reason, f"retained[{index}] ({exc.reason}): {exc}") from exc
        out.append((key, min(float(removed_at), now)))
    out.sort(key=lambda entry: entry[1], reverse=True)
    return tuple(out[:max_keys])


def apart_from_current(
    current: tuple[Key, ...], retained: tuple[tuple[Key, float], ...]
) -> dict[tuple[str | None, str], tuple[Key, float]]:
    """Retained keys by (kid, thumbprint), without those that are current again: a key is
    retained only while the upstream no longer serves it (of duplicates, the last listed wins)."""
    now_current = {(k.kid, k.ident) for k in current}
    out: dict[tuple[str | None, str], tuple[Key, float]] = {}
    for key, removed_at in retained:
        if (key.kid, key.ident) not in now_current:
            out[(key.kid, key.ident)] = (key, removed_at)
    return out


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

    def load(self, name: str, *, max_bytes: int) -> dict[str, Any] | None:
        """The stored document, None if there is none. Raises :class:`StateRefused` if it is
        not a regular file of at most ``max_bytes`` holding a JSON object.

        Blocking file I/O: call it off the event loop.
        """
        try:
            fd = os.open(self.path(name), _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateRefused("symlink", "a symbolic link (not followed)") from exc
            raise StateRefused("unreadable", f"cannot read: {exc.strerror}") from exc
        try:
            data = _read_regular(fd, max_bytes)
        finally:
            os.close(fd)
        return parse_document(data)


def parse_document(data: bytes) -> dict[str, Any]:
    """A state file's bytes as a JSON object. Raises :class:`StateRefused` (``not_json``)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StateRefused("not_json", "not JSON") from exc
    if not isinstance(document, dict):
        raise StateRefused("not_json", "not a JSON object")
    return document


# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, for ever.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_regular(fd: int, max_bytes: int) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise StateRefused("not_regular_file", f"not a regular file (mode {info.st_mode:#o})")
    if info.st_size > max_bytes:
        raise StateRefused("too_large", f"{info.st_size} bytes, over the cap of {max_bytes}")
    parts: list[bytes] = []
    size = 0
    try:
        # Read to the cap, not to the size fstat saw: the file may grow meanwhile.
        while chunk := os.read(fd, min(65_536, max_bytes + 1 - size)):
            parts.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise StateRefused("too_large", f"grew over the cap of {max_bytes} bytes")
    except OSError as exc:
        raise StateRefused("unreadable", f"cannot read: {exc.strerror}") from exc
    return b"".join(parts)


class StateWriter:
    """Writes one issuer's state file off the event loop, in order: a newer snapshot is never
    overwritten by an older one. A failed write is logged and counted (``on_error``), never
    fatal: the mirror serves on, and a restart only fetches afresh."""

    def __init__(
        self, store: StateStore, name: str, *, on_error: Callable[[OSError], None]
    ) -> None:
        self._store, self._name, self._on_error = store, name, on_error
        self._pending: asyncio.Task[None] | None = None

    def write(self, document: Mapping[str, Any]) -> None:
        """Queue ``document`` (taken on the event loop) behind any pending write."""
        previous = self._pending

        async def chained() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await asyncio.to_thread(self._store.save, self._name, document)
            except OSError as exc:
                self._on_error(exc)

        self._pending = asyncio.get_running_loop().create_task(chained())

    async def drain(self) -> None:
        """Wait for the pending write (on shutdown)."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
