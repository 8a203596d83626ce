"""CI smoke-runs each atheris target for a few seconds; long runs are done by hand (see fuzz/).

* ``fuzz_keysets.py``: the validation policy never raises anything but its own rejections and
  never publishes private or symmetric material;
* ``fuzz_http1.py``: no exception escapes the public port's protocol, answers come only at
  request boundaries, never more answers than requests (see its docstring);
* ``fuzz_state.py``: a state file is refused with a reason or restored with every time at
  most now and the retained keys within ``max_keys``, never a private key;
* ``fuzz_peer_offer.py``: a peer's answer raises only a peer error, and an accepted offer is
  replaced whole by the first own upstream set;
* ``fuzz_admin.py``: the admin port never answers 5xx nor logs an error, and ``POST /refresh``
  from outside loopback succeeds only with the token.
* ``fuzz_analyze.py``: ``analyze`` never raises on YAML it is given, and every finding it
  reports has a known code and prints as two lines with no control character.
* ``fuzz_config.py``: the bounded config loader returns settings or a one-line ConfigError;
* ``fuzz_manifests.py``: the bounded manifest reader and walker give a one-line ManifestError
  or a stream that renders back byte for byte, each rule visited once.
* ``fuzz_restore.py``: ``rewrite --restore`` refuses (UsageError) or writes text that parses
  again with every original back and no annotation left;
* ``fuzz_explain_token.py``: ``explain``'s token decoder and verdict raise nothing but
  UsageError and print no control character;
* ``fuzz_admin_answers.py``: the admin client's JSON reader and answer checks raise nothing
  but AdminError, and what they accept renders and explains without another exception.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("target", "min_runs"),
    [
        ("fuzz_keysets.py", 1000),
        ("fuzz_http1.py", 200),
        ("fuzz_state.py", 1000),
        ("fuzz_peer_offer.py", 1000),
        ("fuzz_admin.py", 100),
        ("fuzz_analyze.py", 50),
        ("fuzz_cachecontrol.py", 1000),
        ("fuzz_config.py", 200),
        ("fuzz_manifests.py", 200),
        ("fuzz_restore.py", 50),
        ("fuzz_explain_token.py", 200),
        ("fuzz_admin_answers.py", 200),
    ],
)
def test_fuzzer_runs_without_a_crash(tmp_path: Path, target: str, min_runs: int):
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / target), "-max_total_time=5", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr and " runs in " in result.stderr
    runs = int(result.stderr.split("Done ")[1].split(" runs")[0])
    assert runs > min_runs
