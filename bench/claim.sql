-- pgbench script for bench/assign.py: the best plain-SQL single-code claim (the B1 anchor).
-- :pool is passed with -D pool=N (each run drains its own fresh pool); :client_id is pgbench's.
-- Each client keeps the id it claimed last as its scan hint (RETURNING ... \gset; -D hint=0
-- to start), so its next claim starts the index scan there instead of stepping over the
-- entries of every code claimed before it that vacuum has not removed yet: the service's
-- per-process hint, per client.
WITH picked AS MATERIALIZED (SELECT id FROM codes WHERE pool_id = :pool AND status = 'available' AND id > :hint ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE codes c SET status = 'assigned', recipient_id = 'r' || :client_id || '-' || random(), assigned_at = now() FROM picked WHERE c.id = picked.id RETURNING c.id AS hint \gset
