-- The coupon set that holds a code as it was typed, with the code's row for a unique
-- set (NULL for a shared one), and how many sets hold it (`found`; with more than
-- one, their keys in `sets`, and the caller must name one). A unique code is found by
-- its lookup form (ix_codes_lookup), a shared code by its set's
-- (ix_coupon_sets_shared_lookup). Each set compares in its own match mode, so the
-- caller gives both forms: p_exact (the code as sent, trimmed) and p_loose
-- (normalised), made by app/models/code.py normalise(), whose Unicode case rules
-- SQL's upper() does not share. p_set_ref, lower-cased, keeps only the set with that
-- id or key. Reads; locks nothing. One SELECT, which PostgreSQL inlines into the
-- statement that calls it.
CREATE OR REPLACE FUNCTION find_redeemable(p_exact text, p_loose text, p_set_ref text)
RETURNS TABLE (found integer, sets text[], s coupon_sets, c codes)
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer, array_agg((f.s).key::text), (array_agg(f.s))[1],
           (array_agg(f.c))[1]
    FROM (
        SELECT s, c
        FROM codes c
        JOIN coupon_sets s ON s.id = c.set_id
        WHERE c.lookup IN (p_exact, p_loose)
          AND c.lookup = CASE s.match_mode WHEN 'exact' THEN p_exact ELSE p_loose END
          AND (p_set_ref IS NULL OR p_set_ref IN (s.id::text, lower(s.key)))
        UNION ALL
        SELECT s, NULL::codes
        FROM coupon_sets s
        WHERE s.kind = 'shared' AND s.shared_lookup IN (p_exact, p_loose)
          AND s.shared_lookup = CASE s.match_mode WHEN 'exact' THEN p_exact ELSE p_loose END
          AND (p_set_ref IS NULL OR p_set_ref IN (s.id::text, lower(s.key)))
    ) AS f
$$;
