-- Why a use of a code would be refused now, or NULL: the rules of a redemption in the
-- order the API has always applied them (the first that fails names the refusal).
-- Pure, so a plain expression, cheap per request: the caller reads the facts
-- (redemption_facts(), and p_uses, the shared set's uses in all: the locked counter to
-- redeem, a snapshot to validate) and passes them, adding what its own batch took
-- before this request. p_code is NULL for a shared set. The names returned are mapped
-- to problem types by app/services/redemptions/service.py.
CREATE OR REPLACE FUNCTION redemption_refusal(
    p_set coupon_sets, p_code codes, p_at timestamptz, p_recipient_id text,
    p_code_used boolean, p_assigned boolean, p_recipient_uses bigint, p_uses bigint
) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE
        WHEN p_set.status = 'archived' THEN 'set-archived'
        WHEN p_at < p_set.valid_from THEN 'not-yet-valid'
        WHEN p_at >= p_set.valid_until THEN 'expired'
        WHEN p_code.id IS NOT NULL THEN CASE
            WHEN p_code.status = 'void' THEN 'voided'
            WHEN p_code_used THEN 'already-redeemed'
            WHEN p_set.bind_to_recipient AND p_code.recipient_id IS NOT NULL
                 AND p_recipient_id IS DISTINCT FROM p_code.recipient_id
                THEN 'recipient-mismatch'
            END
        WHEN p_set.bind_to_recipient AND NOT p_assigned THEN 'not-given'
        WHEN p_set.per_recipient_limit IS NOT NULL AND p_recipient_id IS NULL
            THEN 'recipient-required'
        WHEN p_recipient_uses >= p_set.per_recipient_limit THEN 'per-recipient-limit'
        WHEN p_uses >= p_set.max_uses THEN 'max-uses'
    END;
END $$;
