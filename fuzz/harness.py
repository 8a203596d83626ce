"""What every atheris target here shares: run with the arguments given, and when no corpus
directory is named, start from a fresh one the target seeds (so a smoke run needs no setup)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris


def run(check: Callable[[bytes], None], seed: Callable[[Path], None], *, name: str) -> None:
    args = sys.argv
    if not [a for a in args[1:] if not a.startswith("-")]:
        corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
        seed(corpus)
        args = [*args, str(corpus)]
    atheris.Setup(args, check)
    atheris.Fuzz()


def text(data: bytes) -> str | None:
    """The input as UTF-8 text, or None when it is not (a target that reads YAML skips it)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
