"""Import jobs: a file of codes (or redemptions) streamed into a set.

The path of a file, and why it is safe:

1. The job row is inserted and committed at once (status ``running``), so the history
   shows it and its progress (``rows_read``) while the upload streams.
2. Fast path (files of codes): the upload is parsed as it arrives and the valid rows go
   by ONE streaming ``COPY`` straight into ``codes``, in a transaction that then writes
   the report, the counts and the audit row and commits. A repeat (in the file, in the
   set, or from a concurrent writer) makes the unique index on (set_id, lookup) fail the
   COPY: everything is rolled back and the staged path takes over, reading the upload
   again from the copy saved on disk as it streamed.
3. Staged path: every row goes by ``COPY`` into a temporary staging table of the job's
   own connection, then the merge is ONE transaction: repeats are marked (the first
   occurrence wins), one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``codes``
   (the unique index settles races with concurrent writers), the report, the job's
   counts and its audit row.
4. Once the file is read its SHA-256 is known. Under an advisory lock on (set, kind,
   checksum), held to the commit, a job that already imported the same content answers
   instead (the new job row is removed), unless ``force`` is set.
5. A crash before the commit leaves nothing in ``codes``; the job stays ``running``
   without its owner. The connection running a job holds a session advisory lock on the
   job's id: a ``running`` job whose lock is free has lost its process and is marked
   ``failed`` (at start-up and whenever a re-sent file meets it); a retry then proceeds.

On the staged path, large files (more rows than ``SYNC_ROWS``) are answered ``202`` once
read and merged by a task the app owns (``app.state.import_tasks``); shutdown waits for
those tasks."""

import asyncio
import csv
import hashlib
import io
import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import IO, Any

import asyncpg
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import locks
from app.csv_guard import cell
from app.db import session_driver
from app.errors import (
    AppError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
)
from app.models.api_key import ApiKey
from app.models.audit import AuditAction
from app.models.code import UNSTORABLE, normalise
from app.models.coupon_set import CouponSet, MatchMode
from app.models.import_job import (
    MAX_REPORTED_ERRORS,
    ImportFormat,
    ImportJob,
    ImportKind,
    ImportMode,
    ImportStatus,
)
from app.models.redemption import RedemptionRequest
from app.pagination import PageParams, paginate
from app.services import redemptions
from app.services.codes import _reason, ensure_unique_kind
from app.services.import_files import (
    CsvReader,
    FileRefused,
    Reader,
    Row,
    TextReader,
    XmlReader,
    check_encoding,
)

logger = logging.getLogger(__name__)

SYNC_ROWS = 50_000  # more rows than this: answered 202, merged in the background
_PROGRESS_EVERY = 100_000
_DIRECT_MAX_REJECTS = 10_000  # more rejected rows than this: the staged path
_CODE_COLUMNS = ("set_id", "pool_id", "code", "lookup", "metadata")
_STAGING = "import_staging"
_STAGING_COLUMNS = ("n", "line", "code", "lookup", "pool_id", "metadata", "reason")
INTERRUPTED = "interrupted: the service stopped during the import; nothing of it was kept"


@dataclass(frozen=True)
class ImportOptions:
    kind: ImportKind
    format: ImportFormat
    mode: ImportMode
    delimiter: str = ","
    quotechar: str = '"'
    header: bool | None = True  # None: guessed (redemption files)
    encoding: str = "utf-8"
    code_column: str | None = None
    pool_column: str | None = None
    pool: str = "default"
    force: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quotechar,
            "header": self.header,
            "encoding": self.encoding,
            "code_column": self.code_column,
            "pool_column": self.pool_column,
            "pool": self.pool,
            "force": self.force,
        }


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}",
        errors=[{"loc": ["body", field], "message": message, "type": "value_error"}],
    )


def _bool(fields: dict[str, str], name: str, default: bool | None) -> bool | None:
    value = fields.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise _invalid(name, "must be true or false")


def _char(fields: dict[str, str], name: str, default: str) -> str:
    value = fields.get(name) or default
    if value in ("\\t", "tab"):
        value = "\t"
    if len(value) != 1 or value in "\r\n":
        raise _invalid(name, "must be one character")
    return value


_FORM_FIELDS = {
    "format",
    "delimiter",
    "quotechar",
    "header",
    "encoding",
    "code_column",
    "pool_column",
    "pool",
    "mode",
    "force",
}


def parse_options(
    fields: dict[str, str],
    *,
    kind: ImportKind,
    content_type: str | None,
    filename: str | None,
) -> ImportOptions:
    """The form fields of an upload, checked; 422 names the field at fault."""
    unknown = sorted(set(fields) - _FORM_FIELDS)
    if unknown:
        raise _invalid(unknown[0], "unknown form field")
    guessed = ImportFormat.csv
    media = (content_type or "").split(";")[0].strip().lower()
    name = (filename or "").lower()
    if "xml" in media or name.endswith(".xml"):
        guessed = ImportFormat.xml
    elif media == "text/plain" or name.endswith(".txt"):
        guessed = ImportFormat.text
    try:
        fmt = ImportFormat(fields["format"]) if fields.get("format") else guessed
    except ValueError:
        raise _invalid("format", "must be csv, xml or text") from None
    try:
        mode = ImportMode(fields.get("mode") or ImportMode.partial)
    except ValueError:
        raise _invalid("mode", "must be partial or all_or_nothing") from None
    if kind is ImportKind.redemptions and fmt is not ImportFormat.csv:
        raise _invalid("format", "redemption files are CSV")
    encoding = (fields.get("encoding") or "utf-8").strip()
    check_encoding(encoding)
    delimiter = _char(fields, "delimiter", ",")
    quotechar = _char(fields, "quotechar", '"')
    if delimiter == quotechar:
        raise _invalid("quotechar", "must differ from the delimiter")
    pool = (fields.get("pool") or "default").strip()
    if not pool or len(pool) > 200:
        raise _invalid("pool", "must be 1 to 200 characters")
    default_header = None if kind is ImportKind.redemptions else True
    return ImportOptions(
        kind=kind,
        format=fmt,
        mode=mode,
        delimiter=delimiter,
        quotechar=quotechar,
        header=_bool(fields, "header", default_header),
        encoding=encoding,
        code_column=(fields.get("code_column") or "").strip() or None,
        pool_column=(fields.get("pool_column") or "").strip() or None,
        pool=pool,
        force=bool(_bool(fields, "force", False)),
    )


# --------------------------------------------------------------------------- rows


# What jsonb cannot hold (line breaks and tabs in metadata are fine).
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")


def _shown(text: str | None) -> str | None:
    """A cell as the report may echo it: bounded, and encodable as JSON and text."""
    return None if text is None else UNSTORABLE.sub("\ufffd", text[:100])


class _CodeRows:
    """Cells of a parsed row → a staging record (code, lookup, pool, metadata or reason)."""

    def __init__(
        self, options: ImportOptions, coupon_set: CouponSet, pools: dict[str, uuid.UUID]
    ) -> None:
        self.options = options
        self.exact = coupon_set.match_mode == MatchMode.exact
        self.pools = pools
        default = pools.get(options.pool.lower())
        if default is None:
            raise NotFound(f"The set '{coupon_set.key}' has no pool '{options.pool}'.")
        self.default_pool = default
        self._columns: list[str] | None = None
        self._code_at = 0
        self._pool_at: int | None = None
        self._meta_at: list[int] = []

    def _column(self, columns: list[str], ref: str, field: str) -> int:
        if ref.isdigit() and 1 <= int(ref) <= len(columns):
            return int(ref) - 1
        for candidate in (ref, ref.lower()):
            for at, column in enumerate(columns):
                if column == candidate or column.lower() == candidate:
                    return at
        raise _invalid(field, f"the file has no column '{ref}' (columns: {', '.join(columns)})")

    def map_columns(self, columns: list[str]) -> None:
        """Chooses the code and pool columns once the first row (or header) is known."""
        self._columns = columns
        if self.options.code_column and self.options.format is ImportFormat.csv:
            self._code_at = self._column(columns, self.options.code_column, "code_column")
        else:
            self._code_at = columns.index("code") if "code" in columns else 0
        if self.options.pool_column and self.options.format is ImportFormat.csv:
            self._pool_at = self._column(columns, self.options.pool_column, "pool_column")
            if self._pool_at == self._code_at:
                raise _invalid("pool_column", "is the code column")
        self._meta_at = [
            at for at in range(len(columns)) if at not in (self._code_at, self._pool_at)
        ]

    def record(self, n: int, row: Row, columns: list[str] | None) -> tuple[Any, ...] | None:
        if row.reason is not None:
            return (n, row.line, None, None, None, None, row.reason)
        values = row.values
        metadata: dict[str, str] | None
        if row.names is None and columns is not None:  # CSV, text: cells by position
            if self._columns is None:
                self.map_columns(columns)
            raw = values[self._code_at]
            pool_ref = values[self._pool_at].strip() if self._pool_at is not None else ""
            metadata = (
                {columns[at]: values[at] for at in self._meta_at if values[at] != ""}
                if self._meta_at
                else None
            )
        else:  # XML: each row names its cells
            cells = dict(zip(row.names or [], values, strict=True))
            raw = cells.pop("code", "")
            pool_ref = cells.pop("@pool", "").strip()
            metadata = {key.lstrip("@"): value for key, value in cells.items() if value != ""}
        code = raw.strip()
        pool_id = self.pools.get(pool_ref.lower()) if pool_ref else self.default_pool
        lookup = normalise(code, exact=self.exact)
        reason = _reason(code, lookup)
        if reason is None and pool_id is None:
            reason = f"unknown pool '{_shown(pool_ref)}'"
        if (
            reason is None
            and metadata
            and any(_NOT_JSONB.search(k) or _NOT_JSONB.search(v) for k, v in metadata.items())
        ):
            reason = "a metadata column holds NUL characters or undecodable bytes"
        if reason is not None:
            return (n, row.line, _shown(raw), None, None, None, reason)
        return (
            n,
            row.line,
            code,
            lookup,
            pool_id,
            json.dumps(metadata, ensure_ascii=False) if metadata else None,
            None,
        )


_REDEMPTION_COLUMNS = ("code", "redeemed_at", "order_id", "amount")


class _RedemptionRows:
    """code, redeemed_at[, order_id, amount]: checked as the API checks a redemption. A
    header (asked for, or guessed from a first cell ``code``) may name them in any order."""

    def __init__(self, coupon_set: CouponSet, options: ImportOptions) -> None:
        self.set_id = str(coupon_set.id)
        self.header = options.header
        self.names: list[str] | None = None
        self._first = True

    def record(self, n: int, row: Row, columns: list[str] | None) -> tuple[Any, ...] | None:
        if row.reason is not None:
            return (n, row.line, None, None, None, None, row.reason)
        values = list(row.values)
        if self._first:
            self._first = False
            first = values[0].strip().lower() if values else ""
            if self.header or (self.header is None and first == "code"):
                self.names = [value.strip().lower() for value in values]
                return None
        if self.names is not None:
            by_name = dict(zip(self.names, values, strict=False))
            values = [by_name.get(name, "") for name in _REDEMPTION_COLUMNS]
        elif len(values) > 4:
            too_many = "expected at most 4 columns: code, redeemed_at, order_id, amount"
            return (n, row.line, _shown(values[0]), None, None, None, too_many)
        values += [""] * (4 - len(values))
        code, redeemed_at, order_id, amount = (v.strip() for v in values[:4])
        fields: dict[str, Any] = {"code": code, "set": self.set_id}
        if redeemed_at:
            fields["redeemed_at"] = redeemed_at
        if order_id:
            fields["order_id"] = order_id
        reason: str | None = None
        if amount:
            try:
                fields["amount"] = Decimal(amount)
            except InvalidOperation:
                reason = "amount: not a number"
        if reason is None:
            try:
                request = RedemptionRequest.model_validate(fields)
            except ValidationError as exc:
                first_error = exc.errors()[0]
                where = ".".join(str(part) for part in first_error["loc"])
                reason = f"{where}: {first_error['msg']}"
            else:
                metadata = request.model_dump_json(exclude={"set"})
                return (n, row.line, request.code, None, None, metadata, None)
        return (n, row.line, _shown(code), None, None, None, reason)


def _reader(options: ImportOptions) -> Reader:
    if options.format is ImportFormat.xml:
        return XmlReader()
    if options.format is ImportFormat.text:
        return TextReader(options.encoding)
    redemptions = options.kind is ImportKind.redemptions
    return CsvReader(
        encoding=options.encoding,
        delimiter=options.delimiter,
        quotechar=options.quotechar,
        header=bool(options.header) and not redemptions,
        ragged=redemptions,
    )


# --------------------------------------------------------------------------- jobs


def _job_lock(job_id: uuid.UUID) -> str:
    return locks.name(locks.Namespace.IMPORT_JOB, job_id)


async def _alive(conn: asyncpg.Connection, job_id: uuid.UUID) -> bool:
    """Whether a process still runs the job: its connection holds the job's lock."""
    if await conn.fetchval(locks.TRY_SESSION_LOCK, _job_lock(job_id)):
        await conn.fetchval(locks.SESSION_UNLOCK, _job_lock(job_id))
        return False
    return True


async def _mark_interrupted(conn: asyncpg.Connection, job_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', error = $2, finished_at = now(), "
        "updated_at = now() WHERE id = $1 AND status IN ('queued', 'running')",
        job_id,
        INTERRUPTED,
    )


async def recover_interrupted(pool: asyncpg.Pool) -> int:
    """Marks failed every running job no process runs any more (its owner crashed). At
    start-up the database may be away: then this waits for the next start (and a re-sent
    file finds such a job anyway)."""
    found = 0
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id FROM import_jobs WHERE status IN ('queued', 'running')"
            )
            for row in rows:
                if not await _alive(conn, row["id"]):
                    await _mark_interrupted(conn, row["id"])
                    found += 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        logger.warning("could not look for interrupted imports: %s", exc)
    if found:
        logger.warning("marked %d interrupted import job(s) failed", found)
    return found


class _Staged(Exception):
    """The fast path gives way to the staged one."""


@dataclass
class StartedImport:
    job: ImportJob
    status_code: int  # 200 (already imported / replayed), 201 (done), 202 (running)
    replayed: bool = False


class _Job:
    """One import in progress: the connection it owns and its staging table."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        pool: asyncpg.Pool,
        job_id: uuid.UUID,
        coupon_set: CouponSet,
        options: ImportOptions,
        actor: ApiKey,
        idempotency_key: str | None,
    ) -> None:
        self.conn, self.pool, self.id = conn, pool, job_id
        self.coupon_set, self.options, self.actor = coupon_set, options, actor
        self.idempotency_key = idempotency_key
        self.rows_read = 0
        self.checksum = ""

    async def stage(
        self, chunks: AsyncIterator[bytes], rows: "_CodeRows | _RedemptionRows"
    ) -> None:
        """Streams the file into the staging table and computes its checksum: ONE COPY
        fed as the upload is parsed, so PostgreSQL stores rows while Python parses the
        next ones."""
        reader = _reader(self.options)
        digest = hashlib.sha256()

        def records(parsed: list[Row]) -> list[tuple[Any, ...]]:
            out = []
            for row in parsed:
                record = rows.record(self.rows_read + 1, row, reader.columns)
                if record is not None:
                    self.rows_read += 1
                    out.append(record)
            return out

        stream = self._records(chunks, reader, records, digest)
        await self.conn.copy_records_to_table(_STAGING, records=stream, columns=_STAGING_COLUMNS)
        self.checksum = digest.hexdigest()

    async def _records(
        self,
        chunks: AsyncIterator[bytes],
        reader: Reader,
        records: Callable[[list[Row]], list[tuple[Any, ...]]],
        digest: "hashlib._Hash",
        spool: IO[bytes] | None = None,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """The records of an upload as it arrives, for a COPY: each chunk hashed (and
        saved in ``spool``), parsed, and turned into records by ``records``; progress
        is reported every ``_PROGRESS_EVERY`` rows."""
        reported = 0
        async for chunk in chunks:
            if spool is not None:
                spool.write(chunk)
            digest.update(chunk)
            for record in records(reader.feed(chunk)):
                yield record
            if self.rows_read - reported >= _PROGRESS_EVERY:
                reported = self.rows_read
                await self._progress()
        for record in records(reader.close()):
            yield record

    async def _progress(self) -> None:
        """``rows_read`` so far, through another connection (this one is in the COPY);
        skipped when none is free at once, so imports never wait on each other."""
        try:
            async with self.pool.acquire(timeout=0.5) as other:
                await other.execute(
                    "UPDATE import_jobs SET rows_read = $2, updated_at = now() WHERE id = $1",
                    self.id,
                    self.rows_read,
                )
        except TimeoutError:
            logger.debug("no connection free for the progress of import %s", self.id)

    async def _imported_before(self) -> ImportJob | None:
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
            "SELECT id, status FROM import_jobs WHERE set_id = $1 AND kind = $2 "
            "AND checksum = $3 AND id <> $4 AND status <> 'failed' ORDER BY created_at",
            self.coupon_set.id,
            self.options.kind.value,
            self.checksum,
            self.id,
        )
        for row in rows:
            if row["status"] != ImportStatus.succeeded and not await _alive(self.conn, row["id"]):
                await _mark_interrupted(self.conn, row["id"])
                continue
            return await _load(self.conn, row["id"])
        return None

    async def _record_checksum(self) -> None:
        await self.conn.execute(
            "UPDATE import_jobs SET checksum = $2, rows_read = $3, updated_at = now() "
            "WHERE id = $1",
            self.id,
            self.checksum,
            self.rows_read,
        )

    async def claim_checksum(self) -> ImportJob | None:
        """The job that already imported this content, if any (then this one is dropped);
        otherwise the checksum is recorded on this job so re-sends find it."""
        async with self.conn.transaction():
            existing = await self._imported_before()
            if existing is not None:
                await self.conn.execute("DELETE FROM import_jobs WHERE id = $1", self.id)
                return existing
            await self._record_checksum()
        return None

    async def copy_direct(
        self,
        chunks: AsyncIterator[bytes],
        rows: "_CodeRows",
        spool: IO[bytes],
        late_fields: Callable[[], list[str]],
    ) -> StartedImport | None:
        """The fast path: rows go by one streaming COPY straight into ``codes``, in one
        transaction with the report, the counts and the audit row. Any repeat (in the
        file, in the set, or added meanwhile by another writer) makes the unique index
        fail the COPY; then everything is rolled back, the rest of the upload is saved in
        ``spool`` like its beginning, and None says: take the staged path from the spool.
        So does a file with many rejected rows (their report would not fit in memory)."""
        reader = _reader(self.options)
        digest = hashlib.sha256()
        rejects: list[tuple[int, str | None, str]] = []
        set_id = self.coupon_set.id

        def records(parsed: list[Row]) -> list[tuple[Any, ...]]:
            out = []
            for row in parsed:
                record = rows.record(self.rows_read + 1, row, reader.columns)
                if record is None:
                    continue
                self.rows_read += 1
                if record[6] is None:
                    out.append((set_id, record[4], record[2], record[3], record[5]))
                    continue
                rejects.append((record[1], record[2], record[6]))
                if len(rejects) > _DIRECT_MAX_REJECTS:
                    raise _Staged
            return out

        transaction = self.conn.transaction()
        await transaction.start()
        try:
            try:
                await self.conn.copy_records_to_table(
                    "codes",
                    records=self._records(chunks, reader, records, digest, spool),
                    columns=_CODE_COLUMNS,
                )
            # A deadlock: another upload holds some of these codes uncommitted, in
            # another order; the staged path's ON CONFLICT settles it.
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, _Staged):
                await transaction.rollback()
                async for chunk in chunks:
                    spool.write(chunk)
                spool.seek(0)
                self.rows_read = 0
                return None
            late = late_fields()
            if late:
                raise _invalid(late[0], "form fields must come before the file part")
            self.checksum = digest.hexdigest()
            try:
                finished = await self._finish_direct(transaction, rejects)
            except Exception as exc:
                # The same answer as a failed merge on the staged path: a failed job.
                logger.exception("import job %s failed", self.id)
                if self.conn.is_in_transaction():
                    await transaction.rollback()
                await self.fail(
                    f"the import failed and nothing of it was kept ({type(exc).__name__})"
                )
                return StartedImport(job=await _load(self.conn, self.id), status_code=201)
            if finished is not None:
                return finished
        except BaseException:
            if not self.conn.is_closed() and self.conn.is_in_transaction():
                await transaction.rollback()
            raise
        return StartedImport(job=await _load(self.conn, self.id), status_code=201)

    async def _finish_direct(
        self, transaction: Any, rejects: list[tuple[int, str | None, str]]
    ) -> StartedImport | None:
        """After the fast path's COPY: the re-send check, the report, counts and audit
        row, and the commit. An earlier job of the same content is returned instead."""
        existing = await self._imported_before()
        if existing is not None:
            await transaction.rollback()
            await self.conn.execute("DELETE FROM import_jobs WHERE id = $1", self.id)
            return StartedImport(job=existing, status_code=200)
        if self.options.mode is ImportMode.all_or_nothing and rejects:
            # Nothing of the file is kept; the job and its report are.
            await transaction.rollback()
            async with self.conn.transaction():
                await self._write_direct(rejects, accepted=0)
            return None
        await self._write_direct(rejects, accepted=self.rows_read - len(rejects))
        await transaction.commit()
        return None

    async def _write_direct(
        self, rejects: list[tuple[int, str | None, str]], *, accepted: int
    ) -> None:
        await self._record_checksum()
        await self.conn.executemany(
            "INSERT INTO import_errors (job_id, line, code, reason) VALUES ($1, $2, $3, $4)",
            [(self.id, line, code, reason) for line, code, reason in rejects],
        )
        await _finish(
            self.conn,
            self,
            accepted=accepted,
            duplicates=0,
            rejected=len(rejects),
            action=AuditAction.import_codes,
        )

    async def fail(self, error: str) -> None:
        await self.conn.execute(
            "UPDATE import_jobs SET status = 'failed', error = $2, rows_read = $3, "
            "finished_at = now(), updated_at = now() WHERE id = $1",
            self.id,
            error[:2000],
            self.rows_read,
        )

    async def close(self) -> None:
        """Drops the staging table and the job's lock and gives the connection back; a
        connection that cannot be cleaned is closed instead (its lock and table go too)."""
        try:
            if not self.conn.is_closed():
                await self.conn.execute("DROP TABLE IF EXISTS import_staging")
                await self.conn.fetchval(locks.SESSION_UNLOCK, _job_lock(self.id))
        except Exception:
            logger.exception("closing the connection of import job %s", self.id)
            self.conn.terminate()
        finally:
            await self.pool.release(self.conn)


async def _load(conn: asyncpg.Connection, job_id: uuid.UUID) -> ImportJob:
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row is not None
    values = dict(row)
    values["errors"] = json.loads(values["errors"]) if values["errors"] else []
    values["options"] = json.loads(values["options"]) if values["options"] else None
    return ImportJob(**values)


# Marks every repeat of a lookup after its first occurrence (file order).
_MARK_REPEATS = """
UPDATE import_staging s SET dup_line = f.first_line
FROM (
    SELECT lookup, min(n) AS first_n, min(line) AS first_line
    FROM import_staging WHERE reason IS NULL
    GROUP BY lookup HAVING count(*) > 1
) f
WHERE s.reason IS NULL AND s.lookup = f.lookup AND s.n > f.first_n
"""

# Marks codes the set holds already. Only run when the set has codes: a race with a
# concurrent writer is still settled by ON CONFLICT below (only the report may miss it).
_MARK_IN_SET = """
UPDATE import_staging s SET in_set = true
FROM codes c
WHERE c.set_id = $1 AND c.lookup = s.lookup AND s.reason IS NULL AND s.dup_line IS NULL
"""

# One set-based insert. Repeats are marked already (the first occurrence wins), so no
# sort is needed: the staging table is read in the order it was written. The unique
# index (set_id, lookup) skips whatever a concurrent writer added meanwhile, so the count
# of inserted rows is exact.
_INSERT = """
WITH inserted AS (
    INSERT INTO codes (set_id, pool_id, code, lookup, metadata)
    SELECT $1, pool_id, code, lookup, metadata FROM import_staging
    WHERE reason IS NULL AND dup_line IS NULL AND NOT in_set
    ON CONFLICT (set_id, lookup) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

_REPORT = """
INSERT INTO import_errors (job_id, line, code, reason)
SELECT $1, line, code, CASE
    WHEN reason IS NOT NULL THEN reason
    WHEN dup_line IS NOT NULL THEN 'duplicate of line ' || dup_line
    ELSE 'already in the set' END
FROM import_staging
WHERE reason IS NOT NULL OR dup_line IS NOT NULL OR in_set
ORDER BY n
"""

_FINISH = """
UPDATE import_jobs SET
    status = $2, error = $3, rows_read = $4, accepted = $5, duplicates = $6, rejected = $7,
    errors = COALESCE((
        SELECT jsonb_agg(jsonb_build_object('line', line, 'code', code, 'reason', reason)
                         ORDER BY id)
        FROM (SELECT * FROM import_errors WHERE job_id = $1 ORDER BY id LIMIT $8) first
    ), '[]'::jsonb),
    finished_at = now(), updated_at = now()
WHERE id = $1
"""

_AUDIT = """
INSERT INTO audit_events (set_id, action, api_key_id, idempotency_key, details)
VALUES ($1, $2, $3, $4, $5)
"""

# A hook for tests: runs inside the merge transaction, just before it commits.
before_commit: Callable[[uuid.UUID], Awaitable[None]] | None = None


async def _finish(
    conn: asyncpg.Connection,
    job: _Job,
    *,
    accepted: int,
    duplicates: int,
    rejected: int,
    action: AuditAction,
) -> None:
    failed = job.options.mode is ImportMode.all_or_nothing and rejected > 0
    error = (
        f"{rejected} row(s) rejected; mode all_or_nothing brought nothing in" if failed else None
    )
    await conn.execute(
        _FINISH,
        job.id,
        (ImportStatus.failed if failed else ImportStatus.succeeded).value,
        error,
        job.rows_read,
        accepted,
        duplicates,
        rejected,
        MAX_REPORTED_ERRORS,
    )
    details = {
        "import_id": str(job.id),
        "checksum": job.checksum,
        "rows_read": job.rows_read,
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected,
        "status": "failed" if failed else "succeeded",
    }
    await conn.execute(
        _AUDIT,
        job.coupon_set.id,
        action.value,
        job.actor.id,
        job.idempotency_key,
        json.dumps(details),
    )
    if before_commit is not None:
        await before_commit(job.id)


async def _merge_codes(job: _Job) -> None:
    conn = job.conn
    async with conn.transaction():
        # Memory of this backend for the hash of 1M lookups, instead of spilling to disk.
        await conn.execute("SET LOCAL work_mem = '128MB'")
        await conn.execute(_MARK_REPEATS)
        set_id = job.coupon_set.id
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM codes WHERE set_id = $1)", set_id):
            await conn.execute(_MARK_IN_SET, job.coupon_set.id)
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE reason IS NOT NULL) AS rejected, "
            "count(*) FILTER (WHERE reason IS NULL AND dup_line IS NULL AND NOT in_set) "
            "AS candidates FROM import_staging"
        )
        assert counts is not None
        rejected, candidates = int(counts["rejected"]), int(counts["candidates"])
        refused = job.options.mode is ImportMode.all_or_nothing and rejected > 0
        accepted = 0 if refused else int(await conn.fetchval(_INSERT, job.coupon_set.id))
        await conn.execute(_REPORT, job.id)
        # Repeats and codes found in the set, plus any a concurrent writer added meanwhile.
        repeated = job.rows_read - rejected - candidates
        duplicates = repeated if refused else repeated + candidates - accepted
        await _finish(
            conn,
            job,
            accepted=accepted,
            duplicates=duplicates,
            rejected=rejected,
            action=AuditAction.import_codes,
        )


class _Rollback(Exception):
    pass


async def _merge_redemptions(job: _Job, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Each row through the API's own redeem (its locks, limits and audit row), each in a
    savepoint; every row, the report and the job's counts in one transaction, so a crash
    keeps none of them."""
    conn = job.conn
    refused: list[tuple[int, str | None, str]] = []  # line, code, reason
    accepted = 0
    try:
        async with sessionmaker() as session, session.begin():
            last = 0
            while rows := await conn.fetch(
                "SELECT n, line, code, metadata, reason FROM import_staging "
                "WHERE n > $1 ORDER BY n LIMIT 1000",
                last,
            ):
                last = rows[-1]["n"]
                for row in rows:
                    if row["reason"] is not None:
                        refused.append((row["line"], row["code"], row["reason"]))
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
                        refused.append((row["line"], row["code"], reason))
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
    job: _Job,
    refused: list[tuple[int, str | None, str]],
    *,
    accepted: int,
) -> None:
    await conn.executemany(
        "INSERT INTO import_errors (job_id, line, code, reason) VALUES ($1, $2, $3, $4)",
        [(job.id, line, _shown(code), reason) for line, code, reason in refused],
    )
    await _finish(
        conn,
        job,
        accepted=accepted,
        duplicates=0,
        rejected=len(refused),
        action=AuditAction.import_redemptions,
    )


async def _run_merge(job: _Job, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    began = time.monotonic()
    try:
        if job.options.kind is ImportKind.codes:
            await _merge_codes(job)
        else:
            await _merge_redemptions(job, sessionmaker)
        logger.info("import %s: merged in %.1f s", job.id, time.monotonic() - began)
    except Exception as exc:
        logger.exception("import job %s failed", job.id)
        if not job.conn.is_closed():
            try:
                reason = f"the import failed and nothing of it was kept ({type(exc).__name__})"
                await job.fail(reason)
            except Exception:
                logger.exception("could not mark import job %s failed", job.id)
    finally:
        await job.close()


async def _pools(conn: asyncpg.Connection, set_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """The set's pools by lower-cased name and by id."""
    found: dict[str, uuid.UUID] = {}
    for row in await conn.fetch("SELECT id, name FROM pools WHERE set_id = $1", set_id):
        found[row["name"].lower()] = row["id"]
        found[str(row["id"])] = row["id"]
    return found


async def _replay(
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
            "SELECT id FROM import_jobs WHERE api_key_id = $1 AND idempotency_key = $2 "
            "AND set_id = $3 AND kind = $4 AND created_at > now() - interval '24 hours' "
            "ORDER BY created_at DESC LIMIT 1",
            actor.id,
            idempotency_key,
            coupon_set.id,
            kind.value,
        )
        if job_id is None:
            return None
        job = await _load(conn, job_id)
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


async def start_import(
    *,
    pool: asyncpg.Pool,
    sessionmaker: async_sessionmaker[AsyncSession],
    tasks: set["asyncio.Task[None]"],
    coupon_set: CouponSet,
    options: ImportOptions,
    filename: str | None,
    chunks: AsyncIterator[bytes],
    late_fields: Callable[[], list[str]],
    actor: ApiKey,
    idempotency_key: str | None,
) -> StartedImport:
    if options.kind is ImportKind.codes:
        ensure_unique_kind(coupon_set)
    if idempotency_key is not None:
        replayed = await _replay(
            pool,
            coupon_set=coupon_set,
            kind=options.kind,
            actor=actor,
            idempotency_key=idempotency_key,
            chunks=chunks,
        )
        if replayed is not None:
            return replayed
    conn: asyncpg.Connection = await pool.acquire()
    # The upload as received, on disk, in case the fast path gives way to the staged one.
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    job_id = uuid.uuid4()
    job = _Job(conn, pool, job_id, coupon_set, options, actor, idempotency_key)
    handed_over = False
    try:
        rows: _CodeRows | _RedemptionRows = (
            _CodeRows(options, coupon_set, await _pools(conn, coupon_set.id))
            if options.kind is ImportKind.codes
            else _RedemptionRows(coupon_set, options)
        )
        await conn.fetchval(locks.SESSION_LOCK, _job_lock(job_id))
        await conn.execute(
            "INSERT INTO import_jobs (id, set_id, kind, status, format, mode, filename, "
            "options, api_key_id, idempotency_key, started_at) "
            "VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, now())",
            job_id,
            coupon_set.id,
            options.kind.value,
            options.format.value,
            options.mode.value,
            filename,
            json.dumps(options.public()),
            actor.id,
            idempotency_key,
        )
        await conn.execute(
            "DROP TABLE IF EXISTS import_staging; "
            "CREATE TEMP TABLE import_staging (n bigint, line bigint, code text, lookup text, "
            "pool_id uuid, metadata jsonb, reason text, dup_line bigint, "
            "in_set boolean NOT NULL DEFAULT false)"
        )
        try:
            began = time.monotonic()
            if isinstance(rows, _CodeRows):
                direct = await job.copy_direct(chunks, rows, spool, late_fields)
                if direct is not None:
                    logger.info(
                        "import %s: %d rows copied in %.1f s",
                        job_id,
                        job.rows_read,
                        time.monotonic() - began,
                    )
                    return direct
                chunks = _replay_spool(spool)
            await job.stage(chunks, rows)
            staged = time.monotonic() - began
            logger.info("import %s: %d rows staged in %.1f s", job_id, job.rows_read, staged)
            late = late_fields()
            if late:
                raise _invalid(late[0], "form fields must come before the file part")
        except FileRefused as refused:
            await job.fail(str(refused))
            return StartedImport(job=await _load(conn, job_id), status_code=201)
        except AppError as exc:
            await job.fail(exc.detail)
            raise
        except Exception:
            await job.fail("the upload was interrupted; nothing of it was kept")
            raise
        existing = await job.claim_checksum()
        if existing is not None:
            return StartedImport(job=existing, status_code=200)
        if job.rows_read > SYNC_ROWS:
            running = await _load(conn, job_id)
            task = asyncio.create_task(_run_merge(job, sessionmaker), name=f"import-{job_id}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            handed_over = True
            return StartedImport(job=running, status_code=202)
        handed_over = True
        await _run_merge(job, sessionmaker)
        async with pool.acquire() as reader:
            return StartedImport(job=await _load(reader, job_id), status_code=201)
    finally:
        spool.close()
        if not handed_over:
            await job.close()


async def _replay_spool(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := spool.read(1 << 20):
        yield chunk


# --------------------------------------------------------------------------- reads


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


async def error_report(pool: asyncpg.Pool, job_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The whole report as CSV (line, code, reason), read in keyset batches."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["line", "code", "reason"])
    yield out.getvalue().encode()
    last = 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, line, code, reason FROM import_errors WHERE job_id = $1 AND id > $2 "
                "ORDER BY id LIMIT 5000",
                job_id,
                last,
            )
        if not rows:
            return
        last = rows[-1]["id"]
        out.seek(0)
        out.truncate()
        writer.writerows([r["line"], cell(r["code"]), cell(r["reason"])] for r in rows)
        yield out.getvalue().encode()
