"""Deliveries: target lists, the pre-send analysis, confirm and the messages.

Confirm hands codes out in a few set-based statements per batch of targets (see
``_CLAIM_BATCH``), each batch its own short transaction, so a million-target delivery
never holds one long transaction that would slow every other claim. The whole confirm
is all or nothing from the outside: when it cannot finish (codes ran out under a
concurrent load, the service stopped, the database failed) the codes it took go back
to the pool and the delivery is ``failed`` with the reason, so confirming again starts
from a clean state and never gives anyone a second code. The messages can only be
exported once the delivery is ``finished``, so a code taken back was never sent."""

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import locks
from app.db import session_driver
from app.errors import (
    DeliveryNotEditable,
    DeliveryNotFinished,
    InsufficientCodes,
    NotFound,
    ValidationFailed,
)
from app.models.api_key import ApiKey
from app.models.code import free
from app.models.coupon_set import CouponSet, SetKind
from app.models.delivery import (
    Analysis,
    Delivery,
    DeliveryCreate,
    DeliveryPublic,
    DeliveryRecipient,
    DeliveryStatus,
    DeliveryUpdate,
    FailuresRecorded,
    PoolAvailability,
    Preview,
    RejectedRow,
    TargetIn,
    TargetPublic,
    TargetsAdded,
)
from app.models.pool import DEFAULT_POOL, Pool
from app.pagination import PageParams, decode_id_cursor, paginate
from app.services import coupon_sets, pools
from app.services.assignments import ensure_usable
from app.services.coupon_sets import parse_id
from app.services.import_files import MAX_RECORD_CHARS, CsvReader, Row
from app.services.templates import Compiled

logger = logging.getLogger(__name__)

EDITABLE = (DeliveryStatus.draft, DeliveryStatus.analyzed)
BATCH = 20_000
INSERT_BATCH = 5_000
MAX_FIELDS_JSON = 16_384
PLACEHOLDER = "[coupon code: assigned at confirm]"


# ---------------------------------------------------------------------------- reading


def _key(delivery_id: str) -> uuid.UUID:
    """The delivery's id; anything else names no delivery."""
    key = parse_id(delivery_id)
    if key is None:
        raise NotFound(f"No delivery has the id '{delivery_id}'.")
    return key


async def _load(session: AsyncSession, delivery_id: str, *, lock: bool = False) -> Delivery:
    key = _key(delivery_id)
    stmt = select(Delivery).where(Delivery.id == key)
    if lock:
        stmt = stmt.with_for_update()
    delivery = (await session.execute(stmt)).scalar_one_or_none()
    if delivery is None:
        raise NotFound(f"No delivery has the id '{delivery_id}'.")
    return delivery


async def get_delivery(session: AsyncSession, delivery_id: str) -> Delivery:
    return await _load(session, delivery_id)


async def _names(session: AsyncSession, delivery: Delivery) -> tuple[str, str | None]:
    """The set's key and the pool's name, for the public view."""
    key = await session.scalar(select(CouponSet.key).where(CouponSet.id == delivery.coupon_set_id))
    pool = None
    if delivery.pool_id is not None:
        pool = await session.scalar(select(Pool.name).where(Pool.id == delivery.pool_id))
    return key or "", pool


def public(delivery: Delivery, *, set_key: str, pool: str | None) -> DeliveryPublic:
    messages = None
    if delivery.status in (DeliveryStatus.sending, DeliveryStatus.finished):
        messages = delivery.analysis.get("messages") if delivery.analysis else None
    return DeliveryPublic(
        id=delivery.id,
        label=delivery.label,
        coupon_set_id=delivery.coupon_set_id,
        coupon_set_key=set_key,
        pool=pool,
        channel=delivery.channel,  # type: ignore[arg-type]
        subject=delivery.subject,
        template=delivery.template,
        content_type=delivery.content_type,  # type: ignore[arg-type]
        status=delivery.status,  # type: ignore[arg-type]
        message_limit=delivery.message_limit,
        metadata=delivery.metadata_,
        recipients=delivery.recipient_count,
        messages=messages,
        processed=delivery.processed,
        assigned=delivery.assigned,
        kept=delivery.kept,
        failed_messages=delivery.failed_messages,
        failure_reason=delivery.failure_reason,
        analysis=Analysis.model_validate(delivery.analysis) if delivery.analysis else None,
        confirmed_at=delivery.confirmed_at,
        finished_at=delivery.finished_at,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
    )


async def public_of(session: AsyncSession, delivery: Delivery) -> DeliveryPublic:
    set_key, pool = await _names(session, delivery)
    return public(delivery, set_key=set_key, pool=pool)


async def list_deliveries(
    session: AsyncSession,
    *,
    coupon_set_ref: str | None,
    status: DeliveryStatus | None,
    params: PageParams,
) -> list[tuple[Delivery, str, str | None]]:
    stmt = (
        select(Delivery, CouponSet.key, Pool.name)
        .join(CouponSet, CouponSet.id == Delivery.coupon_set_id)
        .outerjoin(Pool, Pool.id == Delivery.pool_id)
    )
    if coupon_set_ref is not None:
        coupon_set = await coupon_sets.get_coupon_set(session, coupon_set_ref)
        stmt = stmt.where(Delivery.coupon_set_id == coupon_set.id)
    if status is not None:
        stmt = stmt.where(Delivery.status == status.value)
    page: Select[Any] = paginate(stmt, Delivery, params)  # type: ignore[arg-type]
    rows = await session.execute(page)
    return [(row[0], row[1], row[2]) for row in rows.all()]


# ---------------------------------------------------------------------------- writing


def _compile(delivery: Delivery) -> Compiled:
    return Compiled(
        subject=delivery.subject,
        body=delivery.template,
        html=delivery.content_type == "html",
    )


async def create_delivery(
    session: AsyncSession, *, data: DeliveryCreate, actor: ApiKey
) -> tuple[Delivery, str, str | None]:
    coupon_set = await coupon_sets.get_coupon_set(session, data.coupon_set_id)
    pool: Pool | None = None
    if coupon_set.kind == SetKind.unique:
        pool = await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool or DEFAULT_POOL)
    elif data.pool is not None:
        await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool)  # refuses
    delivery = Delivery(
        label=data.label,
        coupon_set_id=coupon_set.id,
        pool_id=pool.id if pool else None,
        channel=data.channel.value,
        subject=data.subject,
        template=data.template,
        content_type=data.content_type.value,
        status=DeliveryStatus.draft.value,
        message_limit=data.message_limit,
        metadata_=data.metadata,
        api_key_id=actor.id,
        recipient_count=0,
        processed=0,
        assigned=0,
        kept=0,
        failed_messages=0,
    )
    _compile(delivery)  # a template error is refused before anything is stored
    session.add(delivery)
    await session.flush()
    await session.refresh(delivery)
    return delivery, coupon_set.key, pool.name if pool else None


def _ensure_editable(delivery: Delivery) -> None:
    if delivery.status not in EDITABLE:
        raise DeliveryNotEditable(
            f"The delivery is {delivery.status}; only a draft or analysed delivery changes. "
            "Create a new delivery instead.",
            delivery_status=delivery.status,
        )


async def update_delivery(
    session: AsyncSession, *, delivery_id: str, data: DeliveryUpdate
) -> Delivery:
    delivery = await _load(session, delivery_id, lock=True)
    _ensure_editable(delivery)
    for name in data.model_fields_set:
        value = getattr(data, name)
        if name in ("label", "metadata", "content_type", "channel") and value is None:
            raise ValidationFailed(f"{name} cannot be null.")
        attribute = "metadata_" if name == "metadata" else name
        setattr(delivery, attribute, getattr(value, "value", value))
    _compile(delivery)
    delivery.status = DeliveryStatus.draft.value
    delivery.analysis = None
    await session.flush()
    await session.refresh(delivery)
    return delivery


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


_INSERT_TARGETS = text(
    """
    WITH added AS (
        INSERT INTO delivery_recipients (delivery_id, recipient_id, address, fields)
        SELECT :delivery_id, t.recipient_id, t.address, t.fields::jsonb
        FROM unnest(CAST(:ids AS text[]), CAST(:addresses AS text[]), CAST(:fields AS text[]))
             WITH ORDINALITY AS t(recipient_id, address, fields, n)
        ORDER BY t.n
        ON CONFLICT (delivery_id, recipient_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM added
    """
)


async def _flush_targets(session: AsyncSession, delivery: Delivery, batch: _Batch) -> None:
    if not batch.rows:
        return
    ids, addresses, fields = zip(*batch.rows, strict=True)
    added = await session.scalar(
        _INSERT_TARGETS,
        {"delivery_id": delivery.id, "ids": ids, "addresses": addresses, "fields": fields},
    )
    batch.added += int(added or 0)
    batch.duplicates += len(batch.rows) - int(added or 0)
    batch.rows = []


async def _start_adding(session: AsyncSession, delivery_id: str) -> Delivery:
    delivery = await _load(session, delivery_id, lock=True)
    _ensure_editable(delivery)
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
    """The reader's refusals of a record (app/services/import_files.py), as this list
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


# ---------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class _Plan:
    targets: int
    messages: int
    last_seq: int
    holding: int


# Targets (up to the limit's last one) who already hold a primary code of the pool
# ($3 = pool id) or, for a shared set, the shared code ($3 = set id).
_HOLDING = """
    SELECT count(*) FROM delivery_recipients dr
    WHERE dr.delivery_id = $1 AND dr.seq <= $2
      AND EXISTS (SELECT 1 FROM {table} h
                  WHERE h.{owner} = $3 AND h.recipient_id = dr.recipient_id
                    AND NOT h.additional)
"""
_HOLDING_CODE = _HOLDING.format(table="codes", owner="pool_id")
_HOLDING_SHARED = _HOLDING.format(table="shared_assignments", owner="set_id")
# Free codes per pool of the set; a free code held at a checkout is not free.
_FREE = """
    SELECT p.id, p.name, count(c.id) AS available
    FROM pools p
    LEFT JOIN codes c ON c.pool_id = p.id AND {free_c}
    WHERE p.set_id = $1
    GROUP BY p.id, p.name
    ORDER BY p.name
""".format(free_c=free("c"))  # noqa: S608 - built from constants only


async def _plan(connection: asyncpg.Connection, delivery: Delivery) -> _Plan:
    targets = delivery.recipient_count  # kept with the list, under the delivery's lock
    limit = delivery.message_limit
    messages = targets if limit is None else min(limit, targets)
    last_seq = 0
    if messages > 0:
        last_seq = int(
            await connection.fetchval(
                """SELECT seq FROM delivery_recipients WHERE delivery_id = $1
                   ORDER BY seq OFFSET $2 LIMIT 1""",
                delivery.id,
                messages - 1,
            )
        )
    if delivery.pool_id is None:
        holding = await connection.fetchval(
            _HOLDING_SHARED, delivery.id, last_seq, delivery.coupon_set_id
        )
    else:
        holding = await connection.fetchval(_HOLDING_CODE, delivery.id, last_seq, delivery.pool_id)
    return _Plan(targets=targets, messages=messages, last_seq=last_seq, holding=int(holding))


async def _analysis(
    connection: asyncpg.Connection, delivery: Delivery, coupon_set: CouponSet, plan: _Plan
) -> Analysis:
    log = [
        f"{plan.targets} targets in the list.",
        f"Message limit {delivery.message_limit}: {plan.messages} messages."
        if delivery.message_limit is not None
        else f"No message limit: {plan.messages} messages.",
    ]
    per_pool: list[PoolAvailability] = []
    available = needed = 0
    if delivery.pool_id is None:
        log.append(f"The set '{coupon_set.key}' is shared: every message gets its one code.")
    else:
        rows = await connection.fetch(_FREE, coupon_set.id)
        per_pool = [PoolAvailability(pool=r["name"], available=r["available"]) for r in rows]
        own = next(r for r in rows if r["id"] == delivery.pool_id)
        available = int(own["available"])
        needed = plan.messages - plan.holding
        log.append(
            f"{plan.holding} of them already hold a code of the pool '{own['name']}' and "
            f"keep it; {needed} codes are needed."
        )
        log.append(f"{available} free codes in the pool '{own['name']}'.")
    shortfall = max(0, needed - available)
    if shortfall:
        log.append(
            f"Not enough codes: {shortfall} missing. Add codes to the pool, or set a "
            f"message_limit of at most {plan.holding + available}."
        )
    else:
        log.append("Enough codes: the delivery can be confirmed.")
    return Analysis(
        targets=plan.targets,
        messages=plan.messages,
        message_limit=delivery.message_limit,
        already_holding=plan.holding,
        codes_needed=needed,
        codes_available=available,
        pools=per_pool,
        enough=shortfall == 0,
        shortfall=shortfall,
        log=log,
        analyzed_at=datetime.now(UTC),
    )


async def analyze(session: AsyncSession, *, delivery_id: str) -> Delivery:
    delivery = await _load(session, delivery_id, lock=True)
    coupon_set = await session.get_one(CouponSet, delivery.coupon_set_id)
    connection = await session_driver(session)
    plan = await _plan(connection, delivery)
    result = await _analysis(connection, delivery, coupon_set, plan)
    delivery.analysis = result.model_dump(mode="json")
    if delivery.status in EDITABLE:
        delivery.status = DeliveryStatus.analyzed.value
    await session.flush()
    await session.refresh(delivery)
    return delivery


# ---------------------------------------------------------------------------- confirm

# The targets of one batch, both for unique and shared sets: those after ``after_seq``
# (in list order), up to the last one the message limit keeps.
_BATCH = """
WITH batch AS MATERIALIZED (
    SELECT dr.seq, dr.recipient_id, dr.address
    FROM delivery_recipients dr
    WHERE dr.delivery_id = $1 AND dr.seq > $2 AND dr.seq <= $3
    ORDER BY dr.seq
    LIMIT $4
)"""

# One batch of a unique set, in one statement: its targets (``_BATCH``); those who
# hold no code of the pool yet; as many free codes, locked with SKIP LOCKED so
# concurrent claims and other deliveries pass them by (MATERIALIZED with LIMIT: exactly
# that many rows, never more; PostgreSQL bug #15715); paired by row number; each
# pairing written on the code row and audited. A target who gets a code from a single
# assignment meanwhile makes the UPDATE hit uq_codes_recipient: the batch is rolled
# back and run again, and that target then keeps the code they got.
_CLAIM_BATCH = (
    _BATCH
    + """, need AS MATERIALIZED (
    -- LATERAL with LIMIT: one index probe per target. (NOT EXISTS would be planned as
    -- an anti join that hashes every recipient of the pool, which grows as it fills.)
    SELECT b.recipient_id, b.address, row_number() OVER (ORDER BY b.seq) AS rn
    FROM batch b
    LEFT JOIN LATERAL (
        SELECT true AS held FROM codes c
        WHERE c.pool_id = $5 AND c.recipient_id = b.recipient_id AND NOT c.additional
        LIMIT 1
    ) h ON true
    WHERE h.held IS NULL
), free AS MATERIALIZED (
    SELECT c.id FROM codes c
    WHERE c.pool_id = $5 AND c.id > $10 AND {free_c}
    ORDER BY c.id
    LIMIT (SELECT count(*) FROM need)
    FOR UPDATE SKIP LOCKED
), pairs AS MATERIALIZED (
    -- Paired by row number, then handed to the UPDATE as arrays: unnest() keeps the
    -- planner to one primary-key probe per code (a join on the CTE got a hash join
    -- over a scan of the whole codes table).
    SELECT array_agg(f.id ORDER BY f.rn) AS ids,
           array_agg(need.recipient_id ORDER BY f.rn) AS recipient_ids,
           array_agg(need.address ORDER BY f.rn) AS addresses
    FROM (SELECT free.id, row_number() OVER (ORDER BY free.id) AS rn FROM free) f
    JOIN need USING (rn)
), claimed AS (
    UPDATE codes c
    SET status = 'assigned', recipient_id = u.recipient_id, address = u.address,
        channel = $7, delivery_id = $8, additional = false, assigned_at = now()
    FROM pairs, unnest(pairs.ids, pairs.recipient_ids, pairs.addresses)
         AS u(id, recipient_id, address)
    WHERE c.id = u.id
    RETURNING c.id, c.code, c.recipient_id
), audited AS (
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id, details)
    SELECT $6, 'assign', claimed.code, claimed.recipient_id, $9, $11::jsonb
    FROM claimed
)
SELECT (SELECT max(seq) FROM batch) AS last_seq,
       (SELECT count(*) FROM batch) AS targets,
       (SELECT count(*) FROM need) AS needed,
       (SELECT count(*) FROM claimed) AS claimed,
       (SELECT max(id) FROM claimed) AS max_id
""".format(free_c=free("c"))  # noqa: S608 - built from constants only
)

_SHARE_BATCH = (
    _BATCH  # noqa: S608 - built from constants only
    + """, shared AS (
    INSERT INTO shared_assignments (set_id, recipient_id, address, channel, delivery_id)
    SELECT $5, b.recipient_id, b.address, $6, $7 FROM batch b ORDER BY b.seq
    ON CONFLICT (set_id, recipient_id) WHERE NOT additional DO NOTHING
    RETURNING recipient_id
), audited AS (
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id, details)
    SELECT $5, 'assign', $9::text, shared.recipient_id, $8,
           jsonb_build_object('delivery_id', $7::text)
    FROM shared
)
SELECT (SELECT max(seq) FROM batch) AS last_seq,
       (SELECT count(*) FROM batch) AS targets,
       (SELECT count(*) FROM shared) AS claimed
"""
)

# Give back what a delivery handed out, to every target or only to some ($4). Only
# codes this delivery gave and nobody used: a code a target held already stays theirs.
_RETURN_CODES = """
WITH returned AS (
    UPDATE codes c
    SET status = 'available', recipient_id = NULL, address = NULL, channel = NULL,
        delivery_id = NULL, assigned_at = NULL
    FROM delivery_recipients dr
    WHERE dr.delivery_id = $1 AND ($4::text[] IS NULL OR dr.recipient_id = ANY($4))
      AND c.pool_id = $2 AND c.recipient_id = dr.recipient_id AND NOT c.additional
      AND c.delivery_id = $3 AND c.status = 'assigned'
    RETURNING c.code, dr.recipient_id
), audited AS (
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id, details)
    SELECT $5, 'unassign', returned.code, returned.recipient_id, $6,
           jsonb_build_object('delivery_id', $3::text, 'reason', $7::text)
    FROM returned
)
SELECT returned.recipient_id FROM returned
"""

_RETURN_SHARED = """
WITH returned AS (
    DELETE FROM shared_assignments a
    USING delivery_recipients dr
    WHERE dr.delivery_id = $1 AND ($4::text[] IS NULL OR dr.recipient_id = ANY($4))
      AND a.set_id = $2 AND a.recipient_id = dr.recipient_id AND a.delivery_id = $3
    RETURNING a.recipient_id
), audited AS (
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id, details)
    SELECT $2, 'unassign', $5::text, returned.recipient_id, $6,
           jsonb_build_object('delivery_id', $3::text, 'reason', $7::text)
    FROM returned
)
SELECT returned.recipient_id FROM returned
"""


class _Stopped(Exception):
    """The service is stopping: the confirm gives its codes back and ends ``failed``."""


class _Shortage(Exception):
    """Codes ran out while a confirm was running (taken by concurrent claims)."""


def _lock_name(delivery_id: uuid.UUID) -> str:
    """The advisory lock a running confirm holds on its connection; it is free again the
    moment that connection ends, so a crashed confirm is recognised as such."""
    return locks.name(locks.Namespace.CONFIRM, delivery_id)


@dataclass
class _Run:
    delivery_id: uuid.UUID
    set_id: uuid.UUID
    pool_id: uuid.UUID | None
    pool_name: str | None
    shared_code: str | None
    channel: str | None
    last_seq: int
    api_key_id: uuid.UUID | None

    @property
    def audit_details(self) -> str:
        """The details of each ``assign`` audit row, the same for the whole confirm."""
        return json.dumps({"pool": self.pool_name, "delivery_id": str(self.delivery_id)})


class Confirmations:
    """The confirms running in this process; stopped cleanly at shutdown."""

    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = BATCH, workers: int = 2) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.workers = workers
        self.tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()

    async def stop(self) -> None:
        self.stopping.set()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def recover(self) -> None:
        """At start: a delivery left ``sending`` by a process that is gone (its lock is
        free) gives its codes back and becomes ``failed``; confirming again starts over.
        A database that is not there yet only postpones this to the next confirm of
        such a delivery, which does the same."""
        try:
            await self._recover()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("could not look for interrupted deliveries at start: %s", exc)

    async def _recover(self) -> None:
        async with self.pool.acquire() as connection:
            stale = await connection.fetch("SELECT id FROM deliveries WHERE status = 'sending'")
            for row in stale:
                if await connection.fetchval(locks.TRY_SESSION_LOCK, _lock_name(row["id"])):
                    try:
                        run = await _run_of(connection, row["id"])
                        if run is not None:
                            await _fail(connection, run, "interrupted: the service restarted")
                    finally:
                        await connection.execute(locks.SESSION_UNLOCK, _lock_name(row["id"]))

    async def confirm(
        self, *, delivery_id: str, actor: ApiKey, wait: float
    ) -> tuple[uuid.UUID, bool]:
        """Start (or find) the confirm of a delivery; wait up to ``wait`` seconds for it.
        Returns the id and whether the delivery is no longer ``sending``."""
        key = _key(delivery_id)
        running = self.tasks.get(key)
        if running is None:
            connection: asyncpg.Connection = await self.pool.acquire()
            try:
                started = await _begin(connection, key, actor)
            except BaseException:
                await self.pool.release(connection)
                raise
            if started is None:  # finished already, or running elsewhere
                await self.pool.release(connection)
                return key, await _settled(self.pool, key)
            running = asyncio.create_task(self._work(connection, started))
            self.tasks[key] = running
            running.add_done_callback(lambda _: self.tasks.pop(key, None))
        try:
            await asyncio.wait_for(asyncio.shield(running), timeout=wait)
        except TimeoutError:
            return key, False
        return key, True

    async def _work(self, connection: asyncpg.Connection, run: _Run) -> None:
        try:
            try:
                await self._claim_all(connection, run)
            except _Shortage as exc:
                await _fail(connection, run, f"insufficient-codes: {exc}")
            except _Stopped:
                await _fail(connection, run, "interrupted: the service stopped")
            except asyncio.CancelledError:
                await _fail(connection, run, "interrupted: the confirm was cancelled")
                raise
            except Exception as exc:
                logger.exception("confirm of delivery %s failed", run.delivery_id)
                await _fail(connection, run, f"error: {type(exc).__name__}")
        except Exception:
            # The database is gone: the lock goes with the connection, and the next
            # start (or confirm) finds the delivery sending with a free lock.
            logger.exception("could not record the end of delivery %s", run.delivery_id)
            connection.terminate()
        finally:
            if not connection.is_closed():
                await connection.execute("SELECT pg_advisory_unlock_all()")
            await self.pool.release(connection)

    async def _claim_all(self, connection: asyncpg.Connection, run: _Run) -> None:
        """On the run's own connection (which holds its lock) and on ``workers - 1``
        more from the pool."""
        async with contextlib.AsyncExitStack() as stack:
            extra = [
                await stack.enter_async_context(self.pool.acquire())
                for _ in range(self.workers - 1)
            ]
            await _claim_all([connection, *extra], run, self.stopping, self.batch_size)


async def _settled(pool: asyncpg.Pool, key: uuid.UUID) -> bool:
    status = await pool.fetchval("SELECT status FROM deliveries WHERE id = $1", key)
    return bool(status != DeliveryStatus.sending)


async def _run_of(connection: asyncpg.Connection, key: uuid.UUID) -> _Run | None:
    row = await connection.fetchrow(
        """SELECT d.id, d.coupon_set_id, d.pool_id, p.name AS pool_name, s.shared_code,
                  d.channel, d.last_seq, d.api_key_id
           FROM deliveries d JOIN coupon_sets s ON s.id = d.coupon_set_id
           LEFT JOIN pools p ON p.id = d.pool_id WHERE d.id = $1""",
        key,
    )
    if row is None:
        return None
    return _Run(
        delivery_id=row["id"],
        set_id=row["coupon_set_id"],
        pool_id=row["pool_id"],
        pool_name=row["pool_name"],
        shared_code=row["shared_code"],
        channel=row["channel"],
        last_seq=row["last_seq"] or 0,
        api_key_id=row["api_key_id"],
    )


async def _begin(connection: asyncpg.Connection, key: uuid.UUID, actor: ApiKey) -> _Run | None:
    """Take the delivery's lock, check it can be confirmed, and mark it ``sending``.
    None when there is nothing to start: finished, or confirming in another process."""
    if not await connection.fetchval(locks.TRY_SESSION_LOCK, _lock_name(key)):
        exists = await connection.fetchval("SELECT 1 FROM deliveries WHERE id = $1", key)
        if exists is None:
            raise NotFound(f"No delivery has the id '{key}'.")
        return None
    try:
        async with connection.transaction():
            status = await connection.fetchval(
                "SELECT status FROM deliveries WHERE id = $1 FOR UPDATE", key
            )
            if status is None:
                raise NotFound(f"No delivery has the id '{key}'.")
            if status == DeliveryStatus.finished:
                await connection.execute(locks.SESSION_UNLOCK, _lock_name(key))
                return None
            if status == DeliveryStatus.sending:
                # Sending, but nobody holds its lock: the process that ran it is gone.
                run = await _run_of(connection, key)
                assert run is not None
                await _give_back(connection, run, None, "interrupted: confirm run again")
            await _check_and_start(connection, key, actor)
        run = await _run_of(connection, key)
        assert run is not None
        return run
    except BaseException:
        await connection.execute(locks.SESSION_UNLOCK, _lock_name(key))
        raise


async def _delivery_and_set(
    connection: asyncpg.Connection, key: uuid.UUID
) -> tuple[Delivery, CouponSet]:
    """Plain objects (not attached to any session) of the delivery and its set."""
    row = await connection.fetchrow("SELECT * FROM deliveries WHERE id = $1", key)
    assert row is not None
    values = dict(row)
    values["metadata_"] = json.loads(values.pop("metadata"))
    delivery = Delivery(**values)
    found = await connection.fetchrow(
        "SELECT * FROM coupon_sets WHERE id = $1", delivery.coupon_set_id
    )
    assert found is not None
    values = dict(found)
    values["metadata_"] = json.loads(values.pop("metadata"))
    return delivery, CouponSet(**values)


async def _check_and_start(connection: asyncpg.Connection, key: uuid.UUID, actor: ApiKey) -> None:
    """The analysis again, in the confirm's transaction: refused when codes are short."""
    delivery, coupon_set = await _delivery_and_set(connection, key)
    ensure_usable(coupon_set)
    plan = await _plan(connection, delivery)
    result = await _analysis(connection, delivery, coupon_set, plan)
    analysis = json.dumps(result.model_dump(mode="json"))
    if not result.enough:
        raise InsufficientCodes(
            f"The pool has {result.codes_available} free codes and the delivery needs "
            f"{result.codes_needed}: {result.shortfall} missing. Add codes or set a "
            "message_limit, then analyse again.",
            shortfall=result.shortfall,
            codes_needed=result.codes_needed,
            codes_available=result.codes_available,
            messages=result.messages,
        )
    await connection.execute(
        """UPDATE deliveries SET status = 'sending', analysis = $2::jsonb, last_seq = $3,
               processed = 0, assigned = 0, kept = 0, failure_reason = NULL,
               confirmed_at = now(), finished_at = NULL, api_key_id = $4, updated_at = now()
           WHERE id = $1""",
        key,
        analysis,
        plan.last_seq,
        actor.id,
    )


# The upper seq of every full batch of the targets to message, so batches can run on
# several connections at once, each over its own range of the list.
_BOUNDS = """
SELECT seq FROM (
    SELECT seq, row_number() OVER (ORDER BY seq) AS n
    FROM delivery_recipients WHERE delivery_id = $1 AND seq <= $2
) numbered
WHERE n % $3 = 0
ORDER BY seq
"""


async def _claim_all(
    connections: list[asyncpg.Connection],
    run: _Run,
    stopping: asyncio.Event,
    batch_size: int,
) -> None:
    """Every batch, on as many connections as given (two keep both cores of a small
    machine busy: the work is in PostgreSQL, one backend per connection). Batches take
    disjoint targets, and their codes with SKIP LOCKED, so they never wait on each
    other; a failing batch stops the others after their current one."""
    bounds = [row["seq"] for row in await connections[0].fetch(
        _BOUNDS, run.delivery_id, run.last_seq, batch_size
    )]  # fmt: skip
    if not bounds or bounds[-1] != run.last_seq:
        bounds.append(run.last_seq)
    ranges = list(zip([0, *bounds[:-1]], bounds, strict=True))
    ranges.reverse()  # popped from the end: list order
    failed = asyncio.Event()

    async def work(connection: asyncpg.Connection) -> None:
        hint = 0
        try:
            while ranges and not failed.is_set():
                if stopping.is_set():
                    raise _Stopped
                low, high = ranges.pop()
                hint = await _claim_range(connection, run, low, high, batch_size, hint)
        except BaseException:
            failed.set()
            raise

    results = await asyncio.gather(
        *(work(c) for c in connections[: max(1, len(ranges))]), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    await connections[0].execute(
        """UPDATE deliveries SET status = 'finished', finished_at = now(), updated_at = now()
           WHERE id = $1""",
        run.delivery_id,
    )


async def _claim_range(
    connection: asyncpg.Connection, run: _Run, low: int, high: int, batch_size: int, hint: int
) -> int:
    """The targets with ``low < seq <= high``, in one transaction; returns the scan hint."""
    attempts = 0
    while True:
        attempts += 1
        try:
            async with connection.transaction():
                if run.pool_id is None:
                    row = await connection.fetchrow(
                        _SHARE_BATCH,
                        run.delivery_id, low, high, batch_size, run.set_id,
                        run.channel, str(run.delivery_id), run.api_key_id, run.shared_code,
                    )  # fmt: skip
                    claimed, kept = row["claimed"], row["targets"] - row["claimed"]
                else:
                    row = await connection.fetchrow(
                        _CLAIM_BATCH,
                        run.delivery_id, low, high, batch_size, run.pool_id,
                        run.set_id, run.channel, str(run.delivery_id), run.api_key_id,
                        hint, run.audit_details,
                    )  # fmt: skip
                    if row["claimed"] < row["needed"]:
                        if hint:
                            raise _RetryFromStart
                        raise _Shortage(
                            f"{row['needed'] - row['claimed']} codes were missing when "
                            "other claims took them during the confirm"
                        )
                    claimed, kept = row["claimed"], row["targets"] - row["needed"]
                    hint = max(hint, row["max_id"] or 0)
                await connection.execute(
                    """UPDATE deliveries SET processed = processed + $2,
                           assigned = assigned + $3, kept = kept + $4, updated_at = now()
                       WHERE id = $1""",
                    run.delivery_id,
                    row["targets"],
                    claimed,
                    kept,
                )
            return hint
        except _RetryFromStart:
            hint = 0
        except asyncpg.UniqueViolationError:
            # A target got a code from a single assignment meanwhile: run the batch
            # again; they now keep theirs.
            if attempts >= 20:
                raise


class _RetryFromStart(Exception):
    """Too few codes above the scan hint: the batch is rolled back and looks again from
    the start of the pool, where codes given back meanwhile may be."""


async def _give_back(
    connection: asyncpg.Connection, run: _Run, recipient_ids: list[str] | None, reason: str
) -> list[str]:
    """Return the codes the delivery handed out (to ``recipient_ids``, or to all)."""
    if run.pool_id is None:
        rows = await connection.fetch(
            _RETURN_SHARED,
            run.delivery_id, run.set_id, str(run.delivery_id), recipient_ids,
            run.shared_code, run.api_key_id, reason,
        )  # fmt: skip
    else:
        rows = await connection.fetch(
            _RETURN_CODES,
            run.delivery_id, run.pool_id, str(run.delivery_id), recipient_ids,
            run.set_id, run.api_key_id, reason,
        )  # fmt: skip
    return [row["recipient_id"] for row in rows]


async def _fail(connection: asyncpg.Connection, run: _Run, reason: str) -> None:
    async with connection.transaction():
        await _give_back(connection, run, None, reason)
        await connection.execute(
            """UPDATE deliveries SET status = 'failed', failure_reason = $2, processed = 0,
                   assigned = 0, kept = 0, updated_at = now()
               WHERE id = $1""",
            run.delivery_id,
            reason,
        )


# ---------------------------------------------------------------------------- failures


async def record_failures(
    connection: asyncpg.Connection, *, delivery_id: str, recipient_ids: list[str], actor: ApiKey
) -> FailuresRecorded:
    key = _key(delivery_id)
    wanted = list(dict.fromkeys(recipient_ids))
    async with connection.transaction():
        status = await connection.fetchval(
            "SELECT status FROM deliveries WHERE id = $1 FOR UPDATE", key
        )
        if status is None:
            raise NotFound(f"No delivery has the id '{delivery_id}'.")
        if status != DeliveryStatus.finished:
            raise DeliveryNotFinished(
                f"The delivery is {status}: failures are reported after it finished.",
                delivery_status=status,
            )
        run = await _run_of(connection, key)
        assert run is not None
        marked = await connection.fetch(
            """UPDATE delivery_recipients SET failed_at = now()
               WHERE delivery_id = $1 AND recipient_id = ANY($2) AND seq <= $3
                 AND failed_at IS NULL
               RETURNING recipient_id""",
            key,
            wanted,
            run.last_seq,
        )
        targeted = {
            row["recipient_id"]
            for row in await connection.fetch(
                """SELECT recipient_id FROM delivery_recipients
                   WHERE delivery_id = $1 AND recipient_id = ANY($2) AND seq <= $3""",
                key,
                wanted,
                run.last_seq,
            )
        }
        newly = [row["recipient_id"] for row in marked]
        run.api_key_id = actor.id
        returned = (
            set(await _give_back(connection, run, newly, "message failed")) if newly else set()
        )
        failed = await connection.fetchval(
            """UPDATE deliveries SET failed_messages = failed_messages + $2,
                   assigned = assigned - $3, updated_at = now()
               WHERE id = $1 RETURNING failed_messages""",
            key,
            len(newly),
            len(returned) if run.pool_id is not None else 0,
        )
    return FailuresRecorded(
        returned=len(returned),
        kept=[r for r in newly if r not in returned],
        unknown=[r for r in wanted if r not in targeted],
        failed_messages=int(failed),
    )


# ---------------------------------------------------------------------------- messages


def _context(
    *,
    coupon_set: CouponSet,
    delivery: Delivery,
    recipient_id: str,
    address: str | None,
    fields: Mapping[str, Any],
    code: str | None,
) -> dict[str, Any]:
    return {
        "coupon": {
            "code": code,
            "valid_from": coupon_set.valid_from,
            "valid_until": coupon_set.valid_until,
        },
        "recipient": {**fields, "recipient_id": recipient_id, "address": address},
        "coupon_set": {
            "key": coupon_set.key,
            "label": coupon_set.label,
            "description": coupon_set.description,
            "valid_from": coupon_set.valid_from,
            "valid_until": coupon_set.valid_until,
            "metadata": coupon_set.metadata_,
        },
        "delivery": {
            "id": str(delivery.id),
            "label": delivery.label,
            "channel": delivery.channel,
            "metadata": delivery.metadata_,
        },
    }


async def preview(session: AsyncSession, *, delivery_id: str, recipient_id: str) -> Preview:
    delivery = await _load(session, delivery_id)
    coupon_set = await session.get_one(CouponSet, delivery.coupon_set_id)
    target = (
        await session.execute(
            select(DeliveryRecipient).where(
                DeliveryRecipient.delivery_id == delivery.id,
                DeliveryRecipient.recipient_id == recipient_id,
            )
        )
    ).scalar_one_or_none()
    if target is None:
        raise NotFound(f"The recipient '{recipient_id}' is not a target of this delivery.")
    code: str | None
    if delivery.pool_id is None:
        code, source = coupon_set.shared_code, "shared"
    else:
        held = (
            await session.execute(
                text(
                    """SELECT code, delivery_id FROM codes WHERE pool_id = :pool_id
                       AND recipient_id = :rid AND NOT additional"""
                ),
                {"pool_id": delivery.pool_id, "rid": recipient_id},
            )
        ).first()
        if held is None:
            code, source = None, "placeholder"
        else:
            code = held.code
            source = "assigned" if held.delivery_id == str(delivery.id) else "kept"
    compiled = _compile(delivery)
    subject, body = compiled.render(
        _context(
            coupon_set=coupon_set,
            delivery=delivery,
            recipient_id=target.recipient_id,
            address=target.address,
            fields=target.fields,
            code=code if code is not None else PLACEHOLDER,
        )
    )
    return Preview(
        recipient_id=target.recipient_id,
        address=target.address,
        code=code,
        code_source=source,
        subject=subject,
        body=body,
    )


_TARGETS = """
SELECT dr.seq, dr.recipient_id, dr.address, dr.fields, dr.failed_at, {code} AS code
FROM delivery_recipients dr
{join}
WHERE dr.delivery_id = :delivery_id AND dr.seq > :after
ORDER BY dr.seq
LIMIT :limit
"""
_TARGETS_UNIQUE = text(
    _TARGETS.format(
        code="c.code",
        join="LEFT JOIN codes c ON c.pool_id = :pool_id AND c.recipient_id = dr.recipient_id "
        "AND NOT c.additional",
    )
)
_TARGETS_SHARED = text(
    _TARGETS.format(
        code="CASE WHEN a.id IS NULL THEN NULL ELSE CAST(:shared_code AS text) END",
        join="LEFT JOIN shared_assignments a ON a.set_id = :set_id "
        "AND a.recipient_id = dr.recipient_id AND NOT a.additional",
    )
)


async def list_targets(
    session: AsyncSession, *, delivery_id: str, params: PageParams
) -> tuple[list[TargetPublic], list[int]]:
    """The target list in the order it was built, with each target's code, and the seqs
    (for the cursor)."""
    delivery = await _load(session, delivery_id)
    values: dict[str, Any] = {
        "delivery_id": delivery.id,
        "after": decode_id_cursor(params.cursor) if params.cursor else 0,
        "limit": params.limit + 1,
    }
    if delivery.pool_id is None:
        shared_code = await session.scalar(
            select(CouponSet.shared_code).where(CouponSet.id == delivery.coupon_set_id)
        )
        values |= {"set_id": delivery.coupon_set_id, "shared_code": shared_code}
        rows = (await session.execute(_TARGETS_SHARED, values)).all()
    else:
        rows = (
            await session.execute(_TARGETS_UNIQUE, {**values, "pool_id": delivery.pool_id})
        ).all()
    items = [
        TargetPublic(
            recipient_id=r.recipient_id,
            address=r.address,
            fields=r.fields,
            code=r.code,
            failed_at=r.failed_at,
        )
        for r in rows
    ]
    return items, [r.seq for r in rows]


_MESSAGES = """
SELECT dr.seq, dr.recipient_id, dr.address, dr.fields, {code}
FROM delivery_recipients dr
{join}
WHERE dr.delivery_id = $1 AND dr.seq > $2 AND dr.seq <= $3 AND dr.failed_at IS NULL
ORDER BY dr.seq
LIMIT $4
"""
_MESSAGES_UNIQUE = _MESSAGES.format(
    code="c.code",
    join="LEFT JOIN codes c ON c.pool_id = $5 AND c.recipient_id = dr.recipient_id "
    "AND NOT c.additional",
)
_MESSAGES_SHARED = _MESSAGES.format(code="$5::text AS code", join="")
MESSAGE_PAGE = 2_000


async def messages_source(
    session: AsyncSession, *, delivery_id: str
) -> tuple[Delivery, CouponSet, Compiled]:
    """Everything checked before the first byte of the export is sent."""
    delivery = await _load(session, delivery_id)
    if delivery.status != DeliveryStatus.finished:
        raise DeliveryNotFinished(
            f"The delivery is {delivery.status}: its messages exist once it is finished "
            "(confirm it first).",
            delivery_status=delivery.status,
        )
    coupon_set = await session.get_one(CouponSet, delivery.coupon_set_id)
    return delivery, coupon_set, _compile(delivery)


async def messages(
    pool: asyncpg.Pool, *, delivery: Delivery, coupon_set: CouponSet, compiled: Compiled
) -> AsyncIterator[dict[str, Any]]:
    """Each message in list order, read in pages of short queries (no long transaction)."""
    after = 0
    last_seq = delivery.last_seq or 0
    query = _MESSAGES_SHARED if delivery.pool_id is None else _MESSAGES_UNIQUE
    extra = coupon_set.shared_code if delivery.pool_id is None else delivery.pool_id
    while after < last_seq:
        rows = await pool.fetch(query, delivery.id, after, last_seq, MESSAGE_PAGE, extra)
        if not rows:
            break
        for row in rows:
            fields = json.loads(row["fields"]) if isinstance(row["fields"], str) else row["fields"]
            subject, body = compiled.render(
                _context(
                    coupon_set=coupon_set,
                    delivery=delivery,
                    recipient_id=row["recipient_id"],
                    address=row["address"],
                    fields=fields or {},
                    code=row["code"],
                )
            )
            yield {
                "recipient_id": row["recipient_id"],
                "address": row["address"],
                "code": row["code"],
                "subject": subject,
                "body": body,
            }
        after = rows[-1]["seq"]
