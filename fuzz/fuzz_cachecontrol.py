"""Coverage-guided fuzzing of the upstream Cache-Control parser with atheris (libFuzzer).

    python fuzz/fuzz_cachecontrol.py -max_total_time=60 [CORPUS_DIR ...]

The input is split at its first NUL byte into a Cache-Control value and an Age value (as
latin-1, what HTTP header bytes decode to). Whatever they are, ``freshness_lifetime_s`` returns
None or a lifetime between 0 and 2^31 seconds, never more than the ``max-age`` it read, and
any other exception is a crash. With no corpus directory given, a seed corpus of real headers
(Dex, Auth0, Okta, Keycloak-like and hostile ones) is written to a temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import atheris
import harness

with atheris.instrument_imports():
    from jwks_mirror.core.cachecontrol import MAX_DELTA_S, directives, freshness_lifetime_s


def check(data: bytes) -> None:
    header, _, age = data.decode("latin-1").partition("\0")
    lifetime = freshness_lifetime_s(header, age or None)
    if lifetime is None:
        return
    assert 0.0 <= lifetime <= MAX_DELTA_S, lifetime
    assert any(name == "max-age" for name, _ in directives(header)), header


SEEDS = {
    "dex": b"max-age=21599, must-revalidate",
    "auth0": b"public, max-age=15, stale-while-revalidate=15, stale-if-error=86400\x0012",
    "okta": b"max-age=3321, must-revalidate",
    "keycloak": b"no-cache",
    "quoted": b'private="a, max-age=1", max-age="60"\x00-5',
    "huge": b"max-age=" + b"9" * 64 + b"\x00" + b"1" * 64,
    "duplicate": b"max-age=60, max-age=5",
}


def seed(directory: Path) -> None:
    for name, value in SEEDS.items():
        (directory / name).write_bytes(value)


if __name__ == "__main__":
    harness.run(check, seed, name="cachecontrol")
