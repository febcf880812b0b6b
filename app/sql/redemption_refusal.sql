-- Why a use of a code would be refused now, or NULL: the rules of a redemption in the
-- order the API has always applied them (the first that fails names the refusal), and
-- `used`, the count a 'per-recipient-limit' or 'max-uses' refusal was about. p_code is
-- NULL for a shared set, whose uses in all (p_uses) the caller reads: the locked
-- counter to redeem, a snapshot to validate. The rest is read here, through indexes
-- and only when the rules before it passed: a unique code's use that counts
-- (redeemed, or held and not expired: ix_redemptions_active_code, a handful of rows
-- per code), the recipient's assignment of a shared code bound to its recipients, and
-- the recipient's uses of a set with a per-recipient limit (ix_redemptions_active_set:
-- at most the limit's worth of rows, never the set's past uses). Called under the
-- code's or the counter's lock to redeem; STABLE, so it can neither write nor lock.
-- The names returned are mapped to problem types by app/services/redemptions/service.py.
CREATE OR REPLACE FUNCTION redemption_refusal(
    p_set coupon_sets, p_code codes, p_at timestamptz, p_recipient_id text, p_uses bigint,
    OUT refusal text, OUT used bigint
) LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_recipient_uses bigint;
BEGIN
    refusal := CASE
        WHEN p_set.status = 'archived' THEN 'set-archived'
        WHEN p_at < p_set.valid_from THEN 'not-yet-valid'
        WHEN p_at >= p_set.valid_until THEN 'expired'
    END;
    IF refusal IS NOT NULL THEN
        RETURN;
    END IF;
    IF p_code.id IS NOT NULL THEN
        refusal := CASE
            WHEN p_code.status = 'void' THEN 'voided'
            WHEN EXISTS (
                SELECT 1 FROM redemptions r
                WHERE r.code_id = p_code.id AND r.status IN ('redeemed', 'held')
                  AND (r.status = 'redeemed' OR r.hold_expires_at > now()))
                THEN 'already-redeemed'
            WHEN p_set.bind_to_recipient AND p_code.recipient_id IS NOT NULL
                 AND p_recipient_id IS DISTINCT FROM p_code.recipient_id
                THEN 'recipient-mismatch'
        END;
        RETURN;
    END IF;
    IF p_set.bind_to_recipient AND NOT EXISTS (
        SELECT 1 FROM shared_assignments a
        WHERE a.set_id = p_set.id AND a.recipient_id = p_recipient_id)
    THEN
        refusal := 'not-given';
        RETURN;
    END IF;
    IF p_set.per_recipient_limit IS NOT NULL THEN
        IF p_recipient_id IS NULL THEN
            refusal := 'recipient-required';
            RETURN;
        END IF;
        SELECT count(*) INTO v_recipient_uses FROM redemptions r
        WHERE r.set_id = p_set.id AND r.recipient_id = p_recipient_id
          AND r.status IN ('redeemed', 'held')
          AND (r.status = 'redeemed' OR r.hold_expires_at > now());
        IF v_recipient_uses >= p_set.per_recipient_limit THEN
            refusal := 'per-recipient-limit';
            used := v_recipient_uses;
            RETURN;
        END IF;
    END IF;
    IF p_uses >= p_set.max_uses THEN
        refusal := 'max-uses';
        used := p_uses;
    END IF;
END $$;
