"""Coupon sets: one offer, either one shared code or a stock of unique codes."""

import enum
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import CheckConstraint, Index, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, Entity


class SetKind(enum.StrEnum):
    unique = "unique"
    shared = "shared"


class SetStatus(enum.StrEnum):
    active = "active"
    archived = "archived"


class MatchMode(enum.StrEnum):
    normalized = "normalized"
    exact = "exact"


class SetFacts(NamedTuple):
    """What the hot paths read of a set (its id and key, and whether it may be used
    now: ``ensure_usable``), as a plain tuple: building a table object costs ~0.5 ms
    (SQLModel's constructor), most of a claim's CPU. ``CouponSet`` has the same fields."""

    id: uuid.UUID
    key: str
    kind: str
    status: str
    valid_from: datetime | None
    valid_until: datetime | None


class CouponSet(Entity, Base, table=True):
    __tablename__ = "coupon_sets"
    __table_args__ = (
        # Keys are found case-insensitively, so they are unique case-insensitively.
        Index("uq_coupon_sets_key_lower", func.lower(text("key")), unique=True),
        Index("ix_coupon_sets_created_at_id", "created_at", "id"),
        Index("ix_coupon_sets_shared_lookup", "shared_lookup"),
        CheckConstraint("kind IN ('unique', 'shared')", name="kind"),
        CheckConstraint("status IN ('active', 'archived')", name="status"),
        CheckConstraint("(kind = 'shared') = (shared_code IS NOT NULL)", name="shared_code"),
        CheckConstraint("max_uses IS NULL OR (kind = 'shared' AND max_uses > 0)", name="max_uses"),
        CheckConstraint(
            "valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until",
            name="validity_window",
        ),
        CheckConstraint("match_mode IN ('normalized', 'exact')", name="match_mode"),
        CheckConstraint(
            "per_recipient_limit IS NULL OR (kind = 'shared' AND per_recipient_limit > 0)",
            name="per_recipient_limit",
        ),
        CheckConstraint("fallback_code IS NULL OR kind = 'unique'", name="fallback_code"),
    )

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    key: Col[str] = Field(max_length=64)
    # None only on an object that carries some columns (the claim's lookup of a set): the
    # database requires a label.
    label: Col[str] = Field(default=None)
    description: Col[str | None] = Field(default=None)
    kind: Col[str] = Field(max_length=16)
    status: Col[str] = Field(default=SetStatus.active.value, max_length=16)
    shared_code: Col[str | None] = Field(default=None)
    # The shared code in the form lookups compare (app/models/code.py normalise()).
    shared_lookup: Col[str | None] = Field(default=None)
    max_uses: Col[int | None] = Field(default=None)
    valid_from: Col[datetime | None] = Field(default=None)
    valid_until: Col[datetime | None] = Field(default=None)
    # "metadata" is SQLModel's (and SQLAlchemy's) on a table class; the column keeps the name.
    metadata_: Col[dict[str, Any]] = Field(
        default_factory=dict,
        sa_type=JSONB,
        sa_column_kwargs={"name": "metadata", "server_default": text("'{}'")},
    )
    match_mode: Col[str] = Field(
        default=MatchMode.normalized.value,
        max_length=16,
        sa_column_kwargs={"server_default": MatchMode.normalized.value},
    )
    per_recipient_limit: Col[int | None] = Field(default=None)
    bind_to_recipient: Col[bool] = Field(
        default=False, sa_column_kwargs={"server_default": text("false")}
    )
    fallback_code: Col[str | None] = Field(default=None)
    # coupon_set.expiring fires this many days before valid_until, once (expiry_warned_at).
    expiry_warning_days: Col[int | None] = Field(default=None)
    expiry_warned_at: Col[datetime | None] = Field(default=None)
