"""The tree states the layers: every module lives in a layer's package, and the one `layers`
contract in pyproject.toml (which `lint-imports` enforces) names exactly those packages, so a
new module joins its layer by where it is written, with no list to keep."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jwks_mirror"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]["contracts"]


def layer_packages() -> set[str]:
    (layers,) = [c for c in CONTRACTS if c["type"] == "layers"]
    assert layers["containers"] == ["jwks_mirror"]
    return {name.strip() for layer in layers["layers"] for name in layer.split("|")}


def test_the_layers_contract_names_every_package_of_the_tree() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert layer_packages() == packages


def test_no_module_lives_outside_a_layer() -> None:
    """Only the entry points sit at the top: a module beside them would be in no layer."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py"}


def test_the_pure_modules_exist() -> None:
    """The purity contract names modules by path: each must exist, or it would check nothing."""
    (pure,) = [c for c in CONTRACTS if c["type"] == "forbidden"]
    for module in pure["source_modules"]:
        path = ROOT / module.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), module
