"""The CLI side of the admin port: a small client and the status table.

An admin port's answer is input like any other: the client follows no redirect (a 3xx is an
error, so the bearer token never leaves the host given with ``--admin`` and a 303 never turns
``refresh``'s POST into a GET), reads at most :data:`MAX_ANSWER_BYTES`, gives the whole
command one deadline (a server that drips its answer a byte at a time cannot keep it running),
parses with :func:`~jwks_mirror.core.strictjson.parse_json` and checks every field it uses for its
type before anything is printed. Anything else is an :class:`AdminError`: one line, exit 1.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from jwks_mirror.core.errors import AdminError, KeySetRejected, UpstreamError, UsageError
from jwks_mirror.core.strictjson import parse_json
from jwks_mirror.core.text import inert, one_line
from jwks_mirror.serving.httpclient import read_body

DEADLINE_S = 10.0  # status, explain, pin: the whole command, every request included
REFRESH_DEADLINE_S = 120.0  # refresh and rotate wait for the upstream fetches
MAX_ANSWER_BYTES = 32 << 20  # /status of 10,000 issuers is about 8 MB
OUTCOMES = frozenset({"changed", "unchanged", "failed"})


def deadline_after(seconds: float) -> float:
    """A command's deadline on the monotonic clock, shared by every client it makes."""
    return time.monotonic() + seconds


class AdminClient:
    """Talks to ``--admin URL``. Every failure is an :class:`AdminError` with one line.

    ``deadline`` (:func:`deadline_after`) bounds every request this client makes; without one,
    the client's own starts now and lasts :data:`DEADLINE_S`.
    """

    def __init__(
        self, base_url: str, *, token: str | None = None, deadline: float | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--admin: not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._deadline = deadline if deadline is not None else deadline_after(DEADLINE_S)

    def status(self) -> dict[str, Any]:
        status, document = self._call("GET", "/status")
        if status != 200:
            raise AdminError(_answered(self.base_url + "/status", status, document))
        return check_status(document, where=f"{self.base_url}/status")

    def detail(self, name: str) -> dict[str, Any]:
        """One issuer's detail (``/status/{name}``): summary, published set, key history."""
        path = f"/status/{urllib.parse.quote(name, safe='')}"
        status, document = self._call("GET", path)
        if status != 200:
            raise AdminError(_answered(self.base_url + path, status, document))
        return check_detail(document, where=self.base_url + path)

    def refresh(
        self, names: Iterable[str], *, purge_retained: bool = False
    ) -> list[dict[str, Any]]:
        """Refresh the named issuers (all when empty). 200 and 502 both carry results; a 502
        must report a failed one."""
        names = list(names)
        query = "?purge_retained=1" if purge_retained else ""
        if not names:
            return self._refresh_results(f"/refresh{query}")
        results: list[dict[str, Any]] = []
        for name in names:
            results += self._refresh_results(f"/refresh/{urllib.parse.quote(name, safe='')}{query}")
        return results

    def _refresh_results(self, path: str) -> list[dict[str, Any]]:
        status, document = self._call("POST", path)
        where = self.base_url + path
        if status not in (200, 502):
            raise AdminError(_answered(where, status, document))
        results = check_results(document, where=where)
        if status == 502 and all(r.get("outcome") != "failed" for r in results):
            raise AdminError(f"{where} answered 502 but reported no failed refresh")
        return results

    def _call(self, method: str, path: str) -> tuple[int, Any]:
        """``(status, parsed JSON or None)``; transport problems, redirects, a body over the
        cap and the deadline are :class:`AdminError`."""
        return asyncio.run(self._request(method, path))

    async def _request(self, method: str, path: str) -> tuple[int, Any]:
        url = self.base_url + path
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise AdminError(f"{url}: the command's deadline passed before this request")
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with asyncio.timeout(remaining):
                return await self._exchange(method, url, headers)
        except TimeoutError:
            raise AdminError(
                f"{url}: no complete answer before the command's deadline "
                f"({remaining:.0f}s left)"
            ) from None
        except aiohttp.InvalidURL as exc:
            raise UsageError(f"--admin: invalid URL {self.base_url!r}") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            detail = one_line(exc)
            raise AdminError(f"cannot reach the mirror at {self.base_url}: {detail}") from exc

    async def _exchange(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False
            ) as session,
            session.request(method, url, headers=headers, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                location = response.headers.get("Location", "")[:200]
                raise AdminError(
                    f"{url} answered {response.status} (to {location!r}); redirects are not "
                    "followed"
                )
            try:  # the capped read every outgoing request of the package uses
                body = await read_body(response, MAX_ANSWER_BYTES)
            except UpstreamError as exc:
                if exc.reason == "too_large":
                    raise AdminError(f"{url}: answer larger than {MAX_ANSWER_BYTES} bytes") from exc
                raise AdminError(f"{url}: {exc}") from exc
            return response.status, decode_answer(body)


def decode_answer(body: bytes) -> Any:
    """An admin answer's JSON, or None when it is none (strict: no NaN, no duplicate
    members, bounded nesting); the fuzz target ``fuzz/fuzz_admin_answers.py`` feeds it."""
    try:
        return parse_json(body)
    except KeySetRejected:
        return None


def _answered(where: str, status: int, document: Any) -> str:
    error = document.get("error") if isinstance(document, dict) else None
    return f"{where} answered {status}" + (f": {error}" if isinstance(error, str) else "")


# -- what an answer must look like -----------------------------------------------------------

Check = Callable[[Any], bool]


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_strs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_kids(value: Any) -> bool:  # a key may have no kid
    return isinstance(value, list) and all(v is None or isinstance(v, str) for v in value)


_SUMMARY: dict[str, Check] = {
    "issuer": _optional(_is_str),
    "upstream": _optional(_is_str),
    "kids": _is_kids,
    "upstream_kids": _is_kids,
    "retained_kids": _is_kids,
    "version": _optional(_is_str),
    "last_success": _optional(_is_number),
    "last_attempt": _optional(_is_number),
    "next_refresh": _optional(_is_number),
    "last_error": _optional(_is_str),
    "consecutive_failures": _is_int,
    "servable": _is_bool,
    "stale": _is_bool,
    "expired": _is_bool,
    "source": _optional(_is_str),
}
_HISTORY: dict[str, Check] = {
    "kid": _optional(_is_str),
    "thumbprint": _is_str,
    "status": _is_str,
    "first_seen": _optional(_is_number),
    "removed_at": _optional(_is_number),
    "retained_until": _optional(_is_number),
}
_RESULT: dict[str, Check] = {
    "outcome": lambda value: isinstance(value, str) and value in OUTCOMES,
    "kids": _is_kids,
    "added": _is_kids,
    "removed": _is_kids,
    "retained": _is_kids,
    "purged": _is_kids,
    "error": _optional(_is_str),
}


def _checked(
    item: Any, fields: dict[str, Check], where: str, *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise AdminError(f"{where}: unexpected answer (expected a JSON object)")
    for key in required:
        if key not in item:
            raise AdminError(f"{where}: unexpected answer (no {key!r})")
    for key, check in fields.items():
        if key in item and not check(item[key]):
            raise AdminError(f"{where}: unexpected answer ({key!r} has the wrong type)")
    return item


def _checked_list(document: Any, key: str, where: str) -> list[Any]:
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise AdminError(f"{where}: unexpected answer (expected a JSON object with a {key!r} list)")
    items: list[Any] = document[key]
    return items


def check_status(document: Any, *, where: str) -> dict[str, Any]:
    """A ``/status`` answer whose every field the CLI reads has its type; else AdminError."""
    for index, item in enumerate(_checked_list(document, "issuers", where)):
        _checked(item, {"name": _is_str, **_SUMMARY}, f"{where}: issuers[{index}]",
                 required=("name",))
    result: dict[str, Any] = document
    return result


def check_detail(document: Any, *, where: str) -> dict[str, Any]:
    """A ``/status/{name}`` answer, checked as :func:`check_status` checks a summary."""
    detail = _checked(document, {"name": _is_str, **_SUMMARY}, where)
    history = detail.get("key_history")
    if history is not None:
        if not isinstance(history, list):
            raise AdminError(f"{where}: unexpected answer ('key_history' is not a list)")
        for index, entry in enumerate(history):
            _checked(entry, _HISTORY, f"{where}: key_history[{index}]",
                     required=("kid", "thumbprint"))
    jwks = detail.get("jwks")
    if jwks is not None:
        for index, key in enumerate(_checked_list(jwks, "keys", f"{where}: jwks")):
            _checked(key, {"kty": _is_str, "kid": _optional(_is_str)},
                     f"{where}: jwks.keys[{index}]", required=("kty",))
    return detail


def check_results(document: Any, *, where: str) -> list[dict[str, Any]]:
    """A ``/refresh`` answer's results, each checked; else AdminError."""
    results = _checked_list(document, "results", where)
    return [
        _checked(item, {"name": _is_str, **_RESULT}, f"{where}: results[{index}]",
                 required=("name", "outcome"))
        for index, item in enumerate(results)
    ]


def format_status(status: dict[str, Any], *, now: float | None = None) -> str:
    """A table a human can read at a glance."""
    now = time.time() if now is None else now
    header = ("ISSUER", "STATE", "KIDS", "RETAINED", "LAST SUCCESS", "FAILURES", "NEXT", "ERROR")
    rows = [header]
    for item in status.get("issuers", []):
        state = _state_label(item)
        rows.append(
            (
                inert(item.get("name")),
                state,
                inert(",".join(str(k) for k in item.get("kids") or []) or "-"),
                inert(",".join(str(k) for k in item.get("retained_kids") or []) or "-"),
                _ago(item.get("last_success"), now),
                str(item.get("consecutive_failures", 0)),
                _until(item.get("next_refresh"), now),
                inert((item.get("last_error") or "-")[:80]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _state_label(item: dict[str, Any]) -> str:
    if not item.get("servable"):
        return "expired" if item.get("last_success") else "no keys"
    if item.get("source") == "peer":
        return "stale (peer copy)"  # the upstream is failing; a peer's set is served
    return "stale" if item.get("stale") else "ok"


def _ago(ts: object, now: float) -> str:
    if not isinstance(ts, int | float):
        return "never"
    return f"{human_duration(now - ts)} ago"


def _until(ts: object, now: float) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return "now" if ts <= now else f"in {human_duration(ts - now)}"


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3.5h``, ``2.0d``: a span at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
