"""Assignments: a code handed to a recipient. For unique sets the assignment is on the
code row (app/models/code.py); for shared sets it is a row here."""

import uuid
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.code import Channel
from app.models.common import WriteModel

RecipientId = Field(min_length=1, max_length=200, description="The caller's id for the contact")


class SharedAssignment(Base):
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
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("coupon_sets.id", ondelete="CASCADE"))
    recipient_id: Mapped[str]
    address: Mapped[str | None]
    channel: Mapped[str | None] = mapped_column(String(16))
    delivery_id: Mapped[str | None]
    additional: Mapped[bool] = mapped_column(server_default=text("false"))
    assigned_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class AssignmentCreate(WriteModel):
    recipient_id: str = RecipientId
    address: str | None = Field(default=None, max_length=320, description="Email, phone…")
    channel: Channel | None = None
    pool: str | None = Field(
        default=None, min_length=1, max_length=200, description="Unique sets; `default` if absent"
    )
    delivery_id: str | None = Field(default=None, max_length=200)
    additional: bool = Field(
        default=False,
        description="Give another code even though the recipient already holds one",
    )


class AssignmentPublic(BaseModel):
    code: str
    set_id: uuid.UUID
    set_key: str
    pool: str | None = Field(description="null for shared sets")
    recipient_id: str
    address: str | None
    channel: Channel | None
    delivery_id: str | None
    additional: bool
    assigned_at: datetime
    fallback: bool = Field(
        default=False, description="The pool was empty and the set's fallback code was given"
    )


class AssignmentPage(BaseModel):
    items: list[AssignmentPublic]
    next_cursor: str | None
