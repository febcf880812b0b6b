"""The audit trail as the API shows it."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.models.audit import AuditAction


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
