"""``jwks-mirror analyze`` through the CLI: every code on its fixture and not on its near miss,
the real-manifest fixtures of tests/data/analyze/SOURCES.md, the output formats, exit codes and
hostile input. The deploy/ clean case (rendered with kubectl) is in test_analyze_deploy.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jwks_mirror.cli import main
from jwks_mirror.core.text import inert
from jwks_mirror.gitops.findings import CODES, Finding

DATA = Path(__file__).parents[1] / "data" / "analyze"
CASES = DATA / "cases"
REAL = DATA / "real"
MIRROR = [str(CASES / "mirror.yaml"), str(CASES / "rule-at-mirror.yaml")]


def analyze(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]]]:
    """Run ``analyze --format json``; the exit code and the findings."""
    code = main(["analyze", "--format", "json", "--fail-on", "never", *argv])
    out = capsys.readouterr().out
    document = json.loads(out)
    assert document["version"] == 1
    return code, document["findings"]


def codes(findings: list[dict[str, Any]]) -> set[str]:
    return {f["code"] for f in findings}


# (code, files besides the case file, extra arguments). Mirror-side codes need the mirror in the
# input and a rule that reads from it.
CODE_CASES: list[tuple[str, list[str], list[str]]] = [
    ("JM001", [], []),
    ("JM101", [], []),
    ("JM102", [], []),
    ("JM103", MIRROR, []),
    ("JM201", MIRROR, []),
    ("JM202", MIRROR, []),
    ("JM301", MIRROR, []),
    ("JM401", MIRROR, []),
    ("JM402", MIRROR, []),
    ("JM501", [], []),
]


def test_every_code_has_a_case_and_a_near_miss() -> None:
    assert {c for c, _, _ in CODE_CASES} == set(CODES)
    for code in CODES:
        assert (CASES / f"{code}-trigger.yaml").is_file(), code
        assert (CASES / f"{code}-near.yaml").is_file(), code


@pytest.mark.parametrize(("code", "others", "extra"), CODE_CASES, ids=[c for c, _, _ in CODE_CASES])
def test_code_fires_on_its_fixture(
    code: str, others: list[str], extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, findings = analyze(*others, str(CASES / f"{code}-trigger.yaml"), *extra, capsys=capsys)
    mine = [f for f in findings if f["code"] == code]
    assert mine, findings
    for finding in mine:
        assert finding["file"] == str(CASES / f"{code}-trigger.yaml")
        assert isinstance(finding["line"], int) and finding["line"] > 0
        assert finding["severity"] in {"error", "warning"}
        assert finding["message"] and "\n" not in finding["message"]
        assert finding["fix"] and "\n" not in finding["fix"]


@pytest.mark.parametrize(("code", "others", "extra"), CODE_CASES, ids=[c for c, _, _ in CODE_CASES])
def test_code_stays_quiet_on_its_near_miss(
    code: str, others: list[str], extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, findings = analyze(*others, str(CASES / f"{code}-near.yaml"), *extra, capsys=capsys)
    assert code not in codes(findings), findings


def test_jm101_is_a_warning_without_strict_and_an_error_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    text = (CASES / "JM101-trigger.yaml").read_text()
    rule_only = text.split("---\n", 1)[1]
    path = CASES.parent / "rule-only.tmp.yaml"
    try:
        path.write_text(rule_only)
        _, findings = analyze(str(path), capsys=capsys)
        assert [(f["code"], f["severity"]) for f in findings] == [("JM101", "warning")]
        _, findings = analyze(str(path), "--assume-strict", capsys=capsys)
        assert [(f["code"], f["severity"]) for f in findings] == [("JM101", "error")]
        assert "--assume-strict" in findings[0]["message"]
    finally:
        path.unlink()
    _, findings = analyze(str(CASES / "JM101-trigger.yaml"), capsys=capsys)
    (finding,) = findings
    assert finding["severity"] == "error" and "PeerAuthentication istio-system/default" in finding["message"]
    assert finding["object"] == {"kind": "RequestAuthentication", "namespace": "app", "name": "api-jwt"}
    assert finding["line"] == 21  # the rule's first line


def test_jm103_reports_each_way_a_mirror_uri_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    _, findings = analyze(*MIRROR, str(CASES / "JM103-trigger.yaml"), capsys=capsys)
    messages = [f["message"] for f in findings if f["code"] == "JM103"]
    assert len(messages) == 3
    assert "'keys-other', which its config does not serve (serves: keys-auth)" in messages[0]
    assert "uses https:// but the mirror serves http://" in messages[1]
    assert "not at a key set" in messages[2]


def test_jm103_uses_mirror_config_option_over_the_configmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("issuers:\n  - {name: keys-other, jwks_uri: 'http://other.auth.svc/jwks.json'}\n")
    _, findings = analyze(*MIRROR, str(CASES / "JM103-trigger.yaml"), "--mirror-config", str(config), capsys=capsys)
    messages = [f["message"] for f in findings if f["code"] == "JM103"]
    assert not any("'keys-other'" in m for m in messages)
    assert any("'keys-auth', which its config does not serve (serves: keys-other)" in m for m in messages)


def test_jm201_fix_is_the_list_that_keeps_the_cluster_ip(capsys: pytest.CaptureFixture[str]) -> None:
    _, findings = analyze(*MIRROR, str(CASES / "JM201-trigger.yaml"), capsys=capsys)
    (finding,) = [f for f in findings if f["code"] == "JM201"]
    assert "10.96.100.100" in finding["message"] and "10.0.0.0/8" in finding["message"]
    near = (CASES / "JM201-near.yaml").read_text()
    value = near.split("BLOCKED_CIDRS_IN_JWKS_URIS\n              value: \"")[1].split('"')[0]
    assert f"set it to {value} " in finding["fix"]


def test_jm301_states_the_worst_case_window(capsys: pytest.CaptureFixture[str]) -> None:
    # istiod's 20m (Helm values) plus the mirror's 1m (its ConfigMap's defaults)
    _, findings = analyze(*MIRROR, str(CASES / "JM301-trigger.yaml"), capsys=capsys)
    (finding,) = [f for f in findings if f["code"] == "JM301"]
    assert "rejected for up to 21m (istiod 20m + mirror 1m)" in finding["message"]
    assert finding["object"]["kind"] == "HelmValues" and finding["line"] == 5
    # Unset anywhere: istiod's default; the mirror's interval from --mirror-config.
    config = CASES.parent / "config.tmp.yaml"
    try:
        config.write_text(
            "defaults: {refresh_interval: 2m}\nissuers:\n"
            "  - {name: keys-auth, jwks_uri: 'http://keys.auth.svc/jwks.json'}\n"
        )
        _, findings = analyze(*MIRROR, "--mirror-config", str(config), capsys=capsys)
    finally:
        config.unlink()
    (finding,) = [f for f in findings if f["code"] == "JM301"]
    assert "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL unset" in finding["message"]
    assert "up to 22m (istiod 20m + mirror 2m)" in finding["message"]


def test_jm402_default_deny_alone_refuses_istiod(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deny_all = (REAL / "kubeflow" / "deny_all_authorizationpolicy.yaml").resolve()
    _, findings = analyze(*MIRROR, str(deny_all), capsys=capsys)
    (finding,) = [f for f in findings if f["code"] == "JM402"]
    assert finding["object"] == {"kind": "AuthorizationPolicy", "namespace": "istio-system", "name": "global-deny-all"}
    assert "none admits" in finding["message"]


def test_istiod_settings_are_read_wherever_they_live(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = {
        "deployment.yaml": (CASES / "JM201-trigger.yaml").read_text().split("---\n", 1)[1],
        "operator-values.yaml": (CASES / "JM202-trigger.yaml").read_text(),
        "operator-k8s.yaml": (CASES / "JM202-near.yaml").read_text().replace("169.254.0.0/16", "192.168.0.0/16"),
        "helm-values.yaml": "pilot:\n  env:\n    BLOCKED_CIDRS_IN_JWKS_URIS: 172.16.0.0/12\n",
    }
    for name, text in sources.items():
        path = tmp_path / name
        path.write_text(text)
        _, findings = analyze(*MIRROR, str(path), capsys=capsys)
        assert "JM202" in codes(findings), name


@pytest.mark.parametrize(
    ("fixture", "args", "expected"),
    [
        (
            "kubeflow", [],
            [
                ("JM102", "error", "RequestAuthentication", "istio-system", "dex-jwt", "m2m-dex-and-kind.rendered.yaml", 448),
                ("JM101", "warning", "RequestAuthentication", "istio-system", "m2m-token-issuer", "m2m-dex-and-kind.rendered.yaml", 469),
                ("JM101", "warning", "RequestAuthentication", "istio-system", "m2m-token-issuer", "m2m-dex-and-kind.rendered.yaml", 480),
            ],
        ),
        (
            "oran-ranpm", [],
            [("JM101", "warning", "RequestAuthentication", "nonrtric", "ics-ra", "app-ra-ap.yaml", 27)],
        ),
        (
            "oran-ranpm", ["--assume-strict"],
            [("JM101", "error", "RequestAuthentication", "nonrtric", "ics-ra", "app-ra-ap.yaml", 27)],
        ),
        ("istio", [], []),
    ],
    ids=["kubeflow", "oran-ranpm", "oran-ranpm-strict", "istio"],
)
def test_real_fixtures_give_their_findings(
    fixture: str, args: list[str], expected: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, findings = analyze(str(REAL / fixture), *args, capsys=capsys)
    got = [
        (f["code"], f["severity"], f["object"]["kind"], f["object"]["namespace"], f["object"]["name"],
         Path(f["file"]).name, f["line"])
        for f in findings
    ]
    assert got == expected
    sources = (DATA / "SOURCES.md").read_text()
    assert f"real/{fixture}/" in sources


def test_istio_fixture_with_the_mirror_warns_of_its_private_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    _, findings = analyze(*MIRROR, str(REAL / "istio" / "blocked-cidrs-configured.yaml"), capsys=capsys)
    assert [(f["code"], f["object"]["name"], f["line"]) for f in findings if f["code"].startswith("JM2")] == [
        ("JM202", "istiod", 31)
    ]
    # istio's other fixture sets no refresh interval: the 20-minute default
    _, findings = analyze(*MIRROR, str(REAL / "istio" / "blocked-cidrs-missing.yaml"), capsys=capsys)
    assert [(f["code"], f["object"]["kind"], f["object"]["name"], f["line"]) for f in findings] == [
        ("JM301", "Deployment", "istiod", 21)
    ]


def test_exit_codes_follow_fail_on(capsys: pytest.CaptureFixture[str]) -> None:
    warning_only = [str(CASES / "JM501-trigger.yaml")]
    error = [str(CASES / "JM102-trigger.yaml")]
    assert main(["analyze", *warning_only]) == 0
    assert main(["analyze", *warning_only, "--fail-on", "warning"]) == 1
    assert main(["analyze", *error]) == 1
    assert main(["analyze", *error, "--fail-on", "never"]) == 0
    assert main(["analyze", str(CASES / "JM501-near.yaml"), "--fail-on", "warning"]) == 0
    out = capsys.readouterr().out
    assert "0 errors, 1 warning in 1 file" in out and "1 error, 0 warnings in 1 file" in out


def test_text_output_names_code_object_file_line_and_fix(capsys: pytest.CaptureFixture[str]) -> None:
    main(["analyze", str(CASES / "JM102-trigger.yaml")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{CASES / 'JM102-trigger.yaml'}:9: error JM102 RequestAuthentication istio-system/dex-jwt: ")
    assert lines[1].startswith("    fix: ")
    assert lines[-1] == "1 error, 0 warnings in 1 file"


LISTED = """\
apiVersion: v1
kind: List
items:
- apiVersion: example.com/v1
  kind: Gadget
  metadata: {name: g}
  spec: [1, 2]
- apiVersion: security.istio.io/v1beta1
  kind: RequestAuthentication
  metadata:
    name: dex-jwt
    namespace: istio-system
  spec:
    jwtRules:
    - issuer: http://dex.auth.svc.cluster.local:5556/dex
---
kind: Whatever
---
- just
- a list
---
42
"""


def test_unknown_kinds_lists_and_stdin() -> None:
    """`kubectl get -o yaml` output on stdin, among documents of no known kind or shape."""
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "analyze", "-", "--format", "json"],
        input=LISTED, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1, result.stderr
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["code"] == "JM102" and finding["file"] == "<stdin>" and finding["line"] == 15
    assert finding["object"] == {"kind": "RequestAuthentication", "namespace": "istio-system", "name": "dex-jwt"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "/nonexistent/manifests.yaml"], "no such file"),
        (["analyze", "--mirror-config", "/nonexistent/config.yaml", str(CASES / "mirror.yaml")], "no such file"),
        (["blocked-cidrs", "--allow", "not-an-ip"], "--allow: not an IP address"),
        (["blocked-cidrs", "--allow", "10.0.0.1", "--block", "10.0.0.0"], "--block: not a CIDR"),
        (["blocked-cidrs"], "--allow"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", *argv], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_is_exit_2_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "analyze", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and f"{bad}:" in result.stderr and result.stderr.count("\n") == 1


def test_strings_from_input_are_printed_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        'metadata: {name: "x\\e[2J\\r\\nforged: line", namespace: "app\\u202e"}\n'
        'spec:\n  jwtRules:\n  - issuer: "http://dex.auth.svc.cluster.local/\\e[31mred"\n'
    )
    assert main(["analyze", str(hostile)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "x\\x1b[2J\\r\\nforged: line" in out and "app\\u202e" in out
    assert "local/\\x1b[31mred" in out
    assert len(out.splitlines()) == 3


def test_findings_print_through_inert() -> None:
    assert inert("plain text, ünïcode") == "plain text, ünïcode"
    assert inert("a\tb\x00c\x7f\x85\\.") == "a\\tb\\x00c\\x7f\\x85\\\\."
    assert inert("\u200b\u202e\U000e0001") == "\\u200b\\u202e\\U000e0001"


def test_docs_document_every_code_and_the_json_fields() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "analyze.md").read_text(encoding="utf-8")
    for code, (severity, _) in CODES.items():
        section = doc.split(f"### {code}: ", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        for part in ("- **Why**", "- **Detected**", "- **Fix**"):
            assert part in section, (code, part)
        assert f"| {code} | {severity}" in doc, code
    schema = doc.split("```json\n", 1)[1].split("```", 1)[0]
    example = json.loads(schema)
    finding = example["findings"][0]
    real = Finding("JM102", "RequestAuthentication", "ns", "n", "f", 1, "m", "x").as_json()
    assert set(finding) == set(real) and set(finding["object"]) == set(real["object"])
    assert set(example["summary"]) == {"error", "warning", "files"}


HOSTILE_SHAPES = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec: {values: {pilot: {env: {PILOT_JWT_PUB_KEY_REFRESH_INTERVAL: 999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999h}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: odd, namespace: istio-system}
spec: {action: ALLOW, rules: 7}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: odder, namespace: jwks-mirror}
spec: {action: [DENY], rules: [{from: 3, to: [{operation: [1]}]}, 5, {when: 1}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: jwks-mirror}
spec: {selector: {matchLabels: [1]}, mtls: STRICT, portLevelMtls: [8080]}
---
apiVersion: v1
kind: Service
metadata: {name: jwks-mirror, namespace: [x]}
spec: {clusterIP: [10.0.0.1], clusterIPs: 5, ports: [{port: "8080"}, 3, {port: 8080, targetPort: [1]}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: {a: b}, namespace: 3}
spec: {selector: 5, jwtRules: [3, {jwksUri: 5}, {issuer: [1]}, {jwksUri: "http://[::1"}, {jwksUri: "http://jwks-mirror:99999/x"}]}
---
pilot: {env: [1, 2]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod}
spec: {template: {spec: {containers: [{name: discovery, env: [{name: BLOCKED_CIDRS_IN_JWKS_URIS, value: "::/0,0.0.0.0/0,x/8,,10.0.0.0/33"}]}, 4]}}}
"""


def test_hostile_shapes_give_findings_not_tracebacks(tmp_path: Path) -> None:
    """Every field of the wrong type, out-of-range numbers and broken URLs: analyze reports
    what it can and never raises (fuzz/fuzz_analyze.py explores further)."""
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE_SHAPES + "---\n" + (CASES / "mirror.yaml").read_text() + "---\n"
                    + (CASES / "rule-at-mirror.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "analyze", str(path), "--format", "json"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1, result.stderr
    found = codes(json.loads(result.stdout)["findings"])
    assert {"JM202", "JM301", "JM402"} <= found


def test_jm402_reads_hosts_paths_and_methods_of_allow_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ALLOW rule admits istiod only if its hosts (with or without the port, any case),
    paths and methods take istiod's GET of the rule's key set."""
    allow = (CASES / "JM402-near.yaml").read_text().split("---\n")[:2]
    def policy(operation: str) -> str:
        return "---\n".join(allow).replace('ports: ["8080"]', operation)

    admitted = [
        'hosts: ["JWKS-MIRROR.jwks-mirror.svc.cluster.local"]',
        'hosts: ["jwks-mirror.jwks-mirror.svc.cluster.local:8080"]',
        'paths: ["/keys-auth/*"]',
        'methods: ["GET", "HEAD"]',
        'notPaths: ["/peer/*"]',
    ]
    refused = ['hosts: ["api.example.com"]', 'paths: ["/other/*"]', 'methods: ["POST"]', 'ports: ["9090"]']
    for operation in admitted + refused:
        path = tmp_path / "policy.yaml"
        path.write_text(policy(operation))
        _, findings = analyze(*MIRROR, str(path), capsys=capsys)
        assert ("JM402" in codes(findings)) == (operation in refused), operation


def test_jm101_fix_for_a_service_dot_namespace_host_is_a_rewrite_that_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keycloak.nonrtric` is in-cluster only because its Service is in the input; rewrite's
    own policy does not take that spelling, so the fix carries the --match that makes it."""
    _, findings = analyze(str(REAL / "oran-ranpm"), capsys=capsys)
    (finding,) = findings
    command = finding["fix"].split("`")[1]
    match = command.split("--match '")[1].split("'")[0]
    shutil.copy(REAL / "oran-ranpm" / "app-ra-ap.yaml", tmp_path / "ra.yaml")
    url = "http://jwks-mirror.jwks-mirror.svc.cluster.local:8080"
    assert main(["rewrite", str(tmp_path), "--mirror-url", url, "--in-place", "--match", match]) == 0
    capsys.readouterr()
    _, findings = analyze(str(tmp_path), str(REAL / "oran-ranpm" / "keycloak-app-service.yaml"), capsys=capsys)
    assert [f["code"] for f in findings] == ["JM301"]  # now read from the mirror
