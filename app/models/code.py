"""Codes of a unique set, one row each; its assignment lives on the row.

Keeping the recipient on the code row makes a claim one UPDATE (plus its audit row),
the cheapest write that can hand a code out. Shared sets have no code rows: their
one code is on the set and their assignments are in ``shared_assignments``."""

import enum
import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, identity, insert_time


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


class Code(Base, table=True):
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
        # A recipient's codes: in one set (the code list's filter), or across sets in
        # pages (GET /v1/recipients/{id}/coupons), keyset on (set_id, id).
        Index(
            "ix_codes_recipient_id",
            "recipient_id",
            "set_id",
            "id",
            postgresql_where=text("recipient_id IS NOT NULL"),
        ),
        # The code list by pool and status, in id order; free codes are in ix_codes_free,
        # so an import (all free) writes no entry here. status is in ix_codes_free's
        # predicate already, so no update that changes it was HOT before this index.
        Index(
            "ix_codes_pool_id_status_id",
            "pool_id",
            "status",
            "id",
            postgresql_where=text("status <> 'available'"),
        ),
        Index("ix_codes_set_id_id", "set_id", "id"),
        # Redemptions name a code, not its set.
        Index("ix_codes_lookup", "lookup"),
    )

    id: Col[int] = identity()
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    pool_id: Col[uuid.UUID] = Field(foreign_key="pools.id", ondelete="CASCADE")
    code: Col[str]
    lookup: Col[str]
    status: Col[str] = Field(
        default=CodeStatus.available.value,
        max_length=16,
        sa_column_kwargs={"server_default": CodeStatus.available.value},
    )
    recipient_id: Col[str | None] = Field(default=None)
    address: Col[str | None] = Field(default=None)
    channel: Col[str | None] = Field(default=None, max_length=16)
    delivery_id: Col[str | None] = Field(default=None)
    additional: Col[bool] = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    assigned_at: Col[datetime | None] = Field(default=None)
    redeemed_at: Col[datetime | None] = Field(default=None)
    voided_at: Col[datetime | None] = Field(default=None)
    # "metadata" is SQLModel's (and SQLAlchemy's) on a table class; the column keeps the name.
    metadata_: Col[dict[str, Any] | None] = Field(
        default=None, sa_type=JSONB, sa_column_kwargs={"name": "metadata"}
    )
    created_at: Col[datetime] = insert_time()


UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SEPARATORS = re.compile(r"[\s\-_.]+")


def normalise(code: str, *, exact: bool) -> str:
    """The form codes are compared in: as given for exact sets, otherwise upper-case
    without spaces, dashes, dots or underscores (``spring-ab12`` finds ``SPRING AB12``)."""
    return code if exact else _SEPARATORS.sub("", code).upper()
