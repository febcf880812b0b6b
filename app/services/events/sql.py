"""Every statement of the events package, with why it is written by hand.

The order of events: ``(txid, src, id)``: the writing transaction's id, the source
(0 the audit trail, 1 the outbox), the row's id. A reader takes only rows whose
transaction ended before its snapshot began (``txid`` below the horizon, ``_HORIZON``): every
transaction with a smaller id has committed or rolled back by then, and new ones get
larger ids, so the rows before a position never change once a reader has passed it. A
cursor over it therefore never skips an event that commits late, which an order by row
id alone would (ids are drawn before commit: id 11 may commit before id 10). The price:
an event waits for every transaction of this database that was running when it
committed (usually milliseconds; a long import holds the feed back for its duration)."""

# The horizon: every transaction below it has ended (committed or rolled back) before
# this statement's snapshot, except those known to run in another database of the
# server (pg_stat_activity), which cannot write these tables; rows of transactions below
# it are final and visible to this statement. The snapshot's xmin alone would do, but it
# waits for long transactions of every database on the server. A transaction whose
# database is unknown (it ended meanwhile, a prepared one, no read privilege) counts.
# pg_snapshot_xip holds 64-bit ids, backend_xid 32-bit ones: compared modulo 2^32
# (in-progress ids are within 2^31 of each other).
_HORIZON = """
SELECT coalesce(
    (SELECT min(running::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS running
     WHERE NOT EXISTS (
         SELECT 1 FROM pg_stat_activity a
         WHERE a.datid IS NOT NULL AND a.datname <> current_database()
           AND a.backend_xid::text::bigint = running::text::bigint % 4294967296)),
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint) AS xmin
"""

# Events after a position, in order, at most $6 of them, not older than $7. $4: the
# audit actions wanted (app/services/events/catalogue.py), $5: the outbox types.
# Each source is read through its (txid, id) index with a row comparison; a cursor in
# the outbox part of a transaction has passed that transaction's audit rows, and one in
# its audit part none of its outbox rows.
EVENTS_AFTER = f"""
WITH h AS ({_HORIZON}),
audit AS (
    SELECT a.txid, 0 AS src, a.id, a.action, a.created_at, a.set_id, a.code,
           a.recipient_id, a.details
    FROM audit_events a, h
    WHERE (a.txid, a.id) > ($1::bigint,
                            CASE WHEN $2::int >= 1 THEN 9223372036854775807 ELSE $3::bigint END)
      AND a.txid < h.xmin AND a.action = ANY($4::text[]) AND a.created_at >= $7
    ORDER BY a.txid, a.id
    LIMIT $6
),
outbox AS (
    SELECT o.txid, 1 AS src, o.id, o.type, o.created_at, o.data
    FROM event_outbox o, h
    WHERE (o.txid, o.id) > ($1::bigint, CASE WHEN $2::int >= 1 THEN $3::bigint ELSE 0 END)
      AND o.txid < h.xmin AND o.type = ANY($5::text[]) AND o.created_at >= $7
    ORDER BY o.txid, o.id
    LIMIT $6
)
SELECT * FROM (
    SELECT a.txid, a.src, a.id, a.action, NULL::text AS type, a.created_at,
           jsonb_build_object(
               'set_id', a.set_id, 'set_key', s.key, 'code', a.code,
               'recipient_id', a.recipient_id
           ) || CASE
               WHEN a.action IN ('redeem', 'hold', 'rollback') THEN jsonb_build_object(
                   'redemption_id', a.details->>'redemption_id',
                   'order_id', coalesce(r.order_id, a.details->>'order_id'),
                   'amount', r.amount,
                   'status', CASE a.action WHEN 'hold' THEN 'held'
                                           WHEN 'redeem' THEN 'redeemed'
                                           ELSE 'rolled_back' END)
               WHEN a.action = 'assign' THEN jsonb_build_object(
                   'pool', a.details->>'pool', 'delivery_id', a.details->>'delivery_id')
               WHEN a.action IN ('unassign', 'return') THEN jsonb_build_object(
                   'pool', a.details->>'pool', 'delivery_id', a.details->>'delivery_id',
                   'reason', a.details->>'reason')
               ELSE coalesce(a.details, '{{}}'::jsonb)
           END AS data
    FROM audit a
    LEFT JOIN coupon_sets s ON s.id = a.set_id
    LEFT JOIN redemptions r
        ON a.action IN ('redeem', 'hold', 'rollback')
       AND r.id = (a.details->>'redemption_id')::uuid
    UNION ALL
    SELECT o.txid, o.src, o.id, NULL, o.type, o.created_at, o.data FROM outbox o
) e
ORDER BY e.txid, e.src, e.id
LIMIT $6
"""  # noqa: S608 - built from constants only

# The dispatcher's position; one row, locked by the instance that pumps.
LOCK_CURSOR = "SELECT txid, src, source_id FROM event_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED"
# A first start (or an emptied table): every event since the feed began (audit rows
# from before migration 0012 have no txid and are never read).
INIT_CURSOR = (
    "INSERT INTO event_cursor (id, txid, src, source_id) VALUES (1, 0, 0, 0) ON CONFLICT DO NOTHING"
)
MOVE_CURSOR = (
    "UPDATE event_cursor SET txid = $1, src = $2, source_id = $3, updated_at = now() WHERE id = 1"
)

# One attempt per event and subscribed, enabled endpoint.
FAN_OUT = """
INSERT INTO webhook_attempts (endpoint_id, event_id, event_type, body, next_attempt_at)
SELECT e.id, ev.event_id, ev.type, ev.body, now()
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS ev(event_id, type, body, n)
JOIN webhook_endpoints e ON e.enabled AND (ev.type = ANY(e.events) OR '*' = ANY(e.events))
ORDER BY ev.n
"""

# Claim due attempts: each row locked by one instance (SKIP LOCKED: the others take
# other rows), and leased until $2 (its next_attempt_at moves there, and tries counts
# this try), so a process killed mid-send leaves it due again when the lease ends.
CLAIM = """
WITH due AS (
    SELECT a.id FROM webhook_attempts a
    WHERE a.status = 'pending' AND a.next_attempt_at <= now()
    ORDER BY a.next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_attempts a
SET tries = a.tries + 1, last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => $2)
FROM due, webhook_endpoints e
WHERE a.id = due.id AND e.id = a.endpoint_id AND e.enabled
RETURNING a.id, a.tries, a.event_id, a.body, e.id AS endpoint_id, e.url, e.secret,
          CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END
              AS previous_secret
"""

# The outcome of a batch of tries. A try whose lease ran out and was claimed again
# (tries moved on) leaves the row to its newer owner.
RECORD = """
UPDATE webhook_attempts a
SET status = r.status, next_attempt_at = r.next_at, response_status = r.code,
    duration_ms = r.ms, error = r.error,
    finished_at = CASE WHEN r.status <> 'pending' THEN now() END
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::int[], $6::int[], $7::text[])
     AS u(id, tries, status, delay, code, ms, error)
CROSS JOIN LATERAL (
    SELECT u.status, u.code, u.ms, u.error,
           CASE WHEN u.status = 'pending' THEN now() + make_interval(secs => u.delay) END AS next_at
) r
WHERE a.id = u.id AND a.tries = u.tries AND a.status = 'pending'
"""

# An endpoint's health: a success clears failing_since, a failure starts it.
HEALTH = """
UPDATE webhook_endpoints e
SET failing_since = CASE WHEN h.ok THEN NULL ELSE now() END
FROM unnest($1::uuid[], $2::bool[]) AS h(id, ok)
WHERE e.id = h.id AND (h.ok = (e.failing_since IS NOT NULL))
"""

# Endpoints failing for longer than $2 seconds are disabled, with an event to the others.
DISABLE = """
WITH disabled AS (
    UPDATE webhook_endpoints
    SET enabled = false, updated_at = now(),
        disabled_reason = 'every delivery failed since '
            || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    WHERE id = ANY($1::uuid[]) AND enabled AND failing_since < now() - make_interval(secs => $2)
    RETURNING id, url, failing_since, disabled_reason
)
INSERT INTO event_outbox (type, data)
SELECT 'webhook_endpoint.disabled', jsonb_build_object(
    'endpoint_id', id::text, 'url', url, 'failing_since', failing_since,
    'reason', disabled_reason)
FROM disabled
"""

# Sets whose expiry warning is due: each warned once (SKIP LOCKED: instances share).
WARN_EXPIRING = """
WITH due AS (
    SELECT id FROM coupon_sets
    WHERE expiry_warning_days IS NOT NULL AND expiry_warned_at IS NULL
      AND valid_until IS NOT NULL AND valid_until > now()
      AND valid_until - make_interval(days => expiry_warning_days) <= now()
    LIMIT 100
    FOR UPDATE SKIP LOCKED
), warned AS (
    UPDATE coupon_sets s SET expiry_warned_at = now()
    FROM due WHERE s.id = due.id
    RETURNING s.id, s.key, s.label, s.valid_until, s.expiry_warning_days
)
INSERT INTO event_outbox (type, data)
SELECT 'coupon_set.expiring', jsonb_build_object(
    'set_id', id::text, 'set_key', key, 'label', label, 'valid_until', valid_until,
    'expiry_warning_days', expiry_warning_days)
FROM warned
"""

# Pools touched by a batch of events, locked for their alert state: by (set, name), or
# every pool of a set when the change does not say which.
TOUCHED_POOLS = """
SELECT p.id, p.set_id, s.key AS set_key, p.name, p.low_stock_threshold, p.low_stock_days,
       p.stock_state
FROM pools p
JOIN coupon_sets s ON s.id = p.set_id
JOIN unnest($1::uuid[], $2::text[]) AS t(set_id, name)
  ON p.set_id = t.set_id AND (t.name IS NULL OR lower(p.name) = lower(t.name))
ORDER BY p.id
FOR UPDATE OF p
"""

SET_STOCK_STATE = "UPDATE pools SET stock_state = $2, stock_state_at = now() WHERE id = $1"

OUTBOX = "INSERT INTO event_outbox (type, data) VALUES ($1, $2::jsonb)"

# Retention: outbox rows and finished attempts older than $1 days.
PURGE_OUTBOX = "DELETE FROM event_outbox WHERE created_at < now() - make_interval(days => $1)"
PURGE_ATTEMPTS = """
DELETE FROM webhook_attempts
WHERE status <> 'pending' AND created_at < now() - make_interval(days => $1)
"""

# The queue for the metrics: attempts due now, and how late the oldest of them is.
QUEUE = """
SELECT count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS lag
FROM webhook_attempts
WHERE status = 'pending' AND next_attempt_at <= now()
"""
