"""Export of a unique set's codes as CSV or XML, streamed in chunks of ids.

Each chunk is one short statement on a plain asyncpg connection in autocommit, read
whole before it is handed on, so no transaction or snapshot stays open while a slow
client reads: a long export never holds back vacuum or the claims' cleanup. The price
is that the export is not one snapshot: a code is reported as it was when its chunk
was read. CSV chunks come from ``COPY ... TO STDOUT`` (PostgreSQL formats the rows;
Python only passes bytes on), which is what makes 1,000,000 rows take seconds."""

import asyncio
import contextlib
import enum
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from app.csv_guard import cell_sql
from app.models.code import CodeStatus
from app.models.coupon_set import CouponSet
from app.services import pools
from app.services.codes import ensure_unique_kind

# Rows per chunk: a few MB of CSV, so memory stays flat while PostgreSQL works one chunk
# ahead of the client.
CHUNK_ROWS = 20_000
_CHUNKS_AHEAD = 2

LAST_ID = 2**63 - 1
_Item = bytes | Exception | None  # a chunk, the producer's error, or the end


class ExportFormat(enum.StrEnum):
    csv = "csv"
    xml = "xml"


# The exported columns, in order: (name, SQL expression, free text a caller wrote).
# Timestamps are ISO 8601 in UTC.
_ISO = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("code", "c.code", True),
    ("status", "c.status", False),
    ("pool", "p.name", True),
    ("recipient_id", "c.recipient_id", True),
    ("address", "c.address", True),
    ("channel", "c.channel", False),
    ("assigned_at", _ISO.format("c.assigned_at"), False),
    ("redeemed_at", _ISO.format("c.redeemed_at"), False),
    ("delivery_id", "c.delivery_id", True),
    ("voided_at", _ISO.format("c.voided_at"), False),
    ("additional", "c.additional::text", False),
    ("created_at", _ISO.format("c.created_at"), False),
    ("metadata", "c.metadata::text", True),
)


def _select(*, neutralise: bool) -> str:
    """The rows of one chunk: $1 set, $2 after this id, $3 up to this id, $4 status or
    NULL, $5 pool or NULL. Uses ix_codes_set_id_id."""
    columns = ",\n  ".join(
        f"{cell_sql(sql) if neutralise and free else sql} AS {name}" for name, sql, free in COLUMNS
    )
    return f"""
SELECT {columns}
FROM codes c JOIN pools p ON p.id = c.pool_id
WHERE c.set_id = $1 AND c.id > $2 AND c.id <= $3
  AND ($4::text IS NULL OR c.status = $4) AND ($5::uuid IS NULL OR c.pool_id = $5)
ORDER BY c.id"""  # noqa: S608 - built from the constant COLUMNS only


CSV_CHUNK_SQL = _select(neutralise=True)
XML_CHUNK_SQL = _select(neutralise=False)
# The last id of the next chunk: an index-only scan of CHUNK_ROWS entries of
# ix_codes_set_id_id. Filters are left out, so a filtered chunk holds fewer rows.
_CHUNK_END = "SELECT id FROM codes WHERE set_id = $1 AND id > $2 ORDER BY id OFFSET $3 LIMIT 1"


@dataclass(frozen=True)
class Export:
    """What was checked before the first byte goes out; errors after it can only abort."""

    set_id: uuid.UUID
    set_key: str
    format: ExportFormat
    status: CodeStatus | None
    pool_id: uuid.UUID | None

    @property
    def media_type(self) -> str:
        return "text/csv; charset=utf-8" if self.format == ExportFormat.csv else "application/xml"

    @property
    def filename(self) -> str:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in self.set_key)
        return f"{safe or 'codes'}-codes.{self.format.value}"


async def prepare_export(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    format: ExportFormat,
    status: CodeStatus | None,
    pool: str | None,
) -> Export:
    """Every check that can refuse, done before the first byte is sent. Shared sets have
    no code rows (their recipients are in GET .../assignments): refused like the other
    code routes."""
    ensure_unique_kind(coupon_set)
    found = await pools.get_pool(session, coupon_set=coupon_set, ref=pool) if pool else None
    return Export(
        set_id=coupon_set.id,
        set_key=coupon_set.key,
        format=format,
        status=status,
        pool_id=found.id if found else None,
    )


async def _chunk_end(pool: asyncpg.Pool, export: Export, after: int) -> int | None:
    async with pool.acquire() as conn:
        end: int | None = await conn.fetchval(_CHUNK_END, export.set_id, after, CHUNK_ROWS - 1)
        return end


def _args(export: Export, after: int, end: int | None) -> tuple[object, ...]:
    status = export.status.value if export.status else None
    # No NULL for "to the end": a bound the index can always use, also in a generic plan.
    return (export.set_id, after, LAST_ID if end is None else end, status, export.pool_id)


async def _csv_chunk(pool: asyncpg.Pool, export: Export, after: int, end: int | None) -> bytes:
    pieces: list[bytes] = []

    async def collect(data: bytes) -> None:
        pieces.append(data)

    async with pool.acquire() as conn:
        await conn.copy_from_query(
            CSV_CHUNK_SQL, *_args(export, after, end), output=collect, format="csv"
        )
    return b"".join(pieces)


# XML 1.0 allows no control characters but tab, LF and CR: they become U+FFFD.
_XML_TEXT = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        **{chr(c): "\ufffd" for c in range(0x20) if chr(c) not in "\t\n\r"},
        "\x7f": "\ufffd",
    }
)


def xml_text(value: str) -> str:
    return value.translate(_XML_TEXT)


def _xml_rows(records: Sequence[asyncpg.Record]) -> bytes:
    out: list[str] = []
    for record in records:
        out.append("  <code>")
        for name, _, _ in COLUMNS:
            value = record[name]
            if value is None:
                continue
            out.append(f"<{name}>{xml_text(value)}</{name}>")
        out.append("</code>\n")
    return "".join(out).encode()


async def _xml_chunk(pool: asyncpg.Pool, export: Export, after: int, end: int | None) -> bytes:
    async with pool.acquire() as conn:
        records = await conn.fetch(XML_CHUNK_SQL, *_args(export, after, end))
    return _xml_rows(records)


def _head(export: Export) -> bytes:
    if export.format == ExportFormat.csv:
        return (",".join(name for name, _, _ in COLUMNS) + "\n").encode()
    exported_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<codes set_id="{export.set_id}" set_key="{xml_text(export.set_key)}" '
        f'exported_at="{exported_at}">\n'
    ).encode()


async def _produce(pool: asyncpg.Pool, export: Export, queue: "asyncio.Queue[_Item]") -> None:
    read = _csv_chunk if export.format == ExportFormat.csv else _xml_chunk
    after = 0
    try:
        while True:
            end = await _chunk_end(pool, export, after)
            data = await read(pool, export, after, end)
            if data:
                await queue.put(data)  # waits while the client is _CHUNKS_AHEAD behind
            if end is None:
                break
            after = end
    except Exception as exc:  # handed to the response's task, which aborts the stream
        await queue.put(exc)
        return
    await queue.put(None)


async def stream_export(pool: asyncpg.Pool, export: Export) -> AsyncIterator[bytes]:
    """The file, chunk by chunk. A database error mid-way raises, which aborts the
    response (the client sees a truncated transfer, never a short file that looks whole)."""
    yield _head(export)
    queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=_CHUNKS_AHEAD)
    producer = asyncio.create_task(_produce(pool, export, queue))
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        # The client went away (or the stream failed): stop reading chunks.
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
    if export.format == ExportFormat.xml:
        yield b"</codes>\n"
