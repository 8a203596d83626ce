"""``rewrite --in-place`` over many files is all or nothing, even when the process is killed.

A real ``jwks-mirror rewrite --in-place`` subprocess over 500 files is SIGKILLed once its
staging has started (the test watches the directories for the first staged file) or once it
has committed. Whatever the moment: the files are never left half-applied once the next run
has looked at them, and the next run leaves no temporary file behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jwks_mirror.gitops.files import Output, write_all

from ..e2e.harness.procs import Timeout, wait_until

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
FILES = 500
ORIGINAL = 'jwksUri: "http://keys.myns.svc.cluster.local/jwks.json"'
REWRITTEN = f'jwksUri: "{MIRROR}/keys-myns/jwks.json"'


TEMPLATE = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: web-{index}
  namespace: myns
spec:
  jwtRules:
  - issuer: "exampleIssuer"
    jwksUri: "http://keys.myns.svc.cluster.local/jwks.json"
"""


def make_tree(root: Path) -> list[Path]:
    paths = []
    for index in range(FILES):
        path = root / f"team-{index % 3}" / f"ra-{index:04d}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(TEMPLATE.format(index=index))
        paths.append(path)
    return paths


def dot_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


def states(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        text = path.read_text()
        found.add("rewritten" if REWRITTEN in text else "original" if ORIGINAL in text else "?")
    return found


def rewrite(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jwks_mirror", "rewrite", str(root), "--mirror-url", MIRROR, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def kill_when(process: subprocess.Popen[str], condition: Callable[[], bool], what: str) -> None:
    """SIGKILL ``process`` as soon as ``condition`` holds (polled without pause: the moment is
    short)."""

    def reached_or_ended() -> str | None:
        if condition():
            return "reached"
        return "ended" if process.poll() is not None else None

    try:  # the run's own end bounds the wait; the timeout only caps a hung run
        reached = wait_until(reached_or_ended, timeout=600, interval=0, what=what)
    except Timeout:
        process.kill()
        process.communicate()
        raise
    if reached == "ended":
        _, err = process.communicate()
        pytest.fail(f"the run ended (exit {process.returncode}) before {what}: {err[-500:]}")
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["staging", "committed"])
def test_killed_in_place_run_is_all_or_nothing(tmp_path: Path, moment: str) -> None:
    paths = make_tree(tmp_path)
    process = rewrite(tmp_path, "--in-place")
    if moment == "staging":
        kill_when(process, lambda: bool(dot_files(tmp_path)), "staging started")
        # Killed while staging: the commit never happened, so nothing may be applied.
        if not list(tmp_path.glob(".jwks-mirror-commit-*[0-9a-f]")):
            assert states(paths) == {"original"}
    else:
        kill_when(
            process, lambda: bool(list(tmp_path.rglob(".jwks-mirror-commit-*"))), "the commit"
        )

    # The next run, even a read-only one, first finishes (or discards) the interrupted one.
    check = rewrite(tmp_path, "--check")
    _, err = check.communicate()
    assert check.returncode in (0, 1), err
    assert dot_files(tmp_path) == []
    after = states(paths)
    assert len(after) == 1 and after <= {"original", "rewritten"}, after
    assert (check.returncode == 0) == (after == {"rewritten"})
    if after == {"rewritten"}:
        return
    again = rewrite(tmp_path, "--in-place")
    _, err = again.communicate()
    assert again.returncode == 0, err
    assert states(paths) == {"rewritten"}
    assert dot_files(tmp_path) == []


def test_a_run_that_fails_while_staging_leaves_nothing(tmp_path: Path) -> None:
    """An error while staging (here: a file that cannot be encoded) removes what was staged."""
    good = tmp_path / "a.yaml"
    bad = tmp_path / "b.yaml"
    good.write_text("a: 1\n")
    bad.write_text("b: 1\n")
    with pytest.raises(Exception, match="cannot write"):
        write_all([Output(good, "a", "a: 1\n", "a: 2\n"), Output(bad, "b", "b: 1\n", "b: \ud800\n")])
    assert good.read_text() == "a: 1\n" and bad.read_text() == "b: 1\n"
    assert dot_files(tmp_path) == []


def test_write_all_keeps_modes_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.yaml"
    target.parent.mkdir()
    target.write_text("old\n")
    target.chmod(0o640)
    config = tmp_path / "new.yaml"
    start = time.time()
    write_all([Output(target, "x", "old\n", "new\n"), Output(config, "c", "", "c: 1\n")])
    assert target.read_text() == "new\n" and config.read_text() == "c: 1\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert config.stat().st_mtime >= start - 1
    assert dot_files(tmp_path) == []


class Killed(BaseException):
    """Stands for SIGKILL at one precise point: nothing after it runs."""


def test_recover_rolls_a_committed_run_forward_from_any_rename(tmp_path: Path, monkeypatch) -> None:
    """Deterministic counterpart of the kill test: the run dies after its commit and its first
    rename (os.replace: the commit, then one file, then the kill)."""
    from jwks_mirror.gitops import files

    targets = [tmp_path / d / f"{n}.yaml" for d in ("a", "b") for n in range(3)]
    for path in targets:
        path.parent.mkdir(exist_ok=True)
        path.write_text("old\n")
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(Killed):
        write_all([Output(p, p.name, "old\n", "new\n") for p in targets])
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert sorted(p.read_text() for p in targets) == ["new\n"] + ["old\n"] * 5  # half-applied
    notes = files.recover([str(tmp_path / "b")])  # any of the run's paths finds the journal
    assert len(notes) == 1 and "5 of 6 files were still staged" in notes[0]
    assert [p.read_text() for p in targets] == ["new\n"] * 6
    assert dot_files(tmp_path) == []


def test_recover_deletes_what_an_uncommitted_run_staged(tmp_path: Path) -> None:
    from jwks_mirror.gitops import files

    target = tmp_path / "ra.yaml"
    target.write_text("old\n")
    staged = tmp_path / ".ra.yaml.jwks-mirror-staged-1a2b"
    staged.write_text("new\n")
    partial = tmp_path / ".jwks-mirror-commit-1a2b.partial"
    partial.write_text("{")
    notes = files.recover([str(target)])
    assert len(notes) == 1 and "interrupted" in notes[0]
    assert not staged.exists()
    files.recover([str(tmp_path)])
    assert dot_files(tmp_path) == []
    assert target.read_text() == "old\n"
