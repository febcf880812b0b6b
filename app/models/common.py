"""Field types shared by the API schemas."""

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    # One spelling per text: "é" typed as one or two code points is the same label.
    return unicodedata.normalize("NFC", value)


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value, ensure_ascii=False)) > 16_384:
        raise ValueError("must be at most 16 KiB as JSON")
    return value


Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_clean_text),
    Field(examples=["Spring sale 2026"]),
]

Description = Annotated[str, StringConstraints(max_length=4000)]

Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_bounded_json),
    Field(description="Free-form JSON object kept with the resource (at most 16 KiB)"),
]
