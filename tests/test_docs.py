"""The user-facing docs: README.md and docs/ stay inside the repository, and
docs/configuration.md agrees with the loader (every key documented, the example valid)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jwks_mirror.errors import ConfigError
from jwks_mirror.settings import Limits, Settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
TRACKER = re.compile(r"\b[Ii]ssues? #?\d+|(?<![\w&])#\d+\b|shared/|DESIGN\.md")


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_link_only_inside_the_repository(doc: Path) -> None:
    """Users have the repository, not the project's tracker or shared folder."""
    text = doc.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        path = target.split("#", 1)[0]
        assert "://" not in target, f"{doc.name}: link outside the repository: {target}"
        if path:
            resolved = (doc.parent / path).resolve()
            assert resolved.is_relative_to(ROOT), f"{doc.name}: link outside the repository: {target}"
            assert resolved.exists(), f"{doc.name}: broken link: {target}"
    assert not TRACKER.findall(text), f"{doc.name}: cites the tracker: {TRACKER.findall(text)}"

# Where each mapping sits, and a config putting an unknown key there: the loader's error lists
# the keys it allows, so the documentation is compared with the code, not with a copy.
PROBES = {
    "top level": "bogus: 1\n",
    "public": "public: {bogus: 1}\n",
    "public.tls": "public: {tls: {bogus: 1}}\n",
    "admin": "admin: {bogus: 1}\n",
    "peers": "peers: {bogus: 1}\n",
    "defaults": "defaults: {bogus: 1}\n",
    "issuers[]": "issuers: [{name: a, jwks_uri: 'http://a/', bogus: 1}]\n",
    "issuers[].tls": "issuers: [{name: a, jwks_uri: 'https://a/', tls: {bogus: 1}}]\n",
}


def allowed_keys(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, offline=True)
    match = re.search(r"unknown key \(expected one of: ([^)]*)\)", str(info.value))
    assert match, str(info.value)
    return match.group(1).split(", ")


@pytest.mark.parametrize("where", PROBES)
def test_every_key_the_loader_allows_is_documented(where: str) -> None:
    keys = allowed_keys(PROBES[where])
    assert keys
    undocumented = [k for k in keys if f"`{k}`" not in DOC and f"{k}:" not in DOC]
    assert not undocumented, f"{where}: not in docs/configuration.md: {undocumented}"


def test_the_example_is_valid_and_shows_the_defaults() -> None:
    example = DOC.split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = parse_settings(example, offline=True)
    assert [i.name for i in settings.issuers] == ["keys-myns", "auth-billing"]
    defaults = Settings()
    assert (settings.public, settings.admin, settings.state_dir, settings.peers) == (
        defaults.public, defaults.admin, defaults.state_dir, defaults.peers
    )
    assert settings.shutdown_delay_s == defaults.shutdown_delay_s
    assert all(i.limits == Limits() for i in settings.issuers)


@pytest.mark.parametrize(
    ("row", "value"),
    [
        ("refresh_interval", "`5m`"),
        ("timeout", "`5s`"),
        ("max_response_bytes", f"`{Limits().max_response_bytes}`"),
        ("max_keys", f"`{Limits().max_keys}`"),
        ("max_stale", "`72h`"),
        ("retain_removed_keys", "`1h`"),
    ],
)
def test_the_defaults_table_matches_the_code(row: str, value: str) -> None:
    line = next(line for line in DOC.splitlines() if line.startswith(f"| `{row}` |"))
    assert line.split("|")[2].strip() == value
    seconds = {"`5m`": 300.0, "`5s`": 5.0, "`72h`": 259200.0, "`1h`": 3600.0}
    limits = Limits()
    if value in seconds:
        assert getattr(limits, f"{row}_s") == seconds[value]
