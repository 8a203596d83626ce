"""The image's supply chain: hash-pinned locks, a digest-pinned base, the SBOM check.

The locks are installed for real, with ``--require-hashes``, by ``tools/image_env.py`` in CI
(it needs the package index, which tests do not use); these tests check, offline, what the
locks, the Dockerfile and the SBOM check promise.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DIGEST = re.compile(r"^python:(\d+\.\d+\.\d+)-slim-\w+@sha256:[0-9a-f]{64}$")


def load_image_env() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_env", ROOT / "tools" / "image_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


image_env = load_image_env()


def lock(name: str) -> dict[str, tuple[str, list[str]]]:
    pins: dict[str, tuple[str, list[str]]] = image_env.parse_lock(
        (LOCKS / name).read_text(encoding="utf-8")
    )
    return pins


def assert_locked(requirements: list[str], pins: dict[str, tuple[str, list[str]]]) -> None:
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in the lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"locked {name}=={version} does not satisfy {text}"
        )


def test_runtime_lock_covers_every_runtime_dependency() -> None:
    """Every dependency in pyproject.toml is locked
    at a version pyproject allows, pinned with ``==`` and at least one sha256."""
    project = PYPROJECT["project"]
    pins = lock("runtime.lock")
    assert_locked(project["dependencies"], pins)
    assert all(len(hashes) >= 1 for _, hashes in pins.values())
    assert "jwks-mirror" not in pins  # the package itself is installed from source, --no-deps


def test_build_lock_covers_the_build_backend() -> None:
    requires = PYPROJECT["build-system"]["requires"]
    declared = [
        line.strip()
        for line in (LOCKS / "build.in").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert declared == requires, "requirements/build.in must match [build-system] requires"
    assert_locked(requires, lock("build.lock"))


@pytest.mark.parametrize(
    ("name", "source"),
    [("runtime.lock", "pyproject.toml"), ("build.lock", "requirements/build.in"),
     ("sbom.lock", "requirements/sbom.in")],
)
def test_each_lock_says_how_it_was_made(name: str, source: str) -> None:
    header = (LOCKS / name).read_text(encoding="utf-8").splitlines()[:2]
    command = header[1].lstrip("# ").split()
    assert command[:3] == ["uv", "pip", "compile"] and command[3] == source
    assert {"--universal", "--generate-hashes"} <= set(command)
    assert command[command.index("-o") + 1] == f"requirements/{name}"


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), " ".join(line.split(None, 1)[1].split()))
        for line in lines
        if line and not line.startswith("#")
    ]


def test_base_image_is_pinned_by_digest_in_both_stages() -> None:
    images = {arg.split()[0] for op, arg in dockerfile() if op == "FROM"}
    assert len(images) == 1, f"both stages must use one base (the venv's interpreter): {images}"
    (image,) = images
    assert DIGEST.match(image), f"pin the base by version tag and digest: {image}"
    # The image runs a Python the locks were resolved for (they start at requires-python), and
    # the one tools/image_env.py downloads the image's wheels for.
    version = DIGEST.match(image).group(1)  # type: ignore[union-attr]
    assert image_env.image_python() == version.rsplit(".", 1)[0]
    minor = tuple(int(p) for p in version.split(".")[:2])
    floor = re.match(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert floor is not None and minor >= (int(floor.group(1)), int(floor.group(2)))


def test_dockerfile_installs_only_from_the_locks() -> None:
    runs = [arg for op, arg in dockerfile() if op == "RUN"]
    pip_installs = [
        command.strip()
        for run in runs
        for command in run.split("&&")
        if re.search(r"\bpip (install|wheel)\b", command)
    ]
    for command in pip_installs:
        if " -r " in command:
            assert "--require-hashes" in command and "--only-binary :all:" in command, command
        else:  # the project's own wheel (or its build): nothing may come from the index
            assert "--no-deps" in command, command
    locks = {m for c in pip_installs for m in re.findall(r"-r (\S+)", c)}
    assert locks == {"requirements/build.lock", "requirements/runtime.lock"}
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!requirements/*.lock" in ignore and "!jwks_mirror/" in ignore


# -- the SBOM check ---------------------------------------------------------------------------


def sbom(*components: tuple[str, str], root: str | None = "jwks-mirror") -> dict[str, Any]:
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "components": [{"type": "library", "name": n, "version": v} for n, v in components],
        "metadata": {},
    }
    if root is not None:
        document["metadata"]["component"] = {"type": "application", "name": root, "version": "0.1.0"}
    return document


LOCK = {"ruamel-yaml": ("0.19.1", ["a" * 64]), "typing-extensions": ("4.16.0", ["b" * 64])}


def test_sbom_check_accepts_every_locked_package_under_any_spelling() -> None:
    document = sbom(("ruamel.yaml", "0.19.1"), ("typing_extensions", "4.16.0"), ("pip", "24"))
    assert image_env.check_sbom(document, LOCK) == []


def test_sbom_check_names_what_is_missing_or_at_another_version() -> None:
    document = sbom(("ruamel.yaml", "0.18.0"), root=None)
    assert image_env.check_sbom(document, LOCK) == [
        "ruamel-yaml==0.19.1", "typing-extensions==4.16.0", "jwks-mirror"
    ]


def test_parse_lock_refuses_what_pip_require_hashes_would() -> None:
    assert image_env.parse_lock(
        "# header\nattrs==26.1.0 ; python_version >= '3.11' \\\n"
        f"    --hash=sha256:{'c' * 64} \\\n    --hash=sha256:{'d' * 64}\n    # via aiohttp\n"
    ) == {"attrs": ("26.1.0", ["c" * 64, "d" * 64])}
    with pytest.raises(ValueError, match="line 1: not a pinned requirement"):
        image_env.parse_lock("attrs>=26\n")
    with pytest.raises(ValueError, match="attrs: no --hash"):
        image_env.parse_lock("attrs==26.1.0\n")
