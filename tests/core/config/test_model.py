"""configmodel: the frozen settings dataclasses, each default stated once (the loader takes
every default from the model, so a file that leaves a key out gets the model's value)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from jwks_mirror.core.config import loader as settings
from jwks_mirror.core.config import model as configmodel
from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import (
    AdminSettings,
    IssuerSettings,
    Limits,
    MetricsSettings,
    PeersSettings,
    PeerTLSSettings,
    PublicSettings,
    ServerTLSSettings,
    Settings,
    TLSSettings,
)

MODEL_TYPES = [
    obj
    for _, obj in inspect.getmembers(configmodel, inspect.isclass)
    if dataclasses.is_dataclass(obj) and obj.__module__ == configmodel.__name__
]
EXAMPLES = {
    Settings: Settings(),
    Limits: Limits(),
    PublicSettings: PublicSettings(),
    AdminSettings: AdminSettings(),
    PeersSettings: PeersSettings(),
    MetricsSettings: MetricsSettings(),
    IssuerSettings: IssuerSettings(name="idp", jwks_uri="https://idp/jwks.json"),
    TLSSettings: TLSSettings(),
    PeerTLSSettings: PeerTLSSettings(identity="mirror.example"),
    ServerTLSSettings: ServerTLSSettings(cert_file=Path("c.pem"), key_file=Path("k.pem")),
}


def test_every_config_dataclass_is_here_and_covered() -> None:
    assert set(MODEL_TYPES) == set(EXAMPLES)
    for name in ("TLSSettings", "PeerTLSSettings", "ServerTLSSettings", "IssuerSettings"):
        assert not hasattr(settings, name) or getattr(settings, name) is getattr(configmodel, name)


@pytest.mark.parametrize("kind", list(EXAMPLES), ids=lambda k: k.__name__)
def test_every_config_dataclass_is_frozen(kind: type) -> None:
    example = EXAMPLES[kind]
    first = dataclasses.fields(example)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(example, first, getattr(example, first))


def test_an_empty_file_is_the_model_defaults() -> None:
    assert parse_settings("") == Settings()


def test_empty_sections_are_the_model_defaults() -> None:
    loaded = parse_settings(
        "public: {}\nadmin: {}\npeers: {}\ndefaults: {}\n"
        "issuers:\n  - name: idp\n    jwks_uri: https://idp.example/jwks.json\n"
    )
    assert loaded.public == PublicSettings()
    assert loaded.admin == AdminSettings()
    assert loaded.peers == PeersSettings()
    assert loaded.shutdown_delay_s == Settings().shutdown_delay_s
    (issuer,) = loaded.issuers
    assert issuer == IssuerSettings(name="idp", jwks_uri="https://idp.example/jwks.json")
    assert issuer.limits == Limits()


def test_a_port_given_alone_keeps_the_model_host() -> None:
    loaded = parse_settings("public: {port: 8081}\nadmin: {port: 9091}\npeers: {dns: m.ns.svc}\n")
    assert loaded.public.host == PublicSettings().host
    assert loaded.admin.host == AdminSettings().host
    assert loaded.peers.port == PeersSettings().port


def test_the_loader_states_no_default_of_its_own() -> None:
    """The literals the issue found twice (host, ports, shutdown delay) live in the model only."""
    source = inspect.getsource(settings)
    for literal in ('"0.0.0.0"', "8080", "9090)", "= 5.0", "Listener("):
        assert literal not in source, literal
