"""persistence: the one snapshot codec (a state file and a peer's offer share the ``retained``
rule) and the "retained minus current" helper both restore and a peer copy use."""

from __future__ import annotations

import json
import time

import pytest

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.errors import KeySetRejected, PeerError
from jwks_mirror.core.keysets import key_from_jwk
from jwks_mirror.serving.offers import parse_offer
from jwks_mirror.serving.persistence import (
    StateStore,
    StateWriter,
    apart_from_current,
    decode_retained,
)

from .. import keyfactory as kf


def _entry(jwk: dict, removed_at: object) -> dict:
    return {"jwk": jwk, "removed_at": removed_at}


def test_removal_times_are_clamped_to_now_and_the_newest_removals_kept() -> None:
    entries = [_entry(kf.jwk("p256", kid=f"r{i}", index=10 + i), 100.0 + i) for i in range(4)]
    entries.append(_entry(kf.jwk("p256", kid="future", index=20), 9e12))
    decoded = decode_retained(entries, max_keys=3, now=500.0)
    assert [(k.kid, at) for k, at in decoded] == [("future", 500.0), ("r3", 103.0), ("r2", 102.0)]


@pytest.mark.parametrize(
    ("value", "reason", "index"),
    [
        ({"not": "a list"}, "malformed", None),
        ([{"removed_at": 1.0}], "malformed", 0),
        ([_entry(kf.jwk("p256", kid="a"), float("nan"))], "malformed", 0),
        ([_entry(kf.jwk("p256", kid="a"), True)], "malformed", 0),
        ([_entry(kf.jwk("rsa1024", kid="a"), 1.0)], "weak_key", 0),
    ],
)
def test_a_bad_entry_refuses_the_list_with_a_reason(value, reason, index) -> None:
    with pytest.raises(KeySetRejected) as caught:
        decode_retained(value, max_keys=5, now=10.0)
    where = "retained" if index is None else f"retained[{index}]"
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"{where} ({reason}): ")


def test_a_peer_offer_is_refused_for_a_retained_key_exactly_as_a_state_file_is() -> None:
    """One rule: a retained key the policy refuses refuses a peer's answer with the policy's
    reason, as it refuses a state file (tests/serving/test_state.py, weak_key)."""
    issuer = parse_settings(
        "issuers:\n  - name: idp\n    jwks_uri: http://keys.example/jwks.json\n"
    ).issuers[0]
    document = {
        "name": "idp",
        "upstream": issuer.upstream,
        "source": "upstream",
        "last_success": time.time() - 5,
        "jwks": json.dumps({"keys": [kf.jwk("p256", kid="k1")]}),
        "retained": [_entry(kf.jwk("rsa1024", kid="old"), time.time() - 10)],
    }
    with pytest.raises(PeerError) as caught:
        parse_offer(json.dumps(document).encode(), issuer=issuer, peer="p", now=time.time())
    assert caught.value.reason == "weak_key"
    assert str(caught.value).startswith("retained[0] (weak_key): ")


def test_retained_keys_that_are_current_again_are_left_out() -> None:
    current = key_from_jwk(kf.jwk("p256", kid="a"))
    gone = key_from_jwk(kf.jwk("p256", kid="b", index=2))
    kept = apart_from_current((current,), ((current, 5.0), (gone, 4.0)))
    assert list(kept.values()) == [(gone, 4.0)]


async def test_the_writer_writes_in_order_and_reports_a_failure(tmp_path) -> None:
    store = StateStore(tmp_path)
    errors: list[OSError] = []
    writer = StateWriter(store, "idp", on_error=errors.append)
    for n in range(5):
        writer.write({"n": n})
    await writer.drain()
    assert json.loads(store.path("idp").read_bytes()) == {"n": 4} and errors == []
    gone = StateWriter(StateStore(tmp_path / "missing"), "idp", on_error=errors.append)
    gone.write({"n": 5})
    await gone.drain()
    assert [type(e) for e in errors] == [FileNotFoundError]
