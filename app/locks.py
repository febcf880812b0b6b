"""Every PostgreSQL advisory lock the service takes, in one registry.

Advisory locks share one 64-bit key space per database. Each kind of lock has a
namespace here, and its key is ``hashtextextended('<namespace>/<parts>', 0)``, so two
kinds can only meet by a hash collision. ``name()`` builds the text; the SQL below
hashes it, so Python and SQL agree on the key.

| namespace | scope | held by | parts |
|---|---|---|---|
| (claim, no prefix) | transaction | claim_code(), claim_codes() | pool, recipient |
| idempotency | transaction | a write request with an Idempotency-Key | key digest, key |
| import | transaction | an import asking whether its file came before | set, kind, sha |
| import-job | transaction (``Held``) | a running import job | job id |
| confirm | transaction (``Held``) | a running delivery's confirm | delivery id |
| confirm-worker | transaction, shared | each batch transaction of a confirm | delivery id |
| bootstrap | transaction | the first start, creating the admin key | - |
| stats | transaction | the statistics' folder, or a recount | - |

The claim functions (``app/sql/claim_code.sql``, ``claim_codes.sql``) lock
``hashtextextended(pool_id || '/' || recipient_id, 0)``: they predate the namespaces
and a pool id (a UUID) cannot begin like any namespace above, so their keys stay apart.

Every lock is transaction-scoped, so it works through PgBouncer in transaction mode
(COUPONS_DB_PGBOUNCER), where a session lock would stay on a server connection that
other clients then use. A lock that lasts as long as some work (an import job, a
confirm) is ``Held``: a transaction of its own, open on a connection of its own for as
long as the work runs. It ends with that connection too, which is how a crashed import
or confirm is told from a running one: ``is_free`` probes the lock in autocommit (taken
and at once released when free)."""

import enum
from dataclasses import dataclass
from typing import Any

import asyncpg


class Namespace(enum.StrEnum):
    IDEMPOTENCY = "idempotency"
    IMPORT = "import"
    IMPORT_JOB = "import-job"
    CONFIRM = "confirm"
    CONFIRM_WORKER = "confirm-worker"
    BOOTSTRAP = "bootstrap"
    STATS = "stats"


def name(namespace: Namespace, *parts: object) -> str:
    """The text whose hash is the lock's key: ``namespace/part/part``."""
    return "/".join([namespace.value, *(str(part) for part in parts)])


# asyncpg ($1 is a name()); the key is hashed in the database.
XACT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
TRY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))"
XACT_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))"


@dataclass
class Held:
    """A lock held by an open transaction on a connection of its own (see the module)."""

    pool: asyncpg.Pool
    connection: asyncpg.Connection
    transaction: Any  # asyncpg.transaction.Transaction
    released: bool = False

    async def release(self) -> None:
        """Ends the transaction (and so the lock) and gives the connection back; a
        connection that cannot end it is closed, which ends it too. Once only: the
        connection may serve someone else after that."""
        if self.released:
            return
        self.released = True
        try:
            if not self.connection.is_closed():
                await self.transaction.rollback()
        except Exception:
            self.connection.terminate()
        finally:
            await self.pool.release(self.connection)


async def hold(pool: asyncpg.Pool, lock: str, *, wait: bool = True) -> Held | None:
    """The lock ``lock`` (a ``name()``), held until ``Held.release``; None when ``wait``
    is False and another holds it."""
    connection: asyncpg.Connection = await pool.acquire()
    transaction = connection.transaction()
    try:
        await transaction.start()
        if wait:
            await connection.execute(XACT_LOCK, lock)
        elif not await connection.fetchval(TRY_XACT_LOCK, lock):
            await transaction.rollback()
            await pool.release(connection)
            return None
    except BaseException:
        connection.terminate()
        await pool.release(connection)
        raise
    return Held(pool, connection, transaction)


async def is_free(connection: asyncpg.Connection, lock: str) -> bool:
    """Whether nobody holds ``lock``. In autocommit the probe's lock ends with its
    statement; inside a transaction it lasts until that transaction ends."""
    return bool(await connection.fetchval(TRY_XACT_LOCK, lock))
