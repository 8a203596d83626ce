"""pipeline.apply_result: a fetch result + state + now -> change, with plain values (no server,
no clock): a new set, identical bytes, a 304, a 304 with nothing of our own, a rejected body."""

from __future__ import annotations

import pytest

from jwks_mirror.core.config.loader import IssuerSettings, Limits
from jwks_mirror.core.errors import KeySetRejected
from jwks_mirror.serving.fetching import NO_VALIDATORS, FetchResult, Validators
from jwks_mirror.serving.pipeline import apply_result
from jwks_mirror.serving.state import Change, IssuerState

from .. import keyfactory as kf

URL = "http://keys.example/jwks.json"


def make_state() -> IssuerState:
    return IssuerState(IssuerSettings(name="keys", jwks_uri=URL, limits=Limits()))


def ok(*jwks: dict, etag: str | None = '"v1"', cache_control: str | None = None) -> FetchResult:
    return FetchResult(URL, kf.body(*jwks), etag=etag, cache_control=cache_control)


def apply(result: FetchResult, state: IssuerState, validators: Validators, now: float):
    return apply_result(result, state, validators=validators, now=now)


def test_a_new_set_is_applied_and_its_validators_kept() -> None:
    state = make_state()
    result = ok(kf.jwk("p256", kid="a"), cache_control="max-age=60")
    applied = apply(result, state, NO_VALIDATORS, 10.0)
    assert applied.change == Change(changed=True, added=("a",))
    assert applied.fresh_for_s == 60.0
    assert applied.validators.etag == '"v1"' and applied.validators.digest is not None
    assert state.last_success == 10.0


def test_identical_bytes_confirm_the_set_and_take_the_new_validators() -> None:
    state = make_state()
    first = apply(ok(kf.jwk("p256", kid="a")), state, NO_VALIDATORS, 10.0).validators
    applied = apply(ok(kf.jwk("p256", kid="a"), etag='"v2"'), state, first, 20.0)
    assert applied.change == Change(changed=False)
    assert (state.last_success, applied.validators.etag) == (20.0, '"v2"')
    assert applied.validators.digest == first.digest


def test_a_304_confirms_and_keeps_the_validators_it_confirmed() -> None:
    state = make_state()
    first = apply(ok(kf.jwk("p256", kid="a")), state, NO_VALIDATORS, 10.0).validators
    applied = apply(FetchResult(URL, None), state, first, 30.0)
    assert applied.change == Change(changed=False) and applied.fresh_for_s is None
    assert state.last_success == 30.0 and applied.validators == first


def test_a_304_with_nothing_of_our_own_asks_again() -> None:
    state = make_state()
    assert apply(FetchResult(URL, None), state, Validators(etag='"other replica"'), 30.0) is None
    assert state.published is None and state.last_success is None


def test_a_rejected_body_leaves_the_last_good_set() -> None:
    state = make_state()
    apply(ok(kf.jwk("p256", kid="a")), state, NO_VALIDATORS, 10.0)
    before = state.published
    with pytest.raises(KeySetRejected) as caught:
        apply(ok(kf.jwk("p256", kid="b", private=True), etag='"bad"'), state, NO_VALIDATORS, 20.0)
    assert caught.value.reason == "private_key"
    assert state.published is before and state.last_success == 10.0


def test_dropped_keys_are_reported_by_reason() -> None:
    state = make_state()
    applied = apply(ok(kf.jwk("p256", kid="a"), kf.jwk("rsa1024", kid="weak")), state, NO_VALIDATORS, 10.0)
    assert applied.dropped == {"weak_key": 1} and applied.notes
    assert state.published is not None and state.published.kids == ("a",)
