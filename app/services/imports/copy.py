"""The fast path of a file of codes: ONE streaming COPY straight into ``codes``.

This module takes the job's plain asyncpg connection and opens its transaction itself
(as jobs.py and merge.py do): the COPY, the re-send check, the report, the counts and
the audit row commit together. Any repeat (in the file, in the set, or added meanwhile
by another writer) makes the unique index fail the COPY: everything is rolled back and
the staged path (merge.py) takes over, reading the upload again from the copy saved on
disk as it streamed. So does a file with many rejected rows (their report would not fit
in memory)."""

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

import asyncpg
from asyncpg.transaction import Transaction

from app.models.audit import AuditAction
from app.models.import_job import ImportMode
from app.services.imports import reports, sql
from app.services.imports.jobs import Job, StartedImport, load
from app.services.imports.options import refuse_late_fields
from app.services.imports.readers import Row
from app.services.imports.rows import CodeRows, Record, reader_for

_MAX_REJECTS = 10_000  # more rejected rows than this: the staged path


class _GiveWay(Exception):
    """The fast path gives way to the staged one."""


async def copy_direct(
    job: Job,
    chunks: AsyncIterator[bytes],
    rows: CodeRows,
    spool: IO[bytes],
    late_fields: Callable[[], list[str]],
) -> StartedImport | None:
    """The job done by the fast path, or None: take the staged path from ``spool``, which
    then holds the whole upload."""
    reader = reader_for(job.options)
    digest = hashlib.sha256()
    rejects: list[Record] = []
    set_id = job.coupon_set.id

    def codes(parsed: list[Row]) -> list[tuple[Any, ...]]:
        out = []
        for record in job.read(rows, reader, parsed):
            if record.reason is None:
                out.append((set_id, record.pool_id, record.code, record.lookup, record.metadata))
                continue
            rejects.append(record)
            if len(rejects) > _MAX_REJECTS:
                raise _GiveWay
        return out

    transaction = job.conn.transaction()
    await transaction.start()
    try:
        try:
            await job.copy_in(
                "codes", job.stream(chunks, reader, codes, digest, spool), sql.CODE_COLUMNS
            )
        # A deadlock: another upload holds some of these codes uncommitted, in another
        # order; the staged path's ON CONFLICT settles it.
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, _GiveWay):
            await transaction.rollback()
            async for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)
            job.rows_read = 0
            return None
        refuse_late_fields(late_fields())
        job.checksum = digest.hexdigest()
        try:
            finished = await _finish(job, transaction, rejects)
        except Exception as exc:
            # The same answer as a failed merge on the staged path: a failed job.
            if job.conn.is_in_transaction():
                await transaction.rollback()
            await job.fail_with(exc)
            return StartedImport(job=await load(job.conn, job.id), status_code=201)
        if finished is not None:
            return finished
    except BaseException:
        if not job.conn.is_closed() and job.conn.is_in_transaction():
            await transaction.rollback()
        raise
    return StartedImport(job=await load(job.conn, job.id), status_code=201)


async def _finish(
    job: Job, transaction: Transaction, rejects: list[Record]
) -> StartedImport | None:
    """After the COPY: the re-send check, the report, counts and audit row, and the
    commit. An earlier job of the same content is returned instead."""
    existing = await job.imported_before()
    if existing is not None:
        await transaction.rollback()
        await job.conn.execute(sql.DELETE_JOB, job.id)
        return StartedImport(job=existing, status_code=200)
    if job.options.mode is ImportMode.all_or_nothing and rejects:
        # Nothing of the file is kept; the job and its report are.
        await transaction.rollback()
        async with job.conn.transaction():
            await _write(job, rejects, accepted=0)
        return None
    await _write(job, rejects, accepted=job.rows_read - len(rejects))
    await transaction.commit()
    return None


async def _write(job: Job, rejects: list[Record], *, accepted: int) -> None:
    await job.record_checksum()
    await reports.write_errors(job.conn, job.id, [(r.line, r.code, r.reason) for r in rejects])
    await job.finish(
        job.conn,
        accepted=accepted,
        duplicates=0,
        rejected=len(rejects),
        action=AuditAction.import_codes,
    )
