"""The user-facing docs: README.md and docs/ stay inside the repository, and
docs/configuration.md agrees with the loader (every key documented, the example valid)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import Limits, Settings
from jwks_mirror.core.errors import ConfigError

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
    "peers.tls": "peers: {dns: p, tls: {bogus: 1}}\n",
    "defaults": "defaults: {bogus: 1}\n",
    "metrics": "metrics: {bogus: 1}\n",
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
        ("refresh_interval", "`1m`"),
        ("min_refresh_interval", "`10s`"),
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
    seconds = {"`1m`": 60.0, "`10s`": 10.0, "`5s`": 5.0, "`72h`": 259200.0, "`1h`": 3600.0}
    limits = Limits()
    if value in seconds:
        assert getattr(limits, f"{row}_s") == seconds[value]


# -- the reference docs agree with the code ----------------------------------------------------

HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def anchors(doc: Path) -> set[str]:
    """The fragment ids a Markdown renderer gives the headings of ``doc`` (GitHub's rule:
    lower case, punctuation other than ``-`` and ``_`` dropped, spaces to hyphens)."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {
        re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        for heading in HEADING.findall(text)
    }


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_into_markdown_name_a_heading_that_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if "://" in target or "#" not in target:
            continue
        path, fragment = target.split("#", 1)
        linked = (doc.parent / path).resolve() if path else doc
        if linked.suffix == ".md":
            assert fragment in anchors(linked), f"{doc.name}: no heading for {target}"


def test_anchors_follow_the_renderers_rule() -> None:
    """The slug rule above, on headings whose ids the docs rely on."""
    assert {"alerts-and-runbook", "jwksmirrorkeysetstale"} <= anchors(ROOT / "deploy" / "README.md")
    assert "get-statusname" in anchors(ROOT / "docs" / "http-api.md")


def test_the_readme_links_every_reference_doc() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("architecture", "http-api", "metrics", "configuration"):
        assert f"](docs/{name}.md)" in readme, f"README.md does not link docs/{name}.md"


async def test_metrics_md_names_every_series_the_registry_exports() -> None:
    """Every family on a mirror's registry (the scrape-time collectors included) is in
    docs/metrics.md, and every series the doc names exists."""
    from jwks_mirror.serving.counters import PREFIX, new_registry
    from jwks_mirror.serving.mirror import Mirror

    registry = new_registry()
    # full: every family (compact leaves next_refresh_timestamp_seconds out altogether)
    Mirror(parse_settings("metrics: {per_issuer: full}\nissuers: []\n"), registry=registry)
    exported = set()
    for family in registry.collect():
        if family.name.startswith(PREFIX):
            exported.add(family.name + ("_total" if family.type == "counter" else ""))
    assert len(exported) > 15, exported
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(jwks_mirror_\w+?)(?:\{[^`]*)?`", doc))
    assert not exported - documented, f"not in docs/metrics.md: {sorted(exported - documented)}"
    assert not documented - exported, f"docs/metrics.md names no such series: {documented - exported}"


def test_metrics_md_explains_every_alert_with_its_runbook() -> None:
    from ruamel.yaml import YAML

    rule = YAML(typ="safe").load(
        ROOT / "deploy" / "components" / "prometheus-operator" / "prometheusrule.yaml"
    )
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]
    assert alerts
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    runbook = anchors(ROOT / "deploy" / "README.md")
    for alert in alerts:
        fragment = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert fragment in runbook, f"{alert['alert']}: runbook_url names no heading"
        row = next((line for line in doc.splitlines() if f"`{alert['alert']}`" in line), None)
        assert row is not None, f"{alert['alert']} is not in docs/metrics.md"
        assert f"](../deploy/README.md#{fragment})" in row, f"{alert['alert']}: no runbook link"
        assert alert["labels"]["severity"] in row


async def test_http_api_md_names_every_admin_route() -> None:
    from jwks_mirror.serving.counters import new_registry
    from jwks_mirror.serving.http.admin import create_admin_app
    from jwks_mirror.serving.mirror import Mirror

    app = create_admin_app(Mirror(parse_settings("issuers: []\n"), registry=new_registry()))
    routes = {
        f"`{route.method} {route.resource.canonical}`"
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert "`POST /refresh/{name}`" in routes
    doc = (ROOT / "docs" / "http-api.md").read_text(encoding="utf-8")
    assert not [r for r in routes if r not in doc], "routes missing from docs/http-api.md"
    for status in (200, 304, 400, 404, 405, 431, 503):
        assert f"| {status} |" in doc.split("## Admin port")[0], f"public port: no {status} row"


def test_architecture_md_states_every_layer_contract_and_module() -> None:
    """The contracts as pyproject.toml states them, and every module of the tree."""
    import tomllib

    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert contracts
    for contract in contracts:
        assert contract["name"] in doc, f"contract not in docs/architecture.md: {contract['name']}"
    package = ROOT / "jwks_mirror"
    for module in sorted(package.rglob("*.py")):
        if module.name in ("__init__.py", "__main__.py"):
            continue
        assert f"`{module.name}`" in doc, f"module not in docs/architecture.md: {module}"
    for sub in sorted(p.parent.name for p in package.glob("*/__init__.py")):
        assert f"jwks_mirror/{sub}/" in doc, f"package not in docs/architecture.md: {sub}"


# -- claims name their evidence ---------------------------------------------------------------

CLAIM_DOCS = [*USER_DOCS, ROOT / "deploy" / "README.md"]
# "tested", "fuzzed", "measured" and their close forms; "not tested" claims nothing.
CLAIM = re.compile(
    r"(?<!\bnot )(?<!\bnever )\b(tested|fuzzed|measured|verified|proven|benchmarked)\b", re.I
)
# A test path, a fuzz target, a benchmark module or command, or a command in backticks.
COMMAND = r"(?:\.venv/bin/|\.ci/|tools/)?(?:jwks-mirror|python3?|pytest|kubectl|docker|curl|wrk|run)\b"
EVIDENCE = re.compile(rf"\b(?:tests|fuzz|bench)/[\w./-]*|`{COMMAND}[^`]*`")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*`\"])")


def sentences(text: str) -> list[tuple[int, str]]:
    """(line, sentence) for the prose of a Markdown file: paragraphs, list items, table rows
    and headings, with fenced code left out. A sentence's line is its paragraph's first."""
    out: list[tuple[int, str]] = []
    block: list[str] = []
    start = 0
    fenced = False

    def flush() -> None:
        if block:
            out.extend((start, s) for s in SENTENCE_END.split(" ".join(block)))
            block.clear()

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if not stripped or re.match(r"(#|\||>|[*+-] |\d+\. )", stripped):
            flush()
        if stripped:
            start = number if not block else start
            block.append(stripped)
            if stripped.startswith(("#", "|")):
                flush()
    flush()
    return out


def test_sentence_splitting_keeps_code_out_and_lines_right() -> None:
    text = "# Title\n\nOne. Two is tested\nby `pytest`.\n\n```sh\nmeasured\n```\n* an item\n"
    assert sentences(text) == [
        (1, "# Title"), (3, "One."), (3, "Two is tested by `pytest`."), (9, "* an item")
    ]


@pytest.mark.parametrize("doc", CLAIM_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_tested_fuzzed_or_measured_claim_names_its_evidence(doc: Path) -> None:
    """A sentence saying something is tested, fuzzed, measured, verified, proven or
    benchmarked names what shows it: a test (``tests/...``), a fuzz target (``fuzz/...``), a
    benchmark (``bench/...``) or a command in backticks (`` `pytest ...` ``,
    `` `python bench/run.py` ``, `` `jwks-mirror ...` ``)."""
    bare = [
        f"{doc.relative_to(ROOT)}:{line}: {sentence}"
        for line, sentence in sentences(doc.read_text(encoding="utf-8"))
        # a heading ("## How it is tested") announces the evidence its section names
        if not sentence.startswith("#")
        and CLAIM.search(sentence)
        and not EVIDENCE.search(sentence)
    ]
    assert not bare, "claims without evidence (name the test, fuzz target or command):\n" + (
        "\n".join(bare)
    )
