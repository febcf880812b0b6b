"""What the routes call: start an import, read the history. ``ImportRunner``, created at
start-up, owns the merges that run on after their request has been answered.

A job's connection is taken here, from the session pool (DATABASE_DIRECT_URL behind
PgBouncer; else the driver pool), and handed to the job (jobs.py), whose modules open its
transactions; the reads use the request's session."""

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import IO, Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import AppError, NotFound, PayloadTooLarge
from app.models.api_key import ApiKey
from app.models.coupon_set import CouponSet
from app.models.import_job import ImportJob, ImportKind
from app.pagination import PageParams, paginate
from app.services.codes import ensure_unique_kind
from app.services.imports import sql
from app.services.imports.copy import copy_direct
from app.services.imports.jobs import Job, StartedImport, load, recover_interrupted, replay
from app.services.imports.merge import merge, stage
from app.services.imports.options import ImportOptions, refuse_late_fields
from app.services.imports.readers import FileRefused
from app.services.imports.rows import CodeRows, RedemptionRows, Rows

logger = logging.getLogger(__name__)

SYNC_ROWS = 50_000  # more rows than this: answered 202, merged in the background


async def _pools(conn: asyncpg.Connection, set_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """The set's pools by lower-cased name and by id."""
    found: dict[str, uuid.UUID] = {}
    for row in await conn.fetch(sql.POOLS, set_id):
        found[row["name"].lower()] = row["id"]
        found[str(row["id"])] = row["id"]
    return found


async def _spooled(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := spool.read(1 << 20):
        yield chunk


class ImportRunner:
    """The imports of this process: started on the driver pool, merged in the background
    when large; shutdown waits for those merges before the pool closes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        session_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.pool = pool
        self.session_pool = session_pool or pool
        self.sessionmaker = sessionmaker
        self.tasks: set[asyncio.Task[None]] = set()

    async def recover(self) -> None:
        """At start: jobs left running by a process that is gone are marked failed."""
        await recover_interrupted(self.pool)

    async def stop(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def start(
        self,
        *,
        coupon_set: CouponSet,
        options: ImportOptions,
        filename: str | None,
        chunks: AsyncIterator[bytes],
        late_fields: Callable[[], list[str]],
        actor: ApiKey,
        idempotency_key: str | None,
    ) -> StartedImport:
        """Brings an upload into the set: by the fast path, else staged and merged, in
        the background past ``SYNC_ROWS`` rows. A replay or an earlier job of the same
        content answers instead."""
        if options.kind is ImportKind.codes:
            ensure_unique_kind(coupon_set)
        if idempotency_key is not None:
            replayed = await replay(
                self.pool,
                coupon_set=coupon_set,
                kind=options.kind,
                actor=actor,
                idempotency_key=idempotency_key,
                chunks=chunks,
            )
            if replayed is not None:
                return replayed
        conn: asyncpg.Connection = await self.session_pool.acquire()
        # The upload as received, on disk, in case the fast path gives way to the staged one.
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
        job = Job(
            conn,
            self.session_pool,
            coupon_set,
            options,
            actor,
            idempotency_key,
            lock_pool=self.pool,
        )
        handed_over = False
        try:
            rows: Rows = (
                CodeRows(options, coupon_set, await _pools(conn, coupon_set.id))
                if options.kind is ImportKind.codes
                else RedemptionRows(coupon_set, options)
            )
            await job.begin(filename)
            try:
                began = time.monotonic()
                if isinstance(rows, CodeRows):
                    direct = await copy_direct(job, chunks, rows, spool, late_fields)
                    if direct is not None:
                        logger.info(
                            "import %s: %d rows copied in %.1f s",
                            job.id,
                            job.rows_read,
                            time.monotonic() - began,
                        )
                        return direct
                    chunks = _spooled(spool)
                await stage(job, chunks, rows)
                staged = time.monotonic() - began
                logger.info("import %s: %d rows staged in %.1f s", job.id, job.rows_read, staged)
                refuse_late_fields(late_fields())
            except FileRefused as refused:
                await job.fail(str(refused))
                return StartedImport(job=await load(conn, job.id), status_code=201)
            except AppError as exc:
                await job.fail(exc.detail)
                raise
            except Exception as exc:
                # The body limit's 413 (app/limits.py) comes as the framework's HTTP error.
                too_large = getattr(exc, "status_code", None) == PayloadTooLarge.status
                await job.fail(
                    f"{exc.detail} Nothing of it was kept."  # type: ignore[attr-defined]
                    if too_large
                    else "the upload was interrupted; nothing of it was kept"
                )
                raise
            existing = await job.claim_checksum()
            if existing is not None:
                return StartedImport(job=existing, status_code=200)
            if job.rows_read > SYNC_ROWS:
                running = await load(conn, job.id)
                task = asyncio.create_task(merge(job, self.sessionmaker), name=f"import-{job.id}")
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                handed_over = True
                return StartedImport(job=running, status_code=202)
            handed_over = True
            await merge(job, self.sessionmaker)
            async with self.pool.acquire() as reader:
                return StartedImport(job=await load(reader, job.id), status_code=201)
        finally:
            spool.close()
            if not handed_over:
                await job.close()


async def _runner(request: Request) -> ImportRunner:
    runner: ImportRunner = request.app.state.import_runner
    return runner


Runner = Annotated[ImportRunner, Depends(_runner)]


async def get_job(
    session: AsyncSession, *, coupon_set: CouponSet, kind: ImportKind, job_id: uuid.UUID
) -> ImportJob:
    job = await session.scalar(
        select(ImportJob).where(
            ImportJob.id == job_id, ImportJob.set_id == coupon_set.id, ImportJob.kind == kind.value
        )
    )
    if job is None:
        raise NotFound(f"The set '{coupon_set.key}' has no import {job_id}.")
    return job


async def list_jobs(
    session: AsyncSession, *, coupon_set: CouponSet, kind: ImportKind, params: PageParams
) -> list[ImportJob]:
    stmt = select(ImportJob).where(ImportJob.set_id == coupon_set.id, ImportJob.kind == kind.value)
    return list((await session.execute(paginate(stmt, ImportJob, params))).scalars())
