"""Manual requests: `promote` and `abort`, asked for through an annotation on the rollout.

A request is the annotation `canaryguard.io/request` holding a small JSON object:
`{"action": "promote"|"abort", "id": "...", "page": false, "reason": "..."}`, optionally
with the `revision` and `uid` it was made for. Who asked is the annotation
`canaryguard.io/requested-by`, which the shipped ValidatingAdmissionPolicy
(manifests/admission) makes the API server check against the authenticated user; a `by`
inside the JSON (older clients) is used only when that annotation is absent. The engine
carries out a request
whose id differs from `status.lastRequest.id` at the next tick, before any judging, and
records it there: a request is carried out exactly once, also across operator restarts.

The annotation is not the spec: a malformed one never makes the rollout Invalid. It parses
to an `InvalidRequest`, which the engine reports once (a Warning event) and otherwise ignores.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

REQUEST_ANNOTATION = "canaryguard.io/request"
REQUESTED_BY_ANNOTATION = "canaryguard.io/requested-by"
RequestAction = Literal["promote", "abort"]
ACTIONS: tuple[RequestAction, ...] = get_args(RequestAction)
MAX_ANNOTATION = 4096
MAX_ID = 128
MAX_REASON = 512
MAX_NAME = 253
_ID = re.compile(r"^[A-Za-z0-9]([-._:A-Za-z0-9]*[A-Za-z0-9])?$")
_FIELDS = frozenset({"action", "id", "page", "reason", "by", "revision", "uid"})


@dataclass(frozen=True)
class ManualRequest:
    """A person's request to end a rollout now.

    `revision` and `uid`, when set, name the rollout revision and the object the request was
    made for: a request left behind never acts on a later revision or a re-created rollout.
    """

    action: RequestAction
    id: str
    page: bool = False
    reason: str = ""
    by: str = ""
    revision: str | None = None
    uid: str | None = None

    def who(self) -> str:
        """`by alice` or `by an unnamed user`, for messages."""
        return f"by {self.by}" if self.by else "by an unnamed user"

    def why(self) -> str:
        """The reason given, or a note that there was none."""
        return self.reason or "no reason given"

    def annotations(self) -> dict[str, str]:
        """The annotations that ask for this request: the request, and who asks."""
        found = {REQUEST_ANNOTATION: self.to_annotation()}
        if self.by:
            found[REQUESTED_BY_ANNOTATION] = self.by
        return found

    def to_annotation(self) -> str:
        """The annotation's value: compact JSON, unset optional fields left out."""
        data: dict[str, Any] = {"action": self.action, "id": self.id, "page": self.page}
        for key, value in (
            ("reason", self.reason),
            ("revision", self.revision),
            ("uid", self.uid),
        ):
            if value:
                data[key] = value
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class InvalidRequest:
    """A request annotation that does not parse.

    `id` is derived from the annotation's text, so the same text is reported once and a
    corrected one (even with the same id inside) is a new request.
    """

    id: str
    problem: str


def parse_request(annotations: Any) -> ManualRequest | InvalidRequest | None:
    """The request in a resource's `metadata.annotations`, if any."""
    if not isinstance(annotations, Mapping):
        return None
    raw = annotations.get(REQUEST_ANNOTATION)
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else repr(raw)
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]
    try:
        request = _parse(text)
    except ValueError as exc:
        return InvalidRequest(id=f"invalid-{digest}", problem=f"{REQUEST_ANNOTATION}: {exc}")
    by = annotations.get(REQUESTED_BY_ANNOTATION)
    if isinstance(by, str) and by.strip():
        request = replace(request, by=by.strip()[:MAX_NAME])
    return request


def _parse(text: str) -> ManualRequest:
    if len(text) > MAX_ANNOTATION:
        raise ValueError(f"must be at most {MAX_ANNOTATION} characters")
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError('not JSON; expected an object like {"action": "abort", ...}') from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    unknown = sorted(str(key) for key in data if key not in _FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    action = data.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action: must be promote or abort, got {action!r}")
    request_id = _string(data, "id", MAX_ID, required=True)
    if not _ID.match(request_id):
        raise ValueError(f"id: letters, digits and -._: only, got {request_id!r}")
    page = data.get("page", False)
    if not isinstance(page, bool):
        raise ValueError(f"page: must be true or false, got {page!r}")
    if page and action != "abort":
        raise ValueError("page: only an abort can page")
    return ManualRequest(
        action=action,
        id=request_id,
        page=page,
        reason=_string(data, "reason", MAX_REASON),
        by=_string(data, "by", MAX_NAME),
        revision=_string(data, "revision", 128) or None,
        uid=_string(data, "uid", 128) or None,
    )


def _string(data: Mapping[str, Any], key: str, max_length: int, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"{key}: required")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key}: must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise ValueError(f"{key}: must be at most {max_length} characters")
    # One line: the text goes into events, log lines and the status message.
    return " ".join(value.split())
