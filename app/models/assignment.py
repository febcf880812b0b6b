"""Assignments: a code handed to a recipient. For unique sets the assignment is on the
code row (app/models/code.py); for shared sets it is a row here."""

import uuid
from datetime import datetime

from sqlalchemy import Index, text
from sqlmodel import Field

from app.models.base import Base, Col, identity, insert_time


class SharedAssignment(Base, table=True):
    __tablename__ = "shared_assignments"
    __table_args__ = (
        Index(
            "uq_shared_assignments_recipient",
            "set_id",
            "recipient_id",
            unique=True,
            postgresql_where=text("NOT additional"),
        ),
        Index("ix_shared_assignments_set_id_id", "set_id", "id"),
        # A recipient's assignments across sets, in pages keyed on (set_id, id).
        Index("ix_shared_assignments_recipient_id", "recipient_id", "set_id", "id"),
    )

    id: Col[int] = identity()
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    recipient_id: Col[str]
    address: Col[str | None] = Field(default=None)
    channel: Col[str | None] = Field(default=None, max_length=16)
    delivery_id: Col[str | None] = Field(default=None)
    additional: Col[bool] = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    assigned_at: Col[datetime] = insert_time()
