"""The staged path: every record by COPY into the job's staging table, then ONE
transaction merges them. For codes: repeats are marked (the first occurrence wins), one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``codes`` (the unique index settles
races with concurrent writers), the report, the job's counts and its audit row. For
redemptions: each row through the API's own redeem.

This module takes the job's plain asyncpg connection and opens the merge's transaction
on it (as jobs.py and copy.py do); a redemption import runs in an ORM session of its
own, whose connection also writes the report, so both commit together."""

import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import session_driver
from app.errors import AppError
from app.models.audit import AuditAction
from app.models.import_job import ImportKind, ImportMode
from app.schemas.redemption import RedemptionRequest
from app.services import redemptions
from app.services.imports import reports, sql
from app.services.imports.jobs import Job
from app.services.imports.rows import Record, Rows, reader_for, shown

logger = logging.getLogger(__name__)


async def stage(job: Job, chunks: AsyncIterator[bytes], rows: Rows) -> None:
    """Streams the file into the staging table and computes its checksum: ONE COPY fed
    as the upload is parsed, so PostgreSQL stores rows while Python parses the next."""
    reader = reader_for(job.options)
    digest = hashlib.sha256()
    records = job.stream(chunks, reader, functools.partial(job.read, rows, reader), digest)
    await job.copy_in(sql.STAGING, records, Record._fields)
    job.checksum = digest.hexdigest()


async def merge(job: Job, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Merges a staged job; a merge that fails keeps nothing and fails the job. The job
    is closed in every case."""
    began = time.monotonic()
    try:
        if job.options.kind is ImportKind.codes:
            await _merge_codes(job)
        else:
            await _merge_redemptions(job, sessionmaker)
        logger.info("import %s: merged in %.1f s", job.id, time.monotonic() - began)
    except Exception as exc:
        if job.conn.is_closed():
            logger.exception("import job %s failed", job.id)
        else:
            try:
                await job.fail_with(exc)
            except Exception:
                logger.exception("could not mark import job %s failed", job.id)
    finally:
        await job.close()


async def _merge_codes(job: Job) -> None:
    conn = job.conn
    async with conn.transaction():
        await conn.execute(sql.MERGE_WORK_MEM)
        await conn.execute(sql.MARK_REPEATS)
        set_id = job.coupon_set.id
        if await conn.fetchval(sql.SET_HAS_CODES, set_id):
            await conn.execute(sql.MARK_IN_SET, set_id)
        counts = await conn.fetchrow(sql.STAGED_COUNTS)
        assert counts is not None
        rejected, candidates = int(counts["rejected"]), int(counts["candidates"])
        refused = job.options.mode is ImportMode.all_or_nothing and rejected > 0
        accepted = 0 if refused else int(await conn.fetchval(sql.INSERT_CODES, set_id))
        await conn.execute(sql.REPORT_STAGED, job.id)
        # Repeats and codes found in the set, plus any a concurrent writer added meanwhile.
        repeated = job.rows_read - rejected - candidates
        duplicates = repeated if refused else repeated + candidates - accepted
        await job.finish(
            conn,
            accepted=accepted,
            duplicates=duplicates,
            rejected=rejected,
            action=AuditAction.import_codes,
        )


class _Rollback(Exception):
    pass


async def _merge_redemptions(job: Job, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Each row through the API's own redeem (its locks, limits and audit row), each in a
    savepoint; every row, the report and the job's counts in one transaction, so a crash
    keeps none of them."""
    conn = job.conn
    refused: list[tuple[int, str | None, str | None]] = []  # line, code, reason
    accepted = 0
    try:
        async with sessionmaker() as session, session.begin():
            last = 0
            while rows := await conn.fetch(sql.STAGED_REDEMPTIONS, last):
                last = rows[-1]["n"]
                for row in rows:
                    if row["reason"] is not None:
                        refused.append((row["line"], shown(row["code"]), row["reason"]))
                        continue
                    data = RedemptionRequest.model_validate_json(row["metadata"]).model_copy(
                        update={"set": str(job.coupon_set.id)}
                    )
                    try:
                        async with session.begin_nested():
                            await redemptions.redeem(
                                session,
                                data=data,
                                actor=job.actor,
                                idempotency_key=job.idempotency_key,
                            )
                    except AppError as refusal:
                        reason = f"{refusal.slug}: {refusal.detail}"
                        refused.append((row["line"], shown(row["code"]), reason))
                    else:
                        accepted += 1
            if job.options.mode is ImportMode.all_or_nothing and refused:
                raise _Rollback
            # The session's own connection: the report commits with the redemptions.
            await _redemption_report(await session_driver(session), job, refused, accepted=accepted)
    except _Rollback:
        async with conn.transaction():
            await _redemption_report(conn, job, refused, accepted=0)


async def _redemption_report(
    conn: asyncpg.Connection,
    job: Job,
    refused: list[tuple[int, str | None, str | None]],
    *,
    accepted: int,
) -> None:
    await reports.write_errors(conn, job.id, refused)
    await job.finish(
        conn,
        accepted=accepted,
        duplicates=0,
        rejected=len(refused),
        action=AuditAction.import_redemptions,
    )
