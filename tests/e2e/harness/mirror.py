"""``jwks-mirror serve`` as a real subprocess, and the operator's view of it.

The mirror's ports are chosen once and kept across restarts, so the verifier (which names the
public port in its config) keeps working when the mirror comes back, as a Kubernetes Service
would. Everything here goes through the product's public surface: the config file, the JSON
log lines, the admin endpoints and the ``jwks-mirror`` command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import http
from .procs import Proc, free_port, wait_until

# The directory of the image's locked virtual environment (``tools/image_env.py OUT`` builds
# it as OUT/venv; ``.ci/run`` builds it before pytest and sets this).
IMAGE_ENV = "JWKS_MIRROR_IMAGE_ENV"


class NoImageEnv(RuntimeError):
    """CI must test the shipped entrypoint, and the image environment is not there."""


def cli_argv() -> list[str]:
    """How to run ``jwks-mirror``: every test that starts the CLI as a process goes through here.

    With ``$JWKS_MIRROR_IMAGE_ENV`` set, the image environment's console script (the locked
    dependencies, the image's event loop, the package as a built wheel): what ships. Without
    it, this environment's console script, so the tests run on a fresh clone after ``pip
    install -e '.[test]'``. Under ``CI=true`` the image environment is required: a missing or
    unset one fails the test instead of quietly testing the development venv.
    """
    image_env = os.environ.get(IMAGE_ENV, "")
    if image_env:
        script = Path(image_env) / "bin" / "jwks-mirror"
        if not script.is_file():
            raise NoImageEnv(f"${IMAGE_ENV}={image_env}: no bin/jwks-mirror there "
                             "(python3 tools/image_env.py build/image-env builds it)")
        return [str(script)]
    if os.environ.get("CI") == "true":
        raise NoImageEnv(f"CI=true and ${IMAGE_ENV} is not set: CI tests the image "
                         "environment (.ci/run builds it with tools/image_env.py and sets it)")
    script = Path(sys.executable).parent / "jwks-mirror"
    if script.exists():
        return [str(script)]
    found = shutil.which("jwks-mirror")
    return [found] if found else [sys.executable, "-m", "jwks_mirror"]


class Mirror:
    """A mirror configured with ``issuers`` (config dicts as in docs/configuration.md)."""

    def __init__(self, workdir: Path, *, issuers: list[dict[str, Any]],
                 defaults: dict[str, Any] | None = None, state_dir: Path | None = None,
                 name: str = "mirror", peers: dict[str, Any] | None = None,
                 shutdown_delay: str = "0s", public_tls: dict[str, str] | None = None,
                 extra: dict[str, dict[str, Any]] | None = None,
                 preexec_fn: Callable[[], object] | None = None) -> None:
        self.workdir = workdir
        self.name = name
        self.public_port = free_port()
        self.admin_port = free_port()
        self.issuers = issuers
        self.defaults = defaults or {}
        self.state_dir = state_dir
        self.peers = peers  # the ``peers:`` section (replicas to fill a missing set from)
        # 0 s unless a test is about the drain: most tests stop mirrors many times.
        self.shutdown_delay = shutdown_delay
        self.public_tls = public_tls
        # more keys for config sections ({"public": {"max_connections": 8}}), merged in last
        self.extra = extra or {}
        self.preexec_fn = preexec_fn  # run in the child before exec (resource limits, say)
        self.config_path = workdir / f"{name}.yaml"
        self.starts = 0
        self.listening: dict[str, Any] | None = None
        self.proc: Proc | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def write_config(self) -> None:
        public: dict[str, Any] = {"host": "127.0.0.1", "port": self.public_port}
        if self.public_tls is not None:
            public["tls"] = self.public_tls
        config: dict[str, Any] = {
            "public": public,
            "admin": {"host": "127.0.0.1", "port": self.admin_port},
            "shutdown_delay": self.shutdown_delay,
            # The suite reads per-issuer series (requests by issuer, servable 1, zero failures)
            # that the compact default leaves out while they hold their healthy value.
            "metrics": {"per_issuer": "full"},
            "defaults": self.defaults,
            "issuers": self.issuers,
        }
        if self.state_dir is not None:
            config["state_dir"] = str(self.state_dir)
        if self.peers is not None:
            config["peers"] = self.peers
        for section, values in self.extra.items():
            config[section] = {**config.get(section, {}), **values}
        # JSON is YAML; it keeps the harness free of a YAML writer.
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, *, ready: bool = True, timeout: float = 15.0) -> Mirror:
        """Start ``serve``; wait for its ``listening`` log line and, if ``ready``, /readyz."""
        self.write_config()
        self.starts += 1
        log_path = self.workdir / f"{self.name}.{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = Proc(f"{self.name} (start {self.starts})",
                         [*cli_argv(), "serve", "--config", str(self.config_path)],
                         log_path=log_path, env=env, preexec_fn=self.preexec_fn)
        self.proc.start()
        self.listening = wait_until(self._listening_event, timeout=timeout,
                                    what=f"{self.name} to log its listening event")
        if ready:
            self.wait_ready(timeout=timeout)
        return self

    def _listening_event(self) -> dict[str, Any] | None:
        assert self.proc is not None
        self.proc.check_alive()
        for event in self.log_events():
            if event.get("event") == "listening":
                return event
        return None

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON lines of the current process's log (other lines are skipped)."""
        if self.proc is None or not self.proc.log_path.exists():
            return []
        events = []
        for line in self.proc.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def wait_ready(self, *, timeout: float = 15.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            self.proc.check_alive()
            return self.readyz().status == 200

        wait_until(ready, timeout=timeout, what=f"{self.name} /readyz to answer 200",
                   describe=lambda: self.readyz().text)

    def reload(self) -> None:
        """Rewrite the config file from ``issuers``/``defaults`` and send SIGHUP."""
        assert self.proc is not None and self.proc.popen is not None
        self.write_config()
        self.proc.popen.send_signal(signal.SIGHUP)

    def stop(self, *, grace: float = 10.0) -> int | None:
        """SIGTERM, as Kubernetes sends; returns the exit code (SIGKILL after ``grace``)."""
        return self.proc.stop(grace=grace) if self.proc else None

    # -- public port --------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        scheme = "https" if self.public_tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.public_port}"

    def jwks_url(self, name: str, query: str = "") -> str:
        return f"{self.public_url}/{name}/jwks.json" + (f"?{query}" if query else "")

    def jwks(self, name: str, query: str = "") -> http.Response:
        return http.get(self.jwks_url(name, query))

    def kids(self, name: str) -> list[str]:
        resp = self.jwks(name)
        assert resp.status == 200, f"{name}: {resp.status} {resp.text}"
        return sorted(k["kid"] for k in resp.json()["keys"])

    # -- admin port ---------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def readyz(self) -> http.Response:
        return http.get(f"{self.admin_url}/readyz", timeout=2)

    def status(self, name: str) -> dict[str, Any]:
        resp = http.get(f"{self.admin_url}/status", timeout=5)
        assert resp.status == 200, resp.text
        for item in resp.json()["issuers"]:
            if item["name"] == name:
                return dict(item)
        raise AssertionError(f"{name} not in /status: {resp.text}")

    def metric(self, sample: str, **labels: str) -> float | None:
        """The value of one Prometheus sample (``None`` if absent)."""
        resp = http.get(f"{self.admin_url}/metrics", timeout=5)
        assert resp.status == 200, resp.text
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def served(self, name: str, code: str = "200") -> float:
        """How many public requests for ``name`` the mirror answered with ``code``."""
        return self.metric("jwks_mirror_requests_total", issuer=name, code=code) or 0.0

    # -- command line -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli_argv(), *args], capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )

    def refresh(self, *names: str, purge_retained: bool = False,
                expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        """``jwks-mirror refresh``; asserts the exit code unless ``expect`` is None."""
        args: Sequence[str] = ["refresh", *names, "--admin", self.admin_url]
        if purge_retained:
            args = [*args, "--purge-retained"]
        done = self.cli(*args)
        if expect is not None:
            assert done.returncode == expect, (
                f"jwks-mirror {' '.join(args)} exited {done.returncode}, expected {expect}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done
