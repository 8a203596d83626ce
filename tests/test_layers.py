"""The import-linter contracts name the serving modules one by one: a module added to the
package must join its layer's lists, or the contracts would silently not look at it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]["contracts"]
PACKAGES = {"jwks_mirror.gitops", "jwks_mirror.cli", "jwks_mirror.demo"}
ENTRY_POINTS = {"jwks_mirror", "jwks_mirror.__main__"}


def contract(name_start: str) -> dict[str, list[str]]:
    return next(c for c in CONTRACTS if c["name"].startswith(name_start))


def top_level_modules() -> set[str]:
    modules = {f"jwks_mirror.{p.stem}" for p in (ROOT / "jwks_mirror").glob("*.py")}
    return {m.replace(".__init__", "") for m in modules} - ENTRY_POINTS


def test_every_module_is_in_exactly_one_layer() -> None:
    serving = set(contract("The serving side")["source_modules"])
    core = set(contract("The shared core")["source_modules"])
    assert not serving & core
    assert serving | core == top_level_modules(), "a module is missing from the contracts"
    for path in (ROOT / "jwks_mirror").iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            assert f"jwks_mirror.{path.name}" in PACKAGES, path


def test_the_forbidden_lists_agree_with_the_layers() -> None:
    serving = set(contract("The serving side")["source_modules"])
    products = serving | {"jwks_mirror.cli", "jwks_mirror.demo"}
    assert set(contract("The GitOps tooling")["forbidden_modules"]) == products
    assert set(contract("The shared core")["forbidden_modules"]) == products | {
        "jwks_mirror.gitops"
    }
    assert set(contract("The serving side")["forbidden_modules"]) == PACKAGES
