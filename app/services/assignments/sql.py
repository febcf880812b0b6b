"""The assignment engine's raw SQL. The claim itself is a PL/pgSQL function, defined in
``app/sql/claim_code.sql`` and ``app/sql/claim_codes.sql``; these statements call it.

claim_code() takes a transaction-scoped advisory lock on (pool, recipient), which
serialises the first requests of one recipient and nothing else, so the second of two
concurrent ones waits and then finds the first one's code. Otherwise it runs, once above
the scan hint and once from the start if that misses:
  picked: one free code, locked; SKIP LOCKED passes rows that other claims hold, and
    MATERIALIZED with the join on "=" keeps it to exactly one row (an IN (subquery) can
    lock more: PostgreSQL bug #15715); the partial index ix_codes_free holds only free
    codes, in claim order;
  claimed: the code, now assigned; audited: its audit row, in the same statement.
claim_codes() does the same for many recipients of one pool (see ``ClaimCoalescer``)."""

from sqlalchemy import text

# The claim in the request's transaction (with an Idempotency-Key, whose stored response
# must commit with it, and on the rare paths): one round trip.
CLAIM = text(
    "SELECT * FROM claim_code(:set_id, :pool_id, :pool_name, :rid, :address, :channel, "
    ":delivery_id, :additional, :api_key_id, :idempotency_key, :after)"
)

# The same on a plain connection in autocommit: one statement, so its own transaction.
CLAIM_ONE = "SELECT * FROM claim_code($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)"

# The set (by id, or by key) and its pool of that name in one query, so that a plain
# claim costs two round trips in all. SET_COLUMNS: what a claim needs of the set (the
# refusals of rules.ensure_usable, the ids and key of rules.public).
SET_COLUMNS = ("id", "key", "kind", "status", "valid_from", "valid_until")
_SET_AND_POOL = """
    SELECT {columns}, p.id AS pool_id, p.name AS pool_name
    FROM coupon_sets s
    LEFT JOIN pools p ON p.set_id = s.id AND lower(p.name) = lower($2)
    WHERE {match}
"""
_COLUMNS = ", ".join(f"s.{name}" for name in SET_COLUMNS)
SET_AND_POOL_BY_ID = _SET_AND_POOL.format(columns=_COLUMNS, match="s.id = $1::uuid")
SET_AND_POOL_BY_KEY = _SET_AND_POOL.format(columns=_COLUMNS, match="lower(s.key) = lower($1)")

# A coalesced batch with its lookup, in one statement (one round trip; behind PgBouncer,
# where every statement is parsed again and costs two, half of the two statements'):
# the set and pool as _SET_AND_POOL finds them, whether a claim may be made there
# (``usable``: a unique set, the pool exists, rules.ensure_usable's refusals at the
# statement's now()), and claim_codes() over the batch, which gets no recipient (so
# claims nothing) unless usable. One row per recipient that holds or got a code, each
# with the set's columns; one row with a NULL ``ord`` when none did; no row when the
# set does not exist. $1 the set, $2 the pool name, $3-$7 the recipients' fields, $8
# the scan hint.
_CLAIM_BATCH = """
    WITH target AS MATERIALIZED (
        SELECT {columns}, p.id AS pool_id, p.name AS pool_name,
               (s.kind = 'unique' AND p.id IS NOT NULL AND s.status <> 'archived'
                AND (s.valid_from IS NULL OR s.valid_from <= now())
                AND (s.valid_until IS NULL OR now() < s.valid_until)) AS usable
        FROM coupon_sets s
        LEFT JOIN pools p ON p.set_id = s.id AND lower(p.name) = lower($2)
        WHERE {match}
    )
    SELECT t.*, c.ord, c.id AS code_id, c.code, c.assigned_at, c.address, c.channel,
           c.delivery_id, c.additional, c.created
    FROM target t
    LEFT JOIN LATERAL claim_codes(
        t.id, t.pool_id, t.pool_name, CASE WHEN t.usable THEN $3::text[] END,
        $4::text[], $5::text[], $6::text[], $7::uuid[], $8::bigint
    ) c ON true
"""
CLAIM_BATCH_BY_ID = _CLAIM_BATCH.format(columns=_COLUMNS, match="s.id = $1::uuid")
CLAIM_BATCH_BY_KEY = _CLAIM_BATCH.format(columns=_COLUMNS, match="lower(s.key) = lower($1)")
