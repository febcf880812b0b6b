"""the redemption engine: a usage counter per shared set, and redeem, validate and settle
as PL/pgSQL functions

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/sql/*.sql as this revision creates them (the live files may move
# on in later revisions; tests/services/redemptions/test_sql_functions.py checks that the
# migrated database runs what the files say). Why each is safe under concurrency is
# written above each one.
FUNCTIONS = {
    "find_redeemable": """
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
""",
    "redemption_facts": """
-- Everything the rules of a redemption read, for each request of a batch (the i-th
-- element of the arrays), as this statement sees it: what find_redeemable() finds,
-- whether a unique code has a use that counts (redeemed, or held and not expired:
-- ix_redemptions_active_code, a handful of rows per code), whether the recipient was
-- given a shared code that is bound to its recipients, the recipient's uses of a
-- shared set with a per-recipient limit (ix_redemptions_active_set: at most the
-- limit's worth of rows, never the set's past uses), and a shared set's uses: its
-- counter, less its holds that expired but are not given back yet
-- (ix_redemptions_shared_holds: only those that expired since the set's last write).
-- NULL where a fact does not apply. Read under the batch's locks to redeem, from one
-- snapshot to validate. One SELECT, inlined into the statement that calls it. Each
-- lookup is a subquery with LIMIT 1 or an aggregate, so it stays a probe of its index
-- per request: as EXISTS, the planner may hash all of a table's active uses instead.
CREATE OR REPLACE FUNCTION redemption_facts(
    p_exact text[], p_loose text[], p_set_refs text[], p_recipient_ids text[]
) RETURNS TABLE (
    i integer, found integer, sets text[], s coupon_sets, c codes, code_used boolean,
    assigned boolean, recipient_uses bigint, uses bigint
) LANGUAGE sql STABLE AS $$
    SELECT f.i, f.found, f.sets, f.s, f.c,
           CASE WHEN f.found = 1 AND (f.c).id IS NOT NULL THEN coalesce((
               SELECT true FROM redemptions r
               WHERE r.code_id = (f.c).id AND r.status IN ('redeemed', 'held')
                 AND (r.status = 'redeemed' OR r.hold_expires_at > now())
               LIMIT 1), false) END,
           CASE WHEN f.found = 1 AND (f.c).id IS NULL AND (f.s).bind_to_recipient THEN coalesce((
               SELECT true FROM shared_assignments a
               WHERE a.set_id = (f.s).id AND a.recipient_id = p_recipient_ids[f.i]
               LIMIT 1), false) END,
           CASE WHEN f.found = 1 AND (f.c).id IS NULL AND p_recipient_ids[f.i] IS NOT NULL
                     AND (f.s).per_recipient_limit IS NOT NULL THEN (
               SELECT count(*) FROM redemptions r
               WHERE r.set_id = (f.s).id AND r.recipient_id = p_recipient_ids[f.i]
                 AND r.status IN ('redeemed', 'held')
                 AND (r.status = 'redeemed' OR r.hold_expires_at > now())) END,
           CASE WHEN f.found = 1 AND (f.c).id IS NULL THEN
               coalesce((SELECT u.uses FROM set_usage u WHERE u.set_id = (f.s).id), 0)
               - (SELECT count(*) FROM redemptions r
                  WHERE r.set_id = (f.s).id AND r.code_id IS NULL AND r.status = 'held'
                    AND r.hold_expires_at <= now()) END
    FROM find_redeemable(p_exact, p_loose, p_set_refs) AS f
$$;
""",
    "redemption_refusal": """
-- Why a use of a code would be refused now, or NULL: the rules of a redemption in the
-- order the API has always applied them (the first that fails names the refusal).
-- Pure, so a plain expression, cheap per request: the caller reads the facts
-- (redemption_facts(), and p_uses, the shared set's uses in all: the locked counter to
-- redeem, a snapshot to validate) and passes them, adding what its own batch took
-- before this request. p_code is NULL for a shared set. The names returned are mapped
-- to problem types by app/services/redemptions/service.py.
CREATE OR REPLACE FUNCTION redemption_refusal(
    p_set coupon_sets, p_code codes, p_at timestamptz, p_recipient_id text,
    p_code_used boolean, p_assigned boolean, p_recipient_uses bigint, p_uses bigint
) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE
        WHEN p_set.status = 'archived' THEN 'set-archived'
        WHEN p_at < p_set.valid_from THEN 'not-yet-valid'
        WHEN p_at >= p_set.valid_until THEN 'expired'
        WHEN p_code.id IS NOT NULL THEN CASE
            WHEN p_code.status = 'void' THEN 'voided'
            WHEN p_code_used THEN 'already-redeemed'
            WHEN p_set.bind_to_recipient AND p_code.recipient_id IS NOT NULL
                 AND p_recipient_id IS DISTINCT FROM p_code.recipient_id
                THEN 'recipient-mismatch'
            END
        WHEN p_set.bind_to_recipient AND NOT p_assigned THEN 'not-given'
        WHEN p_set.per_recipient_limit IS NOT NULL AND p_recipient_id IS NULL
            THEN 'recipient-required'
        WHEN p_recipient_uses >= p_set.per_recipient_limit THEN 'per-recipient-limit'
        WHEN p_uses >= p_set.max_uses THEN 'max-uses'
    END;
END $$;
""",
    "lock_set_usage": """
-- Takes the lock on a shared set's usage counter (set_usage, FOR NO KEY UPDATE) and
-- gives back the uses of the set's holds that have expired; returns the set's uses
-- now (redeemed + held and not expired), or NULL when p_wait is false and another
-- transaction holds the counter (or it does not exist yet).
--
-- Every write on a shared set's uses (redeem, confirm, release, roll back) takes this
-- lock first, so they queue on this one row and on nothing else, and a count read
-- here stays true until the transaction ends. An expired hold is given back exactly
-- once: its status becomes 'expired' (leaving ix_redemptions_shared_holds, the index
-- that finds them, so each is read once) in the same transaction as the counter goes
-- down, under the lock that any release of it takes first too. now() is the
-- transaction's start, so a hold counts, or not, the same way for the whole
-- transaction. The first use of a set creates its counter.
CREATE OR REPLACE FUNCTION lock_set_usage(p_set_id uuid, p_wait boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_uses bigint;
    v_gone bigint;
BEGIN
    IF p_wait THEN
        SELECT u.uses INTO v_uses FROM set_usage u WHERE u.set_id = p_set_id
        FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            INSERT INTO set_usage (set_id) VALUES (p_set_id) ON CONFLICT (set_id) DO NOTHING;
            SELECT u.uses INTO v_uses FROM set_usage u WHERE u.set_id = p_set_id
            FOR NO KEY UPDATE;
        END IF;
    ELSE
        SELECT u.uses INTO v_uses FROM set_usage u WHERE u.set_id = p_set_id
        FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    WITH gone AS (
        UPDATE redemptions r SET status = 'expired'
        WHERE r.set_id = p_set_id AND r.code_id IS NULL AND r.status = 'held'
          AND r.hold_expires_at <= now()
        RETURNING 1
    )
    SELECT count(*) INTO v_gone FROM gone;
    IF v_gone > 0 THEN
        UPDATE set_usage u SET uses = u.uses - v_gone WHERE u.set_id = p_set_id
        RETURNING u.uses INTO v_uses;
    END IF;
    RETURN v_uses;
END $$;
""",
    "redeem_codes": """
-- Redeems (or holds) a batch of codes in one statement, so one transaction and one
-- commit: the requests of one call to the API (a batch of one), or those that arrived
-- together (app/services/redemptions/engine/batches.py). Request i is given by the
-- i-th element of each array; one row per request comes back, ord = i, with
-- `refusal` NULL and the new redemption, or the refusal's name (see
-- redemption_refusal(); 'unknown-code', 'ambiguous-code' with the `sets` that hold
-- the code, or 'busy': not attempted, another transaction held its code or counter).
--
-- Locks, so that no two transactions can wait for each other: the target most
-- requests share (the only one, for a batch of one) is locked waiting, with nothing
-- else held: a unique code's row (FOR NO KEY UPDATE), or a shared set's counter
-- (lock_set_usage(), which also gives back expired holds); for at most
-- p_lock_wait_ms if given, so that a lock held long elsewhere (an import's) cannot
-- hold up every request queued behind the batch. Every other target is locked with
-- SKIP LOCKED, never waited for. The requests of a target not locked come back
-- 'busy', and the caller sends them again one by one, each waiting for its own lock.
--
-- Under those locks the requests are decided in order, each counting what the ones
-- before it took, so limits are exact: redemption_facts() reads a unique code's use
-- and a recipient's uses through indexes, and a shared set's uses are its locked
-- counter, never a count of past uses. Then the batch is written set-based, one
-- statement per table: the redemptions, the codes, their audit rows, and each shared
-- set's counter once, its limit checked in the UPDATE's WHERE. Set-based, because per
-- row each statement's start-up cost more than its work.
CREATE OR REPLACE FUNCTION redeem_codes(
    p_exact text[], p_loose text[], p_set_refs text[], p_recipient_ids text[],
    p_order_ids text[], p_amounts numeric[], p_redeemed_at timestamptz[],
    p_hold_seconds integer[], p_api_key_ids uuid[], p_idempotency_keys text[],
    p_lock_wait_ms integer
) RETURNS TABLE (
    ord integer, refusal text, set_id uuid, set_key text, code text, used bigint,
    set_status text, valid_from timestamptz, valid_until timestamptz, moment timestamptz,
    sets text[], id uuid, status text, recipient_id text, redeemed_at timestamptz,
    hold_expires_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v record;
    i integer;
    m integer := 0;
    v_set_ids uuid[];
    v_code_ids bigint[];
    v_first_set uuid;
    v_first_code bigint;
    v_lock_timeout text := current_setting('lock_timeout');
    v_locked bigint[] := '{}';
    v_usage_sets uuid[] := '{}';
    v_usage_uses bigint[] := '{}';
    v_usage_max integer[];
    v_taken bigint[];
    v_sid uuid;
    v_uses bigint;
    v_count integer;
    v_busy boolean;
    k integer;
    -- What the batch took so far: codes, and (set, recipient) uses of shared sets.
    v_taken_codes bigint[] := '{}';
    v_taken_by_sets uuid[] := '{}';
    v_taken_by text[] := '{}';
    -- The batch's writes, one element per redemption.
    w_ids uuid[] := '{}';
    w_sets uuid[] := '{}';
    w_code_ids bigint[] := '{}';
    w_codes text[] := '{}';
    w_status text[] := '{}';
    w_recipients text[] := '{}';
    w_orders text[] := '{}';
    w_amounts numeric[] := '{}';
    w_moments timestamptz[] := '{}';
    w_expiries timestamptz[] := '{}';
    w_api_keys uuid[] := '{}';
    w_idempotency_keys text[] := '{}';
BEGIN
    -- 1. Each request's target: its code (unique), or its set (shared).
    SELECT array_agg(CASE WHEN f.found = 1 THEN (f.s).id END ORDER BY f.i),
           array_agg(CASE WHEN f.found = 1 THEN (f.c).id END ORDER BY f.i)
    INTO v_set_ids, v_code_ids
    FROM find_redeemable(p_exact, p_loose, p_set_refs) AS f;
    -- 2. The locks: the commonest target waited for, the others taken if free.
    SELECT t.sid, t.cid INTO v_first_set, v_first_code
    FROM unnest(v_set_ids, v_code_ids) AS t(sid, cid)
    WHERE t.sid IS NOT NULL
    GROUP BY t.sid, t.cid
    ORDER BY count(*) DESC, t.sid, t.cid NULLS FIRST
    LIMIT 1;
    IF p_lock_wait_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', p_lock_wait_ms || 'ms', true);
    END IF;
    BEGIN
        IF v_first_code IS NOT NULL THEN
            PERFORM FROM codes c WHERE c.id = v_first_code FOR NO KEY UPDATE;
            v_locked := ARRAY[v_first_code];
        ELSIF v_first_set IS NOT NULL THEN
            v_usage_uses := ARRAY[lock_set_usage(v_first_set, true)];
            v_usage_sets := ARRAY[v_first_set];
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        NULL;  -- waited long enough: its requests come back 'busy'
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    SELECT v_locked || coalesce(array_agg(l.id), '{}') INTO v_locked
    FROM (
        SELECT c.id FROM codes c
        WHERE c.id = ANY (v_code_ids) AND c.id IS DISTINCT FROM v_first_code
        ORDER BY c.id
        FOR NO KEY UPDATE SKIP LOCKED
    ) AS l;
    FOR v_sid IN
        SELECT DISTINCT t.sid FROM unnest(v_set_ids, v_code_ids) AS t(sid, cid)
        WHERE t.sid IS NOT NULL AND t.cid IS NULL AND t.sid <> ALL (v_usage_sets)
    LOOP
        v_uses := lock_set_usage(v_sid, false);
        IF v_uses IS NOT NULL THEN
            v_usage_sets := v_usage_sets || v_sid;
            v_usage_uses := v_usage_uses || v_uses;
        END IF;
    END LOOP;
    v_taken := array_fill(0::bigint, ARRAY[cardinality(v_usage_sets)]);
    v_usage_max := array_fill(NULL::integer, ARRAY[cardinality(v_usage_sets)]);
    -- 3. The requests in order, each counting what the ones before it took, with
    --    everything the rules read as it is under the locks (redemption_facts(): the
    --    codes as the last writer left them, their uses, the recipients').
    FOR v IN
        SELECT * FROM redemption_facts(p_exact, p_loose, p_set_refs, p_recipient_ids) AS f
        ORDER BY f.i
    LOOP
        i := v.i;
        ord := i;
        set_id := (v.s).id;
        set_key := (v.s).key;
        set_status := (v.s).status;
        valid_from := (v.s).valid_from;
        valid_until := (v.s).valid_until;
        moment := coalesce(p_redeemed_at[i], now());
        code := coalesce((v.c).code, (v.s).shared_code);
        sets := CASE WHEN v.found > 1 THEN v.sets END;
        used := NULL;
        id := NULL;
        status := NULL;
        recipient_id := NULL;
        redeemed_at := NULL;
        hold_expires_at := NULL;
        k := array_position(v_usage_sets, (v.s).id);
        -- Its target is not locked: another transaction holds it.
        v_busy := CASE WHEN (v.c).id IS NULL THEN k IS NULL ELSE (v.c).id <> ALL (v_locked) END;
        IF v.found <> 1 THEN
            set_id := NULL;
            refusal := CASE v.found WHEN 0 THEN 'unknown-code' ELSE 'ambiguous-code' END;
        ELSIF v_busy THEN
            refusal := 'busy';
        ELSIF (v.c).id IS NOT NULL THEN
            refusal := redemption_refusal(
                v.s, v.c, moment, p_recipient_ids[i],
                v.code_used OR (v.c).id = ANY (v_taken_codes), NULL, NULL, NULL);
        ELSE
            IF v.recipient_uses IS NOT NULL THEN
                used := v.recipient_uses + (
                    SELECT count(*) FROM unnest(v_taken_by_sets, v_taken_by) AS t(sid, rid)
                    WHERE t.sid = (v.s).id AND t.rid = p_recipient_ids[i]);
            END IF;
            refusal := redemption_refusal(
                v.s, NULL, moment, p_recipient_ids[i], NULL, v.assigned, used,
                v_usage_uses[k]);
            used := CASE refusal
                WHEN 'per-recipient-limit' THEN used WHEN 'max-uses' THEN v_usage_uses[k]
            END;
        END IF;
        IF refusal IS NULL THEN
            id := gen_random_uuid();
            status := CASE WHEN p_hold_seconds[i] IS NULL THEN 'redeemed' ELSE 'held' END;
            recipient_id := coalesce(p_recipient_ids[i], (v.c).recipient_id);
            redeemed_at := moment;
            hold_expires_at := now() + make_interval(secs => p_hold_seconds[i]);
            m := m + 1;  -- appended by index: the arrays grow in place
            w_ids[m] := id;
            w_sets[m] := (v.s).id;
            w_code_ids[m] := (v.c).id;
            w_codes[m] := code;
            w_status[m] := status;
            w_recipients[m] := recipient_id;
            w_orders[m] := p_order_ids[i];
            w_amounts[m] := p_amounts[i];
            w_moments[m] := moment;
            w_expiries[m] := hold_expires_at;
            w_api_keys[m] := p_api_key_ids[i];
            w_idempotency_keys[m] := p_idempotency_keys[i];
            IF (v.c).id IS NOT NULL THEN
                v_taken_codes := v_taken_codes || (v.c).id;
            ELSE
                v_usage_uses[k] := v_usage_uses[k] + 1;
                v_taken[k] := v_taken[k] + 1;
                v_usage_max[k] := (v.s).max_uses;
                v_taken_by_sets := v_taken_by_sets || (v.s).id;
                v_taken_by := v_taken_by || p_recipient_ids[i];
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    -- 4. The writes, one statement per table.
    INSERT INTO redemptions (id, set_id, code_id, code, status, recipient_id, order_id,
                             amount, redeemed_at, hold_expires_at)
    SELECT * FROM unnest(w_ids, w_sets, w_code_ids, w_codes, w_status, w_recipients,
                         w_orders, w_amounts, w_moments, w_expiries);
    UPDATE codes c SET status = 'redeemed', redeemed_at = t.moment
    FROM unnest(w_code_ids, w_status, w_moments) AS t(cid, status, moment)
    WHERE c.id = t.cid AND t.status = 'redeemed';
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id,
                              idempotency_key, details)
    SELECT t.sid, CASE t.status WHEN 'held' THEN 'hold' ELSE 'redeem' END, t.code, t.rid,
           t.kid, t.ikey, jsonb_build_object('redemption_id', t.id::text, 'order_id', t.oid)
    FROM unnest(w_ids, w_sets, w_codes, w_status, w_recipients, w_api_keys,
                w_idempotency_keys, w_orders)
        WITH ORDINALITY AS t(id, sid, code, status, rid, kid, ikey, oid, n)
    ORDER BY t.n;
    UPDATE set_usage u SET uses = u.uses + t.taken
    FROM unnest(v_usage_sets, v_taken, v_usage_max) AS t(sid, taken, max_uses)
    WHERE u.set_id = t.sid AND t.taken > 0
      AND (t.max_uses IS NULL OR u.uses + t.taken <= t.max_uses);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count <> (SELECT count(*) FROM unnest(v_taken) AS t(taken) WHERE t.taken > 0) THEN
        RAISE EXCEPTION 'redeem_codes: a counter would pass its limit';
    END IF;
END $$;
""",
    "validate_codes": """
-- What redeem_codes() would answer for each request now, changing nothing: STABLE, so
-- PostgreSQL refuses any write or row lock in it, and it waits for no one. Everything
-- comes from one snapshot, through the indexes the redemption uses too
-- (redemption_facts()); a shared set's uses are its counter less the holds that
-- expired but are not given back yet. `remaining` is the uses left of a shared set
-- with max_uses.
CREATE OR REPLACE FUNCTION validate_codes(
    p_exact text[], p_loose text[], p_set_refs text[], p_recipient_ids text[],
    p_redeemed_at timestamptz[]
) RETURNS TABLE (
    ord integer, refusal text, set_id uuid, set_key text, code text, used bigint,
    remaining bigint, set_status text, valid_from timestamptz, valid_until timestamptz,
    moment timestamptz, sets text[]
) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT * FROM redemption_facts(p_exact, p_loose, p_set_refs, p_recipient_ids) AS f
        ORDER BY f.i
    LOOP
        ord := v.i;
        set_id := (v.s).id;
        set_key := (v.s).key;
        set_status := (v.s).status;
        valid_from := (v.s).valid_from;
        valid_until := (v.s).valid_until;
        moment := coalesce(p_redeemed_at[v.i], now());
        code := coalesce((v.c).code, (v.s).shared_code);
        sets := CASE WHEN v.found > 1 THEN v.sets END;
        refusal := CASE v.found WHEN 0 THEN 'unknown-code' WHEN 1 THEN redemption_refusal(
            v.s, v.c, moment, p_recipient_ids[v.i], v.code_used, v.assigned,
            v.recipient_uses, v.uses) ELSE 'ambiguous-code' END;
        used := CASE refusal
            WHEN 'per-recipient-limit' THEN v.recipient_uses WHEN 'max-uses' THEN v.uses
        END;
        remaining := CASE WHEN refusal IS NULL THEN (v.s).max_uses - v.uses END;
        RETURN NEXT;
    END LOOP;
END $$;
""",
    "settle_redemption": """
-- Confirms or releases a hold, or rolls back a redemption (p_action 'confirm',
-- 'release', 'rollback'), with its audit row, in one statement. One row comes back:
-- `refusal` NULL and the redemption as it is now, or 'not-found', 'invalid-state'
-- (with `state`, the status it was found in) or 'hold-expired'.
--
-- The redemption's row is locked (FOR UPDATE) before its state is read, so of two
-- concurrent settlements the second sees the first's outcome (a second rollback is
-- refused). For a shared set the counter is locked before it (lock_set_usage(), the
-- order every write on the set's uses follows, so none waits for another in a
-- cycle), which also gives back the set's expired holds: a hold still 'held' after
-- that is live. A rollback, or the release of a live hold, gives its use back; an
-- expired hold ('expired': given back already) can still be released, without
-- giving it back twice, and reads as the hold it was ('held') in the refusals. For a
-- unique code the code's row follows the redemption: redeemed on confirm, free again
-- (or back with its recipient) on rollback.
CREATE OR REPLACE FUNCTION settle_redemption(
    p_id uuid, p_action text, p_api_key_id uuid, p_idempotency_key text
) RETURNS TABLE (
    refusal text, state text, id uuid, set_id uuid, set_key text, code text, status text,
    recipient_id text, order_id text, amount numeric, redeemed_at timestamptz,
    hold_expires_at timestamptz, settled_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_set_id uuid;
    v_shared boolean;
    v redemptions;
BEGIN
    SELECT r.set_id, r.code_id IS NULL INTO v_set_id, v_shared
    FROM redemptions r WHERE r.id = p_id;
    IF NOT FOUND THEN
        refusal := 'not-found';
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_shared THEN
        PERFORM lock_set_usage(v_set_id, true);
    END IF;
    SELECT * INTO v FROM redemptions r WHERE r.id = p_id FOR UPDATE;
    state := CASE v.status WHEN 'expired' THEN 'held' ELSE v.status END;
    refusal := CASE
        WHEN p_action = 'rollback' AND state <> 'redeemed' THEN 'invalid-state'
        WHEN p_action <> 'rollback' AND state <> 'held' THEN 'invalid-state'
        WHEN p_action = 'confirm'
             AND (v.status = 'expired' OR v.hold_expires_at <= now()) THEN 'hold-expired'
    END;
    IF refusal IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE redemptions r
    SET status = CASE p_action
            WHEN 'confirm' THEN 'redeemed' WHEN 'release' THEN 'released' ELSE 'rolled_back'
        END,
        settled_at = now()
    WHERE r.id = p_id
    RETURNING r.id, r.set_id, r.code, r.status, r.recipient_id, r.order_id, r.amount,
              r.redeemed_at, r.hold_expires_at, r.settled_at
    INTO id, set_id, code, status, recipient_id, order_id, amount, redeemed_at,
         hold_expires_at, settled_at;
    IF v_shared THEN
        IF p_action = 'rollback' OR (p_action = 'release' AND v.status = 'held') THEN
            UPDATE set_usage u SET uses = u.uses - 1 WHERE u.set_id = v_set_id;
        END IF;
    ELSIF p_action = 'confirm' THEN
        UPDATE codes c SET status = 'redeemed', redeemed_at = v.redeemed_at
        WHERE c.id = v.code_id;
    ELSIF p_action = 'rollback' THEN
        UPDATE codes c
        SET status = CASE WHEN c.recipient_id IS NOT NULL THEN 'assigned' ELSE 'available' END,
            redeemed_at = NULL
        WHERE c.id = v.code_id;
    END IF;
    INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id,
                              idempotency_key, details)
    VALUES (v_set_id, p_action, code, recipient_id, p_api_key_id, p_idempotency_key,
            jsonb_build_object('redemption_id', p_id::text));
    SELECT s.key INTO set_key FROM coupon_sets s WHERE s.id = v_set_id;
    RETURN NEXT;
END $$;
""",
}
# In dependency order the other way round, for the downgrade.
SIGNATURES = (
    "settle_redemption(uuid, text, uuid, text)",
    "validate_codes(text[], text[], text[], text[], timestamptz[])",
    "redeem_codes(text[], text[], text[], text[], text[], numeric[], timestamptz[], integer[], "
    "uuid[], text[], integer)",
    "lock_set_usage(uuid, boolean)",
    "redemption_refusal(coupon_sets, codes, timestamptz, text, boolean, boolean, bigint, bigint)",
    "redemption_facts(text[], text[], text[], text[])",
    "find_redeemable(text[], text[], text[])",
)


def upgrade() -> None:
    op.create_table(
        "set_usage",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("uses", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("uses >= 0", name=op.f("ck_set_usage_uses_not_negative")),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["coupon_sets.id"],
            name=op.f("fk_set_usage_set_id_coupon_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("set_id", name=op.f("pk_set_usage")),
    )
    op.create_index(
        "ix_redemptions_shared_holds",
        "redemptions",
        ["set_id", "hold_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'held' AND code_id IS NULL"),
    )
    # The counters start from the uses that count now: the holds of shared codes that
    # expired are given back first, as lock_set_usage() would. (Instances of the
    # previous version must be stopped: they would not keep the counters.)
    op.execute(
        "UPDATE redemptions SET status = 'expired' "
        "WHERE code_id IS NULL AND status = 'held' AND hold_expires_at <= now()"
    )
    op.execute(
        "INSERT INTO set_usage (set_id, uses) "
        "SELECT set_id, count(*) FROM redemptions "
        "WHERE code_id IS NULL AND status IN ('redeemed', 'held') GROUP BY set_id"
    )
    for definition in FUNCTIONS.values():
        op.execute(definition)


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
    # Given-back holds were held ones whose time ran out: that is how they read before.
    op.execute("UPDATE redemptions SET status = 'held' WHERE status = 'expired'")
    op.drop_index(
        "ix_redemptions_shared_holds",
        table_name="redemptions",
        postgresql_where=sa.text("status = 'held' AND code_id IS NULL"),
    )
    op.drop_table("set_usage")
