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
