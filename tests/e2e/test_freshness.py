"""Scenario: how long after a rotation valid tokens are rejected, end to end, per setting.

Two IdPs behind STRICT sidecars, one mirror, istiod's resolver and a verifier Envoy::

    IdP --mTLS--> mirror --(new connection per fetch)--> IstiodResolver --push--> Envoy
                  schedule:                              refresh timer:            cache
                  refresh_interval, Cache-Control,       PILOT_JWT_PUB_KEY_        0.1 s
                  min_refresh_interval                   REFRESH_INTERVAL

- **(a) Dex-like**: signs with a new key the moment it publishes it, and says when in
  ``Cache-Control: max-age`` (whole seconds to its next rotation, truncated as Dex does).
- **(b) Auth0/Okta-like**: publishes the next key ``LEAD_S`` before it signs with it, and
  sends no ``Cache-Control``.

Each IdP is mirrored three times (three issuer entries, each with its own resolver and
verifier provider) under three settings: the defaults (the mirror's and istiod's), the
recommended ones (the mirror's defaults, istiod at 1 minute), and the recommended ones plus
``jwks-mirror rotate`` (refresh + pin) run at the rotation and the pinned manifest applied.

Intervals are scaled down: the defaults run at 1:60 (1 s stands for 1 min, so istiod's 20 min
is 20 s), the recommended ones at 1:5 (istiod's 1 min is 12 s). The mirror's whole-second
margin after ``max-age`` does not scale; at 1:60 it reads as a minute.

istiod's phase is the worst one: its timer is moved to fire just before the mirror's fetch
that picks up the change (read from ``/status``), so the window is the formula's bound,
mirror schedule + istiod interval + push, not a lucky fraction of it. A stream of the token
the IdP currently signs with goes to the verifier every 50 ms per row; the window is from the
moment the IdP starts signing with the new key to the last rejected one.

``pytest tests/e2e/test_freshness.py -s`` prints the table that docs/rotation.md shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jwks_mirror.core.config.model import MIN_REFRESH_INTERVAL_S, Limits

from .harness.envoy import Provider
from .harness.freshness import IstiodResolver, ScheduledIdP, TokenStream, add_idp
from .harness.mesh import Mesh
from .harness.mirror import Mirror
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ISTIOD_DEFAULT_S = 20 * 60  # PILOT_JWT_PUB_KEY_REFRESH_INTERVAL's default
ISTIOD_RECOMMENDED_S = 60
RECOMMENDED_REFRESH_S = 60  # the mirror's refresh_interval the docs recommend
TARGET_MARGIN_S = 15  # (a), recommended: window <= istiod's interval + 15 s
PUSH_S = 0.1  # the verifier's cache_duration: istiod's push, unscaled
ANNOUNCE_S = 6.0  # from arming the IdPs to the change, real seconds
LEAD_S = 30.0  # (b): the next key is published this long (real) before it signs
SETTLED_S = 1.0  # a row is over once every token for this long (real) was accepted
PHASE_S = 0.25  # istiod's refresh comes this long before the mirror's fetch

MANIFEST = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: api-jwt
  namespace: api
spec:
  jwtRules:
  - issuer: {issuer}
    jwksUri: http://keys.{idp}.svc.cluster.local/jwks.json
"""


@dataclass(frozen=True)
class Setting:
    name: str
    scale: int  # 1 real second stands for ``scale`` seconds
    istiod_s: float  # production seconds
    refresh_s: float  # the mirror's refresh_interval, production seconds
    min_refresh_s: float  # the mirror's min_refresh_interval, production seconds
    pin: bool = False

    def limits(self) -> dict[str, str]:
        """The mirror's settings, scaled; a floor under 1 s (the least the mirror takes) is
        left to its default, which is then refresh_interval."""
        limits = {"refresh_interval": f"{self.refresh_s / self.scale:g}s"}
        if self.min_refresh_s / self.scale >= 1:
            limits["min_refresh_interval"] = f"{self.min_refresh_s / self.scale:g}s"
        return limits

    @property
    def istiod_real_s(self) -> float:
        return self.istiod_s / self.scale


DEFAULTS = Limits()
SETTINGS = [
    Setting("defaults", 60, ISTIOD_DEFAULT_S, DEFAULTS.refresh_interval_s,
            DEFAULTS.min_refresh_interval_s),
    Setting("recommended", 5, ISTIOD_RECOMMENDED_S, RECOMMENDED_REFRESH_S,
            MIN_REFRESH_INTERVAL_S),
    Setting("recommended + rotate", 5, ISTIOD_RECOMMENDED_S, RECOMMENDED_REFRESH_S,
            MIN_REFRESH_INTERVAL_S, pin=True),
]


@dataclass
class Row:
    idp: ScheduledIdP
    setting: Setting
    entry: str  # the mirror's issuer name
    istiod: IstiodResolver
    stream: TokenStream | None = None
    pinned_at: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.idp.name}-{self.setting.name.split()[0]}{'-pin' if self.setting.pin else ''}"

    @property
    def change_at(self) -> float:  # when the next key appears upstream
        return self.idp.publish_at

    @property
    def switch_at(self) -> float:  # when the IdP starts signing with it
        return self.idp.sign_at

    def done(self) -> bool:
        return (self.stream is not None and time.time() > self.switch_at
                and self.stream.settled(since=self.switch_at, for_s=SETTLED_S))

    def window_s(self) -> float:
        assert self.stream is not None
        rejected = self.stream.rejected(since=self.switch_at)
        return max(v.sent_at for v in rejected) - self.switch_at if rejected else 0.0


@pytest.fixture
def resolvers() -> Iterator[list[IstiodResolver]]:
    made: list[IstiodResolver] = []
    try:
        yield made
    finally:
        for resolver in made:
            resolver.close()


def _human(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _cli(mirror: Mirror, *args: str) -> str:
    done = mirror.cli(*args)
    assert done.returncode == 0, f"jwks-mirror {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def _worst_phase(row: Row, mirror: Mirror) -> None:
    """Move istiod's timer to fire just before the mirror's fetch that picks up the change:
    istiod then fetches the old set and waits a whole interval for the new one."""
    threading.Event().wait(max(0.0, row.change_at - 0.3 - time.time()))
    try:
        due = wait_until(
            lambda: (n := float(mirror.status(row.entry)["next_refresh"])) >= row.change_at and n,
            timeout=30, interval=0.01, what=f"{row.entry}: the mirror's fetch after the change")
        row.istiod.tick_at(max(time.time(), due - PHASE_S))
    except Exception as exc:  # reported by the test, not lost in a thread
        row.errors.append(repr(exc))


def _rotate_at_switch(row: Row, mirror: Mirror, manifest: Path) -> None:
    """At the rotation: ``jwks-mirror rotate`` (refresh + pin), then apply the manifest."""
    threading.Event().wait(max(0.0, row.switch_at - time.time()))
    try:
        _cli(mirror, "rotate", row.entry, str(manifest), "--admin", mirror.admin_url,
             "--mirror-url", mirror.public_url)
        row.istiod.apply_manifest(manifest)
        row.pinned_at = time.time()
    except Exception as exc:  # reported by the test, not lost in a thread
        row.errors.append(repr(exc))


def test_rotation_window_per_idp_and_setting(
    mesh: Mesh, resolvers: list[IstiodResolver], tmp_path: Path
) -> None:
    dex = ScheduledIdP("dex", publish_after_s=ANNOUNCE_S, sign_after_s=ANNOUNCE_S,
                       cache_control="dex")
    okta = ScheduledIdP("okta", publish_after_s=ANNOUNCE_S, sign_after_s=ANNOUNCE_S + LEAD_S,
                        cache_control=None)
    workloads = [add_idp(mesh, dex), add_idp(mesh, okta)]
    sidecar = mesh.mirror_sidecar()

    rows: list[Row] = []
    entries = []
    for idp, workload in zip((dex, okta), workloads, strict=True):
        for setting in SETTINGS:
            # A pinned entry carries the name `jwks-mirror rewrite` gives the in-mesh host.
            entry = f"keys-{workload.name}" if setting.pin else f"{workload.name}-{setting.name}"
            entries.append({**workload.proxied_entry(sidecar.url, **setting.limits()),
                            "name": entry})
            resolver = IstiodResolver(setting.istiod_real_s)
            resolvers.append(resolver)
            rows.append(Row(idp, setting, entry, resolver))
    mirror = mesh.mirror(entries, defaults={"max_stale": "72h", "retain_removed_keys": "1h"},
                         start=False)
    # The manifests a GitOps repository holds, rewritten to the mirror's URLs.
    manifests = {}
    for row in rows:
        if row.setting.pin:
            manifests[row.label] = tmp_path / f"{row.idp.name}-jwt.yaml"
            manifests[row.label].write_text(
                MANIFEST.format(issuer=row.idp.issuer_url, idp=row.idp.name))
    paths = [str(m) for m in manifests.values()]
    _cli(mirror, "rewrite", *paths, "--mirror-url", mirror.public_url, "--in-place")
    mirror.start()
    _cli(mirror, "pin", *paths, "--admin", mirror.admin_url, "--mirror-url", mirror.public_url,
         "--in-place")
    for row in rows:
        if row.setting.pin:
            row.istiod.apply_manifest(manifests[row.label])
        else:
            row.istiod.apply(mirror.jwks_url(row.entry))
    verifier = mesh.verifier(
        [Provider(row.label, row.idp.issuer_url, row.istiod.url, row.istiod.port) for row in rows],
        cache_duration=f"{PUSH_S}s")
    for row in rows:
        wait_until(lambda row=row: verifier.accepts(row.label, row.idp.valid_token(0)[1]),
                   timeout=10, what=f"{row.label}: the verifier to accept the first key")
        row.stream = TokenStream(verifier, row.label, row.idp.valid_token).start()

    # The IdPs' schedules start now, and every entry fetches at once, so each hears its IdP
    # announce the change (as the mirror's last fetch before it would).
    for idp in (dex, okta):
        idp.arm(time.time())
    _cli(mirror, "refresh", *(r.entry for r in rows), "--admin", mirror.admin_url)
    assert time.time() < min(r.change_at for r in rows) - 1, "the refresh outlasted ANNOUNCE_S"

    threads = [
        threading.Thread(target=_rotate_at_switch, args=(r, mirror, manifests[r.label]))
        if r.setting.pin else threading.Thread(target=_worst_phase, args=(r, mirror))
        for r in rows
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(r.done() for r in rows), timeout=LEAD_S + ANNOUNCE_S + 30,
                   what="every row to accept the new key's tokens",
                   describe=lambda: ", ".join(f"{r.label}: {r.done()}" for r in rows))
    finally:
        for row in rows:
            if row.stream is not None:
                row.stream.stop()
        for thread in threads:
            thread.join(30)

    table = [("IdP", "setting", "scale", "refresh / istiod", "mirror has the key",
              "window", "bound")]
    for row in rows:
        assert not row.errors, row.errors
        assert row.stream is not None
        # Before the switch the old key signs, and every such token verifies.
        early = row.stream.rejected()
        assert all(v.sent_at >= row.switch_at for v in early), f"{row.label}: {early[:3]}"
        lag = float(mirror.status(row.entry)["last_change"]) - row.change_at
        window = row.window_s()
        bound = lag + row.setting.istiod_real_s + PUSH_S
        scale = row.setting.scale

        def real(seconds: float, scale: int = scale) -> str:
            return f"{seconds:.2f} s = {_human(seconds * scale)}"

        table.append((
            f"({'a' if row.idp is dex else 'b'}) {row.idp.name}", row.setting.name, f"1:{scale}",
            f"{_human(row.setting.refresh_s)} / {_human(row.setting.istiod_s)}", real(lag),
            f"{window:.2f} s (not scaled)" if row.setting.pin and window else real(window),
            "rotate + apply" if row.setting.pin else real(bound),
        ))
        if row.idp is okta:
            assert window == 0, f"{row.label}: a pre-published key's token was rejected"
            continue
        if row.setting.pin:
            assert row.pinned_at is not None
            # Closed by the commands, not by istiod's timer: rotate + apply, then the push.
            assert window <= row.pinned_at - row.switch_at + PUSH_S + 0.3, row.label
            assert window < row.setting.istiod_real_s, row.label
            continue
        # The formula: window <= mirror schedule + istiod interval + push (one token period
        # and istiod's own fetch of slack); istiod's worst phase makes it reach the bound.
        assert row.setting.istiod_real_s - PHASE_S - 0.2 <= window <= bound + 0.3, (row.label, window)
        if row.setting.name == "recommended":
            target = row.setting.istiod_real_s + TARGET_MARGIN_S / scale
            assert window <= target, f"{row.label}: {window:.2f} s > {target:.2f} s"

    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    print()
    table.insert(1, tuple("-" * w for w in widths))
    for line in table:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
