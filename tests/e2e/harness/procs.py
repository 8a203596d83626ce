"""Processes, ports, deadlines and logs: the plumbing every other harness module stands on.

Every subprocess the suite starts is a :class:`Proc`: its stdout and stderr go to a log file
(never a pipe, so nothing blocks and nothing is left unclosed), it registers itself in
:data:`REGISTRY` so a failing test can print the tail of every log, and ``stop()`` always ends
it (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Used where a port must be known before a process starts and kept across its restarts
    (the mirror's ports, which the verifier's config names). Nothing else runs on the test
    host's loopback ports in CI, so the window between close and bind is harmless.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Timeout(AssertionError):
    """A condition polled with :func:`wait_until` did not hold before its deadline."""


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that.

    Exceptions from ``probe`` count as "not yet" (a port that is not open yet refuses
    connections); the last one is reported if the deadline passes, together with
    ``describe()``, so a timeout says what was seen rather than just that time ran out.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:
            last_exc, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_exc!r}" if last_exc else ""
            seen = f"; last seen: {describe()}" if describe else ""
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}{detail}{seen}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing or empty."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    chunk = text.splitlines()[-lines:]
    return "\n".join(chunk) if chunk else f"({path} is empty)"


@dataclass
class Registry:
    """What to show for the current test if it fails, in start order: log files of the
    processes it started (kept after they stop: a restarted mirror has two logs worth
    reading) and live summaries of in-process pieces (the plain issuer's mode and counters).
    Cleared between tests by the conftest.
    """

    sources: list[tuple[str, Path | Callable[[], str]]] = field(default_factory=list)

    def add(self, name: str, source: Path | Callable[[], str]) -> None:
        if (name, source) not in self.sources:
            self.sources.append((name, source))

    def clear(self) -> None:
        self.sources.clear()

    def report(self, lines: int = 40) -> list[tuple[str, str]]:
        out = []
        for name, source in self.sources:
            if isinstance(source, Path):
                out.append((f"log tail: {name} ({source})", tail(source, lines)))
            else:
                try:
                    text = source()
                except Exception as exc:
                    text = f"(unavailable: {exc!r})"
                out.append((name, text))
        return out


REGISTRY = Registry()

# Last line of defence: fixtures stop what they start, but if the test process exits some
# other way (an interrupted run), nothing it started may outlive it.
_LIVE: set[Proc] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.kill()


class Proc:
    """A subprocess whose output goes to ``log_path``; registered for failure reports."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 preexec_fn: Callable[[], object] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.preexec_fn = preexec_fn  # run in the child before exec (resource limits, say)
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is running"
        REGISTRY.add(self.name, self.log_path)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True, preexec_fn=self.preexec_fn,
            )
        _LIVE.add(self)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited (a config error, say)."""
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.popen.returncode}:\n{tail(self.log_path)}"
            )

    def stop(self, *, grace: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """End the process (``sig``, then SIGKILL after ``grace``) and return its exit code."""
        popen = self.popen
        if popen is None:
            return None
        _LIVE.discard(self)
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(sig)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(5)
        return popen.returncode

    def kill(self) -> None:
        """SIGKILL, as when a node dies: no graceful shutdown."""
        self.stop(grace=0.0, sig=signal.SIGKILL)
