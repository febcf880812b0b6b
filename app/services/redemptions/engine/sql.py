"""Every statement of the redemption engine (asyncpg ``$n``). The functions they call are
defined in app/sql/*.sql (created by migration 0008), where each says why it is exact
under concurrency."""

# The engine's PL/pgSQL functions: app/sql/<name>.sql each (the live definition; a
# migration that changes one copies the file; tests/services/redemptions checks that
# the migrated database runs what the files say).
FUNCTIONS = (
    "find_redeemable",
    "redemption_facts",
    "redemption_refusal",
    "lock_set_usage",
    "redeem_codes",
    "validate_codes",
    "settle_redemption",
)

# A batch of redemptions (or holds), one element of each array per request, in one
# statement and so one transaction: redeem_codes() locks each request's code or its
# shared set's counter, applies the requests in order under those locks and writes
# their audit rows. A batch of one is a single redemption. $11: how long the batch may
# wait for its one waited-for lock (milliseconds; NULL: as long as it takes).
REDEEM = "SELECT * FROM redeem_codes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"

# What those redemptions would answer now: validate_codes() is STABLE, so it can neither
# write nor lock; it reads the same indexes and counters from one snapshot.
VALIDATE = "SELECT * FROM validate_codes($1, $2, $3, $4, $5)"

# Confirm, release or roll back, with the audit row: settle_redemption() locks the
# set's counter (shared sets) and then the redemption's row, so a second settlement
# sees the first.
SETTLE = "SELECT * FROM settle_redemption($1, $2, $3, $4)"

# One redemption as stored, with its set's key (the primary key; no lock: a read).
GET = """
    SELECT r.id, r.code, r.set_id, s.key AS set_key, r.status, r.recipient_id, r.order_id,
           r.amount, r.redeemed_at, r.hold_expires_at, r.settled_at
    FROM redemptions r
    JOIN coupon_sets s ON s.id = r.set_id
    WHERE r.id = $1
"""
