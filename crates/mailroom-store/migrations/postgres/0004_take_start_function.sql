-- The rate check of postgres/limits.rs in one round trip. Under the account's advisory lock: drop
-- the starts that left the window, and give the new attempt the earliest start at which the window
-- ending there holds no more than the limit — now if there is room, otherwise the limit-th newest
-- start plus the window (a place reserved ahead, so that waiting attempts neither poll nor race).
-- Returns that start time (ms, the database's clock), recorded.
CREATE FUNCTION mailroom_take_start(p_account TEXT, p_node TEXT, p_limit BIGINT, p_window BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT;
    v_count BIGINT;
    v_at BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('mailroom-rate:' || p_account, 0));
    v_now := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    DELETE FROM attempt_starts WHERE account_id = p_account AND started_at <= v_now - p_window;
    SELECT COUNT(*) INTO v_count FROM attempt_starts WHERE account_id = p_account;
    IF v_count < p_limit THEN
        v_at := v_now;
    ELSE
        SELECT started_at + p_window INTO v_at FROM attempt_starts WHERE account_id = p_account
            ORDER BY started_at DESC OFFSET p_limit - 1 LIMIT 1;
        v_at := GREATEST(v_at, v_now);
    END IF;
    INSERT INTO attempt_starts (account_id, started_at, node_id) VALUES (p_account, v_at, p_node);
    RETURN v_at;
END;
$$;
