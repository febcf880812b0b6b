"""claim_codes(): the claims of many recipients of one pool in one statement

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The set-based twin of claim_code() (migration 0003), for coalesced requests. A frozen
# copy: the live definition is app/sql/claim_codes.sql, which explains it.
CLAIM_CODES = """
CREATE FUNCTION claim_codes(
    p_set_id uuid, p_pool_id uuid, p_pool_name text, p_recipient_ids text[],
    p_addresses text[], p_channels text[], p_delivery_ids text[], p_api_key_ids uuid[],
    p_after bigint
) RETURNS TABLE (
    ord integer, id bigint, code text, assigned_at timestamptz, address text, channel text,
    delivery_id text, additional boolean, created boolean
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_lock bigint;
    v_missing integer[];
    v_claimed integer;
BEGIN
    -- The recipients' locks, always in the same order: two batches never deadlock.
    FOR v_lock IN
        SELECT DISTINCT hashtextextended(p_pool_id::text || '/' || r, 0)
        FROM unnest(p_recipient_ids) AS r ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
    -- From here on a wait can only be on a delivery's confirm that is giving one of
    -- these recipients a code (uq_codes_recipient), and the confirm may in turn wait
    -- for an entry of this statement: a deadlock that could abort the confirm. So this
    -- statement gives up first, long before deadlock_timeout; its requests then claim
    -- one by one (claim_code(), which cannot close such a cycle).
    PERFORM set_config('lock_timeout', '50ms', true);
    RETURN QUERY
        SELECT t.ord::integer, c.id, c.code::text, c.assigned_at, c.address::text,
               c.channel::text, c.delivery_id::text, c.additional, false
        FROM unnest(p_recipient_ids) WITH ORDINALITY AS t(rid, ord)
        JOIN codes c ON c.pool_id = p_pool_id AND c.recipient_id = t.rid AND NOT c.additional;
    SELECT coalesce(array_agg(t.ord::integer ORDER BY t.ord), '{}') INTO v_missing
    FROM unnest(p_recipient_ids) WITH ORDINALITY AS t(rid, ord)
    WHERE NOT EXISTS (
        SELECT 1 FROM codes c
        WHERE c.pool_id = p_pool_id AND c.recipient_id = t.rid AND NOT c.additional);
    LOOP
        EXIT WHEN cardinality(v_missing) = 0;
        RETURN QUERY
            WITH locked AS MATERIALIZED (
                SELECT c.id FROM codes c
                WHERE c.pool_id = p_pool_id AND c.status = 'available' AND c.id > p_after
                  AND NOT EXISTS (
                      SELECT 1 FROM redemptions r
                      WHERE r.code_id = c.id AND r.status = 'held'
                        AND r.hold_expires_at > now())
                ORDER BY c.id
                LIMIT cardinality(v_missing)
                FOR UPDATE SKIP LOCKED
            ), picked AS MATERIALIZED (
                SELECT locked.id, row_number() OVER (ORDER BY locked.id) AS rn FROM locked
            ), paired AS MATERIALIZED (
                SELECT picked.id, w.ord::integer AS ord
                FROM picked
                JOIN unnest(v_missing) WITH ORDINALITY AS w(ord, rn) ON w.rn = picked.rn
            ), claimed AS (
                UPDATE codes AS c
                SET status = 'assigned', recipient_id = p_recipient_ids[paired.ord],
                    address = p_addresses[paired.ord], channel = p_channels[paired.ord],
                    delivery_id = p_delivery_ids[paired.ord], additional = false,
                    assigned_at = now()
                FROM paired
                WHERE c.id = paired.id
                RETURNING paired.ord, c.id, c.code, c.assigned_at, c.address, c.channel,
                          c.delivery_id, c.additional
            ), audited AS (
                INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id,
                                          idempotency_key, details)
                SELECT p_set_id, 'assign', claimed.code, p_recipient_ids[claimed.ord],
                       p_api_key_ids[claimed.ord], NULL,
                       jsonb_build_object('pool', p_pool_name,
                                          'delivery_id', p_delivery_ids[claimed.ord])
                FROM claimed
            )
            SELECT claimed.ord, claimed.id, claimed.code::text, claimed.assigned_at,
                   claimed.address::text, claimed.channel::text, claimed.delivery_id::text,
                   claimed.additional, true
            FROM claimed;
        -- Codes are paired with the first recipients still missing one, in order.
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
        v_missing := v_missing[v_claimed + 1:];
        EXIT WHEN p_after = 0;
        -- Not enough above the hint: look again from the start of the pool.
        p_after := 0;
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.execute(CLAIM_CODES)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION claim_codes(uuid, uuid, text, text[], text[], text[], text[], uuid[], "
        "bigint)"
    )
