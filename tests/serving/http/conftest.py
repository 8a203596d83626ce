"""The public port's suites share one running mirror with one issuer (``keys-myns``, key k1)
already fetched; a suite that needs another set defines its own ``served``."""

from __future__ import annotations

import pytest

from ...conftest import config_text, jwks


@pytest.fixture
async def served(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n    refresh_interval: 300s\n")
    )
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome == "changed"
    return running
