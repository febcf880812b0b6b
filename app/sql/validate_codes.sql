-- What redeem_codes() would answer for each request now, changing nothing: STABLE, so
-- PostgreSQL refuses any write or row lock in it, and it waits for no one. Everything
-- comes from one snapshot, through the indexes the redemption uses too
-- (redemption_facts()); a shared set's uses are its counter less the holds that
-- expired but are not given back yet. `remaining` is the uses left of a shared set
-- with max_uses.
CREATE OR REPLACE FUNCTION validate_codes(
    p_exact text[], p_loose text[], p_set_refs text[], p_recipient_ids text[],
    p_redeemed_at timestamptz[]
) RETURNS TABLE (
    ord integer, refusal text, set_id uuid, set_key text, code text, used bigint,
    remaining bigint, set_status text, valid_from timestamptz, valid_until timestamptz,
    moment timestamptz, sets text[]
) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT * FROM redemption_facts(p_exact, p_loose, p_set_refs, p_recipient_ids) AS f
        ORDER BY f.i
    LOOP
        ord := v.i;
        set_id := (v.s).id;
        set_key := (v.s).key;
        set_status := (v.s).status;
        valid_from := (v.s).valid_from;
        valid_until := (v.s).valid_until;
        moment := coalesce(p_redeemed_at[v.i], now());
        code := coalesce((v.c).code, (v.s).shared_code);
        sets := CASE WHEN v.found > 1 THEN v.sets END;
        refusal := CASE v.found WHEN 0 THEN 'unknown-code' WHEN 1 THEN redemption_refusal(
            v.s, v.c, moment, p_recipient_ids[v.i], v.code_used, v.assigned,
            v.recipient_uses, v.uses) ELSE 'ambiguous-code' END;
        used := CASE refusal
            WHEN 'per-recipient-limit' THEN v.recipient_uses WHEN 'max-uses' THEN v.uses
        END;
        remaining := CASE WHEN refusal IS NULL THEN (v.s).max_uses - v.uses END;
        RETURN NEXT;
    END LOOP;
END $$;
