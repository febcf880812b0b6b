-- For each code asked about (the i-th element of the arrays, i = 1, 2, ...): the
-- coupon set that holds it as it was typed, the code's row for a unique set (NULL for
-- a shared one), and how many sets hold it (`found`; with more than one, their keys
-- in `sets`, and the caller must name one). A unique code is found by its lookup form
-- (ix_codes_lookup), a shared code by its set's (ix_coupon_sets_shared_lookup). Each
-- set compares in its own match mode, so the caller gives both forms: p_exact (the
-- code as sent, trimmed) and p_loose (normalised), made by app/models/code.py
-- normalise(), whose Unicode case rules SQL's upper() does not share. p_set_refs,
-- lower-cased, keep only the set with that id or key. Reads; locks nothing. One
-- SELECT, which PostgreSQL inlines into the statement that calls it: a batch is
-- planned once, not once per code.
CREATE OR REPLACE FUNCTION find_redeemable(p_exact text[], p_loose text[], p_set_refs text[])
RETURNS TABLE (i integer, found integer, sets text[], s coupon_sets, c codes)
LANGUAGE sql STABLE AS $$
    SELECT r.i::integer, f.found, f.sets, f.s, f.c
    FROM unnest(p_exact, p_loose, p_set_refs) WITH ORDINALITY AS r(exact, loose, ref, i)
    CROSS JOIN LATERAL (
        SELECT count(*)::integer AS found, array_agg((m.s).key::text) AS sets,
               (array_agg(m.s))[1] AS s, (array_agg(m.c))[1] AS c
        FROM (
            SELECT s, c
            FROM codes c
            JOIN coupon_sets s ON s.id = c.set_id
            WHERE c.lookup IN (r.exact, r.loose)
              AND c.lookup = CASE s.match_mode WHEN 'exact' THEN r.exact ELSE r.loose END
              AND (r.ref IS NULL OR r.ref IN (s.id::text, lower(s.key)))
            UNION ALL
            SELECT s, NULL::codes
            FROM coupon_sets s
            WHERE s.kind = 'shared' AND s.shared_lookup IN (r.exact, r.loose)
              AND s.shared_lookup = CASE s.match_mode WHEN 'exact' THEN r.exact ELSE r.loose END
              AND (r.ref IS NULL OR r.ref IN (s.id::text, lower(s.key)))
        ) AS m
    ) AS f
$$;
