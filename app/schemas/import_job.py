"""Import jobs as the API shows them."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models.import_job import (
    MAX_REPORTED_ERRORS,
    ImportFormat,
    ImportKind,
    ImportMode,
    ImportStatus,
)
from app.schemas.page import Page


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
