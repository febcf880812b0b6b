-- stats_redemptions_changed(): the statement-level trigger of redemptions (AFTER
-- INSERT, UPDATE, each with its transition table), for the timelines of shared sets: a
-- use of a shared code changes no code row, so its events are read here (a unique
-- code's are counted from its row, by stats_codes_changed()). Redeemed: inserted as
-- 'redeemed', or a hold confirmed; rolled back: 'redeemed' becomes 'rolled_back'. One
-- row per set and statement, only when something happened. Live definition; migration
-- 0009 keeps a frozen copy.
CREATE OR REPLACE FUNCTION stats_redemptions_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_deltas (set_id, pool_id, bucket, n_redeemed)
        SELECT n.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'), count(*)
        FROM new_rows n
        WHERE n.code_id IS NULL AND n.status = 'redeemed'
        GROUP BY n.set_id;
    ELSE
        INSERT INTO stats_deltas (set_id, pool_id, bucket, n_redeemed, n_rolled_back)
        SELECT n.set_id, '00000000-0000-0000-0000-000000000000'::uuid,
               date_bin('15 minutes', now(), TIMESTAMPTZ '2000-01-01 00:00+00'),
               count(*) FILTER (WHERE n.status = 'redeemed'),
               count(*) FILTER (WHERE n.status = 'rolled_back')
        FROM old_rows o
        JOIN new_rows n ON n.id = o.id
        WHERE n.code_id IS NULL AND n.status <> o.status
          AND (n.status = 'redeemed' OR (o.status = 'redeemed' AND n.status = 'rolled_back'))
        GROUP BY n.set_id;
    END IF;
    RETURN NULL;
END $$;
