"""The image's Python environment, built the way the Dockerfile builds it, without Docker.

    python tools/image_env.py OUT_DIR

CI runs this (``.ci/run``). It repeats the Dockerfile's pip steps with this machine's Python:
the build backend from ``requirements/build.lock`` into one venv, the wheel built there with no
network, the runtime from ``requirements/runtime.lock`` into another, both with
``--require-hashes --only-binary :all:`` (so a dependency missing from a lock, or a file whose
hash changed, fails here as it would in ``docker build``), and the package with ``--no-deps``.
The image's own Python (the version in the Dockerfile's ``FROM``) may differ from this
machine's, so both locks are also downloaded, hashes checked, as that Python's wheels for
x86_64 and aarch64 Linux. Then ``jwks-mirror demo --once`` runs on exactly the locked versions,
the environment must import ``uvloop`` (the image's event loop), and ``cyclonedx-py`` (from
``requirements/sbom.lock``, in a third venv) writes ``OUT_DIR/sbom.cdx.json``, which is
checked to list every locked package at its locked version and jwks-mirror itself.

Exit 0 when all of it holds; 1 (one line on stderr saying what) otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
_FROM = re.compile(r"^FROM\s+python:(\d+\.\d+)\.\d+-slim\S*", re.MULTILINE)
# Debian bookworm's glibc is 2.36: any manylinux wheel up to that runs on the image.
_MANYLINUX = [f"manylinux_2_{minor}" for minor in range(5, 37)]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """``{normalised name: (version, [sha256, ...])}`` from a ``--generate-hashes`` lock.

    Every requirement must be pinned with ``==`` and carry at least one hash; anything else
    is a ValueError naming the line, since ``pip --require-hashes`` would refuse it too.
    """
    pins: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            match = _PIN.match(stripped)
            if match is None:
                raise ValueError(f"line {number}: not a pinned requirement: {stripped}")
            current = normalise(match.group(1))
            pins[current] = (match.group(2), [])
        elif current is not None:
            pins[current][1].extend(_HASH.findall(stripped))
    for name, (_, hashes) in pins.items():
        if not hashes:
            raise ValueError(f"{name}: no --hash")
    return pins


def check_sbom(sbom: dict[str, object], lock: dict[str, tuple[str, list[str]]]) -> list[str]:
    """What the SBOM lacks: each locked package at its version among its components, and
    jwks-mirror (a component, or the root component ``--pyproject`` makes it). Empty if
    nothing."""
    found: dict[str, set[str]] = {}
    components = sbom.get("components")
    for component in components if isinstance(components, list) else []:
        if isinstance(component, dict) and isinstance(component.get("name"), str):
            found.setdefault(normalise(component["name"]), set()).add(
                str(component.get("version"))
            )
    missing = [
        f"{name}=={version}"
        for name, (version, _) in sorted(lock.items())
        if version not in found.get(name, set())
    ]
    metadata = sbom.get("metadata")
    root = metadata.get("component") if isinstance(metadata, dict) else None
    if isinstance(root, dict) and isinstance(root.get("name"), str):  # --pyproject's root
        found.setdefault(normalise(root["name"]), set()).add(str(root.get("version")))
    if "jwks-mirror" not in found:
        missing.append("jwks-mirror")
    return missing


def _run(*args: str | Path, cwd: Path = ROOT) -> None:
    result = subprocess.run(  # noqa: S603 - our own fixed commands
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{Path(str(args[0])).name} {' '.join(map(str, args[1:4]))} ...: "
                           f"{tail[0]}")


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def _locked_install(bin_dir: Path, lock: str) -> None:
    _run(
        bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check",
        "--require-hashes", "--only-binary", ":all:", "-r", REQUIREMENTS / lock,
    )


def image_python() -> str:
    """The ``X.Y`` of the Dockerfile's base image; a ValueError if it names no python image."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    versions = {str(match) for match in _FROM.findall(text)}
    if len(versions) != 1:
        raise ValueError(f"Dockerfile: expected one python:X.Y.Z-slim base, found {versions}")
    return versions.pop()


def _download_for_image(pip: Path, out: Path) -> None:
    """Every locked file the image's pip would install exists as a wheel for the image's
    Python on both architectures, and matches its hash."""
    python = image_python()
    for arch in ("x86_64", "aarch64"):
        platforms = [arg for tag in _MANYLINUX for arg in ("--platform", f"{tag}_{arch}")]
        for lock in ("build.lock", "runtime.lock"):
            _run(
                pip, "download", "--quiet", "--disable-pip-version-check", "--require-hashes",
                "--no-deps", "--only-binary", ":all:", "--implementation", "cp",
                "--python-version", python, *platforms,
                "--dest", out / f"py{python}-{arch}", "-r", REQUIREMENTS / lock,
            )


def build(out: Path) -> Path:
    """Build the image's environment under ``out``; returns the SBOM's path."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    builder = _venv(out / "build")
    _locked_install(builder, "build.lock")
    wheels = out / "wheels"
    _run(builder / "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", wheels, ".")
    runtime = _venv(out / "venv")
    _locked_install(runtime, "runtime.lock")
    _run(runtime / "pip", "install", "--quiet", "--no-deps", *sorted(wheels.glob("*.whl")))
    _download_for_image(builder / "pip", out / "image-wheels")
    _run(runtime / "jwks-mirror", "demo", "--once", cwd=out)
    # The image's event loop: `serve` runs on uvloop whenever it imports (docs/image.md).
    _run(runtime / "python", "-c", "import uvloop", cwd=out)
    tool = _venv(out / "sbom-tool")
    _locked_install(tool, "sbom.lock")
    sbom = out / "sbom.cdx.json"
    _run(
        tool / "cyclonedx-py", "environment", "--pyproject", ROOT / "pyproject.toml",
        "--output-reproducible", "--output-format", "JSON", "--output-file", sbom,
        runtime / "python",
    )
    return sbom


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python tools/image_env.py OUT_DIR\n")
        return 2
    try:
        sbom_path = build(Path(argv[0]).resolve())
        lock = parse_lock((REQUIREMENTS / "runtime.lock").read_text(encoding="utf-8"))
        missing = check_sbom(json.loads(sbom_path.read_text(encoding="utf-8")), lock)
    except (RuntimeError, ValueError, OSError) as exc:
        sys.stderr.write(f"image_env: {exc}\n")
        return 1
    if missing:
        sys.stderr.write(f"image_env: the SBOM does not list {', '.join(missing)}\n")
        return 1
    print(f"{sbom_path}: {len(lock)} locked packages and jwks-mirror, at their locked versions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
