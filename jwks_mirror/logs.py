"""JSON log lines on stdout: one object per line, easy for any log pipeline to parse."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "jwks_mirror"
log = logging.getLogger(LOGGER_NAME)


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "event": ..., **fields}``; ``fields`` come via ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            document["exception"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps(document, default=str, separators=(",", ":"))


def configure(level: int = logging.INFO) -> None:
    """Send jwks-mirror's records, as JSON lines, to stdout (idempotent)."""
    if any(getattr(h, "_jwks_mirror", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler._jwks_mirror = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    log.log(level, name, extra={"fields": fields})
