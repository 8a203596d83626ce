"""Coverage-guided fuzzing of the bounded config loader with atheris (libFuzzer).

    python fuzz/fuzz_config.py -max_total_time=60 [CORPUS_DIR ...]

Whatever the bytes, ``parse_settings`` (through ``jwks_mirror.core.yamlsafe``'s bounds) either
returns settings or raises ``ConfigError`` with a one-line message: no other exception, no
crash, no stall (libFuzzer's ``-timeout`` catches a slow input). The seeds are the repository's
real configs (deploy/), plus the hostile shapes of tests/hostile_yaml.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import harness

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports():
    from jwks_mirror.core.config.loader import parse_settings
    from jwks_mirror.core.errors import ConfigError


def check(data: bytes) -> None:
    text = harness.text(data)
    if text is None:
        return
    try:
        parse_settings(text, source="fuzz.yaml", base_dir=ROOT, offline=True)
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)


def seed(directory: Path) -> None:
    from tests import hostile_yaml

    configs = [*(ROOT / "deploy").rglob("config.yaml")]
    for index, path in enumerate(sorted(configs)):
        (directory / f"config-{index}").write_bytes(path.read_bytes())
    (directory / "deep").write_text(hostile_yaml.deep_config(200))
    (directory / "bomb").write_text(hostile_yaml.merge_bomb(8))


def main() -> None:
    harness.run(check, seed, name="config")


if __name__ == "__main__":
    main()
