-- pgbench script for bench/redeem.py: the best plain-SQL redemption of a shared code (an
-- anchor of B7): its usage counter taken in O(1), the limit checked in the UPDATE's
-- WHERE, plus the redemption's row, in one statement. :set is passed with -D set=N
-- (each run a fresh counter, every client on that one row, as checkouts of one code).
WITH used AS (UPDATE usage SET uses = uses + 1 WHERE set_id = :set AND uses < max_uses RETURNING set_id) INSERT INTO redemptions (set_id, code, status) SELECT set_id, 'WELCOME', 'redeemed' FROM used;
