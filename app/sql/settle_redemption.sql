-- Confirms or releases a hold, or rolls back a redemption (p_action 'confirm',
-- 'release', 'rollback'), with its audit row, in one statement. One row comes back:
-- `refusal` NULL and the redemption as it is now, or 'not-found', 'invalid-state'
-- (with `state`, the status it was found in) or 'hold-expired'.
--
-- The redemption's row is locked (FOR UPDATE) before its state is read, so of two
-- concurrent settlements the second sees the first's outcome (a second rollback is
-- refused). For a shared set the counter is locked before it (lock_set_usage(), the
-- order every write on the set's uses follows, so none waits for another in a
-- cycle), which also gives back the set's expired holds: a hold still 'held' after
-- that is live. A rollback, or the release of a live hold, gives its use back; an
-- expired hold ('expired': given back already) can still be released, without
-- giving it back twice, and reads as the hold it was ('held') in the refusals. For a
-- unique code the code's row follows the redemption: redeemed on confirm, free again
-- (or back with its recipient) on rollback.
CREATE OR REPLACE FUNCTION settle_redemption(
    p_id uuid, p_action text, p_api_key_id uuid, p_idempotency_key text
) RETURNS TABLE (
    refusal text, state text, id uuid, set_id uuid, set_key text, code text, status text,
    recipient_id text, order_id text, amount numeric, redeemed_at timestamptz,
    hold_expires_at timestamptz, settled_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_set_id uuid;
    v_shared boolean;
    v redemptions;
BEGIN
    SELECT r.set_id, r.code_id IS NULL INTO v_set_id, v_shared
    FROM redemptions r WHERE r.id = p_id;
    IF NOT FOUND THEN
        refusal := 'not-found';
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_shared THEN
        PERFORM lock_set_usage(v_set_id, true);
    END IF;
    SELECT * INTO v FROM redemptions r WHERE r.id = p_id FOR UPDATE;
    state := CASE v.status WHEN 'expired' THEN 'held' ELSE v.status END;
    refusal := CASE
        WHEN p_action = 'rollback' AND state <> 'redeemed' THEN 'invalid-state'
        WHEN p_action <> 'rollback' AND state <> 'held' THEN 'invalid-state'
        WHEN p_action = 'confirm'
             AND (v.status = 'expired' OR v.hold_expires_at <= now()) THEN 'hold-expired'
    END;
    IF refusal IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE redemptions r
    SET status = CASE p_action
            WHEN 'confirm' THEN 'redeemed' WHEN 'release' THEN 'released' ELSE 'rolled_back'
        END,
        settled_at = now()
    WHERE r.id = p_id
    RETURNING r.id, r.set_id, r.code, r.status, r.recipient_id, r.order_id, r.amount,
              r.redeemed_at, r.hold_expires_at, r.settled_at
    INTO id, set_id, code, status, recipient_id, order_id, amount, redeemed_at,
         hold_expires_at, settled_at;
    IF v_shared THEN
        IF p_action = 'rollback' OR (p_action = 'release' AND v.status = 'held') THEN
            UPDATE set_usage u SET uses = u.uses - 1 WHERE u.set_id = v_set_id;
        END IF;
    ELSIF p_action = 'confirm' THEN
        UPDATE codes c SET status = 'redeemed', redeemed_at = v.redeemed_at
        WHERE c.id = v.code_id;
    ELSIF p_action = 'rollback' THEN
        UPDATE codes c
        SET status = CASE WHEN c.recipient_id IS NOT NULL THEN 'assigned' ELSE 'available' END,
            redeemed_at = NULL
        WHERE c.id = v.code_id;
    END IF;
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id,
                              idempotency_key, details)
    VALUES (v_set_id, p_action, code, recipient_id, p_api_key_id, p_idempotency_key,
            jsonb_build_object('redemption_id', p_id::text));
    SELECT s.key INTO set_key FROM coupon_sets s WHERE s.id = v_set_id;
    RETURN NEXT;
END $$;
