-- The rate check of postgres/limits.rs in one round trip: under the account's advisory lock, drop
-- the starts that left the window, count the rest, and record a start now if there is room.
-- Returns the start time (ms, the database's clock) when granted, or minus the milliseconds to
-- wait when the window is full.
CREATE FUNCTION mailroom_take_start(p_account TEXT, p_node TEXT, p_limit BIGINT, p_window BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT;
    v_count BIGINT;
    v_oldest BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('mailroom-rate:' || p_account, 0));
    v_now := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    DELETE FROM attempt_starts WHERE account_id = p_account AND started_at <= v_now - p_window;
    SELECT COUNT(*), MIN(started_at) INTO v_count, v_oldest FROM attempt_starts WHERE account_id = p_account;
    IF v_count < p_limit THEN
        INSERT INTO attempt_starts (account_id, started_at, node_id) VALUES (p_account, v_now, p_node);
        RETURN v_now;
    END IF;
    RETURN -GREATEST(COALESCE(v_oldest, v_now) + p_window - v_now, 1);
END;
$$;
