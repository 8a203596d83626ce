"""Hostile YAML texts shared by the bounded-loader tests and the fuzz seeds."""

from __future__ import annotations


def deep_config(depth: int = 40_000) -> str:
    """A config whose ``defaults`` nests ``depth`` flow sequences: 80 KB at 40,000."""
    return "issuers: []\ndefaults: " + "[" * depth + "]" * depth + "\n"


def merge_bomb(levels: int) -> str:
    """Each level merges the previous one twice: ruamel's safe constructor doubles its work
    per level (about 1.3 KB at 20 levels)."""
    lines = ["x0: &x0 {k0: v}"]
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &x{i} {{<<: [*x{i - 1}, *x{i - 1}], k{i}: v}}")
    return "\n".join(lines) + "\nissuers: []\n"


def deep_manifest(depth: int = 300) -> str:
    """A RequestAuthentication whose spec holds a mapping nested ``depth`` deep."""
    nested = "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) + "  " * (depth + 1) + "v\n"
    return (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        "metadata: {name: a, namespace: ns}\nspec:\n" + nested
    )


def alias_list(levels: int = 10, width: int = 10) -> str:
    """A ``kind: List`` whose items alias each other ``levels`` deep, ``width`` each: a walker
    that does not track node identity visits the one rule ``width ** levels`` times."""
    lines = [
        "apiVersion: v1",
        "kind: List",
        "items:",
        "- &l0",
        "  apiVersion: security.istio.io/v1",
        "  kind: RequestAuthentication",
        "  metadata: {name: a, namespace: ns}",
        "  spec: {jwtRules: [{issuer: i, jwksUri: 'http://keys.ns.svc.cluster.local/jwks.json'}]}",
    ]
    for level in range(1, levels + 1):
        refs = ",".join([f"*l{level - 1}"] * width)
        lines.append(f"- &l{level} {{kind: List, items: [{refs}]}}")
    return "\n".join(lines) + "\n"
