"""Every statement of the statistics, each with why it is written so.

They run on asyncpg connections: the folder's and the recount's own (plain pool), and
the one under a request's session for the reads (``db.session_driver``). Each read is
one statement, so it adds the folded counters and the deltas not folded yet from one
snapshot: a fold commits the deletion of deltas and their addition to the counters
together, so a snapshot sees each delta on exactly one side (docs/architecture.md,
"Statistics")."""


# ----------------------------------------------------------------------------- folding

# Run under the fold lock (one folder at a time across instances, and never during a
# recount), so no row lock is needed on the deltas: the batch is taken in a
# MATERIALIZED CTE and joined on `=` (never `id IN (SELECT … LIMIT n)`, which may read
# more than n rows: PostgreSQL bug #15715). Deltas of a set deleted since are dropped.
# Counters are upserted in key order. A delta committed after this statement's snapshot
# is simply left for the next fold.
FOLD = """
WITH batch AS MATERIALIZED (
    SELECT id FROM stats_deltas ORDER BY id LIMIT $1
), gone AS (
    DELETE FROM stats_deltas d USING batch WHERE d.id = batch.id
    RETURNING d.set_id, d.pool_id, d.delivery_id, d.bucket, d.available, d.assigned,
              d.redeemed, d.void, d.delivered, d.n_assigned, d.n_redeemed, d.n_rolled_back,
              d.n_imported
), live AS MATERIALIZED (
    SELECT g.* FROM gone g WHERE EXISTS (SELECT 1 FROM coupon_sets s WHERE s.id = g.set_id)
), stock AS (
    INSERT INTO pool_stock AS p (set_id, pool_id, available, assigned, redeemed, void)
    SELECT set_id, pool_id, sum(available), sum(assigned), sum(redeemed), sum(void)
    FROM live GROUP BY set_id, pool_id
    HAVING (sum(available), sum(assigned), sum(redeemed), sum(void)) <> (0, 0, 0, 0)
    ORDER BY set_id, pool_id
    ON CONFLICT (set_id, pool_id) DO UPDATE
    SET available = p.available + excluded.available, assigned = p.assigned + excluded.assigned,
        redeemed = p.redeemed + excluded.redeemed, void = p.void + excluded.void
), delivered AS (
    INSERT INTO delivery_stock AS p (set_id, delivery_id, pool_id, codes)
    SELECT set_id, delivery_id, pool_id, sum(delivered)
    FROM live WHERE delivery_id IS NOT NULL GROUP BY set_id, delivery_id, pool_id
    HAVING sum(delivered) <> 0
    ORDER BY set_id, delivery_id, pool_id
    ON CONFLICT (set_id, delivery_id, pool_id) DO UPDATE SET codes = p.codes + excluded.codes
), activity AS (
    INSERT INTO activity_buckets AS a (set_id, pool_id, bucket, assigned, redeemed,
                                       rolled_back, imported)
    SELECT set_id, pool_id, bucket, sum(n_assigned), sum(n_redeemed), sum(n_rolled_back),
           sum(n_imported)
    FROM live GROUP BY set_id, pool_id, bucket
    HAVING (sum(n_assigned), sum(n_redeemed), sum(n_rolled_back), sum(n_imported))
           <> (0, 0, 0, 0)
    ORDER BY set_id, pool_id, bucket
    ON CONFLICT (set_id, pool_id, bucket) DO UPDATE
    SET assigned = a.assigned + excluded.assigned, redeemed = a.redeemed + excluded.redeemed,
        rolled_back = a.rolled_back + excluded.rolled_back,
        imported = a.imported + excluded.imported
)
SELECT count(*) FROM gone
"""

# ----------------------------------------------------------------------------- recount

# The recount, under the fold lock (no fold can move deltas meanwhile), in one
# statement (one snapshot): for each pool of the sets asked about ($1 NULL: all), the
# truth is a COUNT(*) of the rows; the counters must hold the truth less the deltas not
# folded yet (those are added by every read). The rows where they differ are corrected
# and returned with the difference (drift = truth - what the counters said).
RECOUNT_STOCK = """
WITH truth AS (
    SELECT p.set_id, p.id AS pool_id,
           count(c.id) FILTER (WHERE c.status = 'available') AS available,
           count(c.id) FILTER (WHERE c.status = 'assigned') AS assigned,
           count(c.id) FILTER (WHERE c.status = 'redeemed') AS redeemed,
           count(c.id) FILTER (WHERE c.status = 'void') AS void
    FROM pools p LEFT JOIN codes c ON c.pool_id = p.id
    WHERE $1::uuid IS NULL OR p.set_id = $1
    GROUP BY p.set_id, p.id
    UNION ALL
    SELECT s.id, '00000000-0000-0000-0000-000000000000'::uuid, 0,
           (SELECT count(*) FROM shared_assignments a WHERE a.set_id = s.id AND NOT a.additional),
           0, 0
    FROM coupon_sets s WHERE s.kind = 'shared' AND ($1::uuid IS NULL OR s.id = $1)
), compared AS (
    SELECT t.set_id, t.pool_id,
           t.available - coalesce(d.available, 0) AS available,
           t.assigned - coalesce(d.assigned, 0) AS assigned,
           t.redeemed - coalesce(d.redeemed, 0) AS redeemed,
           t.void - coalesce(d.void, 0) AS void,
           t.available - coalesce(d.available, 0) - coalesce(s.available, 0) AS d_available,
           t.assigned - coalesce(d.assigned, 0) - coalesce(s.assigned, 0) AS d_assigned,
           t.redeemed - coalesce(d.redeemed, 0) - coalesce(s.redeemed, 0) AS d_redeemed,
           t.void - coalesce(d.void, 0) - coalesce(s.void, 0) AS d_void
    FROM truth t
    LEFT JOIN (
        SELECT set_id, pool_id, sum(available) AS available, sum(assigned) AS assigned,
               sum(redeemed) AS redeemed, sum(void) AS void
        FROM stats_deltas WHERE $1::uuid IS NULL OR set_id = $1 GROUP BY set_id, pool_id
    ) d ON d.set_id = t.set_id AND d.pool_id = t.pool_id
    LEFT JOIN pool_stock s ON s.set_id = t.set_id AND s.pool_id = t.pool_id
), fixed AS (
    INSERT INTO pool_stock AS p (set_id, pool_id, available, assigned, redeemed, void)
    SELECT set_id, pool_id, available, assigned, redeemed, void FROM compared
    WHERE (d_available, d_assigned, d_redeemed, d_void) <> (0, 0, 0, 0)
    ORDER BY set_id, pool_id
    ON CONFLICT (set_id, pool_id) DO UPDATE
    SET available = excluded.available, assigned = excluded.assigned,
        redeemed = excluded.redeemed, void = excluded.void
)
SELECT c.set_id, s.key AS set_key, coalesce(p.name, '') AS pool, c.d_available AS available,
       c.d_assigned AS assigned, c.d_redeemed AS redeemed, c.d_void AS void
FROM compared c
JOIN coupon_sets s ON s.id = c.set_id
LEFT JOIN pools p ON p.id = c.pool_id
WHERE (c.d_available, c.d_assigned, c.d_redeemed, c.d_void) <> (0, 0, 0, 0)
ORDER BY s.key, p.name
"""

# The same for the codes each delivery id holds (assigned or redeemed): the counters of
# (set, delivery id, pool) are set to the truth less the unfolded deltas; the number of
# codes they were off by comes back.
RECOUNT_DELIVERED = """
WITH truth AS (
    SELECT set_id, delivery_id, pool_id, count(*) AS codes FROM codes
    WHERE status IN ('assigned', 'redeemed') AND delivery_id IS NOT NULL
      AND ($1::uuid IS NULL OR set_id = $1)
    GROUP BY set_id, delivery_id, pool_id
), unfolded AS (
    SELECT set_id, delivery_id, pool_id, sum(delivered) AS codes FROM stats_deltas
    WHERE delivery_id IS NOT NULL AND ($1::uuid IS NULL OR set_id = $1)
    GROUP BY set_id, delivery_id, pool_id
), compared AS (
    SELECT k.set_id, k.delivery_id, k.pool_id,
           coalesce(t.codes, 0) - coalesce(u.codes, 0) AS codes,
           coalesce(t.codes, 0) - coalesce(u.codes, 0) - coalesce(s.codes, 0) AS drift
    FROM (
        SELECT set_id, delivery_id, pool_id FROM truth
        UNION SELECT set_id, delivery_id, pool_id FROM unfolded
        UNION SELECT set_id, delivery_id, pool_id FROM delivery_stock
        WHERE $1::uuid IS NULL OR set_id = $1
    ) k
    LEFT JOIN truth t USING (set_id, delivery_id, pool_id)
    LEFT JOIN unfolded u USING (set_id, delivery_id, pool_id)
    LEFT JOIN delivery_stock s USING (set_id, delivery_id, pool_id)
), fixed AS (
    INSERT INTO delivery_stock AS p (set_id, delivery_id, pool_id, codes)
    SELECT set_id, delivery_id, pool_id, codes FROM compared
    WHERE drift <> 0 AND EXISTS (SELECT 1 FROM coupon_sets s WHERE s.id = compared.set_id)
    ORDER BY set_id, delivery_id, pool_id
    ON CONFLICT (set_id, delivery_id, pool_id) DO UPDATE SET codes = excluded.codes
)
SELECT coalesce(sum(abs(drift)), 0)::bigint FROM compared
"""

# ----------------------------------------------------------------------------- reads

# Codes per pool and status, and the overlays: `sent` (codes assigned or redeemed that
# carry the id of one of the set's deliveries marked sent; a reported failure gives its
# code back, so it leaves the count) and `held` (live holds on the pool's codes,
# ix_redemptions_unique_holds reads only the holds that have not expired). $2 NULL:
# every pool of the set. Reads a handful of counter rows and the set's unfolded deltas
# (ix_stats_deltas_set_id, about a second's worth): the cost does not grow with codes.
POOL_COUNTS = """
WITH folded AS (
    SELECT pool_id, available, assigned, redeemed, void FROM pool_stock WHERE set_id = $1
    UNION ALL
    SELECT pool_id, available, assigned, redeemed, void FROM stats_deltas WHERE set_id = $1
), stock AS (
    SELECT pool_id, sum(available) AS available, sum(assigned) AS assigned,
           sum(redeemed) AS redeemed, sum(void) AS void
    FROM folded GROUP BY pool_id
), sent_ids AS (
    SELECT id::text AS delivery_id FROM deliveries
    WHERE coupon_set_id = $1 AND sent_at IS NOT NULL
), sent AS (
    SELECT pool_id, sum(codes) AS codes FROM (
        SELECT ds.pool_id, ds.codes FROM delivery_stock ds JOIN sent_ids USING (delivery_id)
        WHERE ds.set_id = $1
        UNION ALL
        SELECT d.pool_id, d.delivered FROM stats_deltas d JOIN sent_ids USING (delivery_id)
        WHERE d.set_id = $1
    ) AS s GROUP BY pool_id
), held AS (
    SELECT c.pool_id, count(*) AS codes
    FROM redemptions r JOIN codes c ON c.id = r.code_id
    WHERE r.set_id = $1 AND r.status = 'held' AND r.code_id IS NOT NULL
      AND r.hold_expires_at > now()
    GROUP BY c.pool_id
)
SELECT p.id AS pool_id, p.name, p.created_at, p.stock_state, p.stock_state_at,
       p.low_stock_threshold, p.low_stock_days,
       coalesce(s.available, 0)::bigint AS available,
       coalesce(s.assigned, 0)::bigint AS assigned, coalesce(s.redeemed, 0)::bigint AS redeemed,
       coalesce(s.void, 0)::bigint AS void, coalesce(t.codes, 0)::bigint AS sent,
       coalesce(h.codes, 0)::bigint AS held
FROM pools p
LEFT JOIN stock s ON s.pool_id = p.id
LEFT JOIN sent t ON t.pool_id = p.id
LEFT JOIN held h ON h.pool_id = p.id
WHERE p.set_id = $1 AND ($2::uuid IS NULL OR p.id = $2)
ORDER BY p.created_at, p.id
"""

# A shared set: its recipients (its one counter row and its deltas), its uses as the
# validation reads them (the usage counter less the holds that expired but are not given
# back yet), its live holds and, of the uses, the holds still counted:
# ix_redemptions_shared_holds holds only the set's holds not given back, a handful.
SHARED_COUNTS = """
SELECT
    (SELECT coalesce(sum(assigned), 0)::bigint FROM (
        SELECT assigned FROM pool_stock WHERE set_id = $1
        UNION ALL
        SELECT assigned FROM stats_deltas WHERE set_id = $1
    ) AS a) AS recipients,
    coalesce((SELECT uses FROM set_usage WHERE set_id = $1), 0) AS counted,
    (SELECT count(*) FROM redemptions r
     WHERE r.set_id = $1 AND r.status = 'held' AND r.code_id IS NULL) AS holds,
    (SELECT count(*) FROM redemptions r
     WHERE r.set_id = $1 AND r.status = 'held' AND r.code_id IS NULL
       AND r.hold_expires_at > now()) AS held
"""

# The set list at a glance: per set of the page ($1), its codes per status (unique) or
# recipients (shared), and sent codes; the same sums as POOL_COUNTS without the pools.
GLANCES = """
WITH sets AS (
    SELECT id AS set_id FROM unnest($1::uuid[]) AS id
), folded AS (
    SELECT ps.set_id, ps.available, ps.assigned, ps.redeemed, ps.void
    FROM pool_stock ps JOIN sets USING (set_id)
    UNION ALL
    SELECT d.set_id, d.available, d.assigned, d.redeemed, d.void
    FROM stats_deltas d JOIN sets USING (set_id)
), stock AS (
    SELECT set_id, sum(available) AS available, sum(assigned) AS assigned,
           sum(redeemed) AS redeemed, sum(void) AS void
    FROM folded GROUP BY set_id
), sent_ids AS (
    SELECT dl.coupon_set_id AS set_id, dl.id::text AS delivery_id
    FROM deliveries dl JOIN sets ON sets.set_id = dl.coupon_set_id
    WHERE dl.sent_at IS NOT NULL
), sent AS (
    SELECT set_id, sum(codes) AS codes FROM (
        SELECT ds.set_id, ds.codes FROM delivery_stock ds
        JOIN sent_ids USING (set_id, delivery_id)
        UNION ALL
        SELECT d.set_id, d.delivered FROM stats_deltas d
        JOIN sent_ids USING (set_id, delivery_id)
    ) AS s GROUP BY set_id
)
SELECT sets.set_id, coalesce(s.available, 0)::bigint AS available,
       coalesce(s.assigned, 0)::bigint AS assigned, coalesce(s.redeemed, 0)::bigint AS redeemed,
       coalesce(s.void, 0)::bigint AS void, coalesce(t.codes, 0)::bigint AS sent,
       coalesce((SELECT u.uses FROM set_usage u WHERE u.set_id = sets.set_id), 0) AS counted,
       (SELECT count(*) FROM redemptions r
        WHERE r.set_id = sets.set_id AND r.status = 'held' AND r.code_id IS NULL) AS holds,
       (SELECT count(*) FROM redemptions r
        WHERE r.set_id = sets.set_id AND r.status = 'held' AND r.code_id IS NULL
          AND r.hold_expires_at > now()) AS held
FROM sets
LEFT JOIN stock s USING (set_id)
LEFT JOIN sent t USING (set_id)
"""

# Events per pool in the 15-minute buckets since $2 (folded and not), with each bucket's
# age in whole days: the activity windows and the forecast's daily counts.
RECENT_ACTIVITY = """
SELECT pool_id, floor(extract(epoch FROM now() - bucket) / 86400)::int AS age_days,
       bucket >= now() - interval '24 hours' AS last_24h,
       sum(assigned)::bigint AS assigned, sum(redeemed)::bigint AS redeemed
FROM (
    SELECT pool_id, bucket, assigned, redeemed FROM activity_buckets
    WHERE set_id = $1 AND bucket >= $2
    UNION ALL
    SELECT pool_id, bucket, n_assigned, n_redeemed FROM stats_deltas
    WHERE set_id = $1 AND bucket >= $2
) AS events
GROUP BY 1, 2, 3
"""

# The daily counts the forecast weighs for the sets of a page ($1), since $2: per set and
# day of age, assignments and redemptions (RECENT_ACTIVITY without the pools).
DAILY_OF_SETS = """
SELECT set_id, floor(extract(epoch FROM now() - bucket) / 86400)::int AS age_days,
       sum(assigned)::bigint AS assigned, sum(redeemed)::bigint AS redeemed
FROM (
    SELECT set_id, bucket, assigned, redeemed FROM activity_buckets
    WHERE set_id = ANY($1::uuid[]) AND bucket >= $2
    UNION ALL
    SELECT set_id, bucket, n_assigned, n_redeemed FROM stats_deltas
    WHERE set_id = ANY($1::uuid[]) AND bucket >= $2
) AS events
GROUP BY 1, 2
"""

# A timeline: bucket starts cut in the time zone $4 (hours: the local hour's start,
# then whole hours; days and weeks: local calendar days and ISO weeks, so a day with a
# clock change has 23 or 25 hours), from the bucket holding $2 to the last starting
# before $3, at most $7 of them; each counts the 15-minute buckets it spans (every zone
# in use is whole quarter hours from UTC, so each falls wholly in one). $5 the metric,
# $6 a pool or NULL for the whole set.
TIMELINE = """
WITH starts AS (
    SELECT CASE WHEN $8::text = 'hour' THEN h ELSE local AT TIME ZONE $4 END AS start,
           CASE WHEN $8::text = 'hour' THEN h + interval '1 hour'
                ELSE (local + ('1 ' || $8)::interval) AT TIME ZONE $4 END AS stop
    FROM (
        SELECT g AS local, NULL::timestamptz AS h
        FROM generate_series(date_trunc($8, $2::timestamptz AT TIME ZONE $4::text),
                             $3::timestamptz AT TIME ZONE $4::text - interval '1 microsecond',
                             ('1 ' || $8)::interval) AS g
        WHERE $8::text <> 'hour'
        UNION ALL
        SELECT NULL, g
        FROM generate_series(
            date_trunc('hour', $2::timestamptz AT TIME ZONE $4::text) AT TIME ZONE $4,
            $3::timestamptz - interval '1 microsecond', interval '1 hour') AS g
        WHERE $8::text = 'hour'
    ) AS s
    ORDER BY 1
    LIMIT $7
), events AS (
    SELECT bucket, CASE $5::text WHEN 'assigned' THEN assigned WHEN 'redeemed' THEN redeemed
                           WHEN 'rolled_back' THEN rolled_back ELSE imported END AS n
    FROM activity_buckets
    WHERE set_id = $1 AND ($6::uuid IS NULL OR pool_id = $6)
      AND bucket >= (SELECT min(start) FROM starts) AND bucket < (SELECT max(stop) FROM starts)
    UNION ALL
    SELECT bucket, CASE $5::text WHEN 'assigned' THEN n_assigned WHEN 'redeemed' THEN n_redeemed
                           WHEN 'rolled_back' THEN n_rolled_back ELSE n_imported END
    FROM stats_deltas
    WHERE set_id = $1 AND ($6::uuid IS NULL OR pool_id = $6)
      AND bucket >= (SELECT min(start) FROM starts) AND bucket < (SELECT max(stop) FROM starts)
)
SELECT s.start, coalesce(sum(e.n), 0)::bigint AS count
FROM starts s LEFT JOIN events e ON e.bucket >= s.start AND e.bucket < s.stop
GROUP BY s.start ORDER BY s.start
"""

# The Prometheus gauges: codes per status of at most $1 pools, ordered by set key and
# pool name (the same sums as POOL_COUNTS), and how many pools there are in all.
GAUGES = """
WITH listed AS (
    SELECT p.id, p.set_id, s.key AS set_key, p.name
    FROM pools p JOIN coupon_sets s ON s.id = p.set_id
    ORDER BY s.key, p.name LIMIT $1
), folded AS (
    SELECT ps.pool_id, ps.available, ps.assigned, ps.redeemed, ps.void
    FROM pool_stock ps JOIN listed l ON l.set_id = ps.set_id AND l.id = ps.pool_id
    UNION ALL
    SELECT d.pool_id, d.available, d.assigned, d.redeemed, d.void
    FROM stats_deltas d JOIN listed l ON l.set_id = d.set_id AND l.id = d.pool_id
)
SELECT l.set_key, l.name AS pool, coalesce(sum(f.available), 0)::bigint AS available,
       coalesce(sum(f.assigned), 0)::bigint AS assigned,
       coalesce(sum(f.redeemed), 0)::bigint AS redeemed,
       coalesce(sum(f.void), 0)::bigint AS void, (SELECT count(*) FROM pools) AS pools
FROM listed l LEFT JOIN folded f ON f.pool_id = l.id
GROUP BY l.set_key, l.name ORDER BY l.set_key, l.name
"""
