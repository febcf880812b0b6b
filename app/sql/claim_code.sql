-- claim_code(): one recipient's code of one pool, in one round trip (the lock on the
-- recipient, the claim and its audit row). Why each part is safe under concurrency:
-- app/services/assignments/sql.py and docs/architecture.md, "The claim".
--
-- The live definition. Migration 0003 created it and keeps its own frozen copy; a change
-- is made here and applied by a new migration that runs this file's text. A test checks
-- that a migrated database holds exactly this, and that a free code is stated as
-- app/models/code.py states it (FREE, free()): tests/services/assignments/test_sql_functions.py.
CREATE OR REPLACE FUNCTION claim_code(
    p_set_id uuid, p_pool_id uuid, p_pool_name text, p_recipient_id text, p_address text,
    p_channel text, p_delivery_id text, p_additional boolean, p_api_key_id uuid,
    p_idempotency_key text, p_after bigint
) RETURNS TABLE (
    id bigint, code text, assigned_at timestamptz, address text, channel text,
    delivery_id text, additional boolean, created boolean
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF NOT p_additional THEN
        PERFORM pg_advisory_xact_lock(
            hashtextextended(p_pool_id::text || '/' || p_recipient_id, 0));
        RETURN QUERY
            SELECT c.id, c.code::text, c.assigned_at, c.address::text, c.channel::text,
                   c.delivery_id::text, c.additional, false
            FROM codes c
            WHERE c.pool_id = p_pool_id AND c.recipient_id = p_recipient_id
              AND NOT c.additional;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    LOOP
        RETURN QUERY
            WITH picked AS MATERIALIZED (
                SELECT c.id FROM codes c
                WHERE c.pool_id = p_pool_id AND c.status = 'available' AND c.id > p_after
                  -- a free code held at a checkout (redeemed without being assigned) waits
                  AND NOT EXISTS (
                      SELECT 1 FROM redemptions r
                      WHERE r.code_id = c.id AND r.status = 'held'
                        AND r.hold_expires_at > now())
                ORDER BY c.id
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE codes AS c
                SET status = 'assigned', recipient_id = p_recipient_id, address = p_address,
                    channel = p_channel, delivery_id = p_delivery_id,
                    additional = p_additional, assigned_at = now()
                FROM picked
                WHERE c.id = picked.id
                RETURNING c.id, c.code, c.assigned_at, c.address, c.channel, c.delivery_id,
                          c.additional
            ), audited AS (
                INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id,
                                          idempotency_key, details)
                SELECT p_set_id, 'assign', claimed.code, p_recipient_id, p_api_key_id,
                       p_idempotency_key,
                       jsonb_build_object('pool', p_pool_name, 'delivery_id', p_delivery_id)
                FROM claimed
            )
            SELECT claimed.id, claimed.code::text, claimed.assigned_at, claimed.address::text,
                   claimed.channel::text, claimed.delivery_id::text, claimed.additional, true
            FROM claimed;
        EXIT WHEN FOUND OR p_after = 0;
        -- Nothing above the hint: look again from the start of the pool.
        p_after := 0;
    END LOOP;
END $$;
