-- What redeem_codes() would answer for each request now, changing nothing: STABLE, so
-- PostgreSQL refuses any write or row lock in it, and it waits for no one. The
-- counts come from the statement's snapshot through the same indexes the redemption
-- uses: a unique code's active use (ix_redemptions_active_code), a recipient's uses
-- (ix_redemptions_active_set), and a shared set's uses from its counter, less the
-- holds that have expired but are not given back yet (ix_redemptions_shared_holds:
-- only those that expired since the set's last write). `remaining` is the uses left
-- of a shared set with max_uses.
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
    v_found record;
    v_uses bigint;
BEGIN
    FOR i IN 1 .. cardinality(p_exact) LOOP
        ord := i;
        SELECT * INTO v_found FROM find_redeemable(p_exact[i], p_loose[i], p_set_refs[i]);
        set_id := (v_found.s).id;
        set_key := (v_found.s).key;
        set_status := (v_found.s).status;
        valid_from := (v_found.s).valid_from;
        valid_until := (v_found.s).valid_until;
        moment := coalesce(p_redeemed_at[i], now());
        code := coalesce((v_found.c).code, (v_found.s).shared_code);
        sets := CASE WHEN v_found.found > 1 THEN v_found.sets END;
        v_uses := NULL;
        IF v_found.found <> 1 THEN
            refusal := CASE v_found.found WHEN 0 THEN 'unknown-code' ELSE 'ambiguous-code' END;
            used := NULL;
        ELSE
            IF (v_found.c).id IS NULL THEN
                v_uses := coalesce(
                    (SELECT u.uses FROM set_usage u WHERE u.set_id = (v_found.s).id), 0)
                    - (SELECT count(*) FROM redemptions r
                       WHERE r.set_id = (v_found.s).id AND r.code_id IS NULL
                         AND r.status = 'held' AND r.hold_expires_at <= now());
            END IF;
            SELECT * INTO refusal, used
            FROM redemption_refusal(v_found.s, v_found.c, moment, p_recipient_ids[i], v_uses);
        END IF;
        remaining := CASE WHEN refusal IS NULL THEN (v_found.s).max_uses - v_uses END;
        RETURN NEXT;
    END LOOP;
END $$;
