"""Schemathesis hooks for tests/live/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS):
rules of the API that a JSON Schema cannot state, kept by the requests the fuzzer
means to be valid, so that its checks judge what the document does state.

- An Idempotency-Key names one request: the same key with another request is refused
  (`422 idempotency-key-reused`, as documented). The fuzzer draws the same few keys
  ("0", "!") for many requests, so each well-formed key gets a unique tail; malformed
  keys (negative cases) go out as drawn.
- A key's `expires_at` must be in the future, and a set's `valid_from` before its
  `valid_until`: comparisons with the clock or another field.
- A code must show something once matching ignores separators and invisible characters
  (an exact set's code must hide none): Unicode categories, which a JSON Schema pattern
  cannot name. A drawn code that breaks it is replaced by a plain one.
- An import's form fields come before its file part (the file is streamed, so its options
  must be known first): an order of parts, which a schema of an object cannot state.
- In the stateful phase a body's `pool` is "default", the one pool of a set just
  created: the check that a created resource is found takes a 404 for a pool the body
  names as one for the set the link gave.
- A generation makes at most 1000 codes: not a rule, a bound on the run's time (a
  million codes take longer than the fuzzer waits for an answer).
- A CSV list of targets starts with a header naming a `recipient_id` column: the grammar
  of CSV, not a string's shape. A drawn CSV body gets that header line."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis import Case

from app.idempotency import KEY_PATTERN
from app.models.code import normalise, refusal

_WELL_FORMED = re.compile(KEY_PATTERN)
_HEADER = "Idempotency-Key"
_CODES = ("code", "shared_code", "fallback_code")


def _instant(value: object) -> datetime | None:
    """``value`` as an instant with its offset (what the API reads), else None."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _shows_something(value: str) -> bool:
    code = value.strip()
    return all(
        refusal(code, normalise(code, exact=exact), exact=exact) is None for exact in (False, True)
    )


def _positive(case: Case) -> bool:
    return case.meta is None or case.meta.generation.mode.is_positive


@schemathesis.hook
def before_call(context: Any, case: Case, kwargs: dict[str, Any]) -> None:
    key = (case.headers or {}).get(_HEADER)
    if isinstance(key, str) and _WELL_FORMED.match(key):
        case.headers[_HEADER] = f"{key[:222]}-{uuid.uuid4().hex}"
    body = case.body
    if isinstance(body, dict) and "file" in body:
        body["file"] = body.pop("file")
    if not _positive(case):
        return
    if case.media_type == "text/csv" and isinstance(body, str):
        case.body = f"recipient_id\n{body}"
    if not isinstance(body, dict):
        return
    if case.path.endswith("/codes/generate") and isinstance(body.get("count"), int):
        body["count"] = min(body["count"], 1000)
    if case.meta is not None and case.meta.phase.name == "stateful" and "pool" in body:
        body["pool"] = "default"
    for name in _CODES:
        if isinstance(body.get(name), str) and not _shows_something(body[name]):
            body[name] = "FUZZ-1"
    expires = _instant(body.get("expires_at"))
    if expires is not None and expires <= datetime.now(UTC):
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    start, end = _instant(body.get("valid_from")), _instant(body.get("valid_until"))
    if start is not None and end is not None and start >= end:
        del body["valid_until"]
