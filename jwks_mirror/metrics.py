"""Prometheus metrics, on a registry the caller injects (every test builds its own).

Events (fetches, rejections, reloads) are counted as they happen: they are rare. Everything
that describes *state* (key counts, staleness, request counters) is read from the issuer
states at scrape time by :class:`StateCollector`, so the request path only bumps a plain int
and nothing is kept in two places.

Per-issuer event counters are kept by :class:`IssuerCounter`: plain numbers in a dict,
exported at scrape time, where a prometheus_client child per label set is an object with a
lock. The fetch duration histogram is one histogram for all issuers: per issuer it was
sixteen series, and with 10,000 issuers one scrape was 22 MB (docs/benchmarks.md). Nor are
``_created`` series exported for the per-issuer counters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jwks_mirror.state import IssuerState

if TYPE_CHECKING:  # mirror.py imports this module: the type only
    from jwks_mirror.mirror import Issuer

PREFIX = "jwks_mirror_"
# last_key_added_timestamp_seconds is exported this long at least after a key is added (or
# retain_removed_keys, if longer): three times istiod's default refresh interval.
KEY_ADDED_SHOWN_S = 3600.0
UNKNOWN_ISSUER = "_unknown"  # requests for names not configured, so hostile paths add no labels


class Metrics:
    """The event counters, plus the scrape-time collector over the issuer states."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        issuers: Callable[[], Iterable[Issuer]],
        unknown_requests: Mapping[int, int],
        clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.fetch_total = IssuerCounter(
            PREFIX + "fetch",
            "Upstream fetches by outcome (changed, unchanged, failed).",
            "outcome",
        )
        self.fetch_errors_total = IssuerCounter(
            PREFIX + "fetch_errors", "Failed fetches by reason.", "reason"
        )
        self.fetch_duration_seconds = Histogram(
            PREFIX + "fetch_duration_seconds",
            "Duration of upstream fetches, all issuers together.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.keys_rejected_total = IssuerCounter(
            PREFIX + "keys_rejected",
            "Keys dropped, or whole sets rejected, by the validation policy, by reason.",
            "reason",
        )
        self.config_reloads_total = Counter(
            PREFIX + "config_reloads",
            "Configuration reloads by outcome (success, failure).",
            ["outcome"],
            registry=registry,
        )
        self.persist_errors_total = IssuerCounter(
            PREFIX + "persist_errors", "Failures writing the state directory."
        )
        self.state_ignored_total = IssuerCounter(
            PREFIX + "state_ignored",
            "State files refused at start or reload, by reason (symlink, not_regular_file, "
            "too_large, unreadable, not_json, format, other_upstream, invalid); the issuer "
            "then started as if there were no file.",
            "reason",
        )
        # Peer fill (peering.py): attempts by outcome, and peer answers ignored by reason.
        self.peer_fills_total = IssuerCounter(
            PREFIX + "peer_fills",
            "Peer-fill attempts by outcome (filled, no_set, rejected, unreachable, no_peers).",
            "outcome",
        )
        self.peer_errors_total = IssuerCounter(
            PREFIX + "peer_errors",
            "Peer answers ignored, by reason: an invalid set, another upstream, older than "
            "max_stale, malformed, too large, timeout, unreachable.",
            "reason",
        )
        self.public_tls_reloads_total = Counter(
            PREFIX + "public_tls_reloads",
            "Reloads of the public port's certificate and key after they changed on disk, by "
            "outcome (success, failure); a failure keeps the pair in use.",
            ["outcome"],
            registry=registry,
        )
        self.public_tls_not_after_timestamp_seconds = Gauge(
            PREFIX + "public_tls_not_after_timestamp_seconds",
            "Expiry of the certificate the public port serves (absent without public.tls).",
            ["cert_file"],
            registry=registry,
        )
        self.public_aborts_total = Counter(
            PREFIX + "public_aborts",
            "Public-port connections aborted (reset, unwritten answers dropped), by reason: "
            "stalled (answers not drained for the idle timeout), closing (still closing a "
            "sweep after it was closed), shutdown (still open when the drain timed out).",
            ["reason"],
            registry=registry,
        )
        # Both ports' accept loops (listening.py), labelled port="public"|"admin".
        self.open_connections = Gauge(
            PREFIX + "open_connections",
            "Connections open on a port, by port (public, admin), TLS handshakes included.",
            ["port"],
            registry=registry,
        )
        self.connections_rejected_total = Counter(
            PREFIX + "connections_rejected",
            "Connections closed at once because the port held max_connections, by port.",
            ["port"],
            registry=registry,
        )
        self.accept_errors_total = Counter(
            PREFIX + "accept_errors",
            "Failed accepts (out of file descriptors, say), by port; logged as accept_failed "
            "at most once a second.",
            ["port"],
            registry=registry,
        )
        self._counters = (
            self.fetch_total,
            self.fetch_errors_total,
            self.keys_rejected_total,
            self.persist_errors_total,
            self.state_ignored_total,
            self.peer_fills_total,
            self.peer_errors_total,
        )
        registry.register(StateCollector(issuers, unknown_requests, clock))
        registry.register(_CounterCollector(self._counters))
        registry.register(PeerCopyCollector(lambda: [i.state for i in issuers()]))

    def forget(self, issuer: str) -> None:
        """Drop the event series of an issuer removed from the configuration."""
        for counter in self._counters:
            counter.forget(issuer)


class IssuerCounter:
    """A counter family labelled by issuer (and optionally one more label), kept as plain
    numbers and exported at scrape time. ``labels(issuer, ...).inc(n)`` as in
    prometheus_client, without a child object and lock per label set."""

    __slots__ = ("documentation", "extra_label", "name", "values")

    def __init__(self, name: str, documentation: str, extra_label: str | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.extra_label = extra_label
        self.values: dict[tuple[str, ...], float] = {}

    def labels(self, *values: str) -> _Series:
        if len(values) != (2 if self.extra_label else 1):
            raise ValueError(f"{self.name}: wrong number of label values {values!r}")
        return _Series(self.values, values)

    def forget(self, issuer: str) -> None:
        for key in [k for k in self.values if k[0] == issuer]:
            del self.values[key]

    def collect(self) -> CounterMetricFamily:
        labels = ["issuer", self.extra_label] if self.extra_label else ["issuer"]
        family = CounterMetricFamily(self.name, self.documentation, labels=labels)
        for key, value in self.values.items():
            family.add_metric(list(key), value)
        return family


class _Series:
    __slots__ = ("_key", "_values")

    def __init__(self, values: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._values = values
        self._key = key

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._values[self._key] = self._values.get(self._key, 0) + amount


class _CounterCollector(Collector):
    def __init__(self, counters: Iterable[IssuerCounter]) -> None:
        self._counters: Final = tuple(counters)

    def collect(self) -> Iterator[Metric]:
        for counter in self._counters:
            yield counter.collect()


class StateCollector(Collector):
    """Gauges and request counters computed from the live issuer states at scrape time."""

    def __init__(
        self,
        issuers: Callable[[], Iterable[Issuer]],
        unknown_requests: Mapping[int, int],
        clock: Callable[[], float],
    ) -> None:
        self._issuers = issuers
        self._unknown = unknown_requests
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        keys = GaugeMetricFamily(
            PREFIX + "keys", "Keys the upstream currently serves.", labels=["issuer"]
        )
        retained = GaugeMetricFamily(
            PREFIX + "retained_keys",
            "Keys removed upstream but still published.",
            labels=["issuer"],
        )
        last_success = GaugeMetricFamily(
            PREFIX + "last_success_timestamp_seconds",
            "Time of the last successful fetch.",
            labels=["issuer"],
        )
        stale = GaugeMetricFamily(
            PREFIX + "stale",
            "1 when the upstream did not confirm the served set at the last attempt, or "
            "there is no servable set; the last good set is still served until max_stale.",
            labels=["issuer"],
        )
        servable = GaugeMetricFamily(
            PREFIX + "servable",
            "1 when a key set is served; 0 when the public endpoint answers 503 (none yet, "
            "or older than max_stale: fail closed).",
            labels=["issuer"],
        )
        failures = GaugeMetricFamily(
            PREFIX + "consecutive_failures",
            "Failed fetches since the last success.",
            labels=["issuer"],
        )
        next_refresh = GaugeMetricFamily(
            PREFIX + "next_refresh_timestamp_seconds",
            "When the next fetch is scheduled.",
            labels=["issuer"],
        )
        info = GaugeMetricFamily(
            PREFIX + "key_set_info",
            "The published key set's ETag (always 1).",
            labels=["issuer", "etag"],
        )
        key_added = GaugeMetricFamily(
            PREFIX + "last_key_added_timestamp_seconds",
            "When a key was last added to the published set (a rotation began); exported for "
            "an hour (or retain_removed_keys, if longer) after that, so absent in steady state.",
            labels=["issuer"],
        )
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "Public endpoint requests by status code.",
            labels=["issuer", "code"],
        )
        for issuer in self._issuers():
            state, health = issuer.state, issuer.health
            name = state.name
            keys.add_metric([name], len(state.current))
            retained.add_metric([name], len(state.retained))
            if state.last_success is not None:
                last_success.add_metric([name], state.last_success)
            stale.add_metric([name], 1.0 if issuer.is_stale(now) else 0.0)
            servable.add_metric([name], 1.0 if state.servable(now) else 0.0)
            failures.add_metric([name], health.consecutive_failures)
            next_refresh.add_metric([name], health.next_refresh)
            if state.published is not None:
                info.add_metric([name, state.published.etag], 1.0)
            added = state.key_added_at
            if added is not None and now - added < max(
                KEY_ADDED_SHOWN_S, state.settings.limits.retain_removed_keys_s
            ):
                key_added.add_metric([name], added)
            for code, count in sorted(state.requests.items()):
                requests.add_metric([name, str(code)], count)
        for code, count in sorted(self._unknown.items()):
            requests.add_metric([UNKNOWN_ISSUER, str(code)], count)
        yield from (
            keys,
            retained,
            last_success,
            stale,
            servable,
            failures,
            next_refresh,
            info,
            key_added,
            requests,
        )


class PeerCopyCollector(Collector):
    """``filled_from_peer{issuer}``: 1 while the served set is a peer's copy (peering.py)."""

    def __init__(self, states: Callable[[], Iterable[IssuerState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            PREFIX + "filled_from_peer",
            "1 while the served set was copied from a peer replica (its upstream is failing).",
            labels=["issuer"],
        )
        for state in self._states():
            gauge.add_metric([state.name], 1.0 if state.source == "peer" else 0.0)
        yield gauge


_go_float: Callable[[float], str] = floatToGoString  # prometheus_client's number format
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


class _NotPlain(Exception):
    """A name the fast path does not render: leave it all to prometheus_client."""


def exposition(registry: Collector) -> bytes:
    """The Prometheus text format of ``generate_latest``, byte for byte (tested), for a
    fraction of its cost per sample: each label set is escaped once and reused by every
    family that has it (the per-issuer families all share theirs), and names are checked
    once per family instead of once per sample. With 10,000 issuers, ``generate_latest``
    took 1.1 s for the 100,000 samples of one scrape (docs/benchmarks.md)."""
    try:
        return _exposition(registry)
    except _NotPlain:
        return generate_latest(registry)


def _exposition(registry: Collector) -> bytes:
    out: list[str] = []
    labelstrs: dict[tuple[tuple[str, str], ...], str] = {}
    numbers: dict[float, str] = {}
    names: set[str] = set()
    for metric in registry.collect():
        name, kind = metric.name, metric.type
        shown = {"counter": name + "_total", "info": name + "_info"}.get(kind, name)
        kind = _KINDS.get(kind, kind)
        if not _LEGACY_NAME.match(shown):
            raise _NotPlain(shown)
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n")
        special = {name + suffix: suffix for suffix in ("_created", "_gsum", "_gcount")}
        deferred: dict[str, list[str]] = {}
        for sample in metric.samples:
            if sample.name not in names:
                if not _LEGACY_NAME.match(sample.name):
                    raise _NotPlain(sample.name)
                names.add(sample.name)
            labelstr = ""
            if sample.labels:
                key = tuple(sample.labels.items())
                labelstr = labelstrs.get(key) or labelstrs.setdefault(key, _labelstr(key))
            value = numbers.get(sample.value)
            if value is None:
                value = _go_float(sample.value)
                if sample.value:  # 0.0 == -0.0 as keys, but they print differently
                    numbers[sample.value] = value
            stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
            line = f"{sample.name}{labelstr} {value}{stamp}\n"
            suffix = special.get(sample.name)
            if suffix is None:
                out.append(line)
            else:
                deferred.setdefault(suffix, []).append(line)
        for suffix, lines in sorted(deferred.items()):
            out.append(f"# HELP {name}{suffix} {doc}\n# TYPE {name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")


_KINDS = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


def _labelstr(labels: tuple[tuple[str, str], ...]) -> str:
    parts = []
    for label, value in sorted(labels) if len(labels) > 1 else labels:
        if label not in _CHECKED_LABELS:
            if not _LEGACY_NAME.match(label):
                raise _NotPlain(label)
            _CHECKED_LABELS.add(label)
        if "\\" in value or "\n" in value or '"' in value:
            value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
        parts.append(f'{label}="{value}"')
    return "{" + ",".join(parts) + "}"


_CHECKED_LABELS: set[str] = set()


def new_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors (no global state)."""
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
