-- Everything the rules of a redemption read, for each request of a batch (the i-th
-- element of the arrays), as this statement sees it: what find_redeemable() finds,
-- whether a unique code has a use that counts (redeemed, or held and not expired:
-- ix_redemptions_active_code, a handful of rows per code), whether the recipient was
-- given a shared code that is bound to its recipients, the recipient's uses of a
-- shared set with a per-recipient limit (ix_redemptions_active_set: at most the
-- limit's worth of rows, never the set's past uses), and a shared set's uses: its
-- counter, less its holds that expired but are not given back yet
-- (ix_redemptions_shared_holds: only those that expired since the set's last write).
-- NULL where a fact does not apply. Read under the batch's locks to redeem, from one
-- snapshot to validate. One SELECT, inlined into the statement that calls it. Each
-- lookup is a subquery with LIMIT 1 or an aggregate, so it stays a probe of its index
-- per request: as EXISTS, the planner may hash all of a table's active uses instead.
CREATE OR REPLACE FUNCTION redemption_facts(
    p_exact text[], p_loose text[], p_set_refs text[], p_recipient_ids text[]
) RETURNS TABLE (
    i integer, found integer, sets text[], s coupon_sets, c codes, code_used boolean,
    assigned boolean, recipient_uses bigint, uses bigint
) LANGUAGE sql STABLE AS $$
    SELECT f.i, f.found, f.sets, f.s, f.c,
           CASE WHEN f.found = 1 AND (f.c).id IS NOT NULL THEN coalesce((
               SELECT true FROM redemptions r
               WHERE r.code_id = (f.c).id AND r.status IN ('redeemed', 'held')
                 AND (r.status = 'redeemed' OR r.hold_expires_at > now())
               LIMIT 1), false) END,
           CASE WHEN f.found = 1 AND (f.c).id IS NULL AND (f.s).bind_to_recipient THEN coalesce((
               SELECT true FROM shared_assignments a
               WHERE a.set_id = (f.s).id AND a.recipient_id = p_recipient_ids[f.i]
               LIMIT 1), false) END,
           CASE WHEN f.found = 1 AND (f.c).id IS NULL AND p_recipient_ids[f.i] IS NOT NULL
                     AND (f.s).per_recipient_limit IS NOT NULL THEN (
               SELECT count(*) FROM redemptions r
               WHERE r.set_id = (f.s).id AND r.recipient_id = p_recipient_ids[f.i]
                 AND r.status IN ('redeemed', 'held')
                 AND (r.status = 'redeemed' OR r.hold_expires_at > now())) END,
           CASE WHEN f.found = 1 AND (f.c).id IS NULL THEN
               coalesce((SELECT u.uses FROM set_usage u WHERE u.set_id = (f.s).id), 0)
               - (SELECT count(*) FROM redemptions r
                  WHERE r.set_id = (f.s).id AND r.code_id IS NULL AND r.status = 'held'
                    AND r.hold_expires_at <= now()) END
    FROM find_redeemable(p_exact, p_loose, p_set_refs) AS f
$$;
