-- Takes the lock on a shared set's usage counter (set_usage, FOR NO KEY UPDATE) and
-- gives back the uses of the set's holds that have expired; returns the set's uses
-- now (redeemed + held and not expired), or NULL when p_wait is false and another
-- transaction holds the counter (or it does not exist yet).
--
-- Every write on a shared set's uses (redeem, confirm, release, roll back) takes this
-- lock first, so they queue on this one row and on nothing else, and a count read
-- here stays true until the transaction ends. An expired hold is given back exactly
-- once: its status becomes 'expired' (leaving ix_redemptions_shared_holds, the index
-- that finds them, so each is read once) in the same transaction as the counter goes
-- down, under the lock that any release of it takes first too. now() is the
-- transaction's start, so a hold counts, or not, the same way for the whole
-- transaction. The first use of a set creates its counter.
CREATE OR REPLACE FUNCTION lock_set_usage(p_set_id uuid, p_wait boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_uses bigint;
    v_gone bigint;
BEGIN
    IF p_wait THEN
        SELECT u.uses INTO v_uses FROM set_usage u WHERE u.set_id = p_set_id
        FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            INSERT INTO set_usage (set_id) VALUES (p_set_id) ON CONFLICT (set_id) DO NOTHING;
            SELECT u.uses INTO v_uses FROM set_usage u WHERE u.set_id = p_set_id
            FOR NO KEY UPDATE;
        END IF;
    ELSE
        SELECT u.uses INTO v_uses FROM set_usage u WHERE u.set_id = p_set_id
        FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    WITH gone AS (
        UPDATE redemptions r SET status = 'expired'
        WHERE r.set_id = p_set_id AND r.code_id IS NULL AND r.status = 'held'
          AND r.hold_expires_at <= now()
        RETURNING 1
    )
    SELECT count(*) INTO v_gone FROM gone;
    IF v_gone > 0 THEN
        UPDATE set_usage u SET uses = u.uses - v_gone WHERE u.set_id = p_set_id
        RETURNING u.uses INTO v_uses;
    END IF;
    RETURN v_uses;
END $$;
