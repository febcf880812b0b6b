"""A job's report: the rows it refused, and the whole of it as errors.csv."""

import csv
import io
import uuid
from collections.abc import AsyncIterator

import asyncpg

from app.csv_guard import cell
from app.services.imports import sql


async def write_errors(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    refused: list[tuple[int, str | None, str | None]],
) -> None:
    """The refused rows (line, code, reason), in the transaction of the job's end."""
    await conn.executemany(
        sql.INSERT_ERROR, [(job_id, line, code, reason) for line, code, reason in refused]
    )


async def error_report(pool: asyncpg.Pool, job_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The whole report as CSV (line, code, reason), read in keyset batches."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["line", "code", "reason"])
    yield out.getvalue().encode()
    last = 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql.ERRORS_PAGE, job_id, last)
        if not rows:
            return
        last = rows[-1]["id"]
        out.seek(0)
        out.truncate()
        writer.writerows([r["line"], cell(r["code"]), cell(r["reason"])] for r in rows)
        yield out.getvalue().encode()
