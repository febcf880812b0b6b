"""Stored first responses of requests sent with an Idempotency-Key."""

from datetime import datetime
from typing import Any

from sqlalchemy import Index
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, insert_time


class IdempotencyRecord(Base, table=True):
    __tablename__ = "idempotency_records"
    # Expired records are removed by age (app/idempotency.py, purge_expired).
    __table_args__ = (Index("ix_idempotency_records_created_at", "created_at"),)

    # The caller's key digest (api_keys.secret_sha256): keys are per API key.
    owner: Col[str] = Field(primary_key=True, max_length=64)
    key: Col[str] = Field(primary_key=True, max_length=255)
    fingerprint: Col[str] = Field(max_length=64)
    status_code: Col[int]
    headers: Col[dict[str, Any]] = Field(sa_type=JSONB)
    body: Col[bytes]
    created_at: Col[datetime] = insert_time()
