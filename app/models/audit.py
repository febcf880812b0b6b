"""The audit trail: one append-only row per state change of a code."""

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, Identity, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


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


class AuditEvent(Base):
    __tablename__ = "audit_events"
    # No foreign key to the set: the trail outlives what it describes.
    __table_args__ = (Index("ix_audit_events_set_id_id", "set_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    set_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None]
    recipient_id: Mapped[str | None]
    api_key_id: Mapped[uuid.UUID | None]
    idempotency_key: Mapped[str | None]
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    set_id: uuid.UUID | None
    action: AuditAction
    code: str | None
    recipient_id: str | None
    api_key_id: uuid.UUID | None
    idempotency_key: str | None
    details: dict[str, Any] | None
    created_at: datetime


class AuditPage(BaseModel):
    items: list[AuditEventPublic]
    next_cursor: str | None
