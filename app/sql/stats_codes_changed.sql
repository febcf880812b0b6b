-- stats_codes_changed(): the statement-level trigger of codes (AFTER INSERT, UPDATE,
-- DELETE, each with its transition table). It appends the statement's net change per
-- (set, pool, delivery id) to stats_deltas: one INSERT per statement, grouped, so a
-- batch claim of 50 codes writes one row, an import of a million codes a handful. Every
-- writer appends rows of its own; none updates a row another writer may update, so
-- claims never queue on a counter. The row commits (or rolls back) with the change it
-- counts. Codes count towards a delivery id only while assigned or redeemed. Events:
-- assigned (assigned_at set anew), redeemed (status becomes 'redeemed'), rolled back
-- (status leaves 'redeemed'), imported (a row inserted).
--
-- The live definition; migration 0009 keeps a frozen copy and a test compares them
-- (tests/services/stats/test_sql_functions.py). Why the counts are exact:
-- docs/architecture.md, "Statistics".
CREATE OR REPLACE FUNCTION stats_codes_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO stats_deltas (set_id, pool_id, delivery_id, bucket, available, assigned,
                                  redeemed, void, delivered, n_assigned, n_redeemed,
                                  n_rolled_back)
        SELECT g.* FROM (
            SELECT s.set_id, s.pool_id, s.delivery_id,
                   date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'available'), 0) AS available,
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'assigned'), 0) AS assigned,
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'redeemed'), 0) AS redeemed,
                   coalesce(sum(s.sign) FILTER (WHERE s.status = 'void'), 0) AS void,
                   coalesce(sum(s.sign) FILTER (WHERE s.delivery_id IS NOT NULL), 0) AS delivered,
                   sum(s.assigned) AS n_assigned, sum(s.redeemed) AS n_redeemed,
                   sum(s.rolled_back) AS n_rolled_back
            FROM old_rows o
            JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES
                (o.set_id, o.pool_id, o.status, -1, 0, 0, 0,
                 CASE WHEN o.status IN ('assigned', 'redeemed') THEN o.delivery_id END),
                (n.set_id, n.pool_id, n.status, 1,
                 (n.assigned_at IS NOT NULL
                  AND n.assigned_at IS DISTINCT FROM o.assigned_at)::int,
                 (n.status = 'redeemed' AND o.status <> 'redeemed')::int,
                 (o.status = 'redeemed' AND n.status <> 'redeemed')::int,
                 CASE WHEN n.status IN ('assigned', 'redeemed') THEN n.delivery_id END)
            ) AS s(set_id, pool_id, status, sign, assigned, redeemed, rolled_back, delivery_id)
            WHERE o.status <> n.status OR o.pool_id <> n.pool_id OR o.set_id <> n.set_id
               OR o.delivery_id IS DISTINCT FROM n.delivery_id
               OR o.assigned_at IS DISTINCT FROM n.assigned_at
            GROUP BY s.set_id, s.pool_id, s.delivery_id
        ) AS g
        -- A group whose changes cancel out (say assigned_at written again) adds no row.
        WHERE (g.available, g.assigned, g.redeemed, g.void, g.delivered, g.n_assigned,
               g.n_redeemed, g.n_rolled_back) <> (0, 0, 0, 0, 0, 0, 0, 0);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO stats_deltas (set_id, pool_id, delivery_id, bucket, available, assigned,
                                  redeemed, void, delivered, n_assigned, n_redeemed,
                                  n_imported)
        SELECT n.set_id, n.pool_id, n.delivery_id,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               count(*) FILTER (WHERE n.status = 'available'),
               count(*) FILTER (WHERE n.status = 'assigned'),
               count(*) FILTER (WHERE n.status = 'redeemed'),
               count(*) FILTER (WHERE n.status = 'void'),
               count(*) FILTER (WHERE n.delivery_id IS NOT NULL),
               count(*) FILTER (WHERE n.assigned_at IS NOT NULL),
               count(*) FILTER (WHERE n.status = 'redeemed'),
               count(*)
        FROM (
            SELECT r.set_id, r.pool_id, r.status, r.assigned_at,
                   CASE WHEN r.status IN ('assigned', 'redeemed') THEN r.delivery_id END
            FROM new_rows r
        ) AS n(set_id, pool_id, status, assigned_at, delivery_id)
        GROUP BY n.set_id, n.pool_id, n.delivery_id;
    ELSE
        INSERT INTO stats_deltas (set_id, pool_id, delivery_id, bucket, available, assigned,
                                  redeemed, void, delivered)
        SELECT o.set_id, o.pool_id, o.delivery_id,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               -count(*) FILTER (WHERE o.status = 'available'),
               -count(*) FILTER (WHERE o.status = 'assigned'),
               -count(*) FILTER (WHERE o.status = 'redeemed'),
               -count(*) FILTER (WHERE o.status = 'void'),
               -count(*) FILTER (WHERE o.delivery_id IS NOT NULL)
        FROM (
            SELECT r.set_id, r.pool_id, r.status,
                   CASE WHEN r.status IN ('assigned', 'redeemed') THEN r.delivery_id END
            FROM old_rows r
        ) AS o(set_id, pool_id, status, delivery_id)
        GROUP BY o.set_id, o.pool_id, o.delivery_id;
    END IF;
    RETURN NULL;
END $$;
