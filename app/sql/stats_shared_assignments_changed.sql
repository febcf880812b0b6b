-- stats_shared_assignments_changed(): the statement-level trigger of shared_assignments
-- (AFTER INSERT, DELETE, each with its transition table). A shared set has no code rows:
-- its recipients (first assignments, not `additional` ones) are its `assigned` count,
-- and every assignment is an `assigned` event. One row per set and statement is
-- appended to stats_deltas, under the pool '00000000-0000-0000-0000-000000000000'
-- (app/models/stats.py, WHOLE_SET). Live definition; migration 0009 keeps a frozen copy.
CREATE OR REPLACE FUNCTION stats_shared_assignments_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_deltas (set_id, pool_id, bucket, assigned, n_assigned)
        SELECT n.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               count(*) FILTER (WHERE NOT n.additional), count(*)
        FROM new_rows n
        GROUP BY n.set_id;
    ELSE
        INSERT INTO stats_deltas (set_id, pool_id, bucket, assigned)
        SELECT o.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               -count(*) FILTER (WHERE NOT o.additional)
        FROM old_rows o
        GROUP BY o.set_id;
    END IF;
    RETURN NULL;
END $$;
