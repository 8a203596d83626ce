"""The suites start the shipped entrypoint: ``cli_argv()`` picks the image's environment when
``$JWKS_MIRROR_IMAGE_ENV`` names it, refuses to fall back under ``CI=true``, and a serve
process started through it runs on the event loop the image ships (uvloop)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import jwks
from ..e2e.harness.mirror import IMAGE_ENV, Mirror, NoImageEnv, cli_argv
from .conftest import Upstreams, start_mirror


def test_the_image_env_script_is_used_when_named(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "jwks-mirror"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    monkeypatch.setenv(IMAGE_ENV, str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert cli_argv() == [str(script)]


def test_a_named_image_env_without_the_script_fails(tmp_path, monkeypatch):
    monkeypatch.setenv(IMAGE_ENV, str(tmp_path / "missing"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(NoImageEnv, match="no bin/jwks-mirror"):
        cli_argv()


def test_ci_without_the_image_env_fails_rather_than_use_the_dev_venv(monkeypatch):
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(NoImageEnv, match="CI=true"):
        cli_argv()


def test_without_the_image_env_the_dev_venv_script_is_used(monkeypatch):
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    beside = Path(sys.executable).parent / "jwks-mirror"
    argv = cli_argv()
    if beside.exists():
        assert argv == [str(beside)]
    else:
        assert argv[-1] == "jwks_mirror" or Path(argv[0]).name == "jwks-mirror"


@pytest.fixture(scope="module")
def serving(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    issuer = upstreams.issuer(document=jwks("k1"))
    running = start_mirror(
        tmp_path_factory.mktemp("entrypoint"), [{"name": "keys", "jwks_uri": issuer.url}]
    )
    try:
        running.wait_ready(timeout=60)
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_serve_runs_from_the_image_env_when_named(serving: Mirror) -> None:
    assert serving.proc is not None
    image_env = os.environ.get(IMAGE_ENV)
    if image_env:
        assert serving.proc.argv[0] == str(Path(image_env) / "bin" / "jwks-mirror")
    assert serving.proc.argv[1:2] == ["serve"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/maps")
def test_serve_runs_on_the_images_event_loop(serving: Mirror) -> None:
    """uvloop is a runtime dependency of the image (requirements/runtime.lock) and ``serve``
    runs on it whenever it is importable; its extension module is mapped in the process."""
    assert serving.proc is not None and serving.proc.popen is not None
    maps = Path(f"/proc/{serving.proc.popen.pid}/maps").read_text()
    assert "/uvloop/loop." in maps, "the serve process did not load uvloop"
