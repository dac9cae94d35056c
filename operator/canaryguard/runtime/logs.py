"""Structured logging: one event a line, as JSON or text, with the rollout on every line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _extras(record: logging.LogRecord) -> dict[str, str | int | float | bool]:
    """The scalar fields a record carries from `extra=`; kopf's object reference becomes
    `rollout=namespace/name` and its other structured extras (settings) are left out."""
    fields: dict[str, str | int | float | bool] = {}
    for key, value in vars(record).items():
        if key in _RECORD_ATTRS or key.startswith("_"):
            continue
        if key == "k8s_ref" and isinstance(value, dict):
            fields["rollout"] = f"{value.get('namespace')}/{value.get('name')}"
        elif isinstance(value, (str, int, float, bool)) and key != "k8s_skip":
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time level logger message key=value ...`, the extra fields appended in order."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in _extras(record).items()]
        return " ".join([line, *extras]) if extras else line


def configure(fmt: str = "text", verbose: bool = False) -> None:
    """Send every log line to stderr in the chosen format (`json` or `text`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # The HTTP libraries log request lines (with URLs) at debug; keep them quiet.
    # kopf logs every handled watch event at info; the controller logs the decisions.
    for noisy in ("urllib3", "aiohttp.access", "kubernetes.client.rest", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
