"""Requests answered on the public port, by issuer and status code.

Plain ints (one event loop, no lock): the public server counts here on every request, and the
metrics read them at scrape time through :meth:`RequestCounts.of`. Requests for names that are
not configured share one row (``None``), so hostile paths add no labels.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

_NONE: Mapping[int, int] = {}


class RequestCounts:
    """Status code -> requests answered, per configured issuer and for unknown names."""

    __slots__ = ("_by_issuer",)

    def __init__(self) -> None:
        self._by_issuer: dict[str | None, dict[int, int]] = {}

    def counter(self, name: str | None) -> dict[int, int]:
        """The counts of ``name`` (None: names not configured), to add to in place."""
        counts = self._by_issuer.get(name)
        if counts is None:
            counts = self._by_issuer[name] = {}
        return counts

    def of(self, name: str | None) -> Mapping[int, int]:
        """Read only: the counts of ``name`` (None: names not configured), by status code."""
        return self._by_issuer.get(name, _NONE)

    def keep_only(self, names: Container[str]) -> None:
        """Forget the counts of issuers no longer configured (the unknown row stays)."""
        for name in [n for n in self._by_issuer if n is not None and n not in names]:
            del self._by_issuer[name]
