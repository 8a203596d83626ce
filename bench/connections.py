"""What one open connection costs the mirror: kernel socket memory and process memory.

    python bench/connections.py [--stalled 40] [--idle 200] [--seconds 4]

Starts ``jwks-mirror serve`` (public cap raised out of the way), then opens ``--idle``
connections that send nothing, and ``--stalled`` that pipeline requests as fast as the server
takes them and never read an answer (the costly kind: answers fill the server's send buffers,
requests its receive buffers). After ``--seconds`` it reports the kernel memory of the port's
sockets (``ss -tm``: receive, send and write-queue allocations) and the growth of the process's
RSS, in total and per connection. Linux only (``ss``, ``/proc``). The figures sized the default
``max_connections`` (docs/configuration.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUEST = b"GET /nope/jwks.json HTTP/1.1\r\nHost: m\r\n\r\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    assert match is not None
    return int(match.group(1))


def _socket_memory(port: int) -> tuple[int, int]:
    """(sockets, bytes) for the server side of ``port``, from ``ss -tm``."""
    out = subprocess.run(
        ["ss", "-tmnH", "state", "connected", f"sport = :{port}"],
        capture_output=True, text=True, check=True,
    ).stdout
    count = total = 0
    for match in re.finditer(r"skmem:\(([^)]*)\)", out):
        fields = dict(re.match(r"([a-z_]+)(\d+)", f).groups() for f in match.group(1).split(","))  # type: ignore[union-attr]
        total += int(fields["r"]) + int(fields["t"]) + int(fields["w"])
        count += 1
    return count, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=40)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    public, admin = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "mirror.yaml"
        config.write_text(json.dumps({
            "public": {"host": "127.0.0.1", "port": public, "max_connections": 65536},
            "admin": {"host": "127.0.0.1", "port": admin},
            "shutdown_delay": 0,
            "issuers": [{"name": "a", "jwks_uri": "http://127.0.0.1:9/jwks.json"}],
        }))
        log = open(Path(directory) / "mirror.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "jwks_mirror", "serve", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        clients: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", public), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the mirror did not start") from None
                    time.sleep(0.1)  # polling a port that is not open yet
            before = _rss_kb(proc.pid)
            for _ in range(args.idle):
                clients.append(socket.create_connection(("127.0.0.1", public)))
            stalled = []
            for _ in range(args.stalled):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", public))
                sock.setblocking(False)
                stalled.append(sock)
            clients += stalled
            burst = REQUEST * 25000
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for sock in stalled:
                    with contextlib.suppress(BlockingIOError, ConnectionError):
                        sock.send(burst)
                time.sleep(0.05)  # the pipeliners' pace
            count, kernel = _socket_memory(public)
            grown = (_rss_kb(proc.pid) - before) * 1024
            total = max(args.stalled + args.idle, 1)
            print(json.dumps({
                "idle": args.idle, "stalled": args.stalled, "server_sockets": count,
                "kernel_bytes": kernel, "kernel_bytes_per_stalled": kernel // max(args.stalled, 1),
                "rss_growth_bytes": grown, "rss_growth_per_connection": grown // total,
            }, indent=2))
        finally:
            for sock in clients:
                sock.close()
            proc.kill()
            proc.wait(10)
            log.close()


if __name__ == "__main__":
    main()
