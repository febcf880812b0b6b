-- pgbench script for bench/assign.py: the best plain-SQL single-code claim (the B1 anchor).
-- :pool is passed with -D pool=N (each run drains its own fresh pool); :client_id is pgbench's.
WITH picked AS MATERIALIZED (SELECT id FROM codes WHERE pool_id = :pool AND status = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE codes c SET status = 'assigned', recipient_id = 'r' || :client_id || '-' || random(), assigned_at = now() FROM picked WHERE c.id = picked.id;
