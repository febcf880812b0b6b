"""A delivery's target list: added from JSON or from a CSV read as it streams, and
listed with the code each target holds.

Runs in the request's session; the batched insert and the listing are ``text()``
statements from sql.py."""

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationFailed
from app.models.coupon_set import CouponSet
from app.models.delivery import Delivery, DeliveryStatus
from app.pagination import PageParams, decode_id_cursor
from app.schemas.delivery import RejectedRow, TargetIn, TargetPublic, TargetsAdded
from app.schemas.mappers import target_public
from app.services.deliveries import sql
from app.services.deliveries.drafts import ensure_editable, load
from app.services.imports import MAX_RECORD_CHARS, CsvReader, Row

INSERT_BATCH = 5_000
MAX_FIELDS_JSON = 16_384


def _fields_json(fields: Mapping[str, Any]) -> tuple[str, str | None]:
    """A target's extra fields as the JSON stored, and why they are refused, if they are."""
    stored = json.dumps(fields, ensure_ascii=False)
    if len(stored) > MAX_FIELDS_JSON:
        return stored, f"the extra fields are larger than {MAX_FIELDS_JSON} bytes as JSON"
    return stored, None


@dataclass
class _Batch:
    """Targets waiting to be inserted, and what was counted so far."""

    rows: list[tuple[str, str | None, str]]
    received: int = 0
    duplicates_in_request: int = 0
    rejected: int = 0
    added: int = 0
    duplicates: int = 0


async def _flush_targets(session: AsyncSession, delivery: Delivery, batch: _Batch) -> None:
    if not batch.rows:
        return
    ids, addresses, fields = zip(*batch.rows, strict=True)
    added = await session.scalar(
        sql.INSERT_TARGETS,
        {"delivery_id": delivery.id, "ids": ids, "addresses": addresses, "fields": fields},
    )
    batch.added += int(added or 0)
    batch.duplicates += len(batch.rows) - int(added or 0)
    batch.rows = []


async def _start_adding(session: AsyncSession, delivery_id: str) -> Delivery:
    delivery = await load(session, delivery_id, lock=True)
    ensure_editable(delivery)
    return delivery


async def _finish_adding(
    session: AsyncSession, delivery: Delivery, batch: _Batch, errors: list[RejectedRow]
) -> TargetsAdded:
    await _flush_targets(session, delivery, batch)
    total = await session.scalar(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            recipient_count=Delivery.recipient_count + batch.added,
            status=DeliveryStatus.draft.value,
            analysis=None,
            updated_at=func.now(),
        )
        .returning(Delivery.recipient_count)
        .execution_options(synchronize_session=False)
    )
    return TargetsAdded(
        received=batch.received,
        added=batch.added,
        duplicates=batch.duplicates + batch.duplicates_in_request,
        rejected=batch.rejected,
        errors=errors[:100],
        recipients=int(total or 0),
    )


async def add_targets(
    session: AsyncSession, *, delivery_id: str, targets: list[TargetIn]
) -> TargetsAdded:
    delivery = await _start_adding(session, delivery_id)
    batch = _Batch(rows=[])
    errors: list[RejectedRow] = []
    seen: set[str] = set()
    for index, target in enumerate(targets):
        batch.received += 1
        fields, reason = _fields_json(target.fields)
        if reason:
            batch.rejected += 1
            errors.append(RejectedRow(line=index, recipient_id=target.recipient_id, reason=reason))
            continue
        if target.recipient_id in seen:
            batch.duplicates_in_request += 1
            continue
        seen.add(target.recipient_id)
        batch.rows.append((target.recipient_id, target.address, fields))
    return await _finish_adding(session, delivery, batch, errors)


def _csv_row_error(row: Mapping[str, str | None]) -> str | None:
    recipient_id = (row.get("recipient_id") or "").strip()
    if not recipient_id:
        return "recipient_id is empty"
    if len(recipient_id) > 200:
        return "recipient_id is longer than 200 characters"
    if len(row.get("address") or "") > 320:
        return "address is longer than 320 characters"
    if any("\x00" in (value or "") for value in row.values()):
        return "contains a NUL character"
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refusal(reason: str) -> str:
    """The reader's refusals of a record (app/services/imports/readers.py), as this list
    reports them: both kinds of a quote left open are an unbalanced quote here."""
    if reason == "unbalanced quote":
        return f"unbalanced quotes: no record ends within {MAX_RECORD_CHARS} characters"
    if reason.endswith("unexpected end of data"):
        return "unbalanced quotes: the field is never closed"
    return reason


async def _csv_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[Row]:
    """The records of a UTF-8 CSV (a BOM is dropped) as they arrive, never the whole
    body; the import reader cuts them, so quoted line breaks and open quotes are
    handled as for imports. Column counts are checked by the caller against the header."""
    reader = CsvReader(encoding="utf-8", delimiter=",", quotechar='"', header=False, ragged=True)
    async for chunk in chunks:
        for row in reader.feed(chunk):
            yield row
    for row in reader.close():
        yield row


async def add_targets_csv(
    session: AsyncSession, *, delivery_id: str, chunks: AsyncIterator[bytes]
) -> TargetsAdded:
    """A CSV with a header: ``recipient_id``, optional ``address``, and any other columns
    as extra fields for the template. Read as it arrives, inserted in batches."""
    delivery = await _start_adding(session, delivery_id)
    batch = _Batch(rows=[])
    errors: list[RejectedRow] = []
    header: list[str] | None = None

    def reject(line: int, recipient_id: str | None, reason: str) -> None:
        batch.rejected += 1
        errors.append(RejectedRow(line=line, recipient_id=recipient_id, reason=reason))

    def handle(record: list[str], line: int) -> None:
        assert header is not None
        if len(record) != len(header):
            reject(line, None, f"{len(record)} columns where the header has {len(header)}")
            return
        row = dict(zip(header, record, strict=True))
        reason = _csv_row_error(row)
        if reason is None:
            extra = {k: v for k, v in row.items() if k not in ("recipient_id", "address")}
            fields, reason = _fields_json(extra)
        if reason:
            shown = (row.get("recipient_id") or "")[:200].replace("\x00", "\ufffd")
            reject(line, shown or None, reason)
            return
        # Repeats within the file are found by the insert (first one kept), like
        # targets already in the list: no set of every id seen is kept in memory.
        address = (row.get("address") or "").strip() or None
        batch.rows.append((row["recipient_id"].strip(), address, fields))

    async for row in _csv_rows(chunks):
        if any(_SURROGATE.search(cell) for cell in row.values):
            raise ValidationFailed("The CSV is not valid UTF-8.")
        if header is None and row.reason is None:
            header = [name.strip() for name in row.values]
            if "recipient_id" not in header:
                raise ValidationFailed(
                    "The CSV header needs a recipient_id column (and may have address and "
                    "any extra fields).",
                    header=header[:50],
                )
            if len(set(header)) != len(header):
                raise ValidationFailed("The CSV header names a column twice.")
            continue
        batch.received += 1
        if row.reason is not None:
            reject(row.line, None, _refusal(row.reason))
            continue
        handle(row.values, row.line)
        if len(batch.rows) >= INSERT_BATCH:
            await _flush_targets(session, delivery, batch)
    if header is None:
        raise ValidationFailed("The CSV is empty: it needs a header with recipient_id.")
    return await _finish_adding(session, delivery, batch, errors)


async def list_targets(
    session: AsyncSession, *, delivery_id: str, params: PageParams
) -> tuple[list[TargetPublic], list[int]]:
    """The target list in the order it was built, with each target's code, and the seqs
    (for the cursor)."""
    delivery = await load(session, delivery_id)
    values: dict[str, Any] = {
        "delivery_id": delivery.id,
        "after": decode_id_cursor(params.cursor) if params.cursor is not None else 0,
        "limit": params.limit + 1,
    }
    if delivery.pool_id is None:
        shared_code = await session.scalar(
            select(CouponSet.shared_code).where(CouponSet.id == delivery.coupon_set_id)
        )
        values |= {"set_id": delivery.coupon_set_id, "shared_code": shared_code}
        rows = (await session.execute(sql.TARGETS_SHARED, values)).all()
    else:
        rows = (
            await session.execute(sql.TARGETS_UNIQUE, {**values, "pool_id": delivery.pool_id})
        ).all()
    items = [target_public(r) for r in rows]
    return items, [r.seq for r in rows]
