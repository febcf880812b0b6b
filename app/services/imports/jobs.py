"""An import job's life: its row, its connection and locks, a replay, and what a crash
leaves behind.

This module takes plain asyncpg connections from the driver pool and opens transactions
on them (as copy.py and merge.py do; nothing else outside the ORM session may). A job
owns one connection from its start to its end, a session of its own (DATABASE_DIRECT_URL
behind PgBouncer: the rows are staged in a temporary table of that session); an advisory
lock on the job's id, ``Held`` by a transaction on another connection as long as the job
runs, tells a running job from one whose process died."""

import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, TypeVar

import asyncpg

from app import locks
from app.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from app.models.api_key import ApiKey
from app.models.audit import AuditAction
from app.models.coupon_set import CouponSet
from app.models.import_job import (
    MAX_REPORTED_ERRORS,
    ImportJob,
    ImportKind,
    ImportMode,
    ImportStatus,
)
from app.services.imports import sql
from app.services.imports.options import ImportOptions
from app.services.imports.readers import Reader, Row
from app.services.imports.rows import Record, Rows

logger = logging.getLogger(__name__)

T = TypeVar("T")

INTERRUPTED = "interrupted: the service stopped during the import; nothing of it was kept"
_PROGRESS_EVERY = 100_000

# A hook for tests: runs inside the transaction that finishes a job, just before it commits.
before_commit: Callable[[uuid.UUID], Awaitable[None]] | None = None


@dataclass
class StartedImport:
    job: ImportJob
    status_code: int  # 200 (already imported / replayed), 201 (done), 202 (running)
    replayed: bool = False


def _lock(job_id: uuid.UUID) -> str:
    return locks.name(locks.Namespace.IMPORT_JOB, job_id)


async def load(conn: asyncpg.Connection, job_id: uuid.UUID) -> ImportJob:
    row = await conn.fetchrow(sql.JOB, job_id)
    assert row is not None
    values = dict(row)
    values["errors"] = json.loads(values["errors"]) if values["errors"] else []
    values["options"] = json.loads(values["options"]) if values["options"] else None
    return ImportJob(**values)


async def _alive(conn: asyncpg.Connection, job_id: uuid.UUID) -> bool:
    """Whether a process still runs the job: its connection holds the job's lock."""
    return not await locks.is_free(conn, _lock(job_id))


async def recover_interrupted(pool: asyncpg.Pool) -> int:
    """Marks failed every running job no process runs any more (its owner crashed). At
    start-up the database may be away: then this waits for the next start (and a re-sent
    file finds such a job anyway)."""
    found = 0
    try:
        async with pool.acquire() as conn:
            for row in await conn.fetch(sql.UNFINISHED_JOBS):
                if not await _alive(conn, row["id"]):
                    await conn.execute(sql.MARK_INTERRUPTED, row["id"], INTERRUPTED)
                    found += 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        logger.warning("could not look for interrupted imports: %s", exc)
    if found:
        logger.warning("marked %d interrupted import job(s) failed", found)
    return found


async def replay(
    pool: asyncpg.Pool,
    *,
    coupon_set: CouponSet,
    kind: ImportKind,
    actor: ApiKey,
    idempotency_key: str,
    chunks: AsyncIterator[bytes],
) -> StartedImport | None:
    """The job started earlier with this Idempotency-Key (by this API key), if any."""
    async with pool.acquire() as conn:
        job_id = await conn.fetchval(
            sql.KEYED_JOB, actor.id, idempotency_key, coupon_set.id, kind.value
        )
        if job_id is None:
            return None
        job = await load(conn, job_id)
    if job.checksum is None and job.status != ImportStatus.failed:
        raise IdempotencyKeyInUse(
            "An import with this Idempotency-Key is still being uploaded; retry after it.",
            headers={"Retry-After": "1"},
        )
    digest = hashlib.sha256()
    async for chunk in chunks:
        digest.update(chunk)
    if job.checksum is not None and job.checksum != digest.hexdigest():
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different file; use a new key."
        )
    return StartedImport(job=job, status_code=200, replayed=True)


class Job:
    """One import in progress: the connection it owns and its staging table."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        pool: asyncpg.Pool,
        coupon_set: CouponSet,
        options: ImportOptions,
        actor: ApiKey,
        idempotency_key: str | None,
        *,
        lock_pool: asyncpg.Pool | None = None,
    ) -> None:
        """``conn`` comes from ``pool``; the job's lock is held on a connection of
        ``lock_pool`` (default: ``pool``)."""
        self.conn, self.pool, self.id = conn, pool, uuid.uuid4()
        self.lock_pool = lock_pool or pool
        self.held: locks.Held | None = None
        self.coupon_set, self.options, self.actor = coupon_set, options, actor
        self.idempotency_key = idempotency_key
        self.rows_read = 0
        self.checksum = ""

    async def begin(self, filename: str | None) -> None:
        """Takes the job's lock, inserts its row (committed at once) and creates the
        staging table on the job's connection."""
        self.held = await locks.hold(self.lock_pool, _lock(self.id))
        await self.conn.execute(
            sql.INSERT_JOB,
            self.id,
            self.coupon_set.id,
            self.options.kind.value,
            self.options.format.value,
            self.options.mode.value,
            filename,
            json.dumps(self.options.public()),
            self.actor.id,
            self.idempotency_key,
        )
        await self.conn.execute(sql.CREATE_STAGING)

    def read(self, rows: Rows, reader: Reader, parsed: list[Row]) -> list[Record]:
        """The records of rows just parsed, which count as rows read."""
        records = rows.records(self.rows_read + 1, parsed, reader.columns)
        self.rows_read += len(records)
        return records

    async def copy_in(
        self, table: str, records: AsyncIterator[tuple[object, ...]], columns: Sequence[str]
    ) -> None:
        """ONE COPY of ``records`` into ``table`` on the job's connection. When the input
        breaks (the upload crossed its limit, the client went away), the COPY is ended
        first and the input's error raised after it, so the caller's rollback runs on a
        usable connection: asyncpg answers a broken input with a cancel, and a connection
        whose COPY the server had refused already (a repeated code) then waits for ever
        (asyncpg 0.30)."""
        broken: list[Exception] = []

        async def guarded() -> AsyncIterator[tuple[object, ...]]:
            try:
                async for record in records:
                    yield record
            except Exception as exc:
                broken.append(exc)

        try:
            await self.conn.copy_records_to_table(table, records=guarded(), columns=columns)
        except asyncpg.PostgresError:
            if not broken:
                raise
        if broken:
            raise broken[0]

    async def stream(
        self,
        chunks: AsyncIterator[bytes],
        reader: Reader,
        convert: Callable[[list[Row]], list[T]],
        digest: "hashlib._Hash",
        spool: IO[bytes] | None = None,
    ) -> AsyncIterator[T]:
        """What ``convert`` makes of an upload as it arrives, for a COPY: each chunk hashed
        (and saved in ``spool``), parsed, and converted; progress is reported every
        ``_PROGRESS_EVERY`` rows."""
        reported = 0
        async for chunk in chunks:
            if spool is not None:
                spool.write(chunk)
            digest.update(chunk)
            for item in convert(reader.feed(chunk)):
                yield item
            if self.rows_read - reported >= _PROGRESS_EVERY:
                reported = self.rows_read
                await self._progress()
        for item in convert(reader.close()):
            yield item

    async def _progress(self) -> None:
        """``rows_read`` so far, through another connection (this one is in the COPY);
        skipped when none is free at once, so imports never wait on each other."""
        try:
            async with self.pool.acquire(timeout=0.5) as other:
                await other.execute(sql.PROGRESS, self.id, self.rows_read)
        except TimeoutError:
            logger.debug("no connection free for the progress of import %s", self.id)

    async def imported_before(self) -> ImportJob | None:
        """Inside a transaction: the job that imported this content into the set already
        (a job whose process died is marked failed and passed over). The advisory lock on
        (set, kind, checksum) is held until the transaction ends, so two uploads of the
        same file cannot both import it."""
        await self.conn.execute(
            locks.XACT_LOCK,
            locks.name(
                locks.Namespace.IMPORT, self.coupon_set.id, self.options.kind, self.checksum
            ),
        )
        if self.options.force:
            return None
        rows = await self.conn.fetch(
            sql.EARLIER_JOBS,
            self.coupon_set.id,
            self.options.kind.value,
            self.checksum,
            self.id,
        )
        for row in rows:
            if row["status"] != ImportStatus.succeeded and not await _alive(self.conn, row["id"]):
                await self.conn.execute(sql.MARK_INTERRUPTED, row["id"], INTERRUPTED)
                continue
            return await load(self.conn, row["id"])
        return None

    async def record_checksum(self) -> None:
        await self.conn.execute(sql.RECORD_CHECKSUM, self.id, self.checksum, self.rows_read)

    async def claim_checksum(self) -> ImportJob | None:
        """The job that already imported this content, if any (then this one is dropped);
        otherwise the checksum is recorded on this job so re-sends find it."""
        async with self.conn.transaction():
            existing = await self.imported_before()
            if existing is not None:
                await self.conn.execute(sql.DELETE_JOB, self.id)
                return existing
            await self.record_checksum()
        return None

    async def finish(
        self,
        conn: asyncpg.Connection,
        *,
        accepted: int,
        duplicates: int,
        rejected: int,
        action: AuditAction,
    ) -> None:
        """Status, counts, first errors and the audit row, on ``conn`` inside the
        transaction that brought the rows in (which may be the ORM session's)."""
        failed = self.options.mode is ImportMode.all_or_nothing and rejected > 0
        error = (
            f"{rejected} row(s) rejected; mode all_or_nothing brought nothing in"
            if failed
            else None
        )
        await conn.execute(
            sql.FINISH_JOB,
            self.id,
            (ImportStatus.failed if failed else ImportStatus.succeeded).value,
            error,
            self.rows_read,
            accepted,
            duplicates,
            rejected,
            MAX_REPORTED_ERRORS,
        )
        details = {
            "import_id": str(self.id),
            "checksum": self.checksum,
            "rows_read": self.rows_read,
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "status": "failed" if failed else "succeeded",
        }
        await conn.execute(
            sql.AUDIT,
            self.coupon_set.id,
            action.value,
            self.actor.id,
            self.idempotency_key,
            json.dumps(details),
        )
        if before_commit is not None:
            await before_commit(self.id)

    async def fail(self, error: str) -> None:
        await self.conn.execute(sql.FAIL_JOB, self.id, error[:2000], self.rows_read)

    async def fail_with(self, exc: Exception) -> None:
        """A job that broke while bringing its rows in: logged, and failed, as nothing of
        it was kept (its transaction rolled back)."""
        logger.exception("import job %s failed", self.id)
        await self.fail(f"the import failed and nothing of it was kept ({type(exc).__name__})")

    async def close(self) -> None:
        """Drops the staging table and the job's lock and gives the connection back; a
        connection that cannot be cleaned is closed instead (its lock and table go too)."""
        try:
            if not self.conn.is_closed():
                await self.conn.execute(sql.DROP_STAGING)
        except Exception:
            logger.exception("closing the connection of import job %s", self.id)
            self.conn.terminate()
        finally:
            await self.pool.release(self.conn)
            if self.held is not None:
                await self.held.release()
