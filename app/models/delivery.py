"""Deliveries: one send to a target list, with one coupon code placed in each message.

The service does not send anything: it hands the codes out in one set-based step at
confirm and renders each message's text for the sending system."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, Entity, counter, identity


class DeliveryStatus(enum.StrEnum):
    draft = "draft"
    analyzed = "analyzed"
    sending = "sending"
    finished = "finished"
    failed = "failed"


class ContentType(enum.StrEnum):
    text = "text"
    html = "html"


class Delivery(Entity, Base, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_created_at_id", "created_at", "id"),
        Index("ix_deliveries_coupon_set_id", "coupon_set_id"),
        CheckConstraint(
            "status IN ('draft', 'analyzed', 'sending', 'finished', 'failed')", name="status"
        ),
        CheckConstraint("message_limit IS NULL OR message_limit >= 0", name="message_limit"),
    )

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    label: Col[str]
    coupon_set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    # Unique sets: the pool the codes come from. Shared sets have no pools.
    pool_id: Col[uuid.UUID | None] = Field(default=None, foreign_key="pools.id", ondelete="CASCADE")
    channel: Col[str | None] = Field(default=None, max_length=16)
    subject: Col[str | None] = Field(default=None)
    template: Col[str | None] = Field(default=None)
    content_type: Col[str] = Field(
        default=ContentType.text.value,
        max_length=8,
        sa_column_kwargs={"server_default": ContentType.text.value},
    )
    status: Col[str] = Field(
        default=DeliveryStatus.draft.value,
        max_length=16,
        sa_column_kwargs={"server_default": DeliveryStatus.draft.value},
    )
    message_limit: Col[int | None] = Field(default=None)
    # "metadata" is SQLModel's (and SQLAlchemy's) on a table class; the column keeps the name.
    metadata_: Col[dict[str, Any]] = Field(
        default_factory=dict,
        sa_type=JSONB,
        sa_column_kwargs={"name": "metadata", "server_default": text("'{}'")},
    )
    recipient_count: Col[int] = counter()
    # Set at confirm: the last target (by seq) that gets a message, after the limit.
    last_seq: Col[int | None] = Field(default=None, sa_type=BigInteger)
    # Progress of a confirm: targets handled so far, codes handed out, codes kept.
    processed: Col[int] = counter()
    assigned: Col[int] = counter()
    kept: Col[int] = counter()
    failed_messages: Col[int] = counter()
    failure_reason: Col[str | None] = Field(default=None)
    analysis: Col[dict[str, Any] | None] = Field(default=None, sa_type=JSONB)
    api_key_id: Col[uuid.UUID | None] = Field(default=None)
    confirmed_at: Col[datetime | None] = Field(default=None)
    finished_at: Col[datetime | None] = Field(default=None)
    # The first complete read of its messages: they were handed to the sending system.
    sent_at: Col[datetime | None] = Field(default=None)
    # Renewed every few seconds by the process running the confirm: a ``sending``
    # delivery whose heartbeat stopped was left by a process that is gone, whatever its
    # backends still hold (see app/services/deliveries/confirm.py).
    heartbeat_at: Col[datetime | None] = Field(default=None)


class DeliveryRecipient(Base, table=True):
    """One target of a delivery. Its code is not stored here: a recipient holds at most
    one primary code per pool (``uq_codes_recipient``), so the code is found from
    (pool, recipient) and can never disagree with the codes table."""

    __tablename__ = "delivery_recipients"
    __table_args__ = (
        Index("uq_delivery_recipients_recipient", "delivery_id", "recipient_id", unique=True),
    )

    delivery_id: Col[uuid.UUID] = Field(
        primary_key=True, foreign_key="deliveries.id", ondelete="CASCADE"
    )
    # Order of addition: the message limit keeps the first ones.
    seq: Col[int] = identity()
    recipient_id: Col[str]
    address: Col[str | None] = Field(default=None)
    fields: Col[dict[str, Any]] = Field(
        default_factory=dict, sa_type=JSONB, sa_column_kwargs={"server_default": text("'{}'")}
    )
    failed_at: Col[datetime | None] = Field(default=None)
