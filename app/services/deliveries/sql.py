"""Every raw SQL statement of the delivery engine, each with why it is written so.

asyncpg ``$n`` statements run on plain connections: the confirm's own (confirm.py), the
connection under the request's session (analysis.py, failures.py) or the plain pool
(messages.py). The three ``text()`` ones run on the request's session; the rest of the
package's session work is ORM."""

from sqlalchemy import text

from app.models.code import free

# ---------------------------------------------------------------------------- targets

# A batch of targets in one statement, in the order given; a recipient already in the
# list (or earlier in the batch) is skipped by the unique index, so the first one stays.
# The count tells added from duplicates without reading the rows back.
INSERT_TARGETS = text(
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

# A page of the target list (seq order, keyset on seq) with the code each target holds:
# the primary code of the pool (found by uq_codes_recipient) or, for a shared set, the
# shared code when they were given it.
_TARGETS = """
SELECT dr.seq, dr.recipient_id, dr.address, dr.fields, dr.failed_at, {code} AS code
FROM delivery_recipients dr
{join}
WHERE dr.delivery_id = :delivery_id AND dr.seq > :after
ORDER BY dr.seq
LIMIT :limit
"""
TARGETS_UNIQUE = text(
    _TARGETS.format(
        code="c.code",
        join="LEFT JOIN codes c ON c.pool_id = :pool_id AND c.recipient_id = dr.recipient_id "
        "AND NOT c.additional",
    )
)
TARGETS_SHARED = text(
    _TARGETS.format(
        code="CASE WHEN a.id IS NULL THEN NULL ELSE CAST(:shared_code AS text) END",
        join="LEFT JOIN shared_assignments a ON a.set_id = :set_id "
        "AND a.recipient_id = dr.recipient_id AND NOT a.additional",
    )
)

# ---------------------------------------------------------------------------- analysis

# The seq of the last target the message limit keeps ($2 = messages - 1): the list is
# in seq order, so the first N messages are the targets up to this seq.
LAST_SEQ = """
SELECT seq FROM delivery_recipients WHERE delivery_id = $1
ORDER BY seq OFFSET $2 LIMIT 1
"""

# Targets (up to the limit's last one) who already hold a primary code of the pool
# ($3 = pool id) or, for a shared set, the shared code ($3 = set id).
_HOLDING = """
    SELECT count(*) FROM delivery_recipients dr
    WHERE dr.delivery_id = $1 AND dr.seq <= $2
      AND EXISTS (SELECT 1 FROM {table} h
                  WHERE h.{owner} = $3 AND h.recipient_id = dr.recipient_id
                    AND NOT h.additional)
"""
HOLDING_CODE = _HOLDING.format(table="codes", owner="pool_id")
HOLDING_SHARED = _HOLDING.format(table="shared_assignments", owner="set_id")

# Free codes per pool of the set; a free code held at a checkout is not free.
# A count per pool, each a probe of that pool's free list (ix_codes_free): a join
# could be planned as one walk over every pool's free codes, other sets' too.
FREE_PER_POOL = """
    SELECT p.id, p.name,
           (SELECT count(*) FROM codes c WHERE c.pool_id = p.id AND {free_c}) AS available
    FROM pools p
    WHERE p.set_id = $1
    ORDER BY p.name
""".format(free_c=free("c"))  # noqa: S608 - built from constants only

# The uses a shared set has taken: its counter (app/models/usage.py), less the holds
# that expired and are not given back yet (as a validation reads it; index
# ix_redemptions_shared_holds). O(1) in the code's past uses.
SHARED_USES = """
    SELECT coalesce((SELECT uses FROM set_usage WHERE set_id = $1), 0)
         - (SELECT count(*) FROM redemptions
            WHERE set_id = $1 AND status = 'held' AND code_id IS NULL
              AND hold_expires_at <= now())
"""

# Targets (up to seq $2) who used a shared code as often as its per_recipient_limit
# ($4) allows: a message would bring them a code they cannot use. One probe of
# ix_redemptions_active_set (set, recipient) per target.
USED_UP_TARGETS = """
    SELECT count(*) FROM delivery_recipients dr
    WHERE dr.delivery_id = $1 AND dr.seq <= $2
      AND (SELECT count(*) FROM redemptions r
           WHERE r.set_id = $3 AND r.recipient_id = dr.recipient_id
             AND (r.status = 'redeemed'
                  OR (r.status = 'held' AND r.hold_expires_at > now()))) >= $4
"""

# ---------------------------------------------------------------------------- confirm

# The deliveries a process left ``sending``; each is checked against its advisory lock.
# ``stale``: its heartbeat stopped more than $1 seconds ago.
SENDING = """
SELECT id, heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1) AS stale
FROM deliveries WHERE status = 'sending'
"""

# The running confirm says it is alive (confirm.HEARTBEAT_SECONDS).
HEARTBEAT = "UPDATE deliveries SET heartbeat_at = now() WHERE id = $1 AND status = 'sending'"

# The backends holding an advisory lock ($1 a locks.name(), held exclusive or shared):
# pg_locks shows a bigint key as its high half (classid) and low half (objid).
LOCK_HOLDERS = """
SELECT l.pid FROM pg_locks l, LATERAL (SELECT hashtextextended($1, 0) AS k) AS key
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295
  AND l.pid <> pg_backend_pid()
"""

# Ends a backend and waits up to 5 s for it to be gone (its locks with it).
TERMINATE = "SELECT pg_terminate_backend($1, 5000)"

# A confirm request that found another one running (elsewhere) asks only whether it ended
# (no row: no such delivery).
STATUS = "SELECT status FROM deliveries WHERE id = $1"

# The start of a confirm: the delivery's row, locked for the transaction that checks it
# and marks it sending (so a PATCH or new targets wait), with what RUN adds to it. The
# one read of the delivery at start: everything else comes from it.
DELIVERY_FOR_START = """
SELECT d.*, p.name AS pool_name, s.shared_code
FROM deliveries d JOIN coupon_sets s ON s.id = d.coupon_set_id
LEFT JOIN pools p ON p.id = d.pool_id
WHERE d.id = $1
FOR UPDATE OF d
"""

# The delivery's set, for the usability check and the analysis at start.
COUPON_SET = "SELECT * FROM coupon_sets WHERE id = $1"

# What a confirm (or a give-back) needs of a delivery, its set and its pool.
RUN = """
SELECT d.id, d.status, d.coupon_set_id, d.pool_id, p.name AS pool_name, s.shared_code,
       d.channel, d.last_seq, d.api_key_id
FROM deliveries d JOIN coupon_sets s ON s.id = d.coupon_set_id
LEFT JOIN pools p ON p.id = d.pool_id WHERE d.id = $1"""
# The same, with the delivery's row locked: reported failures queue on it, so two
# reports of one recipient cannot both give its code back.
RUN_FOR_UPDATE = RUN + "\nFOR UPDATE OF d"

# Marks the delivery sending, with the analysis it was confirmed on and the last target
# that gets a message; the counters start again (a failed confirm may be run again).
START = """
UPDATE deliveries SET status = 'sending', analysis = $2::jsonb, last_seq = $3,
    processed = 0, assigned = 0, kept = 0, failure_reason = NULL,
    confirmed_at = now(), finished_at = NULL, api_key_id = $4, updated_at = now(),
    heartbeat_at = now()
WHERE id = $1
"""

# The upper seq of every full batch of the targets to message, so batches can run on
# several connections at once, each over its own range of the list.
BOUNDS = """
SELECT seq FROM (
    SELECT seq, row_number() OVER (ORDER BY seq) AS n
    FROM delivery_recipients WHERE delivery_id = $1 AND seq <= $2
) numbered
WHERE n % $3 = 0
ORDER BY seq
"""

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
CLAIM_BATCH = (
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

# One batch of a shared set: a shared assignment per target who has none (the partial
# unique index skips the others), each audited with the shared code.
SHARE_BATCH = (
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

# A batch's counts, in the batch's transaction: progress shows what is committed.
PROGRESS = """
UPDATE deliveries SET processed = processed + $2,
    assigned = assigned + $3, kept = kept + $4, updated_at = now()
WHERE id = $1
"""

FINISH = """
UPDATE deliveries SET status = 'finished', finished_at = now(), updated_at = now()
WHERE id = $1
"""

# Give back what a delivery handed out, to every target or only to some ($4). Only
# codes this delivery gave and nobody used: a code a target held already stays theirs.
RETURN_CODES = """
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
           jsonb_build_object('delivery_id', $3::text, 'reason', $7::text,
                              'pool', (SELECT name FROM pools WHERE id = $2))
    FROM returned
)
SELECT returned.recipient_id FROM returned
"""

RETURN_SHARED = """
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

# A confirm that cannot finish, after its codes went back (same transaction): the
# counters say nothing was handed out, the reason says why.
FAIL = """
UPDATE deliveries SET status = 'failed', failure_reason = $2, processed = 0,
    assigned = 0, kept = 0, updated_at = now()
WHERE id = $1
"""

# ---------------------------------------------------------------------------- failures

# The reported recipients that got a message ($3 = the last seq messaged), read once:
# each comes back with whether this report marked it failed (a second report of the
# same recipient marks nothing). The delivery's row lock (RUN_FOR_UPDATE) orders reports.
MARK_FAILED = """
WITH targeted AS MATERIALIZED (
    SELECT recipient_id, failed_at FROM delivery_recipients
    WHERE delivery_id = $1 AND recipient_id = ANY($2) AND seq <= $3
), marked AS (
    UPDATE delivery_recipients dr SET failed_at = now()
    FROM targeted t
    WHERE dr.delivery_id = $1 AND dr.recipient_id = t.recipient_id AND t.failed_at IS NULL
    RETURNING dr.recipient_id
)
SELECT t.recipient_id, m.recipient_id IS NOT NULL AS newly
FROM targeted t LEFT JOIN marked m USING (recipient_id)
"""

# The counts after a report: codes given back no longer count as assigned.
COUNT_FAILED = """
UPDATE deliveries SET failed_messages = failed_messages + $2,
    assigned = assigned - $3, updated_at = now()
WHERE id = $1 RETURNING failed_messages
"""

# ---------------------------------------------------------------------------- messages

# A page of the messages of a finished delivery: targets up to the last one messaged
# ($3), without the reported failures, keyset on seq, with each target's code (its
# primary code of the pool $5, or the shared code $5).
_MESSAGES = """
SELECT dr.seq, dr.recipient_id, dr.address, dr.fields, {code}
FROM delivery_recipients dr
{join}
WHERE dr.delivery_id = $1 AND dr.seq > $2 AND dr.seq <= $3 AND dr.failed_at IS NULL
ORDER BY dr.seq
LIMIT $4
"""
MESSAGES_UNIQUE = _MESSAGES.format(
    code="c.code",
    join="LEFT JOIN codes c ON c.pool_id = $5 AND c.recipient_id = dr.recipient_id "
    "AND NOT c.additional",
)
MESSAGES_SHARED = _MESSAGES.format(code="$5::text AS code", join="")

# The first complete read of a delivery's messages marks it sent: its codes count as
# `sent` in the statistics from then on. Later reads change nothing.
MARK_SENT = "UPDATE deliveries SET sent_at = now() WHERE id = $1 AND sent_at IS NULL"
