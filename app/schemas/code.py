"""Codes: the bodies that add or generate codes, and a code as the API shows it."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from app.models.code import Channel, CodeStatus, normalise, refusal
from app.schemas.common import WriteModel


def _shows_something(value: str) -> str:
    """A code some set could hold: something visible once matching ignores separators and
    invisible characters (``\u200b`` alone can match nothing)."""
    code = value.strip()
    reason = refusal(code, normalise(code, exact=False), exact=False)
    if reason is not None:
        raise ValueError(f"not a code: {reason}")
    return value


CodeText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$"),
    AfterValidator(_shows_something),
]

MAX_CODES_PER_REQUEST = 10_000
MAX_GENERATE = 1_000_000


class CodeReturn(WriteModel):
    reason: str | None = Field(
        default=None,
        max_length=500,
        description="Why the code comes back (kept in the audit trail), e.g. 'bounced'.",
        examples=["bounced"],
    )


class CodesAdd(WriteModel):
    checked_per_item = frozenset({"codes"})
    codes: list[str] = Field(min_length=1, max_length=MAX_CODES_PER_REQUEST)
    pool: str = Field(default="default", min_length=1, max_length=200)


class RejectedCode(BaseModel):
    index: int = Field(description="Position in the request's list, from 0")
    code: str
    reason: str


class CodesAdded(BaseModel):
    accepted: int
    duplicates: int = Field(description="Already in the set, or repeated in this request")
    rejected: list[RejectedCode]
    duplicate_codes: list[str] = Field(description="The duplicates (at most the first 100)")


GeneratorPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    # `_one_shape` checks it, with a message that says why.
    Field(json_schema_extra={"pattern": r"^[^\x00]*[#?][^\x00]*$"}),
]

# `_one_shape`, for the document: a pattern or a length, not both (if/then/else, which
# generated clients read past, where a oneOf would split the model in two).
_ONE_SHAPE: dict[str, Any] = {
    "if": {"required": ["pattern"], "properties": {"pattern": {"type": "string"}}},
    "then": {"properties": {"length": {"type": "null"}}},
    "else": {"required": ["length"], "properties": {"length": {"type": "integer"}}},
}


class CodesGenerate(WriteModel):
    """Either a ``pattern`` (``#`` a digit, ``?`` a letter, anything else literal) or a
    ``length`` over a ``charset``."""

    model_config = ConfigDict(json_schema_extra=_ONE_SHAPE)

    count: int = Field(ge=1, le=MAX_GENERATE)
    pattern: GeneratorPattern | None = Field(default=None, examples=["SPRING-####-????"])
    length: int | None = Field(default=None, ge=4, le=64)
    charset: Literal["alphanumeric", "letters", "digits", "unambiguous"] | str = Field(
        default="unambiguous",
        description="A named set or the characters themselves. `unambiguous` leaves out "
        "0/O, 1/I/L.",
    )
    prefix: str = Field(default="", max_length=32, pattern=r"^[^\x00-\x1f\x7f]*$")
    suffix: str = Field(default="", max_length=32, pattern=r"^[^\x00-\x1f\x7f]*$")
    pool: str = Field(default="default", min_length=1, max_length=200)
    min_space_ratio: int = Field(
        default=1_000_000,
        ge=2,
        le=10**12,
        description="The code space must hold this many times the set's codes (existing "
        "plus new). The default keeps a guessed code valid at most once in a million tries.",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> "CodesGenerate":
        if (self.pattern is None) == (self.length is None):
            raise ValueError("give either a pattern or a length")
        if self.pattern is not None and not any(ch in "#?" for ch in self.pattern):
            raise ValueError("the pattern needs at least one # (digit) or ? (letter)")
        return self


class CodesGenerated(BaseModel):
    generated: int
    pool: str
    code_space: int = Field(description="How many codes the shape can make")
    sample: list[str] = Field(description="The first few codes made")


class CodePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    pool: str
    status: CodeStatus
    recipient_id: str | None
    address: str | None
    channel: Channel | None
    delivery_id: str | None
    additional: bool
    assigned_at: datetime | None
    redeemed_at: datetime | None
    voided_at: datetime | None
    metadata: dict[str, Any] | None
    created_at: datetime


class CodePage(BaseModel):
    items: list[CodePublic]
    next_cursor: str | None
