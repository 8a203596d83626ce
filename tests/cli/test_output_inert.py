"""Every string that came from input is printed inert: one line, no terminal control.

A pull request controls names, namespaces, file names and URIs; an admin port controls its
answers. A newline in any of them must not start a line of its own in a CI log (GitHub
Actions reads ``::error file=...::`` there as an annotation), ESC/OSC must not reach the
terminal, and a lone surrogate (a ``\\ud800`` escape in YAML) must not end in a traceback.
The commands run as the shipped entrypoint, so stdout's real encoding is in play.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from jwks_mirror.cli import main
from jwks_mirror.core.text import inert

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"
FORGED = "::error file=ok.yaml::all good"

MANIFEST = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: {name}
  namespace: {namespace}
spec:
  jwtRules:
  - issuer: iss
    jwksUri: {uri}
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jwks_mirror", *args],
        capture_output=True, text=True, encoding="utf-8", errors="strict", cwd=cwd, timeout=120,
    )


def assert_inert(text: str) -> None:
    for line in text.splitlines():
        assert not line.startswith("::"), text
    assert not any(c in text for c in "\x1b\x07\x9b\u2028\x85\u202e\u2066\u200b"), text
    assert "Traceback" not in text, text


def test_inert_escapes_controls_and_keeps_the_rest() -> None:
    assert inert("a\nb\r\t\x1b[31m\x07\x7f\x9b") == "a\\nb\\r\\t\\x1b[31m\\x07\\x7f\\x9b"
    assert inert("\u2028\u2029\x85\ud800") == "\\u2028\\u2029\\x85\\ud800"
    assert inert("back\\slash") == "back\\\\slash"
    assert inert("münchen.svc ✓ 日本") == "münchen.svc ✓ 日本"
    assert inert(None) == "None"


def test_inert_escapes_what_reorders_or_hides_text() -> None:
    """Bidirectional overrides and isolates (the "Trojan Source" trick: a name that reads
    differently from what it holds), zero-width characters, a byte-order mark and Unicode
    tags are format characters: printed, they reorder or hide text in a CI log."""
    assert inert("a\u202eb\u2066c\u2069") == "a\\u202eb\\u2066c\\u2069"
    assert inert("x\u200by\u200dz\ufeff") == "x\\u200by\\u200dz\\ufeff"
    assert inert("tag\U000e0041") == "tag\\U000e0041"
    # private use (found by fuzz/fuzz_explain_token.py in a token's iss) and unassigned
    assert inert("https:,\ue9c3r") == "https:,\\ue9c3r"
    assert inert("x\U0010fffd\u0378") == "x\\U0010fffd\\u0378"
    assert inert("emoji 👍🏽 and 日本") == "emoji 👍🏽 and 日本"


@pytest.mark.parametrize(
    ("name", "namespace", "uri"),
    [
        ('"web\\n' + FORGED + '"', "myns", "http://keys.myns.svc/jwks.json"),
        ("web", '"myns\\r\\n' + FORGED + '"', "http://keys.myns.svc/jwks.json"),
        ("web", "myns", '"http://keys.myns.svc/\\e]0;pwned\\a\\x9b2J"'),
        ('"web\\ud800"', "myns", "http://keys.myns.svc/jwks.json"),
        ('"web\\u2028' + FORGED + '\\x85"', "myns", "http://keys.myns.svc/jwks.json"),
        ('"web\\u202ebew\\u200b"', "myns", "http://keys.myns.svc/jwks.json"),
    ],
    ids=["name-newline", "namespace-crlf", "uri-esc-osc", "name-lone-surrogate", "u2028-nel",
         "name-bidi-override"],
)
def test_rewrite_check_prints_manifest_strings_inert(
    tmp_path: Path, name: str, namespace: str, uri: str
) -> None:
    (tmp_path / "ra.yaml").write_text(MANIFEST.format(name=name, namespace=namespace, uri=uri))
    result = cli("rewrite", "ra.yaml", "--check", "--mirror-url", MIRROR, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert_inert(result.stdout + result.stderr)
    assert len(result.stdout.splitlines()) == 1, result.stdout
    assert "is not mirrored" in result.stdout


def test_file_names_are_printed_inert(tmp_path: Path) -> None:
    evil = tmp_path / f"ra\n{FORGED}\x1b]0;x\x07.yaml"
    evil.write_text(MANIFEST.format(name="web", namespace="myns", uri="http://keys.myns.svc/j"))
    result = cli("rewrite", str(tmp_path), "--check", "--mirror-url", MIRROR, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert_inert(result.stdout + result.stderr)
    assert len(result.stdout.splitlines()) == 1

    evil.write_text("a: [\n")  # invalid YAML: the error names the file, inert too
    result = cli("rewrite", str(evil), "--check", "--mirror-url", MIRROR, cwd=tmp_path)
    assert result.returncode == 2
    assert_inert(result.stderr)
    assert result.stderr.count("\n") == 1

    evil.write_text(MANIFEST.format(name="web", namespace="myns", uri="http://keys.myns.svc/j"))
    result = cli("rewrite", str(evil), "--mirror-url", MIRROR, "--diff", cwd=tmp_path)
    assert result.returncode == 0
    assert_inert("\n".join(line for line in result.stdout.splitlines() if line[:3] in ("---", "+++")))


def test_pin_check_prints_inert(tmp_path: Path) -> None:
    name = '"web\\n' + FORGED + '\\e[2J"'
    uri = f"{MIRROR}/keys-myns/jwks.json"
    (tmp_path / "ra.yaml").write_text(MANIFEST.format(name=name, namespace="myns", uri=uri))
    (tmp_path / "status.json").write_text('{"issuers": [{"name": "keys-myns", "version": null}]}')
    result = cli(
        "pin", "ra.yaml", "--from-status", "status.json", "--mirror-url", MIRROR, "--check",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert_inert(result.stdout + result.stderr)
    assert len(result.stdout.splitlines()) == 1


async def test_admin_answers_are_printed_inert(fake_issuer, capsys) -> None:
    evil = f"idp\n{FORGED}\x1b]0;title\x07"
    status = {
        "issuers": [
            {"name": evil, "kids": [evil], "retained_kids": [], "servable": True,
             "last_error": evil, "consecutive_failures": 0}
        ]
    }
    results = {"results": [{"name": evil, "outcome": "failed", "kids": [evil], "error": evil}]}

    async def behave(request):
        from aiohttp import web

        if request.path.startswith("/refresh"):
            return web.json_response(results, status=502)
        return web.json_response(status)

    admin = await fake_issuer(behaviour=behave)
    for command, expected in ((["status"], 0), (["refresh"], 1), (["rotate", "idp"], 1)):
        code = await asyncio.to_thread(main, [*command, "--admin", admin.base])
        captured = capsys.readouterr()
        assert code == expected, captured
        assert_inert(captured.out + captured.err)
        assert evil.splitlines()[0] in captured.out


def test_check_config_prints_its_path_inert(tmp_path: Path) -> None:
    config = tmp_path / f"c\n{FORGED}.yaml"
    config.write_text("issuers: []\n")
    result = cli("check-config", "--config", str(config), "--offline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)
    config.write_text("issuers: 5\n")
    result = cli("check-config", "--config", str(config), "--offline", cwd=tmp_path)
    assert result.returncode == 2
    assert_inert(result.stderr)
