"""How long a 10,000-issuer config takes to load: the YAML step alone and the whole check.

    python bench/config_load.py                      # this tree
    python bench/config_load.py --baseline DIR       # and DIR (``git archive REV | tar -x -C DIR``)

The config is the one ``bench/issuers10k.py`` serves (``common.mirror_config``, 0.77 MB).
Each figure is the best of ``--repeat`` runs in CPU seconds of a fresh process (the machine may
be shared: CPU seconds, best of several, are the figures to compare). The YAML step is
``configfields.load_yaml`` (bounds measured on the event stream, then libyaml composes); the
whole check is ``load_settings(..., offline=True)``, what ``check-config --offline`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_MEASURE = """
import json, sys, time
from jwks_mirror.core.config import fields as configfields
from jwks_mirror.core.config.loader import load_settings
path, repeat = sys.argv[1], int(sys.argv[2])
text = open(path, encoding="utf-8").read()
def best(call):
    times = []
    for _ in range(repeat):
        started = time.process_time(); call(); times.append(time.process_time() - started)
    return min(times)
print(json.dumps({
    "load_yaml_cpu_s": best(lambda: configfields.load_yaml(text, source=path)),
    "load_settings_cpu_s": best(lambda: load_settings(path, offline=True)),
}))
"""


def measure(path: Path, repeat: int, tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(repeat)],
        check=True, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(),
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    from bench import common

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issuers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        names = [f"issuer-{n}" for n in range(args.issuers)]
        path = common.mirror_config(Path(directory), "http://127.0.0.1:1", names)
        print(f"{path.stat().st_size / 1e6:.2f} MB, {args.issuers} issuers")
        trees = {"this tree": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
        for label, tree in trees.items():
            result = measure(path, args.repeat, tree)
            print(
                f"{label}: YAML {result['load_yaml_cpu_s']:.3f} CPU-s, "
                f"whole check {result['load_settings_cpu_s']:.3f} CPU-s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
