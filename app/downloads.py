"""The files the API and the dashboard hand out (codes, a delivery's messages, an
import's rejected rows): one response each, so both answer with the same type, name
and bytes."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
from fastapi.responses import StreamingResponse

from app.services import deliveries, exports, imports


def attachment(
    body: AsyncIterator[str] | AsyncIterator[bytes], *, media_type: str, filename: str
) -> StreamingResponse:
    """``body`` streamed as a file the client saves as ``filename``."""
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def codes(pool: asyncpg.Pool, export: exports.Export) -> StreamingResponse:
    return attachment(
        exports.stream_export(pool, export), media_type=export.media_type, filename=export.filename
    )


def messages(
    pool: asyncpg.Pool, source: deliveries.MessageSource, *, format: deliveries.Format
) -> StreamingResponse:
    return attachment(
        deliveries.export_messages(pool, source, format=format),
        media_type="text/csv; charset=utf-8" if format == "csv" else "application/jsonl",
        filename=f"delivery-{source.delivery.id}-messages.{format}",
    )


def import_errors(pool: asyncpg.Pool, job_id: uuid.UUID) -> StreamingResponse:
    return attachment(
        imports.error_report(pool, job_id),
        media_type="text/csv; charset=utf-8",
        filename=f"import-{job_id}-errors.csv",
    )
