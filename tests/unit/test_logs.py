"""Log lines: one JSON object a line with the rollout's fields, or text with key=value."""

import json
import logging

from canaryguard.runtime.logs import JsonFormatter, TextFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("canaryguard.core.engine", logging.WARNING, "f.py", 1, msg, None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_carries_message_level_and_extra_fields() -> None:
    line = JsonFormatter().format(record("rolled back", rollout="ml/fraud", weight=0))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "rolled back"
    assert entry["level"] == "warning"
    assert entry["logger"] == "canaryguard.core.engine"
    assert entry["rollout"] == "ml/fraud"
    assert entry["weight"] == 0
    assert entry["time"].endswith("Z")


def test_text_line_appends_extra_fields() -> None:
    line = TextFormatter().format(record("step", rollout="ml/fraud"))
    assert line.endswith("WARNING canaryguard.core.engine step rollout=ml/fraud")


def test_kopf_object_reference_becomes_the_rollout_and_structures_are_dropped() -> None:
    rec = record(
        "handled",
        k8s_ref={"namespace": "ml", "name": "fraud", "kind": "CanaryRollout"},
        k8s_skip=True,
        settings=object(),
    )
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["rollout"] == "ml/fraud"
    assert "settings" not in entry and "k8s_skip" not in entry and "k8s_ref" not in entry
