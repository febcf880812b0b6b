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
-- 'busy', and the caller sends them again one by one, each waiting for its own lock. Requests are
-- then applied in order under those locks, each seeing the ones before it, so limits
-- are exact: a unique code's active use is found through ix_redemptions_active_code,
-- a recipient's uses of a shared set through ix_redemptions_active_set (bounded by
-- the per-recipient limit), and the set's uses are the locked counter, never a count
-- of past uses. The counter is written once per set at the end, its limit checked in
-- the UPDATE's WHERE. Each redemption writes its audit row in the same transaction.
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
    n integer := cardinality(p_exact);
    v_sets coupon_sets[] := '{}';
    v_codes codes[] := '{}';
    v_set_ids uuid[] := '{}';
    v_code_ids bigint[] := '{}';
    v_found record;
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
    v_set coupon_sets;
    v_code codes;
    v_count integer;
    k integer;
BEGIN
    -- 1. Each request's set (and code): unknown and ambiguous codes are answered now.
    FOR i IN 1 .. n LOOP
        SELECT * INTO v_found FROM find_redeemable(p_exact[i], p_loose[i], p_set_refs[i]);
        IF v_found.found = 1 THEN
            v_sets[i] := v_found.s;
            v_codes[i] := v_found.c;
            v_set_ids[i] := (v_found.s).id;
            v_code_ids[i] := (v_found.c).id;
        ELSE
            v_set_ids[i] := NULL;
            ord := i;
            refusal := CASE v_found.found WHEN 0 THEN 'unknown-code' ELSE 'ambiguous-code' END;
            sets := CASE WHEN v_found.found > 1 THEN v_found.sets END;
            RETURN NEXT;
            sets := NULL;
        END IF;
    END LOOP;
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
    -- 3. The requests in order, each under its target's lock.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN v_set_ids[i] IS NULL;
        ord := i;
        v_set := v_sets[i];
        set_id := v_set.id;
        set_key := v_set.key;
        set_status := v_set.status;
        valid_from := v_set.valid_from;
        valid_until := v_set.valid_until;
        moment := coalesce(p_redeemed_at[i], now());
        id := NULL;
        status := NULL;
        recipient_id := NULL;
        redeemed_at := NULL;
        hold_expires_at := NULL;
        v_code := NULL;
        k := NULL;
        code := coalesce((v_codes[i]).code, v_set.shared_code);
        IF v_code_ids[i] IS NOT NULL AND v_code_ids[i] = ANY (v_locked) THEN
            -- Read again under the lock: the row as the last writer left it.
            SELECT * INTO v_code FROM codes c WHERE c.id = v_code_ids[i];
            IF NOT FOUND THEN  -- deleted (with its set) since step 1
                set_id := NULL;
                refusal := 'unknown-code';
                RETURN NEXT;
                CONTINUE;
            END IF;
        ELSIF v_code_ids[i] IS NULL THEN
            k := array_position(v_usage_sets, v_set.id);
        END IF;
        IF v_code.id IS NULL AND k IS NULL THEN
            refusal := 'busy';
            used := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT * INTO refusal, used
        FROM redemption_refusal(v_set, v_code, moment, p_recipient_ids[i], v_usage_uses[k]);
        IF refusal IS NOT NULL THEN
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF k IS NOT NULL THEN
            v_usage_max[k] := v_set.max_uses;
        END IF;
        INSERT INTO redemptions AS r (
            id, set_id, code_id, code, status, recipient_id, order_id, amount, redeemed_at,
            hold_expires_at)
        VALUES (
            gen_random_uuid(), v_set.id, v_code.id, code,
            CASE WHEN p_hold_seconds[i] IS NULL THEN 'redeemed' ELSE 'held' END,
            coalesce(p_recipient_ids[i], v_code.recipient_id), p_order_ids[i], p_amounts[i],
            moment, now() + make_interval(secs => p_hold_seconds[i]))
        RETURNING r.id, r.status, r.recipient_id, r.redeemed_at, r.hold_expires_at
        INTO id, status, recipient_id, redeemed_at, hold_expires_at;
        IF v_code.id IS NOT NULL AND p_hold_seconds[i] IS NULL THEN
            UPDATE codes c SET status = 'redeemed', redeemed_at = moment WHERE c.id = v_code.id;
        ELSIF v_code.id IS NULL THEN
            v_usage_uses[k] := v_usage_uses[k] + 1;
            v_taken[k] := v_taken[k] + 1;
        END IF;
        INSERT INTO audit_events (set_id, action, code, recipient_id, api_key_id,
                                  idempotency_key, details)
        VALUES (v_set.id, CASE WHEN p_hold_seconds[i] IS NULL THEN 'redeem' ELSE 'hold' END,
                code, recipient_id, p_api_key_ids[i], p_idempotency_keys[i],
                jsonb_build_object('redemption_id', id::text, 'order_id', p_order_ids[i]));
        RETURN NEXT;
    END LOOP;
    -- 4. Each shared set's counter, once: what this batch took, within the limit.
    UPDATE set_usage u SET uses = u.uses + t.taken
    FROM unnest(v_usage_sets, v_taken, v_usage_max) AS t(sid, taken, max_uses)
    WHERE u.set_id = t.sid AND t.taken > 0
      AND (t.max_uses IS NULL OR u.uses + t.taken <= t.max_uses);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count <> (SELECT count(*) FROM unnest(v_taken) AS t(taken) WHERE t.taken > 0) THEN
        RAISE EXCEPTION 'redeem_codes: a counter would pass its limit';
    END IF;
END $$;
