"""The audit trail: one append-only row per state change of a code."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, identity, insert_time
from app.models.events import txid


class AuditAction(enum.StrEnum):
    assign = "assign"
    redeem = "redeem"
    hold = "hold"
    confirm = "confirm"
    release = "release"
    rollback = "rollback"
    void = "void"
    unassign = "unassign"
    return_ = "return"  # an assigned code given back to its pool (a bounced message)
    add_codes = "add_codes"
    generate_codes = "generate_codes"
    import_codes = "import_codes"
    import_redemptions = "import_redemptions"


class AuditEvent(Base, table=True):
    __tablename__ = "audit_events"
    # No foreign key to the set: the trail outlives what it describes.
    __table_args__ = (
        Index("ix_audit_events_set_id_id", "set_id", "id"),
        # A recipient's activity, newest first (GET /v1/recipients/{id}/activity).
        Index(
            "ix_audit_events_recipient_id",
            "recipient_id",
            "created_at",
            "id",
            postgresql_where=text("recipient_id IS NOT NULL"),
        ),
        # The event feed's order (app/services/events/sql.py).
        Index("ix_audit_events_txid_id", "txid", "id"),
    )

    id: Col[int] = identity()
    set_id: Col[uuid.UUID | None] = Field(default=None)
    action: Col[str] = Field(max_length=32)
    code: Col[str | None] = Field(default=None)
    recipient_id: Col[str | None] = Field(default=None)
    api_key_id: Col[uuid.UUID | None] = Field(default=None)
    idempotency_key: Col[str | None] = Field(default=None)
    details: Col[dict[str, Any] | None] = Field(default=None, sa_type=JSONB)
    created_at: Col[datetime] = insert_time()
    # The writing transaction (app/models/events.py); NULL on rows older than the feed.
    txid: Col[int | None] = txid()
