"""Codes of a unique set, one row each; its assignment lives on the row.

Keeping the recipient on the code row makes a claim one UPDATE (plus its audit row),
the cheapest write that can hand a code out. Shared sets have no code rows: their
one code is on the set and their assignments are in ``shared_assignments``."""

import enum
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.common import WriteModel


class CodeStatus(enum.StrEnum):
    available = "available"
    assigned = "assigned"
    redeemed = "redeemed"
    void = "void"


class Channel(enum.StrEnum):
    email = "email"
    sms = "sms"
    push = "push"
    web = "web"
    other = "other"


# A free code, the one definition. ``FREE`` is the partial index's predicate (ix_codes_free),
# so a search for free codes that states it reads only free rows; ``free()`` adds that a
# code held at a checkout (a live hold on a code not yet assigned) is not free either.
FREE = "status = 'available'"


def free(alias: str) -> str:
    """SQL: the code row ``alias`` can be handed out now."""
    return (
        f"{alias}.{FREE} AND NOT EXISTS (SELECT 1 FROM redemptions r "  # noqa: S608
        f"WHERE r.code_id = {alias}.id AND r.status = 'held' AND r.hold_expires_at > now())"
    )


class Code(Base):
    __tablename__ = "codes"
    __table_args__ = (
        # One code per set, compared the way the set matches codes (see normalise()).
        Index("uq_codes_set_id_lookup", "set_id", "lookup", unique=True),
        # The free list of a pool, in claim order. Only free rows are in it, so a claim
        # reads one index entry; the scan hint (id > last claimed) skips the claimed
        # prefix whose dead entries vacuum has not removed yet.
        Index("ix_codes_free", "pool_id", "id", postgresql_where=text(FREE)),
        # Per-recipient idempotency of assignment: one primary code per set, pool, recipient.
        Index(
            "uq_codes_recipient",
            "pool_id",
            "recipient_id",
            unique=True,
            postgresql_where=text("recipient_id IS NOT NULL AND NOT additional"),
        ),
        Index(
            "ix_codes_set_id_recipient_id",
            "set_id",
            "recipient_id",
            postgresql_where=text("recipient_id IS NOT NULL"),
        ),
        Index("ix_codes_set_id_id", "set_id", "id"),
        # Redemptions name a code, not its set.
        Index("ix_codes_lookup", "lookup"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("coupon_sets.id", ondelete="CASCADE"))
    pool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    code: Mapped[str]
    lookup: Mapped[str]
    status: Mapped[str] = mapped_column(String(16), server_default=CodeStatus.available.value)
    recipient_id: Mapped[str | None]
    address: Mapped[str | None]
    channel: Mapped[str | None] = mapped_column(String(16))
    delivery_id: Mapped[str | None]
    additional: Mapped[bool] = mapped_column(server_default=text("false"))
    assigned_at: Mapped[datetime | None]
    redeemed_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SEPARATORS = re.compile(r"[\s\-_.]+")


def normalise(code: str, *, exact: bool) -> str:
    """The form codes are compared in: as given for exact sets, otherwise upper-case
    without spaces, dashes, dots or underscores (``spring-ab12`` finds ``SPRING AB12``)."""
    return code if exact else _SEPARATORS.sub("", code).upper()


CodeText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"),
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


class CodesGenerate(WriteModel):
    """Either a ``pattern`` (``#`` a digit, ``?`` a letter, anything else literal) or a
    ``length`` over a ``charset``."""

    count: int = Field(ge=1, le=MAX_GENERATE)
    pattern: str | None = Field(
        default=None, min_length=1, max_length=100, examples=["SPRING-####-????"]
    )
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
