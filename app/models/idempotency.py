"""Stored first responses of requests sent with an Idempotency-Key."""

from datetime import datetime
from typing import Any

from sqlalchemy import Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"
    # Expired records are removed by age (app/idempotency.py, purge_expired).
    __table_args__ = (Index("ix_idempotency_records_created_at", "created_at"),)

    # The caller's key digest (api_keys.secret_sha256): keys are per API key.
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    headers: Mapped[dict[str, Any]]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
