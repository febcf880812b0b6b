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
| import-job | session | the connection running an import job | job id |
| confirm | session | the connection running a delivery's confirm | delivery id |
| confirm-worker | session, shared | each connection working on a confirm | delivery id |
| bootstrap | transaction | the first start, creating the admin key | - |

The claim functions (``app/sql/claim_code.sql``, ``claim_codes.sql``) lock
``hashtextextended(pool_id || '/' || recipient_id, 0)``: they predate the namespaces
and a pool id (a UUID) cannot begin like any namespace above, so their keys stay apart.
Session-scoped locks end with their connection, which is how a crashed import or
confirm is told from a running one."""

import enum


class Namespace(enum.StrEnum):
    IDEMPOTENCY = "idempotency"
    IMPORT = "import"
    IMPORT_JOB = "import-job"
    CONFIRM = "confirm"
    CONFIRM_WORKER = "confirm-worker"
    BOOTSTRAP = "bootstrap"


def name(namespace: Namespace, *parts: object) -> str:
    """The text whose hash is the lock's key: ``namespace/part/part``."""
    return "/".join([namespace.value, *(str(part) for part in parts)])


# asyncpg ($1 is a name()); the key is hashed in the database.
XACT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
TRY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))"
SESSION_LOCK = "SELECT pg_advisory_lock(hashtextextended($1, 0))"
SESSION_LOCK_SHARED = "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))"
TRY_SESSION_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
SESSION_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
