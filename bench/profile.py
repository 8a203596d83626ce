"""Profile the mirror under load with py-spy: ``python bench/profile.py serving|scale``.

serving: a ``jwks-mirror serve`` process on core 0 under ``wrk`` (50 connections, core 1);
scale: the same process with N issuers, sampled through one unchanged and one changed refresh
cycle. Writes py-spy's collapsed stacks and prints the functions with the most samples, self
and inclusive, which is what docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, serving
from bench.upstream import issuer_name


def summarize(collapsed: Path, top: int) -> None:
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    print(f"   {total} samples")
    for title, counts in (("self", self_counts), ("inclusive", incl_counts)):
        print(f"   top {top} by {title}:")
        for frame, count in counts.most_common(top):
            print(f"   {100 * count / total:5.1f}%  {frame}")


def py_spy(pid: int, seconds: float, out: Path, native: bool) -> threading.Thread:
    bin_dir = Path(sys.executable).parent
    exe = str(bin_dir / "py-spy") if (bin_dir / "py-spy").exists() else "py-spy"
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]
    if native:
        argv.append("--native")
    thread = threading.Thread(
        target=subprocess.run, args=(argv,), kwargs={"check": True, "capture_output": True}
    )
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("serving", "scale"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--issuers", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("profile.txt"))
    parser.add_argument(
        "--mode",
        choices=("keep-alive", "close", "varied"),
        default="keep-alive",
        help="serving: wrk's requests, as bench/serving.py's cases (close: new-conn)",
    )
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args()
    common.LOOP = args.loop
    common.raise_fd_limit()
    common.banner(f"profile: {args.what}")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        issuers = 1 if args.what == "serving" else args.issuers
        upstream, url = common.start_upstream(issuers)
        with common.running(upstream):
            names = [issuer_name(i) for i in range(issuers)]
            mirror = common.start_mirror(common.mirror_config(Path(tmp), url, names))
            with common.running(mirror):
                listening = mirror.wait_json("listening")
                admin = listening["admin"]
                common.wait_until(lambda: common.http("GET", f"{admin}/readyz")[0] == 200, 60)
                if args.what == "serving":
                    target = f"{listening['public']}/{names[0]}/jwks.json"
                    spy = py_spy(mirror.pid, args.seconds, args.out, args.native)
                    result = serving.wrk(
                        target,
                        connections=50,
                        duration_s=args.seconds + 1,
                        etag=None,
                        mode=args.mode,
                    )
                    print(f"   under py-spy: {result.rps:.0f} req/s")
                else:
                    spy = py_spy(mirror.pid, args.seconds, args.out, args.native)
                    time.sleep(0.5)
                    common.http("POST", f"{admin}/refresh", timeout_s=120)
                    common.http("POST", f"{url}/rotate")
                    common.http("POST", f"{admin}/refresh", timeout_s=120)
                spy.join()
    summarize(args.out, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
