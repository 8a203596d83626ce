"""Hostile YAML through the shipped entrypoint: every bound is refused with exit 2 and one
line naming it, and nothing crashes, stalls or reads without end (jwks_mirror.core.yamlsafe)."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import config_text
from ..hostile_yaml import alias_list, deep_config, deep_manifest, merge_bomb

RULE = "http://keys.ns.svc.cluster.local/jwks.json"
GOOD = config_text(f"  - name: a\n    jwks_uri: {RULE}\n")
# A hang on unmodified code ends here rather than in the CI job's timeout; the fixed code
# answers in well under a second, so this only bounds a failure.
HANG_S = 20.0


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    # the unfixed reader of /dev/zero must fail in the child, not exhaust the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


# The console script the image runs, next to this interpreter (else the module, the same main).
SCRIPT = Path(sys.executable).with_name("jwks-mirror")
ENTRYPOINT = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "jwks_mirror"]


def cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*ENTRYPOINT, *args],
            capture_output=True, text=True, input=stdin, timeout=HANG_S, cwd=cwd,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"jwks-mirror {' '.join(args)} did not finish in {HANG_S:g} s") from exc


def one_line_exit_2(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jwks-mirror: error: "), result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


# -- configs ------------------------------------------------------------------------------


@pytest.mark.slow
def test_check_config_refuses_a_config_nested_40000_deep(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(deep_config(40_000))
    one_line_exit_2(cli("check-config", "--config", str(path)), "max_depth", "100")


@pytest.mark.slow
def test_serve_refuses_a_config_nested_40000_deep_at_start(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(deep_config(40_000))
    one_line_exit_2(cli("serve", "--config", str(path)), "max_depth")


@pytest.mark.slow
def test_check_config_refuses_a_merge_key_bomb_at_once(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(merge_bomb(18))
    one_line_exit_2(cli("check-config", "--config", str(path)), "max_alias_nodes")


@pytest.mark.slow
def test_check_config_refuses_a_symlink_to_dev_zero(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.symlink_to("/dev/zero")
    one_line_exit_2(cli("check-config", "--config", str(path)), "not a regular file", "character device")


@pytest.mark.slow
def test_check_config_and_serve_refuse_a_fifo(tmp_path: Path):
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    one_line_exit_2(cli("check-config", "--config", str(path)), "not a regular file", "FIFO")
    one_line_exit_2(cli("serve", "--config", str(path)), "FIFO")


@pytest.mark.slow
def test_check_config_refuses_a_file_over_1_mib(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD + "#" * (1 << 20) + "\n")
    one_line_exit_2(cli("check-config", "--config", str(path)), "max_bytes", "1048576")


@pytest.mark.slow
def test_check_config_follows_a_configmap_style_symlink(tmp_path: Path):
    """Kubernetes mounts a ConfigMap key as a chain of symlinks: they must still work."""
    data = tmp_path / "..2026_01_01"
    data.mkdir()
    (data / "config.yaml").write_text(GOOD)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    result = cli("check-config", "--config", str(tmp_path / "config.yaml"))
    assert result.returncode == 0, result.stderr


# -- manifests ----------------------------------------------------------------------------


@pytest.mark.slow
def test_rewrite_refuses_a_manifest_nested_300_deep(tmp_path: Path):
    path = tmp_path / "ra.yaml"
    path.write_text(deep_manifest(300))
    one_line_exit_2(cli("rewrite", str(path), "--mirror-url", "http://m.ns.svc", "--check"), "max_depth")


@pytest.mark.slow
def test_rewrite_check_finishes_at_once_on_a_list_whose_items_alias_each_other(tmp_path: Path):
    """10 levels of 10 aliases stand for 10**10 items in under 1 KB: refused by the bound on
    what aliases stand for (the walker alone also visits each node once, see below)."""
    path = tmp_path / "list.yaml"
    path.write_text(alias_list(10, 10))
    assert len(path.read_bytes()) < 1000
    one_line_exit_2(
        cli("rewrite", str(path), "--mirror-url", "http://m.ns.svc", "--check"), "max_alias_nodes"
    )


def test_the_manifest_walker_visits_each_node_once():
    from jwks_mirror.core.yamlsafe import MANIFEST, Bounds
    from jwks_mirror.gitops.manifests import iter_request_authentications, iter_rules
    from jwks_mirror.gitops.roundtrip import parse_stream

    loose = Bounds(**{**MANIFEST.__dict__, "max_alias_nodes": 10**12})
    stream = parse_stream(alias_list(10, 10), source="list.yaml", bounds=loose)
    (document,) = stream.documents
    assert len(list(iter_request_authentications(document.data))) == 1
    rules = list(iter_rules(stream))
    assert [(r.index, r.namespace) for r in rules] == [(0, "ns")]


@pytest.mark.slow
def test_rewrite_refuses_special_files_named_on_the_command_line(tmp_path: Path):
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, kind in ((link, "character device"), (fifo, "FIFO")):
        one_line_exit_2(cli("rewrite", str(path), "--mirror-url", "http://m.ns.svc"), kind)


@pytest.mark.slow
def test_rewrite_refuses_a_fifo_inside_a_directory(tmp_path: Path):
    (tmp_path / "ok.yaml").write_text("kind: ConfigMap\n")
    os.mkfifo(tmp_path / "trap.yaml")
    one_line_exit_2(cli("rewrite", str(tmp_path), "--mirror-url", "http://m.ns.svc", "--check"), "FIFO")


@pytest.mark.slow
def test_rewrite_check_reads_json_manifests_in_a_directory(tmp_path: Path):
    (tmp_path / "ra.json").write_text(
        '{"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",\n'
        ' "metadata": {"name": "a", "namespace": "ns"},\n'
        f' "spec": {{"jwtRules": [{{"issuer": "i", "jwksUri": "{RULE}"}}]}}}}\n'
    )
    result = cli("rewrite", str(tmp_path), "--mirror-url", "http://m.ns.svc", "--check")
    assert result.returncode == 1, result.stderr
    assert "ra.json" in result.stdout + result.stderr


@pytest.mark.slow
def test_rewrite_reports_the_dot_paths_it_skipped(tmp_path: Path):
    (tmp_path / ".hidden.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / "ok.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / ".bad\x1b[2Jname.yml").write_text("kind: ConfigMap\n")
    result = cli("rewrite", str(tmp_path), "--mirror-url", "http://m.ns.svc", "--check")
    assert result.returncode == 0, result.stderr
    assert ".hidden.yaml" in result.stderr and ".git" in result.stderr
    assert "\x1b" not in result.stderr and "\\x1b" in result.stderr
    assert "x.yaml" not in result.stderr  # a skipped directory is reported once, not walked


@pytest.mark.slow
def test_rewrite_refuses_a_dangling_link_in_a_directory(tmp_path: Path):
    (tmp_path / "ok.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "missing.yaml")
    one_line_exit_2(
        cli("rewrite", str(tmp_path), "--mirror-url", "http://m.ns.svc", "--check"), "gone.yaml"
    )


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root lists directories whatever their mode")
def test_rewrite_refuses_an_unreadable_directory(tmp_path: Path):
    (tmp_path / "ok.yaml").write_text("kind: ConfigMap\n")
    secret = tmp_path / "sub"
    secret.mkdir()
    (secret / "ra.yaml").write_text("kind: ConfigMap\n")
    secret.chmod(0)
    try:
        one_line_exit_2(
            cli("rewrite", str(tmp_path), "--mirror-url", "http://m.ns.svc", "--check"), "sub"
        )
    finally:
        secret.chmod(stat.S_IRWXU)


# -- the scanner, bound by bound -------------------------------------------------------------


def _refusal(text: str, bounds=None) -> str:
    from jwks_mirror.core.errors import ConfigError
    from jwks_mirror.core.yamlsafe import CONFIG, measure

    with pytest.raises(ConfigError) as info:
        measure(text, bounds or CONFIG, source="c.yaml", error=ConfigError)
    return str(info.value)


def _bounds(**changes: int):
    from jwks_mirror.core.yamlsafe import CONFIG, Bounds

    return Bounds(**{**CONFIG.__dict__, **changes})


def test_each_bound_is_refused_by_name():
    assert _refusal("a: [[[1]]]\n", _bounds(max_depth=3)) == "c.yaml:1:6: nested deeper than 3 levels (max_depth)"
    assert _refusal("a: 1\n---\nb: 2\n").endswith("more than 1 YAML document (max_documents)")
    assert _refusal("a: &a 1\nb: [*a, *a, *a]\n", _bounds(max_aliases=2)).endswith("more than 2 aliases (max_aliases)")
    merges = "a: &a {x: 1}\nb: {<<: *a}\nc: {<<: *a}\n"
    assert _refusal(merges, _bounds(max_merge_keys=1)).endswith("more than 1 merge keys (max_merge_keys)")
    assert _refusal(merge_bomb(18)).endswith("(max_alias_nodes)")
    assert _refusal("x" * 20 + "\n", _bounds(max_bytes=10)) == "c.yaml: larger than 10 bytes (max_bytes)"
    assert "recursive" in _refusal("a: &a [1, *a]\n")


def test_depth_counts_what_an_alias_stands_for():
    deep = "a: &a [[[[1]]]]\nb: [[*a]]\n"  # b holds a 2 + 4 = 6 deep structure
    assert "(max_depth)" in _refusal(deep, _bounds(max_depth=6))
    from jwks_mirror.core.errors import ConfigError
    from jwks_mirror.core.yamlsafe import measure

    measure(deep, _bounds(max_depth=7), source="c.yaml", error=ConfigError)


def test_what_fits_loads_as_before():
    from jwks_mirror.core.config.fields import load_yaml

    text = "d: &d {x: 1}\ne: {<<: *d, y: 2}\nf: [*d, *d]\n"
    assert load_yaml(text, source="c.yaml") == {"d": {"x": 1}, "e": {"x": 1, "y": 2}, "f": [{"x": 1}] * 2}
    # a quoted "<<" is a plain key, not a merge
    assert load_yaml("'<<': 1\n", source="c.yaml") == {"<<": 1}


def test_rewrite_caps_documents_and_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from jwks_mirror.cli import main

    many = tmp_path / "many.yaml"
    many.write_text("---\nkind: ConfigMap\n" * 10_001)
    assert main(["rewrite", str(many), "--mirror-url", "http://m.ns.svc", "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than 10000 YAML documents (max_documents)" in err
    rules = ",".join([f"{{issuer: i, jwksUri: '{RULE}'}}"] * 4097)
    wide = tmp_path / "wide.yaml"
    wide.write_text(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        f"metadata: {{name: a, namespace: ns}}\nspec: {{jwtRules: [{rules}]}}\n"
    )
    assert main(["rewrite", str(wide), "--mirror-url", "http://m.ns.svc", "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than 4096 jwtRules" in err and "(max_rules" in err


def test_rewrite_bounds_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    import io

    from jwks_mirror.cli import main
    from jwks_mirror.core.yamlsafe import MANIFEST

    big = io.TextIOWrapper(io.BytesIO(b"#" * (MANIFEST.max_bytes + 1)))
    monkeypatch.setattr(sys, "stdin", big)
    assert main(["rewrite", "-", "--mirror-url", "http://m.ns.svc", "--check"]) == 2
    assert capsys.readouterr().err == (
        f"jwks-mirror: error: <stdin>: larger than {MANIFEST.max_bytes} bytes (max_bytes)\n"
    )


@pytest.mark.slow
def test_rewrite_refuses_a_link_that_leads_out_of_the_walked_directory(tmp_path: Path):
    outside = tmp_path / "secret.yaml"
    outside.write_text("token: s3cr3t\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ok.yaml").write_text("kind: ConfigMap\n")
    (repo / "inside.yaml").symlink_to("ok.yaml")  # a link inside the tree is read
    result = cli("rewrite", str(repo), "--mirror-url", "http://m.ns.svc")
    assert result.returncode == 0, result.stderr
    (repo / "leak.yaml").symlink_to(outside)
    result = cli("rewrite", str(repo), "--mirror-url", "http://m.ns.svc")
    one_line_exit_2(result, "leak.yaml", "outside")
    assert "s3cr3t" not in result.stdout


def test_rewrite_writes_json_manifests_back_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """kubectl reads a file that starts with "{" as JSON: a rewritten JSON manifest stays JSON,
    and one written as `kubectl get -o json` writes it restores byte for byte."""
    import json

    from jwks_mirror.cli import main

    resource = {
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {"jwtRules": [{"issuer": "i", "jwksUri": RULE}]},
    }
    original = json.dumps(resource, indent=4) + "\n"
    path = tmp_path / "ra.json"
    path.write_text(original)
    assert main(["rewrite", str(path), "--mirror-url", "http://m.ns.svc", "--in-place"]) == 0
    rewritten = json.loads(path.read_text())
    assert rewritten["spec"]["jwtRules"][0]["jwksUri"] == "http://m.ns.svc/keys-ns/jwks.json"
    assert path.read_text() == json.dumps(rewritten, indent=4) + "\n"
    assert main(["rewrite", str(path), "--restore", "--in-place"]) == 0
    assert path.read_text() == original
    assert "warning" not in capsys.readouterr().err
