"""Run every jwks-mirror benchmark with one command and record the results.

    python bench/run.py              # full: a few minutes on a 2-core machine
    python bench/run.py --quick      # shorter runs, fewer rounds
    python bench/run.py --smoke      # tiny sizes, for CI (asserts nothing about timings)
    python bench/run.py --only issuers10k   # the 10,000-issuer case and its targets
    python bench/run.py --only freshness    # steady-state cost of refresh_interval 5m/1m/30s

Each benchmark prints the machine, the versions and the command, and appends dated rows to
``docs/benchmarks.md`` (unless ``--no-record``). ``--json FILE`` also writes the raw results.
Run as root on a machine without nginx/wrk and they are installed with apt-get.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_rewrite, common, freshness, issuers10k, scale, serving

PROFILES = {
    #           serving: rounds, seconds, warmup   scale: issuers, rounds
    # rewrite: manifests, repeats   issuers10k: issuers (its serving part uses rounds etc.)
    "full": {"rounds": 5, "duration_s": 3.0, "warmup_s": 1.0, "issuers": 1000, "scale_rounds": 3,
             "manifests": 1000, "rewrite_repeat": 3, "many": 10000,
             "fresh_sizes": (1000, 10000), "fresh_intervals": ("30s", "1m")},
    "quick": {"rounds": 2, "duration_s": 3.0, "warmup_s": 1.0, "issuers": 1000, "scale_rounds": 1,
              "manifests": 1000, "rewrite_repeat": 1, "many": 10000,
              "fresh_sizes": (1000, 10000), "fresh_intervals": ("30s", "1m")},
    "smoke": {"rounds": 1, "duration_s": 1.0, "warmup_s": 0.0, "issuers": 20, "scale_rounds": 1,
              "manifests": 10, "rewrite_repeat": 1, "many": 50,
              "fresh_sizes": (20,), "fresh_intervals": ("10s",)},
}
FRESH_REPORT = ("5m", "1m", "30s")  # the intervals compared in docs/benchmarks.md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs")
    size.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument(
        "--only",
        choices=("serving", "scale", "rewrite", "issuers10k", "freshness"),
        action="append",
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument("--label", default="", help="tag for the recorded rows (before, after)")
    parser.add_argument("--no-record", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--issuers", type=int, help="override the scale benchmark's issuers")
    parser.add_argument("--many", type=int, help="override the issuers10k benchmark's issuers")
    parser.add_argument("--scale-rounds", type=int, help="override the scale benchmark's rounds")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop", "both"),
        default="auto",
        help="asyncio: run the mirror without uvloop even if it is installed; both: the "
        "serving benchmark measures a mirror on each loop against nginx in the same rounds",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also measure the package in DIR (git archive REV | tar -x -C DIR) in the same "
        "rounds: serving (against nginx) and scale (ready and refresh-cycle CPU)",
    )
    parser.add_argument(
        "--baseline-label", default="baseline", help="how the baseline's rows are tagged"
    )
    args = parser.parse_args(argv)
    common.LOOP = args.loop
    common.BASELINE = args.baseline.resolve() if args.baseline else None
    common.BASELINE_LABEL = args.baseline_label
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    label = args.label or ("smoke" if args.smoke else "quick" if args.quick else "full")
    which = args.only or ["serving", "scale", "issuers10k", "freshness", "rewrite"]
    results: dict[str, object] = {}
    if "serving" in which:
        result = serving.run(
            rounds=profile["rounds"], duration_s=profile["duration_s"], warmup_s=profile["warmup_s"]
        )
        results["serving"] = result
        if not args.no_record:
            common.record("serving-rows", serving.rows(result, label))
    if "scale" in which:
        result = scale.run(
            issuers=args.issuers or int(profile["issuers"]),
            rounds=args.scale_rounds or int(profile["scale_rounds"]),
        )
        results["scale"] = result
        if not args.no_record:
            common.record("scale-rows", scale.rows(result, label))
    if "issuers10k" in which:
        serve = {k: float(profile[k]) for k in ("rounds", "duration_s", "warmup_s")}
        result = issuers10k.run(issuers=args.many or int(profile["many"]), serve=serve)
        results["issuers10k"] = result
        if not args.no_record:
            common.record("issuers10k-rows", issuers10k.rows(result, label))
    if "freshness" in which:
        result = freshness.run(
            sizes=tuple(profile["fresh_sizes"]),  # type: ignore[arg-type]
            intervals=tuple(profile["fresh_intervals"]),  # type: ignore[arg-type]
            report=FRESH_REPORT,
        )
        results["freshness"] = result
        if not args.no_record:
            common.record("freshness-rows", freshness.rows(result, label))
    if "rewrite" in which:
        # Its figures go into the "Rewrite" section of docs/benchmarks.md by hand: the
        # numbers are printed with the machine and versions.
        results["rewrite"] = bench_rewrite.run(
            ["--count", str(profile["manifests"]), "--repeat", str(profile["rewrite_repeat"])]
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
