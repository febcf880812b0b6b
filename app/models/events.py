"""Events out: the outbox of events the audit trail does not record, webhook endpoints,
their delivery attempts, and the dispatcher's cursor (docs/events.md).

Rows that feed events (``audit_events``, ``event_outbox``) carry ``txid``, the id of the
transaction that wrote them (``pg_current_xact_id()``): readers take only rows whose
transaction ended before their snapshot began, so a cursor never skips a row that
commits late (app/services/events/sql.py)."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Text
from sqlmodel import Field

from app.models.base import Base, Col, Entity, identity, insert_time

# The writing transaction's id as a bigint (epoch and xid: it never wraps around).
TXID_DEFAULT = text("(pg_current_xact_id())::text::bigint")


def txid() -> Any:
    """The column every event source carries: the id of the transaction that wrote it."""
    return Field(
        default=None, sa_type=BigInteger, sa_column_kwargs={"server_default": TXID_DEFAULT}
    )


class AttemptStatus(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class EventOutbox(Base, table=True):
    """Events written in the transaction of what they report (pool alerts, finished
    imports and deliveries, expiring sets, disabled endpoints). Purged after the
    retention period."""

    __tablename__ = "event_outbox"
    __table_args__ = (
        Index("ix_event_outbox_txid_id", "txid", "id"),
        Index("ix_event_outbox_created_at", "created_at"),
    )

    id: Col[int] = identity()
    txid: Col[int | None] = txid()
    type: Col[str] = Field(max_length=64)
    data: Col[dict[str, Any]] = Field(sa_type=JSONB)
    created_at: Col[datetime] = insert_time()


class WebhookEndpoint(Entity, Base, table=True):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_created_at_id", "created_at", "id"),)

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    url: Col[str]
    description: Col[str | None] = Field(default=None)
    events: Col[list[str]] = Field(sa_type=ARRAY(Text))
    enabled: Col[bool] = Field(default=True, sa_column_kwargs={"server_default": text("true")})
    # The signing secret (whsec_ + base64 of 32 random bytes). Kept as is: HMAC needs it.
    secret: Col[str]
    # After a rotation the old secret signs too, until previous_secret_expires_at.
    previous_secret: Col[str | None] = Field(default=None)
    previous_secret_expires_at: Col[datetime | None] = Field(default=None)
    # Since when every delivery failed (cleared by a success); disabled past a limit.
    failing_since: Col[datetime | None] = Field(default=None)
    disabled_reason: Col[str | None] = Field(default=None)


class WebhookAttempt(Base, table=True):
    """One event for one endpoint: pending until delivered (succeeded) or given up
    (failed); ``tries`` and the last try's outcome."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        # The dispatcher's queue: only what is still to send.
        Index(
            "ix_webhook_attempts_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_attempts_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_attempts_created_at", "created_at"),
    )

    id: Col[int] = identity()
    endpoint_id: Col[uuid.UUID] = Field(foreign_key="webhook_endpoints.id", ondelete="CASCADE")
    event_id: Col[str] = Field(max_length=64)
    event_type: Col[str] = Field(max_length=64)
    # The exact body every try sends (the signature covers these bytes).
    body: Col[str]
    status: Col[str] = Field(
        default=AttemptStatus.pending.value,
        max_length=16,
        sa_column_kwargs={"server_default": AttemptStatus.pending.value},
    )
    tries: Col[int] = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    next_attempt_at: Col[datetime | None] = Field(default=None)
    last_attempt_at: Col[datetime | None] = Field(default=None)
    response_status: Col[int | None] = Field(default=None)
    duration_ms: Col[int | None] = Field(default=None)
    error: Col[str | None] = Field(default=None)
    created_at: Col[datetime] = insert_time()
    finished_at: Col[datetime | None] = Field(default=None)


class EventCursor(Base, table=True):
    """Where the dispatcher's fan-out stands in the event order: one row, locked by the
    instance that pumps (the others skip it)."""

    __tablename__ = "event_cursor"

    id: Col[int] = Field(default=1, primary_key=True)
    txid: Col[int] = Field(default=0, sa_type=BigInteger)
    src: Col[int] = Field(default=0)
    source_id: Col[int] = Field(default=0, sa_type=BigInteger)
    updated_at: Col[datetime] = insert_time()
