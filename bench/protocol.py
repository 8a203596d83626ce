"""CPU cost of the public port's connection protocol per request, in process.

    python bench/protocol.py [--baseline DIR] [--requests N]

No sockets and no event loop: a real ``http1.Connection`` answered by a real
``public.PublicServer`` (one issuer with a published set), fed one request per read over a
transport that only counts writes: each request alternately with a variant (so every read
is parsed), and repeated byte for byte as ``wrk`` sends it (a keep-alive client's repeat,
which the protocol answers without parsing again). The figure is CPU time of the
thread (``time.thread_time``), best of 5, so it hardly moves when other processes share the
core, unlike requests per second. With ``--baseline DIR`` (``git archive REV | tar -x -C
DIR``) the package there is measured the same way, alternately, for a before/after figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REQUESTS = {
    "wrk GET": b"GET /a/jwks.json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "wrk If-None-Match": b"GET /a/jwks.json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b'If-None-Match: "v1"\r\n\r\n',
    "istiod GET": b"GET /a/jwks.json?v=3 HTTP/1.1\r\nHost: jwks-mirror.jwks-mirror.svc:8080\r\n"
    b"User-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
}

# Runs in a child process whose working directory is the package to measure.
_CHILD = """
import asyncio, json, sys, time
from jwks_mirror.serving.http import http1, public
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.mirror import Issuer, Mirror
from jwks_mirror.serving.refreshing import Health
from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.serving.state import IssuerState, Published

requests, count = json.loads(sys.argv[1]), int(sys.argv[2])
now = time.time()
settings = parse_settings(
    "public: {host: 127.0.0.1, port: 0}\\nadmin: {host: 127.0.0.1, port: 0}\\n"
    "issuers:\\n  - {name: a, jwks_uri: 'http://a.ns.svc/jwks.json'}\\n"
)
mirror = Mirror(settings, registry=new_registry(), clock=lambda: now)
state = IssuerState(settings.issuers[0], last_success=now)
state.published = Published(body=b'{"keys":[]}', version="v1", etag='"v1"', kids=())
mirror.issuers["a"] = Issuer(state, Health(next_refresh=now + 300))
if hasattr(mirror, "states"):  # a baseline from before Mirror kept one map of issuers
    mirror.states["a"] = state
server = public.PublicServer(mirror)

class Transport(asyncio.Transport):
    writes = 0
    wrong = None  # an answer that is neither 200 nor 304: the set-up does not fit the package
    def write(self, data):
        self.writes += 1
        if not data.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 304 ")):
            self.wrong = data[:60]
    def close(self): raise AssertionError("closed")
    def get_write_buffer_size(self): return 0

transport = Transport()
connection = http1.Connection(server)
connection.connection_made(transport)
out = {}
for name, text in requests.items():
    request = text.encode("latin-1")
    # "parsed": two requests that differ in the target, alternately, so every read is parsed;
    # "repeated": the same bytes every read, as wrk sends them (a keep-alive client's repeat)
    other = request.replace(b" HTTP/1.1", b"&x HTTP/1.1" if b"?" in request else b"?x HTTP/1.1")
    for how, pair in (("parsed", (request, other)), ("repeated", (request, request))):
        best = float("inf")
        for _ in range(5):
            started = time.thread_time()
            for _ in range(count // 2):
                connection.data_received(pair[0])
                connection.data_received(pair[1])
            best = min(best, time.thread_time() - started)
        out[f"{name}, {how}"] = best / (count // 2 * 2) * 1e6
assert transport.writes == 5 * 2 * (count // 2 * 2) * len(requests), transport.writes
assert transport.wrong is None, transport.wrong
print(json.dumps({"file": http1.__file__, "us": out}))
"""


def measure(package_dir: Path, count: int) -> dict[str, float]:
    requests = {k: v.decode("latin-1") for k, v in REQUESTS.items()}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(requests), str(count)],
        cwd=package_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert Path(result["file"]).is_relative_to(package_dir), result["file"]
    return dict(result["us"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, metavar="DIR")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sides = {"this tree": ROOT}
    if args.baseline:
        sides["baseline"] = args.baseline.resolve()
    samples: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, directory in sides.items():
            samples[side].append(measure(directory, args.requests))
    print(f"   CPU microseconds per request (best of 5 x {args.requests}, median of rounds)")
    print(f"   {'request':<32}" + "".join(f"{side:>12}" for side in sides))
    for name in samples[next(iter(sides))][0]:
        cells = []
        for side in sides:
            values = sorted(s[name] for s in samples[side])
            cells.append(f"{values[len(values) // 2]:>12.2f}")
        print(f"   {name:<32}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
