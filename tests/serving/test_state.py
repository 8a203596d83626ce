"""Per-issuer state with plain-number clocks: publishing, retention, staleness, persistence."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from jwks_mirror.core.config.model import IssuerSettings, Limits
from jwks_mirror.core.errors import KeySetRejected, StateRefused
from jwks_mirror.core.keysets import Validated, render, validate, version_of
from jwks_mirror.serving.fetching import Validators
from jwks_mirror.serving.persistence import STATE_FORMAT, StateStore, max_file_bytes
from jwks_mirror.serving.state import Change, IssuerState

from .. import keyfactory as kf

UPSTREAM = "http://keys.myns.svc.cluster.local/jwks.json"
RETAIN = 3600.0
MAX_STALE = 7200.0
CAP = 1 << 20


def make_state(*, retain: float = RETAIN, max_stale: float = MAX_STALE) -> IssuerState:
    limits = Limits(refresh_interval_s=60.0, max_stale_s=max_stale, retain_removed_keys_s=retain)
    return IssuerState(IssuerSettings(name="keys", jwks_uri=UPSTREAM, limits=limits))


def keyset(*jwks: dict[str, Any]) -> Validated:
    return validate(kf.body(*jwks), max_bytes=1 << 20, max_keys=100)


def A() -> dict[str, Any]:
    return kf.jwk("rsa2048", kid="a")


def B() -> dict[str, Any]:
    return kf.jwk("p256", kid="b")


def C() -> dict[str, Any]:
    return kf.jwk("ed25519", kid="c")


def body_of(*jwks: dict[str, Any]) -> bytes:
    return render(keyset(*jwks).keys)


def served(state: IssuerState) -> bytes:
    assert state.published is not None
    return state.published.body


# -- publishing ------------------------------------------------------------------------------


def test_new_state_serves_nothing() -> None:
    state = make_state()
    assert state.published is None
    assert state.stale_deadline() == float("-inf")
    assert state.is_expired(0.0)
    assert not state.servable(0.0)
    assert state.next_retention_expiry() is None


def test_apply_publishes_the_canonical_set() -> None:
    state = make_state()
    change = state.apply(keyset(B(), A()), now=100.0)
    assert change == Change(changed=True, added=("a", "b"), removed=(), retained=())
    assert state.published is not None
    assert state.published.body == body_of(A(), B())
    assert state.published.version == version_of(state.published.body)
    assert state.published.etag == f'"{state.published.version}"'
    assert state.published.kids == ("a", "b")
    assert (state.last_success, state.last_change) == (100.0, 100.0)
    assert state.servable(100.0)


def test_apply_of_the_same_keys_changes_nothing_but_last_success() -> None:
    state = make_state()
    state.apply(keyset(A(), B()), now=100.0)
    before = state.published
    change = state.apply(keyset(B(), A()), now=200.0)
    assert change == Change(changed=False)
    assert state.published is before
    assert state.last_change == 100.0
    assert state.last_success == 200.0


def test_keys_without_kid_are_labelled_in_changes() -> None:
    state = make_state()
    change = state.apply(keyset(kf.jwk("p256")), now=0.0)
    assert len(change.added) == 1
    assert change.added[0].startswith("<no kid ")
    assert state.published is not None
    assert state.published.kids == ()


# -- retention -------------------------------------------------------------------------------


def test_removed_key_is_retained_then_expires_exactly_at_the_boundary() -> None:
    state = make_state()
    state.apply(keyset(A(), B()), now=100.0)
    change = state.apply(keyset(B()), now=200.0)
    assert change == Change(changed=False, added=(), removed=("a",), retained=("a",))
    assert served(state) == body_of(A(), B())
    assert state.next_retention_expiry() == 200.0 + RETAIN

    assert state.expire_retained(200.0 + RETAIN - 0.001) is False
    assert served(state) == body_of(A(), B())
    assert state.retained_kids() == ("a",)

    assert state.expire_retained(200.0 + RETAIN) is True
    assert served(state) == body_of(B())
    assert state.retained_kids() == ()
    assert state.last_change == 200.0 + RETAIN
    assert state.next_retention_expiry() is None


def test_retention_is_counted_from_the_first_removal() -> None:
    state = make_state()
    state.apply(keyset(A(), B()), now=0.0)
    state.apply(keyset(B()), now=10.0)
    state.apply(keyset(B(), C()), now=20.0)  # A still absent: its clock keeps running
    assert state.next_retention_expiry() == 10.0 + RETAIN
    change = state.apply(keyset(B(), C()), now=10.0 + RETAIN)
    assert change.changed
    assert served(state) == body_of(B(), C())


def test_zero_retention_drops_removed_keys_at_once() -> None:
    state = make_state(retain=0.0)
    state.apply(keyset(A(), B()), now=0.0)
    change = state.apply(keyset(B()), now=1.0)
    assert change == Change(changed=True, added=(), removed=("a",), retained=())
    assert served(state) == body_of(B())


def test_returning_key_leaves_retention() -> None:
    state = make_state()
    state.apply(keyset(A(), B()), now=0.0)
    state.apply(keyset(B()), now=10.0)
    change = state.apply(keyset(A(), B()), now=20.0)
    assert change == Change(changed=False, added=("a",), removed=(), retained=())
    assert state.retained == {}
    # Its old removal time no longer applies: nothing expires at 10 + RETAIN.
    assert state.expire_retained(10.0 + RETAIN) is False
    assert served(state) == body_of(A(), B())


def test_purge_drops_retained_keys_at_once() -> None:
    state = make_state()
    state.apply(keyset(A(), B(), C()), now=0.0)
    state.apply(keyset(B()), now=10.0)
    assert state.purge_retained(now=11.0) == ("a", "c")
    assert served(state) == body_of(B())
    assert state.retained == {}
    assert state.last_change == 11.0


def test_purge_with_nothing_retained_changes_nothing() -> None:
    state = make_state()
    state.apply(keyset(A()), now=0.0)
    before = state.published
    assert state.purge_retained(now=5.0) == ()
    assert state.published is before
    assert state.last_change == 0.0


def test_kid_reused_for_a_new_key_is_not_published_twice() -> None:
    old, new = kf.jwk("rsa2048", kid="a"), kf.jwk("rsa2048", kid="a", index=1)
    state = make_state()
    state.apply(keyset(old, B()), now=0.0)
    change = state.apply(keyset(new, B()), now=10.0)
    assert change.changed
    assert change.added == ("a",)
    assert change.removed == ("a",)
    assert served(state) == body_of(new, B())
    kids = [k.get("kid") for k in json.loads(served(state))["keys"]]
    assert kids == ["a", "b"]


def test_kid_reused_twice_then_dropped_never_publishes_two_keys_under_one_kid() -> None:
    first = kf.jwk("rsa2048", kid="a")
    second = kf.jwk("rsa2048", kid="a", index=1)
    state = make_state()
    state.apply(keyset(first, B()), now=0.0)
    state.apply(keyset(second, B()), now=10.0)  # first retained, hidden by second
    state.apply(keyset(B()), now=20.0)  # second retained too
    published = json.loads(served(state))["keys"]
    assert [k.get("kid") for k in published] == ["a", "b"]
    # The key served under "a" until the last fetch is the one still published.
    assert served(state) == body_of(second, B())


def test_same_kid_on_a_key_of_another_type_does_not_hide_the_retained_key() -> None:
    rsa, ec = kf.jwk("rsa2048", kid="a"), kf.jwk("p256", kid="a")
    state = make_state()
    state.apply(keyset(rsa), now=0.0)
    state.apply(keyset(ec), now=10.0)
    assert served(state) == body_of(rsa, ec)


# -- staleness and outcomes ------------------------------------------------------------------


def test_staleness_boundary_servable_until_not_after() -> None:
    state = make_state()
    state.apply(keyset(A()), now=1000.0)
    deadline = 1000.0 + MAX_STALE
    assert state.stale_deadline() == deadline
    assert state.servable(deadline)
    assert not state.is_expired(deadline)
    assert state.is_expired(deadline + 0.001)
    assert not state.servable(deadline + 0.001)


def test_a_failed_fetch_keeps_the_published_set_but_not_freshness() -> None:
    """What a failure does to the policy: nothing but retention (refreshing.Health counts it,
    tests/serving/test_refreshing.py)."""
    state = make_state()
    state.apply(keyset(A()), now=1000.0)
    before = state.published
    state.expire_retained(3000.0)
    assert state.published is before and state.last_success == 1000.0
    assert not state.servable(1000.0 + MAX_STALE + 1)


def test_retained_keys_expire_without_a_fetch() -> None:
    state = make_state()
    state.apply(keyset(A(), B()), now=0.0)
    state.apply(keyset(B()), now=10.0)
    assert state.expire_retained(10.0 + RETAIN)
    assert served(state) == body_of(B())


def test_mark_unchanged_refreshes_last_success() -> None:
    state = make_state()
    state.apply(keyset(A()), now=1000.0)
    change = state.mark_unchanged(now=5000.0)
    assert change == Change(changed=False, retained=())
    assert state.last_success == 5000.0
    assert state.servable(5000.0 + MAX_STALE)
    assert not state.servable(5000.0 + MAX_STALE + 1)
    assert state.last_change == 1000.0


def test_mark_unchanged_reports_a_retention_expiry_as_a_change() -> None:
    state = make_state()
    state.apply(keyset(A(), B()), now=0.0)
    state.apply(keyset(B()), now=10.0)
    assert state.mark_unchanged(now=20.0) == Change(changed=False, retained=("a",))
    assert state.mark_unchanged(now=10.0 + RETAIN) == Change(changed=True, retained=())
    assert served(state) == body_of(B())


# -- snapshot / restore ----------------------------------------------------------------------


def populated() -> IssuerState:
    state = make_state()
    state.apply(keyset(A(), B(), kf.x5c_key(kid="x")), now=1000.0)
    state.apply(keyset(B(), kf.x5c_key(kid="x"), C()), now=2000.0)  # A retained
    return state


VALIDATORS = Validators('"up-1"', "Sun, 29 Nov 2026 04:00:00 GMT", "abc123")


def through_json(document: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(document))
    return loaded


def test_snapshot_restore_round_trip() -> None:
    source = populated()
    document = through_json(source.snapshot(VALIDATORS))
    assert document["format"] == STATE_FORMAT
    assert document["upstream"] == UPSTREAM
    restored = make_state()
    saved = restored.restore(document, now=2500.0)
    assert served(restored) == served(source)
    assert restored.published == source.published
    assert restored.current == source.current
    assert restored.retained_kids() == ("a",)
    assert restored.next_retention_expiry() == 2000.0 + RETAIN
    assert restored.last_success == 2000.0
    assert (
        saved.upstream_etag,
        saved.upstream_last_modified,
        saved.upstream_digest,
    ) == ('"up-1"', "Sun, 29 Nov 2026 04:00:00 GMT", "abc123")
    assert restored.servable(2000.0 + MAX_STALE)
    assert not restored.servable(2000.0 + MAX_STALE + 1)


def test_restore_drops_retained_keys_that_expired_while_down() -> None:
    restored = make_state()
    restored.restore(through_json(populated().snapshot(VALIDATORS)), now=2000.0 + RETAIN)
    assert restored.retained == {}
    assert served(restored) == body_of(B(), kf.x5c_key(kid="x"), C())


def _tamper(document: dict[str, Any], change: str) -> dict[str, Any]:
    doc = through_json(document)
    private = kf.jwk("rsa2048", private=True)
    if change == "format":
        doc["format"] = STATE_FORMAT + 1
    elif change == "no-format":
        del doc["format"]
    elif change == "upstream":
        doc["upstream"] = "http://other.svc/jwks.json"
    elif change == "no-last-success":
        doc["last_success"] = None
    elif change == "bool-last-success":
        doc["last_success"] = True
    elif change == "infinite-last-success":
        doc["last_success"] = float("inf")
    elif change == "nan-last-success":
        doc["last_success"] = float("nan")
    elif change == "private-d":
        doc["keys"][0]["d"] = private["d"]
    elif change == "private-full":
        doc["keys"][0] = private | {"kid": "a"}
    elif change == "private-in-retained":
        doc["retained"][0]["jwk"]["d"] = private["d"]
    elif change == "weak-key":
        doc["keys"][0] = kf.jwk("rsa1024", kid="b")
    elif change == "oct-key":
        doc["keys"][0] = kf.jwk("oct", kid="b")
    elif change == "off-curve":
        doc["keys"][0]["x"] = doc["keys"][0]["y"]
    elif change == "no-keys":
        doc["keys"] = []
    elif change == "missing-keys":
        del doc["keys"]
    elif change == "keys-not-list":
        doc["keys"] = {"kty": "EC"}
    elif change == "key-not-object":
        doc["keys"][0] = "key"
    elif change == "retained-no-time":
        del doc["retained"][0]["removed_at"]
    elif change == "retained-bad-time":
        doc["retained"][0]["removed_at"] = "yesterday"
    elif change == "retained-infinite-time":
        doc["retained"][0]["removed_at"] = float("inf")
    elif change == "retained-not-list":
        doc["retained"] = 5
    elif change == "duplicate-key":
        doc["keys"].append(doc["keys"][0])
    elif change == "kid-conflict":
        doc["keys"].append(kf.jwk("p256", kid="b", index=1))
    else:
        raise AssertionError(change)
    return doc


TAMPERED = [
    "format",
    "no-format",
    "upstream",
    "no-last-success",
    "bool-last-success",
    "infinite-last-success",
    "nan-last-success",
    "private-d",
    "private-full",
    "private-in-retained",
    "weak-key",
    "oct-key",
    "off-curve",
    "no-keys",
    "missing-keys",
    "keys-not-list",
    "key-not-object",
    "retained-no-time",
    "retained-bad-time",
    "retained-infinite-time",
    "retained-not-list",
    "duplicate-key",
    "kid-conflict",
]


@pytest.mark.parametrize("change", TAMPERED)
def test_restore_refuses_a_bad_snapshot_and_changes_nothing(change: str) -> None:
    document = _tamper(populated().snapshot(VALIDATORS), change)
    state = make_state()
    state.apply(keyset(C()), now=50.0)
    before = (state.snapshot(VALIDATORS), state.published, state.last_success, state.last_change)
    with pytest.raises(StateRefused):
        state.restore(document, now=2100.0)
    after = (state.snapshot(VALIDATORS), state.published, state.last_success, state.last_change)
    assert after == before


def test_restore_into_a_fresh_state_refuses_and_serves_nothing() -> None:
    state = make_state()
    with pytest.raises(StateRefused, match="written for another upstream"):
        state.restore(_tamper(populated().snapshot(VALIDATORS), "upstream"), now=2100.0)
    with pytest.raises(StateRefused, match=r"unknown format 2"):
        state.restore(_tamper(populated().snapshot(VALIDATORS), "format"), now=2100.0)
    with pytest.raises(StateRefused, match=r"^invalid key set \(private_key\): "):
        state.restore(_tamper(populated().snapshot(VALIDATORS), "private-d"), now=2100.0)
    assert state.published is None
    assert state.current == ()
    assert not state.servable(2100.0)


# A state file meets the one policy: refused for the rule, and under the reason, that an
# upstream body meets (keysets.validate_keys; strict, since the mirror wrote the file itself).
SAME_RULE = [
    pytest.param(lambda: [kf.jwk("rsa1024", kid="w"), B()], "weak_key", id="weak-key"),
    pytest.param(lambda: [B(), kf.jwk("p256", kid="b", index=1)], "kid_conflict", id="kid-conflict"),
    pytest.param(lambda: [kf.jwk("p256", kid="m", alg="ES384"), B()], "bad_alg", id="alg-mismatch"),
    pytest.param(lambda: [B(), B()], "duplicate_key", id="listed-twice"),
    pytest.param(lambda: [B(), kf.jwk("oct", kid="s")], "symmetric_key", id="symmetric"),
    pytest.param(lambda: [kf.jwk("p256", kid="e", use="enc"), B()], "not_signing", id="enc"),
]


@pytest.mark.parametrize(("keys", "reason"), SAME_RULE)
def test_restore_refuses_a_key_by_the_same_rule_and_reason_as_an_upstream_body(
    keys: Any, reason: str
) -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    document["keys"] = keys()
    state = make_state()
    with pytest.raises(StateRefused, match=rf"^invalid key set \({reason}\): ") as info:
        state.restore(document, now=2100.0)
    assert state.published is None
    # The same members in an upstream body: the set is rejected for that reason, or the key
    # is dropped for it (the file is refused whole: the mirror wrote only kept keys there).
    try:
        upstream = keyset(*keys())
    except KeySetRejected as exc:
        assert exc.reason == reason
        assert str(exc) in str(info.value)
    else:
        if reason == "duplicate_key":
            assert len(upstream.keys) == 1  # an upstream's duplicate is published once
        else:
            assert upstream.dropped == {reason: 1}


def test_restore_refuses_a_retained_key_the_policy_refuses() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    document["retained"][0]["jwk"] = kf.jwk("rsa1024", kid="a")
    with pytest.raises(StateRefused, match=r"^invalid retained\[0\] \(weak_key\): "):
        make_state().restore(document, now=2100.0)


def test_restore_refuses_more_keys_than_max_keys() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    limits = Limits(refresh_interval_s=60.0, max_stale_s=MAX_STALE, max_keys=2)
    state = IssuerState(IssuerSettings(name="keys", jwks_uri=UPSTREAM, limits=limits))
    assert len(document["keys"]) > 2
    with pytest.raises(StateRefused, match=r"^invalid key set \(too_many_keys\): "):
        state.restore(document, now=2100.0)


def test_restore_does_not_publish_a_current_key_twice_when_also_retained() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    document["retained"].append({"jwk": document["keys"][0], "removed_at": 1500.0})
    state = make_state()
    state.restore(document, now=2100.0)
    assert state.retained_kids() == ("a",)
    assert served(state) == served(populated())


def test_restore_ignores_non_string_upstream_validators() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    document["upstream_etag"] = 5
    assert make_state().restore(document, now=2100.0).upstream_etag is None


# -- StateStore ------------------------------------------------------------------------------


def test_store_save_and_load(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    document = through_json(populated().snapshot(VALIDATORS))
    store.save("keys", document)
    assert os.listdir(tmp_path) == ["keys.json"]
    assert store.path("keys") == tmp_path / "keys.json"
    assert store.load("keys", max_bytes=CAP) == document
    assert json.loads((tmp_path / "keys.json").read_bytes()) == document


def test_store_save_replaces_the_file_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("keys", {"format": 1, "padding": "x" * 10_000})
    inode = (tmp_path / "keys.json").stat().st_ino
    store.save("keys", {"format": 1})
    assert store.load("keys", max_bytes=CAP) == {"format": 1}
    assert (tmp_path / "keys.json").read_bytes() == b'{"format":1}'
    # A rename, not an in-place rewrite: readers see the old file or the new one.
    assert (tmp_path / "keys.json").stat().st_ino != inode
    assert os.listdir(tmp_path) == ["keys.json"]


def test_store_save_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    (tmp_path / "keys.json").mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        store.save("keys", {"format": 1})
    assert os.listdir(tmp_path) == ["keys.json"]
    assert (tmp_path / "keys.json").is_dir()


def test_store_unserializable_document_keeps_the_old_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("keys", {"format": 1})
    with pytest.raises(TypeError):
        store.save("keys", {"format": object()})
    assert store.load("keys", max_bytes=CAP) == {"format": 1}
    assert os.listdir(tmp_path) == ["keys.json"]


def test_store_load_missing_is_none(tmp_path: Path) -> None:
    assert StateStore(tmp_path).load("keys", max_bytes=CAP) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"format": 1, "keys": [', "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"state"', "not a JSON object"),
    ],
)
def test_store_load_corrupt_file(tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / "keys.json").write_bytes(data)
    with pytest.raises(StateRefused, match=rf"^{message}$"):
        StateStore(tmp_path).load("keys", max_bytes=CAP)


def test_store_load_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "keys.json").mkdir()
    with pytest.raises(StateRefused, match=r"^not a regular file \(mode 0o40") as info:
        StateStore(tmp_path).load("keys", max_bytes=CAP)
    assert info.value.reason == "not_regular_file"


def test_store_load_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "keys.json")
    with pytest.raises(StateRefused, match=r"^not a regular file \(mode 0o10") as info:
        StateStore(tmp_path).load("keys", max_bytes=CAP)
    assert info.value.reason == "not_regular_file"


@pytest.mark.parametrize("target", ["/dev/zero", "elsewhere.json", "missing.json"])
def test_store_load_never_follows_a_symlink(tmp_path: Path, target: str) -> None:
    store = StateStore(tmp_path)
    store.save("elsewhere", through_json(populated().snapshot(VALIDATORS)))
    (tmp_path / "keys.json").symlink_to(target)
    with pytest.raises(StateRefused, match=r"^a symbolic link \(not followed\)$") as info:
        store.load("keys", max_bytes=CAP)
    assert info.value.reason == "symlink"


def test_store_load_reads_up_to_the_cap_and_refuses_past_it(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    data = json.dumps({"format": 1, "pad": "x" * 100}).encode()
    (tmp_path / "keys.json").write_bytes(data)
    assert store.load("keys", max_bytes=len(data)) == json.loads(data)
    with pytest.raises(StateRefused, match=rf"^{len(data)} bytes, over the cap of 100$") as info:
        store.load("keys", max_bytes=100)
    assert info.value.reason == "too_large"


def test_the_cap_holds_a_full_set_and_as_many_retained_keys() -> None:
    """With the upstream body exactly at max_response_bytes and max_keys keys, a rotation to
    as many new keys (all old ones retained) still writes a file under the cap."""
    old = keyset(*[kf.jwk("p256", kid=f"old-{i:03}", index=i) for i in range(100)])
    new = keyset(*[kf.jwk("p256", kid=f"new-{i:03}", index=100 + i) for i in range(100)])
    body_bytes = max(len(render(old.keys)), len(render(new.keys)))
    state = make_state()
    state.apply(old, now=1000.0)
    state.apply(new, now=2000.0)
    assert len(state.retained) == 100
    written = json.dumps(state.snapshot(VALIDATORS), sort_keys=True, separators=(",", ":")).encode()
    assert len(written) <= max_file_bytes(max_response_bytes=body_bytes)
    assert max_file_bytes(max_response_bytes=Limits().max_response_bytes) == 1_114_112


def test_store_round_trip_restores_the_same_bytes(tmp_path: Path) -> None:
    source = populated()
    store = StateStore(tmp_path)
    store.save("keys", source.snapshot(VALIDATORS))
    document = store.load("keys", max_bytes=CAP)
    assert document is not None
    restored = make_state()
    restored.restore(document, now=2001.0)
    assert served(restored) == served(source)


def test_restore_never_moves_last_success_into_the_future() -> None:
    source = make_state()
    source.apply(keyset(A()), now=5000.0)
    restored = make_state()
    restored.restore(through_json(source.snapshot(VALIDATORS)), now=1000.0)
    assert restored.last_success == 1000.0
    assert restored.is_expired(1000.0 + MAX_STALE + 1)


def test_restore_keeps_when_the_set_last_changed() -> None:
    source = make_state()
    source.apply(keyset(A()), now=1000.0)
    restored = make_state()
    restored.restore(through_json(source.snapshot(VALIDATORS)), now=1500.0)
    assert restored.last_change == 1000.0
    assert restored.first_seen == source.first_seen


# -- one key published under several algs ----------------------------------------------------


def _multi_alg(kid: str = "a", index: int = 0) -> list[dict[str, Any]]:
    return [kf.jwk("rsa2048", kid=kid, index=index, alg=alg) for alg in ("RS256", "PS256")]


def test_a_key_published_under_several_algs_is_retained_under_every_one() -> None:
    state = make_state()
    state.apply(keyset(*_multi_alg(), B()), now=0.0)
    change = state.apply(keyset(B()), now=10.0)
    assert change.removed == ("a", "a")
    assert served(state) == body_of(*_multi_alg(), B())
    algs = [k.get("alg") for k in json.loads(served(state))["keys"] if k["kid"] == "a"]
    assert sorted(algs) == ["PS256", "RS256"]
    state.expire_retained(10.0 + RETAIN)
    assert served(state) == body_of(B())


def test_retained_multi_alg_key_under_a_reused_kid_is_hidden_whole() -> None:
    state = make_state()
    state.apply(keyset(*_multi_alg(), B()), now=0.0)
    state.apply(keyset(*_multi_alg(index=1), B()), now=10.0)  # kid "a" reused for a new key
    assert served(state) == body_of(*_multi_alg(index=1), B())
    state.apply(keyset(B()), now=20.0)  # the new key is retained too: it alone is published
    assert served(state) == body_of(*_multi_alg(index=1), B())


def test_snapshot_restore_round_trip_of_a_multi_alg_key() -> None:
    source = make_state()
    source.apply(keyset(*_multi_alg(), B()), now=1000.0)
    source.apply(keyset(*_multi_alg(kid="c"), B()), now=2000.0)  # "a" retained, both algs
    restored = make_state()
    restored.restore(through_json(source.snapshot(VALIDATORS)), now=2500.0)
    assert served(restored) == served(source)
    assert len(json.loads(served(restored))["keys"]) == 5
    assert restored.current == source.current


# -- a state file is input: times clamped, lists capped ----------------------------------------


def test_a_retained_key_removed_in_the_future_is_kept_only_for_retain_removed_keys() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    document["retained"][0]["removed_at"] = 10_000_000_000.0  # the year 2286
    state = make_state()
    state.restore(document, now=2100.0)
    assert state.retained_kids() == ("a",)
    # Clamped to now: dropped once retain_removed_keys has passed since the restore.
    assert state.next_retention_expiry() == 2100.0 + RETAIN
    assert state.expire_retained(2100.0 + RETAIN)
    assert state.retained == {}
    assert served(state) == body_of(B(), kf.x5c_key(kid="x"), C())
    assert all(r["removed_at"] <= 2100.0 + RETAIN for r in state.snapshot(VALIDATORS)["retained"])


def test_a_last_success_in_the_future_is_clamped_to_now() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    document["last_success"] = 10_000_000_000.0
    state = make_state()
    state.restore(document, now=2100.0)
    assert state.last_success == 2100.0
    assert not state.servable(2100.0 + MAX_STALE + 1)


def test_the_retained_list_is_capped_at_max_keys_newest_removals_first() -> None:
    document = through_json(populated().snapshot(VALIDATORS))
    limits = Limits(refresh_interval_s=60.0, max_stale_s=MAX_STALE, max_keys=3)
    document["keys"] = document["keys"][:1]
    extra = [kf.jwk("p256", kid=f"r{i}", index=10 + i) for i in range(5)]
    document["retained"] = [{"jwk": k, "removed_at": 2000.0 + i} for i, k in enumerate(extra)]
    state = IssuerState(IssuerSettings(name="keys", jwks_uri=UPSTREAM, limits=limits))
    state.restore(document, now=2100.0)
    assert state.retained_kids() == ("r2", "r3", "r4")


# -- a peer's copy never outlives the outage --------------------------------------------------


def test_the_first_upstream_set_after_a_peer_copy_replaces_it_whole() -> None:
    state = make_state()
    copied = keyset(A(), B())
    state.adopt_from_peer(copied, retained=[(keyset(C()).keys[0], 1500.0)],
                          last_success=1900.0, peer="http://10.0.0.7:9090", now=2000.0)
    assert state.source == "peer" and state.retained_kids() == ("c",)
    assert not state.has_own_set
    change = state.apply(keyset(B()), now=2100.0)
    # A was only in the copy: not "removed" by this upstream, so not retained; nor is C.
    assert state.retained == {} and change.retained == ()
    assert served(state) == body_of(B())
    assert state.source == "upstream" and state.filled_from is None and state.has_own_set
    assert [k["kid"] for k in state.snapshot(VALIDATORS)["keys"]] == ["b"]
    assert state.snapshot(VALIDATORS)["retained"] == []


def test_the_upstream_cannot_confirm_a_peer_copy() -> None:
    state = make_state()
    state.adopt_from_peer(keyset(A()), retained=[], last_success=1900.0,
                          peer="http://10.0.0.7:9090", now=2000.0)
    with pytest.raises(RuntimeError, match="peer's copy"):
        state.mark_unchanged(now=2100.0)
    assert state.source == "peer" and state.last_success == 1900.0
