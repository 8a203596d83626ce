"""Time ``jwks-mirror rewrite`` over generated manifests, through the real CLI.

    python bench/bench_rewrite.py              # 1,000 manifests, best of 3
    python bench/bench_rewrite.py --count 10 --repeat 1   # CI smoke run

Writes ``--count`` RequestAuthentication files (one per file, as in a GitOps repository; nine in
ten have an in-mesh jwksUri next to an external one, the rest only external ones) into a
temporary directory, then runs the installed CLI in a subprocess, so start-up is included:
rewrite to stdout with ``--config-out``, ``--check``, ``--in-place`` and ``--restore``.
Prints the machine, the versions and the best wall time of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"

TEMPLATE = """\
# {name}: JWT authentication for the {name} workloads
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: {name}
  namespace: ns{ns}
  labels:
    app.kubernetes.io/part-of: shop
spec:
  selector:
    matchLabels:
      app: {name}
  jwtRules:
  - issuer: "https://accounts.example.com"
    jwksUri: "https://accounts.example.com/.well-known/jwks.json"
    forwardOriginalToken: true
{in_mesh}"""

IN_MESH = """\
  - issuer: "http://auth{svc}.ns{ns}.svc.cluster.local"
    jwksUri: "http://auth{svc}.ns{ns}.svc.cluster.local/jwks.json"   # in-mesh, mTLS only
    fromHeaders:
    - name: x-jwt
"""


def generate(directory: Path, count: int) -> None:
    for index in range(count):
        name = f"app{index:05d}"
        in_mesh = "" if index % 10 == 9 else IN_MESH.format(svc=index % 50, ns=index % 20)
        text = TEMPLATE.format(name=name, ns=index % 20, in_mesh=in_mesh)
        (directory / f"{name}.yaml").write_text(text)


def timed(args: list[str], *, expect: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "rewrite", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"rewrite {' '.join(args)}: exit {proc.returncode}: {proc.stderr}")
    return elapsed


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


def run(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and return the best seconds of each command (also printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="manifests (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(
        f"versions: Python {platform.python_version()}, jwks-mirror {version('jwks-mirror')}, "
        f"ruamel.yaml {version('ruamel.yaml')}"
    )
    print(f"manifests: {args.count} files, {args.count - args.count // 10} with in-mesh rules")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "manifests"
        source.mkdir()
        generate(source, args.count)
        config = root / "mirror.yaml"
        common = [str(source), "--mirror-url", MIRROR]
        results = {
            "rewrite (stdout, --config-out)": min(
                timed([*common, "--config-out", str(config)]) for _ in range(args.repeat)
            ),
            "rewrite --check": min(
                timed([str(source), "--check"], expect=1 if args.count >= 1 else 0)
                for _ in range(args.repeat)
            ),
        }
        runs = []
        for _ in range(args.repeat):  # each round trip starts from the generated files
            runs.append((timed([*common, "--in-place"]), timed([str(source), "--restore",
                                                                "--in-place"])))
        results["rewrite --in-place"] = min(r[0] for r in runs)
        results["rewrite --restore --in-place"] = min(r[1] for r in runs)
    for what, seconds in results.items():
        per = seconds / max(args.count, 1) * 1000
        print(f"{what:32s} {seconds:7.2f} s  ({per:.2f} ms per manifest, best of {args.repeat})")
    return results


if __name__ == "__main__":
    sys.exit(main())
