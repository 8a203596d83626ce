"""The error tree drawn in errors.py's docstring is the one the code defines."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import jwks_mirror
from jwks_mirror.core import errors

PACKAGE = Path(jwks_mirror.__file__).parent


def drawn_tree() -> dict[str, str]:
    """``{class: parent}`` from the box drawing in the module docstring."""
    assert errors.__doc__ is not None
    parents: dict[str, str] = {}
    stack: list[str] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^ {4}((?:[│ ] {3}|[├└]── )*)([A-Z]\w+)\b", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4
        name = match.group(2)
        del stack[depth:]
        if stack:
            parents[name] = stack[-1]
        stack.append(name)
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    defined = {
        name: cls.__mro__[1].__name__
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.MirrorError) and cls is not errors.MirrorError
    }
    assert drawn_tree() == defined
    assert defined["ConfigError"] == "UsageError" and len(defined) == 11


def test_every_exception_class_of_the_package_is_in_errors_py() -> None:
    """No module defines its own public exception class: one tree, in one place. (Private
    ones such as keysets' ``_DuplicateMember`` are control flow that never leaves its module.)"""
    elsewhere = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(re.search(r"(Error|Exception|Rejected|Dropped|Issuer)$", b) for b in bases):
                    elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert elsewhere == []
