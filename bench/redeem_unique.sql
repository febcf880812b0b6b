-- pgbench script for bench/redeem.py: the best plain-SQL redemption of a unique code (an
-- anchor of B7), in one statement: lock the code by its lookup, insert the redemption,
-- mark the code. Every transaction takes the next code of a sequence, so no two redeem
-- the same one, whatever the client count (a code found redeemed is left alone).
WITH next AS MATERIALIZED (SELECT 'U' || nextval('next_code') AS lookup), code AS MATERIALIZED (SELECT c.id, c.code FROM codes c, next WHERE c.lookup = next.lookup AND c.status <> 'redeemed' FOR UPDATE OF c), redeemed AS (INSERT INTO redemptions (code_id, code, status) SELECT id, code, 'redeemed' FROM code RETURNING code_id) UPDATE codes SET status = 'redeemed', redeemed_at = now() FROM redeemed WHERE codes.id = redeemed.code_id;
