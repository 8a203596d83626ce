"""Benchmark 1, serving: ``GET /{name}/jwks.json`` on the public port against nginx.

The mirror (a real ``jwks-mirror serve`` process, every feature on: ETag, Cache-Control,
request counting) and nginx (Debian's, one worker, serving the mirror's exact bytes from a
file) are both pinned to core 0; ``wrk`` runs pinned to core 1. For each case the servers
are measured alternately, several rounds, and the medians are reported, with the ratio
mirror/nginx of requests per second (the median of the per-round ratios).

The three figures (``FIGURES``), 50 connections each:

* ``new-conn``: a new connection per request, as istiod fetches (it opens one per fetch):
  every request carries ``Connection: close``, the server closes after its answer and
  ``wrk`` reconnects. Latency is wrk's, from the request written to the answer read, so it
  leaves out the connect itself.
* ``varied``: keep-alive, every request different (``?v=N``, N counting up per connection,
  from a wrk Lua script), so no server can answer from a copy of the last request.
* ``repeated``: keep-alive, the same bytes every time (what plain ``wrk`` sends).

``CLASSIC`` (``200``, ``304`` with ``If-None-Match``, ``200x1000`` at 1,000 connections) is
what ``bench/issuers10k.py`` compares with and without 10,000 issuers.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common

NAME = "iss00000"


@dataclass(frozen=True)
class Case:
    name: str
    connections: int
    conditional: bool = False
    # "keep-alive": one connection, many requests; "close": a connection per request;
    # "varied": keep-alive with a different target each request.
    mode: str = "keep-alive"


FIGURES = (
    Case("new-conn", 50, mode="close"),
    Case("varied", 50, mode="varied"),
    Case("repeated", 50),
)
CLASSIC = (Case("200", 50), Case("304", 50, conditional=True), Case("200x1000", 1000))

# The requests are built once (building one per request in Lua costs wrk more than the
# request costs nginx, and the figure would be wrk's) and sent in turn: consecutive requests
# on a connection always differ. Each wrk thread runs its own copy; the benchmark uses -t1.
VARIED_LUA = """\
local count = 100000
local requests = {}
local n = 0
init = function(args)
  for i = 1, count do
    requests[i] = wrk.format("GET", wrk.path .. "?v=" .. i)
  end
end
request = function()
  n = n % count + 1
  return requests[n]
end
"""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsable latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors)


def wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    etag: str | None,
    mode: str = "keep-alive",
) -> WrkResult:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if etag is not None:
        argv += ["-H", f"If-None-Match: {etag}"]
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as scratch:
        if mode == "close":
            argv += ["-H", "Connection: close"]
        elif mode == "varied":
            script = Path(scratch) / "varied.lua"
            script.write_text(VARIED_LUA)
            argv += ["-s", str(script)]
        elif mode != "keep-alive":
            raise ValueError(f"unknown wrk mode {mode!r}")
        out = subprocess.run(
            common.pinned(common.LOAD_CPU, [*argv, url]),
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=True,
        )
    return parse_wrk(out.stdout)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        default_type application/json;
        etag on;
        add_header Cache-Control "public, max-age=3600";
    }}
}}
"""


def start_nginx(directory: Path, body: bytes) -> tuple[common.Proc, str]:
    """Debian's nginx with one worker, serving ``body`` as a static file."""
    (directory / "www" / NAME).mkdir(parents=True)
    (directory / "www" / NAME / "jwks.json").write_bytes(body)
    (directory / "tmp").mkdir()
    for path in (directory.parent, directory, directory / "www", directory / "www" / NAME):
        path.chmod(0o755)  # the worker runs as nobody when we are root
    port = common.free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port))
    proc = common.Proc(
        common.pinned(
            common.SERVER_CPU,
            [
                common.tool("nginx"),
                "-p",
                str(directory),
                "-c",
                str(conf),
                "-e",
                str(directory / "error.log"),
            ],
        )
    )
    url = f"http://127.0.0.1:{port}/{NAME}/jwks.json"
    if not common.wait_until(lambda: _ok(url), 10):
        proc.stop()
        log = (directory / "error.log").read_text().splitlines()
        raise RuntimeError("nginx did not start:\n" + "\n".join(log[-5:]))
    return proc, url


def _ok(url: str) -> bool:
    try:
        return common.http("GET", url, timeout_s=1)[0] == 200
    except OSError:
        return False


def mirror_sides() -> dict[str, tuple[str | None, Path | None]]:
    """The mirror processes to measure, by result key, with their loop and package directory:
    one, or one per loop with ``--loop both``; and the same again for ``--baseline``."""
    loops: dict[str, str | None] = (
        {"": "asyncio", "_uvloop": "uvloop"} if common.LOOP == "both" else {"": None}
    )
    sides: dict[str, tuple[str | None, Path | None]] = {
        f"mirror{suffix}": (loop, None) for suffix, loop in loops.items()
    }
    if common.BASELINE is not None:
        sides.update({f"baseline{s}": (loop, common.BASELINE) for s, loop in loops.items()})
    return sides


def ratio_key(side: str) -> str:
    return "ratio" if side == "mirror" else f"ratio_{side.removeprefix('mirror_')}"


def run(*, rounds: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    common.raise_fd_limit()
    common.ensure_tools("nginx", "wrk")
    info = common.banner("serving: mirror vs nginx, both on one core, wrk on another")
    sides = mirror_sides()
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serving-")))
        upstream, upstream_url = common.start_upstream(1)
        stack.enter_context(common.running(upstream))
        config = common.mirror_config(directory, upstream_url, [NAME])
        targets: dict[str, str] = {}
        admins: dict[str, str] = {}
        for side, (loop, package_dir) in sides.items():
            mirror = stack.enter_context(
                common.running(common.start_mirror(config, loop=loop, package_dir=package_dir))
            )
            listening = mirror.wait_json("listening")
            admin = admins[side] = listening["admin"]
            ready = common.wait_until(
                lambda admin=admin: common.http("GET", f"{admin}/readyz")[0] == 200, 30
            )
            if not ready:
                raise RuntimeError("mirror not ready")
            targets[side] = f"{listening['public']}/{NAME}/jwks.json"
        _, _headers, body = common.http("GET", targets["mirror"])
        _nginx, targets["nginx"] = start_nginx(directory / "nginx", body)
        stack.enter_context(common.running(_nginx))
        etags = {k: common.http("GET", u)[1]["ETag"] for k, u in targets.items()}
        for side, url in targets.items():
            status = common.http("GET", url, headers={"If-None-Match": etags[side]})[0]
            if status != 304:
                raise RuntimeError(f"{side}: If-None-Match answered {status}")
        cases = _measure(targets, etags, rounds, duration_s, warmup_s, cases=FIGURES)
        requests_counted = sum(_requests_total(admin) for admin in admins.values())
    result = {
        "info": info,
        "body_bytes": len(body),
        "cases": cases,
        "mirror_requests_counted": requests_counted,
    }
    _print(result)
    return result


def _measure(
    targets: dict[str, str],
    etags: dict[str, str],
    rounds: int,
    duration_s: float,
    warmup_s: float,
    *,
    cases: tuple[Case, ...] = CLASSIC,
) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    for case in cases:
        samples: dict[str, list[WrkResult]] = {side: [] for side in targets}
        if warmup_s > 0:
            for side, url in targets.items():
                wrk(
                    url,
                    connections=case.connections,
                    duration_s=warmup_s,
                    etag=etags[side] if case.conditional else None,
                    mode=case.mode,
                )
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for side in order:
                samples[side].append(
                    wrk(
                        targets[side],
                        connections=case.connections,
                        duration_s=duration_s,
                        etag=etags[side] if case.conditional else None,
                        mode=case.mode,
                    )
                )
                time.sleep(0.2)
        summary = {}
        for side, results in samples.items():
            summary[side] = {
                "rps": common.median([x.rps for x in results]),
                "p50_ms": common.median([x.p50_ms for x in results]),
                "p99_ms": common.median([x.p99_ms for x in results]),
                "errors": sum(x.errors for x in results),
                "rps_runs": [round(x.rps) for x in results],
            }
        # Each round measures the two back to back, so a burst of load from elsewhere on the
        # machine mostly hits both: the median of the per-round ratios is the robust figure.
        for side in targets:
            if side != "nginx":
                summary[ratio_key(side)] = common.median(
                    [m.rps / n.rps for m, n in zip(samples[side], samples["nginx"], strict=True)]
                )
        summary["connections"] = case.connections
        measured[case.name] = summary
    return measured


def _requests_total(admin: str) -> float:
    """The mirror's own count of public requests (proves counting was on during the run)."""
    _, _, text = common.http("GET", f"{admin}/metrics")
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("jwks_mirror_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _mirrors(case: dict[str, Any]) -> list[tuple[bool, str, dict[str, Any], float]]:
    """(is the baseline, loop suffix, mirror figures, ratio) for each mirror in a case."""
    sides = [s for s in ("mirror", "mirror_uvloop", "baseline", "baseline_uvloop") if s in case]
    both = "mirror_uvloop" in case
    out = []
    for side in sides:
        loop = ", uvloop" if side.endswith("_uvloop") else ", asyncio" if both else ""
        out.append((side.startswith("baseline"), loop, case[side], case[ratio_key(side)]))
    return out


def _print(result: dict[str, Any]) -> None:
    print(
        f"   body {result['body_bytes']} bytes; mirror counted "
        f"{result['mirror_requests_counted']:.0f} requests"
    )
    print(
        f"   {'case':<10} {'conns':>5} {'mirror rps':>11} {'nginx rps':>10} {'ratio':>6} "
        f"{'mirror p50/p99 ms':>18} {'nginx p50/p99 ms':>17} {'errors m/n':>10}"
    )
    for name, c in result["cases"].items():
        n = c["nginx"]
        for baseline, loop, m, ratio in _mirrors(c):
            who = f" [{common.BASELINE_LABEL}]" if baseline else ""
            label = name + loop.replace(", ", " ") + who
            print(
                f"   {label:<10} {c['connections']:>5} {m['rps']:>11.0f} {n['rps']:>10.0f} "
                f"{ratio:>6.2f} {m['p50_ms']:>8.2f}/{m['p99_ms']:<9.2f} "
                f"{n['p50_ms']:>7.2f}/{n['p99_ms']:<9.2f} {m['errors']:>4}/{n['errors']}"
            )


def rows(result: dict[str, Any], label: str) -> list[str]:
    """Table rows; the baseline's are tagged with its own label, and "baseline" for commit."""
    info = result["info"]
    out = []
    for name, c in result["cases"].items():
        n = c["nginx"]
        for baseline, loop, m, ratio in _mirrors(c):
            tag, commit = (
                (common.BASELINE_LABEL, "baseline") if baseline else (label, info["commit"])
            )
            out.append(
                f"| {info['date']} | {tag}{loop} | `{commit}` "
                f"| {name} ({c['connections']} conns) "
                f"| {m['rps']:.0f} | {n['rps']:.0f} | **{ratio:.2f}** "
                f"| {m['p50_ms']:.2f} / {m['p99_ms']:.2f} | {n['p50_ms']:.2f} / {n['p99_ms']:.2f} "
                f"| {m['errors']} / {n['errors']} | {common.setup_text(info)} "
                f"| `{info['command']}` |"
            )
    return out
