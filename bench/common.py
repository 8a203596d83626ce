"""Shared plumbing for the benchmarks: tools, processes, /proc readings, the results file.

Nothing here measures anything; it starts things, reads the kernel's numbers and writes rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The mirror (and nginx) share one core, the load generator gets the other.
SERVER_CPU = "0"
LOAD_CPU = "1" if (os.cpu_count() or 1) > 1 else "0"


def raise_fd_limit(want: int = 16384) -> None:
    """1,000 client connections need more than the usual 1,024 descriptors (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def ensure_tools(*tools: str) -> None:
    """Install Debian's nginx/wrk when missing (the benchmark runs as root on CI machines)."""
    missing = [t for t in tools if not _installed(t)]
    if not missing:
        return
    if os.geteuid() != 0:
        names = " ".join(missing)
        raise SystemExit(f"missing {names}: run `apt-get install -y {names}` as root")
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _installed(name: str) -> bool:
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()


def tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if _installed(name) else None)
    if found is None:
        raise SystemExit(f"{name} not found")
    return found


def pinned(cpu: str, argv: Sequence[str]) -> list[str]:
    """``taskset -c CPU argv`` when taskset exists (it is in util-linux, so nearly always)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", cpu, *argv] if taskset else list(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version_of(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "?"


def versions() -> dict[str, str]:
    import aiohttp

    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        loop = {
            "auto": f"uvloop {uvloop.__version__}",
            "uvloop": f"uvloop {uvloop.__version__}",
            "asyncio": "asyncio (uvloop disabled)",
            "both": f"asyncio and uvloop {uvloop.__version__}, side by side",
        }[LOOP]
    except ImportError:
        if LOOP in ("uvloop", "both"):
            raise SystemExit("--loop uvloop/both needs uvloop, a runtime dependency: "
                             "pip install -e '.[test]'") from None
        loop = "asyncio"
    return {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "loop": loop,
        "nginx": _version_of([tool("nginx"), "-v"], r"nginx/(\S+)")
        if _installed("nginx")
        else "absent",
        "wrk": _version_of(["wrk", "-v"], r"wrk (\S+)") if _installed("wrk") else "absent",
    }


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30
    return {
        "cpu": f"{os.cpu_count()}x {model}",
        "memory": f"{mem_gb:.0f} GiB",
        "kernel": platform.release(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "jwks_mirror"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return rev + ("+dirty" if dirty else "")


def banner(title: str) -> dict[str, Any]:
    """Print what every benchmark prints first: machine, versions, command."""
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "machine": machine(),
        "versions": versions(),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
    }
    print(f"== {title}")
    for key in ("date", "commit", "command"):
        print(f"   {key}: {info[key]}")
    print("   machine: " + ", ".join(f"{k} {v}" for k, v in info["machine"].items()))
    print("   versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), flush=True)
    return info


# -- processes ------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout lines are collected by a thread (so pipes never fill)."""

    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_json(self, event: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The first JSON line whose ``event`` is ``event``."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    with contextlib.suppress(ValueError):
                        doc = json.loads(line)
                        if isinstance(doc, dict) and doc.get("event") == event:
                            return doc
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None:
                    tail = "\n".join(self.lines[-20:])
                    raise RuntimeError(f"{self.argv[0]}: no {event!r} line\n{tail}")
                self._cond.wait(min(left, 0.5))

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._thread.join(2)


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB (10^6 bytes), from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount, _ = line.split()
            values[name] = int(amount) * 1024 / 1e6
    return values["VmRSS:"], values["VmHWM:"]


def mirror_pid(proc: Proc) -> int:
    """The mirror's own pid: taskset execs, so it is the child's pid."""
    return proc.pid


def http(
    method: str, url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 120.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- the results file -----------------------------------------------------------------------


def setup_text(info: dict[str, Any]) -> str:
    v = info["versions"]
    return (
        f"{info['machine']['cpu']}; py {v['python']}, aiohttp {v['aiohttp']}, {v['loop']}, "
        f"nginx {v['nginx']}, wrk {v['wrk']}"
    )


def record(marker: str, rows: Sequence[str], *, doc: Path = DOC) -> None:
    """Insert table rows just above ``<!-- marker -->`` in the results file."""
    text = doc.read_text()
    tag = f"<!-- {marker} -->"
    if tag not in text:
        raise SystemExit(f"{doc}: no {tag} marker to insert rows at")
    text = text.replace(tag, "".join(r + "\n" for r in rows) + tag, 1)
    doc.write_text(text)
    print(f"   recorded {len(rows)} row(s) in {doc}")


# -- the mirror under test ------------------------------------------------------------------


def mirror_config(directory: Path, upstream: str, names: Sequence[str], **defaults: str) -> Path:
    """A config with every issuer on the fake upstream, both ports on loopback port 0."""
    lines = [
        # the serving case opens 1,000 connections at once: above the default cap of 256
        "public: {host: 127.0.0.1, port: 0, max_connections: 2048}",
        "admin: {host: 127.0.0.1, port: 0}",
        "defaults:",
        *(f"  {k}: {v}" for k, v in {"refresh_interval": "1h", **defaults}.items()),
        "issuers:",
    ]
    for name in names:
        lines += [f"  - name: {name}", f"    jwks_uri: {upstream}/{name}/jwks.json"]
    path = directory / "mirror.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# "auto": serve uses uvloop when it is importable, as the image does; "asyncio": hide it;
# "uvloop": it must be importable; "both": the serving benchmark runs one mirror on each loop.
LOOP = "auto"
# A directory holding another version of the package (``git archive REV | tar -x -C DIR``):
# the serving benchmark then also measures it, in the same rounds, labelled BASELINE_LABEL.
BASELINE: Path | None = None
BASELINE_LABEL = "baseline"
_NO_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; from jwks_mirror.cli import main; sys.exit(main())"
)


def start_mirror(
    config: Path,
    *,
    cpu: str = SERVER_CPU,
    extra: Sequence[str] = (),
    loop: str | None = None,
    package_dir: Path | None = None,
) -> Proc:
    """``jwks-mirror serve`` as a real process, pinned to ``cpu``, on ``loop`` (else LOOP);
    the package is imported from ``package_dir`` when given (it is the working directory,
    which comes first on ``sys.path`` for ``-m`` and ``-c``)."""
    entry = ["-c", _NO_UVLOOP] if (loop or LOOP) == "asyncio" else ["-m", "jwks_mirror"]
    argv = [sys.executable, *entry, "serve", "--config", str(config), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Proc(pinned(cpu, argv), env=env, cwd=package_dir)


def start_upstream(issuers: int, *, cpu: str = LOAD_CPU) -> tuple[Proc, str]:
    proc = Proc(
        pinned(
            cpu, [sys.executable, str(ROOT / "bench" / "upstream.py"), "--issuers", str(issuers)]
        )
    )
    try:
        url = str(proc.wait_json("listening", timeout_s=120)["url"])
    except BaseException:
        proc.stop()
        raise
    return proc, url
