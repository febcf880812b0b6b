"""Import jobs: one uploaded file of codes or redemptions, its counts and its report.

The rows themselves pass through a temporary staging table of the connection that runs
the job (see app/services/imports/); only the job and its per-row report are kept."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.models.base import Base, Col, Entity, counter, identity


class ImportKind(enum.StrEnum):
    codes = "codes"
    redemptions = "redemptions"


class ImportStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ImportFormat(enum.StrEnum):
    csv = "csv"
    xml = "xml"
    text = "text"


class ImportMode(enum.StrEnum):
    partial = "partial"
    all_or_nothing = "all_or_nothing"


MAX_REPORTED_ERRORS = 100


class ImportJob(Entity, Base, table=True):
    __tablename__ = "import_jobs"
    __table_args__ = (
        Index("ix_import_jobs_set_id_created_at_id", "set_id", "created_at", "id"),
        # A re-sent file is found by its checksum.
        Index("ix_import_jobs_set_id_checksum", "set_id", "checksum"),
        Index(
            "ix_import_jobs_api_key_id_idempotency_key",
            "api_key_id",
            "idempotency_key",
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        CheckConstraint("kind IN ('codes', 'redemptions')", name="kind"),
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="status"),
        CheckConstraint("format IN ('csv', 'xml', 'text')", name="format"),
        CheckConstraint("mode IN ('partial', 'all_or_nothing')", name="mode"),
    )

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    kind: Col[str] = Field(max_length=16)
    status: Col[str] = Field(max_length=16)
    format: Col[str] = Field(max_length=8)
    mode: Col[str] = Field(max_length=16)
    filename: Col[str | None] = Field(default=None)
    checksum: Col[str | None] = Field(default=None, max_length=64)
    options: Col[dict[str, Any] | None] = Field(default=None, sa_type=JSONB)
    rows_read: Col[int] = counter()
    accepted: Col[int] = counter()
    duplicates: Col[int] = counter()
    rejected: Col[int] = counter()
    errors: Col[list[dict[str, Any]]] = Field(
        default_factory=list,
        sa_type=JSONB,
        sa_column_kwargs={"server_default": text("'[]'::jsonb")},
    )
    error: Col[str | None] = Field(default=None)
    api_key_id: Col[uuid.UUID | None] = Field(default=None)
    idempotency_key: Col[str | None] = Field(default=None)
    started_at: Col[datetime | None] = Field(default=None)
    finished_at: Col[datetime | None] = Field(default=None)


class ImportReportRow(Base, table=True):
    """One line of a job's report: a rejected or duplicate row."""

    __tablename__ = "import_errors"
    __table_args__ = (Index("ix_import_errors_job_id_id", "job_id", "id"),)

    id: Col[int] = identity()
    job_id: Col[uuid.UUID] = Field(foreign_key="import_jobs.id", ondelete="CASCADE")
    line: Col[int] = Field(sa_type=BigInteger)
    code: Col[str | None] = Field(default=None)
    reason: Col[str]
