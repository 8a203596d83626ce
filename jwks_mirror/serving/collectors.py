"""The per-issuer series, computed from the issuer states at scrape time: one table of
families (name, help, labels, value function, and when the compact budget exports them).

Each value reads an issuer through a small function below, so a change to where the data
lives touches only those. ``metrics.per_issuer`` (docs/metrics.md) chooses the detail:

* ``full``: every family for every issuer, zeros included;
* ``compact`` (the default): a healthy issuer exports 3 series (``keys``, ``last_success``,
  ``key_set_info``), and at most 5 during a rotation (``retained_keys``,
  ``last_key_added``), so 10,000 issuers stay within 60,000 samples even when all rotate
  (bench/issuers10k.py). An ``UNHEALTHY`` row appears only while its value differs from
  its ``healthy`` one (0, or 1 for ``servable``): failures, staleness, retained keys, a
  peer's copy, a set not served. The request counters are summed across issuers by code
  (and counters.py sums ``fetch_total`` by outcome).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # mirror.py imports this module (through counters): the type only
    from jwks_mirror.serving.mirror import Issuer

PREFIX = "jwks_mirror_"
# last_key_added_timestamp_seconds is exported this long at least after a key is added (or
# retain_removed_keys, if longer): three times istiod's default refresh interval.
KEY_ADDED_SHOWN_S = 3600.0
UNKNOWN_ISSUER = "_unknown"  # requests for names not configured, so hostile paths add no labels

PerIssuer = Callable[[], str]  # "compact" or "full", read at each scrape (a reload may change it)
When = Literal["always", "unhealthy", "full"]
ALWAYS: When = "always"  # in both modes
UNHEALTHY: When = "unhealthy"  # compact: only while the value is not the family's healthy one
Value = Callable[["Issuer", float], "float | Mapping[str, float] | None"]


# -- value functions: where each per-issuer value lives ---------------------------------


def _keys(i: Issuer, now: float) -> float:
    return len(i.state.current)


def _retained(i: Issuer, now: float) -> float:
    return len(i.state.retained)


def _last_success(i: Issuer, now: float) -> float | None:
    return i.state.last_success


def _stale(i: Issuer, now: float) -> float:
    return 1.0 if i.is_stale(now) else 0.0


def _servable(i: Issuer, now: float) -> float:
    return 1.0 if i.state.servable(now) else 0.0


def _failures(i: Issuer, now: float) -> float:
    return i.health.consecutive_failures


def _next_refresh(i: Issuer, now: float) -> float:
    return i.health.next_refresh


def _etag(i: Issuer, now: float) -> Mapping[str, float] | None:
    return None if i.state.published is None else {i.state.published.etag: 1.0}


def _key_added(i: Issuer, now: float) -> float | None:
    added = i.state.key_added_at
    shown = max(KEY_ADDED_SHOWN_S, i.state.settings.limits.retain_removed_keys_s)
    return added if added is not None and now - added < shown else None


def _from_peer(i: Issuer, now: float) -> float:
    return 1.0 if i.state.source == "peer" else 0.0


def _counted_apart(i: Issuer, now: float) -> None:
    """Requests are the public server's (``PublicServer.requests``), read by the collector."""
    return None


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    value: Value  # None: no series; a mapping: one series per value of the second label
    when: When
    kind: Literal["gauge", "counter"] = "gauge"
    healthy: float = 0.0  # with UNHEALTHY: the value compact mode leaves out


# The per-issuer families, in scrape order. A declarative table, exempt from the length rule.
FAMILIES: tuple[Family, ...] = (
    Family("keys", "Keys the upstream currently serves.", ("issuer",), _keys, ALWAYS),
    Family(
        "retained_keys",
        "Keys removed upstream but still published.",
        ("issuer",),
        _retained,
        UNHEALTHY,
    ),
    Family(
        "last_success_timestamp_seconds",
        "Time of the last successful fetch.",
        ("issuer",),
        _last_success,
        ALWAYS,
    ),
    Family(
        "stale",
        "1 when the upstream did not confirm the served set at the last attempt, or there is "
        "no servable set; the last good set is still served until max_stale.",
        ("issuer",),
        _stale,
        UNHEALTHY,
    ),
    Family(
        "servable",
        "1 when a key set is served; 0 when the public endpoint answers 503 (none yet, or "
        "older than max_stale: fail closed).",
        ("issuer",),
        _servable,
        UNHEALTHY,
        healthy=1.0,
    ),
    Family(
        "consecutive_failures",
        "Failed fetches since the last success.",
        ("issuer",),
        _failures,
        UNHEALTHY,
    ),
    Family(
        "next_refresh_timestamp_seconds",
        "When the next fetch is scheduled.",
        ("issuer",),
        _next_refresh,
        "full",
    ),
    Family(
        "key_set_info",
        "The published key set's ETag (always 1).",
        ("issuer", "etag"),
        _etag,
        ALWAYS,
    ),
    Family(
        "last_key_added_timestamp_seconds",
        "When a key was last added to the published set (a rotation began); exported for an "
        "hour (or retain_removed_keys, if longer) after that, so absent in steady state.",
        ("issuer",),
        _key_added,
        ALWAYS,
    ),
    Family(
        "requests",
        "Public endpoint requests by status code.",
        ("issuer", "code"),
        _counted_apart,
        "full",
        "counter",
    ),
    Family(
        "filled_from_peer",
        "1 while the served set was copied from a peer replica (its upstream is failing).",
        ("issuer",),
        _from_peer,
        UNHEALTHY,
    ),
)
_REQUESTS = next(f for f in FAMILIES if f.name == "requests")


class StateCollector(Collector):
    """The table's families, computed from the live issuer states at scrape time."""

    def __init__(
        self,
        issuers: Callable[[], Iterable[Issuer]],
        requests: Callable[[str | None], Mapping[int, int]],
        clock: Callable[[], float],
        per_issuer: PerIssuer = lambda: "compact",
    ) -> None:
        self._issuers = issuers
        self._requests_of = requests  # by issuer name; None: names not configured
        self._clock = clock
        self._per_issuer = per_issuer
        self._requests = MonotonicSum()

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        full = self._per_issuer() == "full"
        issuers = list(self._issuers())
        for family in FAMILIES:
            if family.when == "full" and not full:
                continue
            out = _new(family, family.labels)
            for issuer in issuers:
                value = family.value(issuer, now)
                if value is None:
                    continue
                if isinstance(value, Mapping):
                    for extra, number in value.items():
                        out.add_metric([issuer.state.name, extra], number)
                elif full or family.when == ALWAYS or value != family.healthy:
                    out.add_metric([issuer.state.name], value)
            if family is _REQUESTS:
                for name in [*(issuer.state.name for issuer in issuers), None]:
                    for code, count in sorted(self._requests_of(name).items()):
                        out.add_metric([name or UNKNOWN_ISSUER, str(code)], count)
            yield out
        if not full:
            yield self._requests_by_code(issuers)

    def _requests_by_code(self, issuers: list[Issuer]) -> Metric:
        """``requests_total{code}``: every issuer's requests (and the unknown names') summed."""
        current: dict[tuple[str, ...], float] = {
            (name or UNKNOWN_ISSUER, str(code)): float(count)
            for name in [*(issuer.state.name for issuer in issuers), None]
            for code, count in self._requests_of(name).items()
        }
        out = _new(_REQUESTS, ("code",))
        for code, total in sorted(self._requests.update(current).items()):
            out.add_metric([code], total)
        return out


def _new(family: Family, labels: tuple[str, ...]) -> GaugeMetricFamily | CounterMetricFamily:
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    return kind(PREFIX + family.name, family.help, labels=list(labels))


class MonotonicSum:
    """Per-issuer counts summed by their second label, never going down: the counts of an
    issuer removed from the configuration (or recreated, starting again from 0) stay in the
    sum, as a Prometheus counter must. Updated at each scrape."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], float] = {}
        self._gone: dict[str, float] = {}

    def update(self, current: Mapping[tuple[str, ...], float]) -> dict[str, float]:
        for key, before in self._last.items():
            if current.get(key, 0.0) < before:
                self._gone[key[-1]] = self._gone.get(key[-1], 0.0) + before
        self._last = dict(current)
        totals = dict(self._gone)
        for key, value in current.items():
            totals[key[-1]] = totals.get(key[-1], 0.0) + value
        return totals
