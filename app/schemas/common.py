"""Field types shared by the API schemas."""

import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

# A path parameter that is text (a code, a set key, a pool name, a recipient id): any
# text but "." and "..", which URL clients drop as dot-segments (RFC 3986, 5.2.4) before
# the request is sent, so that ".../codes/./void" arrives as ".../codes/void". Written
# without a lookahead: the pattern is checked by pydantic-core's regex engine too.
PATH_TEXT = r"^(?:[^.]|\.[^.]|\.\.[\s\S])[\s\S]*$"

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


# What a label may hold, for the document: something visible, no control character.
_LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"

Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_clean_text),
    Field(examples=["Spring sale 2026"], json_schema_extra={"pattern": _LABEL_PATTERN}),
]


def _in_range(value: datetime) -> datetime:
    # Stored and compared in UTC: 0001-01-01T00:00:00+01:00 is a year 0 there, which
    # neither Python nor the driver can hold.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "must fall between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z once in UTC"
        ) from None
    return value


_DATE_START = re.compile(r"\d{4}-")


def _text_instant(value: Any) -> Any:
    # Lax mode would read a number, or a string of one, as seconds since 1970; the
    # document says an RFC 3339 string, which starts with its year.
    if isinstance(value, datetime) or (isinstance(value, str) and _DATE_START.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time string")


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_text_instant),
    AfterValidator(_in_range),
    Field(description="An instant with its UTC offset (RFC 3339), in years 1 to 9999 in UTC"),
]


def _in_future(value: datetime) -> datetime:
    if value <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return value


FutureInstant = Annotated[Instant, AfterValidator(_in_future)]

Description = Annotated[str, StringConstraints(max_length=4000)]

# A JSON boolean only: lax mode would take 0, 1, "yes", "off"...
Flag = StrictBool

# An update's field that may be left out but not cleared: None stands for "not sent",
# and the document does not offer null (the model refuses a null that is sent).
NotNull = SkipJsonSchema[None]

Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_bounded_json),
    Field(description="Free-form JSON object kept with the resource (at most 16 KiB)"),
]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """Strings anywhere in ``value`` (lists, objects) that PostgreSQL can store: no NUL,
    no unpaired surrogate (JSON allows both, text and jsonb do not)."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ValueError("must not contain NUL characters or unpaired surrogates")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)
    return value


class WriteModel(BaseModel):
    """Base of every request body: unknown fields are refused (no mass assignment), and
    so is text the database could not store (app.openapi_extras states it in the
    document)."""

    model_config = ConfigDict(extra="forbid")
    # Fields whose items are checked one by one later and reported per item.
    checked_per_item: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _check_storable(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in cls.checked_per_item:
            return value
        return _storable(value)
