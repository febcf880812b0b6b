"""Import jobs: one uploaded file of codes or redemptions, its counts and its report.

The rows themselves pass through a temporary staging table of the connection that runs
the job (see app/services/imports.py); only the job and its per-row report are kept."""

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Entity
from app.pagination import Page


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


class ImportJob(Entity, Base):
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

    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("coupon_sets.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8))
    mode: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str | None]
    checksum: Mapped[str | None] = mapped_column(String(64))
    options: Mapped[dict[str, Any] | None]
    rows_read: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    accepted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    duplicates: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rejected: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    error: Mapped[str | None]
    api_key_id: Mapped[uuid.UUID | None]
    idempotency_key: Mapped[str | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ImportReportRow(Base):
    """One line of a job's report: a rejected or duplicate row."""

    __tablename__ = "import_errors"
    __table_args__ = (Index("ix_import_errors_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str | None]
    reason: Mapped[str]


class RowError(BaseModel):
    line: int = Field(description="Line of the file (1-based, the header included)")
    code: str | None
    reason: str


class ImportJobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    set_id: uuid.UUID
    kind: ImportKind
    status: ImportStatus
    format: ImportFormat
    mode: ImportMode
    filename: str | None
    checksum: str | None = Field(description="SHA-256 of the file, hex")
    rows_read: int
    accepted: int
    duplicates: int = Field(description="Repeated within the file or already in the set")
    rejected: int
    errors: list[RowError] = Field(
        description=f"The first {MAX_REPORTED_ERRORS} rejected or duplicate rows; the whole "
        "report is at `.../errors.csv`"
    )
    error: str | None = Field(description="Why a failed job failed")
    api_key_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ImportJobPage(Page[ImportJobPublic]):
    pass
