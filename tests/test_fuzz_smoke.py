"""CI smoke-runs the atheris target for a few seconds; long runs are done by hand (see fuzz/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the atheris target for a few seconds.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_keyset_fuzzer_runs_without_a_crash(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_keysets.py"), "-max_total_time=5", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr and " runs in " in result.stderr
    runs = int(result.stderr.split("Done ")[1].split(" runs")[0])
    assert runs > 1000


def test_connection_fuzzer_runs_without_a_crash(tmp_path: Path):
    """fuzz/fuzz_http1.py: no exception escapes the public port's protocol, answers only at
    request boundaries, never more answers than requests (see its docstring)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_http1.py"), "-max_total_time=5", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr and " runs in " in result.stderr
    runs = int(result.stderr.split("Done ")[1].split(" runs")[0])
    assert runs > 200
