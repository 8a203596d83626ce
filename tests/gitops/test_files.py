"""Reading and writing manifests (:mod:`jwks_mirror.gitops.files`), below the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from jwks_mirror.cli import main
from jwks_mirror.core.errors import ManifestError
from jwks_mirror.gitops.files import Output, read_inputs, write_all

MIRROR = "http://jwks-mirror.jwks-mirror.svc:8080"


def test_write_all_writes_nothing_when_one_target_cannot_be_staged(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("a: 1\n")
    missing_dir = tmp_path / "no-such-dir" / "b.yaml"
    outputs = [
        Output(first, str(first), "a: 1\n", "a: 2\n"),
        Output(missing_dir, str(missing_dir), "", "b: 2\n"),
    ]
    with pytest.raises(ManifestError, match=r"^cannot write: No such file or directory: "):
        write_all(outputs)
    assert first.read_text() == "a: 1\n"
    # the first file's temporary copy was removed, not left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]


def test_write_all_replaces_every_target(tmp_path: Path) -> None:
    targets = [tmp_path / "a.yaml", tmp_path / "sub" / "b.yaml"]
    targets[1].parent.mkdir()
    targets[0].write_text("old\n")
    write_all([Output(p, str(p), "", f"{p.name}\r\n") for p in targets])
    assert [p.read_bytes() for p in targets] == [b"a.yaml\r\n", b"b.yaml\r\n"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.yaml", "b.yaml", "sub"]


def test_read_inputs_walks_directories_in_order_and_keeps_line_ends(tmp_path: Path) -> None:
    (tmp_path / "z.yml").write_bytes(b"z: 1\r\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "a.yaml").write_bytes(b"a: 1\n")
    (tmp_path / "notes.txt").write_bytes(b"not yaml\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "hidden.yaml").write_bytes(b"h: 1\n")
    found = read_inputs([str(tmp_path)])
    assert [(path, text) for path, _, text in found] == [
        (tmp_path / "b" / "a.yaml", "a: 1\n"),
        (tmp_path / "z.yml", "z: 1\r\n"),
    ]


def test_in_place_without_paths_refuses_the_implied_stdin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["rewrite", "--mirror-url", MIRROR, "--in-place"])
    _, err = capsys.readouterr()
    assert (code, err) == (
        2, "jwks-mirror: error: --in-place needs file or directory paths, not stdin\n"
    )
