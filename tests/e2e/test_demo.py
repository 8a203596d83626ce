"""Scenario 7: the demo's claims, run for real."""

from __future__ import annotations

import subprocess

import pytest

from .harness.mirror import cli_argv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_once_passes_its_self_checks() -> None:
    done = subprocess.run([*cli_argv(), "demo", "--once"], capture_output=True, text=True,
                          timeout=90, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "FAIL" not in done.stdout
    assert "ok   a token signed by the issuer verifies" in done.stdout, done.stdout
