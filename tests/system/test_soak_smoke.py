"""The soak script, shortened for CI: zero errors under load with rotations and refreshes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Each soak runs for seconds by design.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flap", ["0", "0.5"], ids=["steady", "flapping-upstream"])
def test_short_soak_has_no_errors(tmp_path: Path, flap: str):
    """Zero failed requests on the public port; with a flapping upstream too, since the last
    good set is served while the upstream is down, and the flapping shows in the metrics."""
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "tools" / "soak.py"), "--duration", "4", "--issuers", "5",
            "--concurrency", "8", "--rotate-every", "1.2", "--flap-every", flap,
            "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert report["requests"] > 100
    assert report["rotations"] >= 2
    assert report["exit_code"] == 0
    assert report["fetches"]["changed"] >= 2
    if flap != "0":
        assert report["fetches"]["failed"] >= 1
