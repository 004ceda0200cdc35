"""Logging set up in one place for `perkflow serve` and the workers: plain text, or JSON lines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Fields an access line carries (web/metrics.py passes them as `extra=`).
ACCESS_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "client")
PLAIN_FORMAT = "%(asctime)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ACCESS_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(*, json_lines: bool, level: int = logging.WARNING) -> None:
    """Route perkflow's and uvicorn's loggers to stderr in the chosen shape (idempotent)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_perkflow", False)]:
        root.removeHandler(old)
    handler._perkflow = True  # type: ignore[attr-defined]  # ours to replace on a second call
    root.addHandler(handler)
    root.setLevel(level)
    # Access lines are info: shown in JSON mode, where they replace uvicorn's own access log.
    logging.getLogger("perkflow.access").setLevel(logging.INFO if json_lines else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
