-- +goose Up
-- Ticks cut by the ticker daemon merge on providers before 9.5 too (issue 16, "Large
-- transactions"; 00011, 00013). There skiff.ticker() takes its queue row with FOR UPDATE
-- NOWAIT in an exception block: a subtransaction, whose row lock takes a transaction id of its
-- own, so every tick finished two ids and ticks_add_no_commit counted the second as a commit
-- it could not tell from any other: the merge stopped at once, and a worker behind one large
-- transaction replayed one empty batch per max_events ids before its first row (bench bigtx,
-- 2 M changes from 8.4.1: first row 1.02 and 1.06 s after the worker started, 0.48 and 0.37 s
-- with this).
--
-- The ticker now records that id with the tick (tick_lock_txid: the queue row's xmax after
-- the lock, made 64-bit with the epoch of txid_current()), and ticks_add_no_commit counts it
-- as the tick's, as it counts the tick row's xmin. From 9.5 the lock takes no subtransaction
-- (SKIP LOCKED) and the column stays NULL. A wrong id could only make the merge stop early
-- (as before) or go on over a commit, which only makes a batch larger: a batch spanning
-- several ticks is always valid. The tick row is updated once by the transaction that
-- inserted it (its xmin stays that transaction's). 8.4-safe.
ALTER TABLE skiff.tick ADD COLUMN tick_lock_txid bigint;
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.ticker(i_queue text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q       skiff.queue%ROWTYPE;
    lt      skiff.tick%ROWTYPE;
    pending bigint;
    prev_seq bigint;
    due     boolean;
    locked  boolean := false;
    lock_x  bigint;
    tid     bigint;
BEGIN
    LOOP
        IF locked THEN
            -- NOWAIT: drop_queue holds the row while it drops the event sequence this
            -- transaction has already read; waiting here would deadlock with it. The next
            -- poll tries again.
            IF pg_catalog.current_setting('server_version_num')::integer >= 90500 THEN
                -- SKIP LOCKED: the same answer without a subtransaction, so the tick takes
                -- one transaction id (EXECUTE: older servers cannot parse it).
                -- (EXECUTE does not set FOUND; no row sets q to nulls.)
                EXECUTE 'SELECT * FROM skiff.queue WHERE queue_name = $1 FOR UPDATE SKIP LOCKED' INTO q USING i_queue;
                IF q.queue_id IS NULL THEN
                    IF EXISTS (SELECT 1 FROM skiff.queue WHERE queue_name = i_queue) THEN
                        RETURN NULL;
                    END IF;
                    RAISE EXCEPTION 'skiff: queue "%" does not exist', i_queue USING ERRCODE = 'P0002';
                END IF;
            ELSE
                BEGIN
                    SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE NOWAIT;
                EXCEPTION WHEN lock_not_available THEN
                    RETURN NULL;
                END;
                -- The lock's transaction id is the subtransaction's: the row's xmax (32 bits;
                -- it was assigned after this transaction's own, so it is in the same epoch
                -- or, when the counter wrapped in between, the next one).
                IF FOUND THEN
                    SELECT xmax::text::bigint INTO lock_x FROM skiff.queue WHERE queue_id = q.queue_id;
                    lock_x := (txid_current() >> 32 << 32) + lock_x;
                    IF lock_x < txid_current() THEN
                        lock_x := lock_x + (1::bigint << 32);
                    END IF;
                END IF;
            END IF;
        ELSE
            SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'skiff: queue "%" does not exist', i_queue USING ERRCODE = 'P0002';
        END IF;
        IF q.queue_ticker_paused THEN
            RETURN NULL;
        END IF;
        SELECT tick_id, tick_time, tick_event_seq, tick_snapshot INTO lt.tick_id, lt.tick_time, lt.tick_event_seq, lt.tick_snapshot
          FROM skiff.tick WHERE queue_id = q.queue_id ORDER BY tick_id DESC LIMIT 1;
        IF FOUND THEN
            pending := skiff.event_count(lt.tick_event_seq, skiff.event_seq_value(q.queue_id));
            due := pending >= q.queue_ticker_max_events
                   OR (pending > 0 AND now() - lt.tick_time >= q.queue_ticker_max_lag)
                   OR now() - lt.tick_time >= q.queue_ticker_idle_period;
            IF NOT due AND now() - lt.tick_time >= q.queue_ticker_max_lag THEN
                -- Only after a tick that took events (its event_seq moved since the tick
                -- before): an idle queue's polls cost no probe.
                SELECT tick_event_seq INTO prev_seq FROM skiff.tick
                 WHERE queue_id = q.queue_id AND tick_id < lt.tick_id ORDER BY tick_id DESC LIMIT 1;
                IF FOUND AND prev_seq <> lt.tick_event_seq THEN
                    due := skiff.tick_has_late_events(q.queue_id, lt.tick_snapshot);
                END IF;
            END IF;
            IF NOT due THEN
                RETURN NULL;
            END IF;
        END IF;
        IF locked THEN
            tid := skiff.insert_tick(q.queue_id);
            IF lock_x IS NOT NULL THEN
                UPDATE skiff.tick SET tick_lock_txid = lock_x WHERE queue_id = q.queue_id AND tick_id = tid;
            END IF;
            RETURN tid;
        END IF;
        locked := true;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.ticks_add_no_commit(i_queue_id integer, i_from bigint, i_to bigint) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a       txid_snapshot;
    b       txid_snapshot;
    lo      bigint;
    hi      bigint;
    running bigint;
    ticks   bigint;
BEGIN
    SELECT tick_snapshot INTO a FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id = i_from;
    SELECT tick_snapshot INTO b FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id = i_to;
    IF a IS NULL OR b IS NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM txid_snapshot_xip(a) x WHERE txid_visible_in_snapshot(x, b)) THEN
        RETURN false;
    END IF;
    lo := txid_snapshot_xmax(a);
    hi := txid_snapshot_xmax(b);
    IF hi <= lo THEN
        RETURN true;
    END IF;
    IF (lo >> 32) <> ((hi - 1) >> 32) THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO running FROM txid_snapshot_xip(b) x WHERE x >= lo;
    IF hi - lo - running > 2 * (i_to - i_from + 1) THEN
        RETURN false; -- more ids finished than the ticks took: something committed
    END IF;
    SELECT count(DISTINCT t.x) INTO ticks
      FROM (SELECT (lo >> 32 << 32) + xmin::text::bigint AS x
              FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id >= i_from AND tick_id <= i_to
            UNION ALL
            SELECT tick_lock_txid
              FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id >= i_from AND tick_id <= i_to
               AND tick_lock_txid IS NOT NULL) t
     WHERE t.x >= lo AND t.x < hi AND NOT txid_visible_in_snapshot(t.x, a)
       AND txid_visible_in_snapshot(t.x, b);
    RETURN hi - lo - running - ticks <= 0;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.ticks_add_no_commit(i_queue_id integer, i_from bigint, i_to bigint) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a       txid_snapshot;
    b       txid_snapshot;
    lo      bigint;
    hi      bigint;
    running bigint;
    ticks   bigint;
BEGIN
    SELECT tick_snapshot INTO a FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id = i_from;
    SELECT tick_snapshot INTO b FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id = i_to;
    IF a IS NULL OR b IS NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM txid_snapshot_xip(a) x WHERE txid_visible_in_snapshot(x, b)) THEN
        RETURN false;
    END IF;
    lo := txid_snapshot_xmax(a);
    hi := txid_snapshot_xmax(b);
    IF hi <= lo THEN
        RETURN true;
    END IF;
    IF (lo >> 32) <> ((hi - 1) >> 32) THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO running FROM txid_snapshot_xip(b) x WHERE x >= lo;
    IF hi - lo - running > i_to - i_from + 1 THEN
        RETURN false; -- more ids finished than there are ticks: something committed
    END IF;
    SELECT count(DISTINCT t.x) INTO ticks
      FROM (SELECT (lo >> 32 << 32) + xmin::text::bigint AS x
              FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id >= i_from AND tick_id <= i_to) t
     WHERE t.x >= lo AND t.x < hi AND NOT txid_visible_in_snapshot(t.x, a)
       AND txid_visible_in_snapshot(t.x, b);
    RETURN hi - lo - running - ticks <= 0;
END;
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.ticker(i_queue text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q       skiff.queue%ROWTYPE;
    lt      skiff.tick%ROWTYPE;
    pending bigint;
    prev_seq bigint;
    due     boolean;
    locked  boolean := false;
BEGIN
    LOOP
        IF locked THEN
            -- NOWAIT: drop_queue holds the row while it drops the event sequence this
            -- transaction has already read; waiting here would deadlock with it. The next
            -- poll tries again.
            IF pg_catalog.current_setting('server_version_num')::integer >= 90500 THEN
                -- SKIP LOCKED: the same answer without a subtransaction, so the tick takes
                -- one transaction id (EXECUTE: older servers cannot parse it).
                -- (EXECUTE does not set FOUND; no row sets q to nulls.)
                EXECUTE 'SELECT * FROM skiff.queue WHERE queue_name = $1 FOR UPDATE SKIP LOCKED' INTO q USING i_queue;
                IF q.queue_id IS NULL THEN
                    IF EXISTS (SELECT 1 FROM skiff.queue WHERE queue_name = i_queue) THEN
                        RETURN NULL;
                    END IF;
                    RAISE EXCEPTION 'skiff: queue "%" does not exist', i_queue USING ERRCODE = 'P0002';
                END IF;
            ELSE
                BEGIN
                    SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE NOWAIT;
                EXCEPTION WHEN lock_not_available THEN
                    RETURN NULL;
                END;
            END IF;
        ELSE
            SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'skiff: queue "%" does not exist', i_queue USING ERRCODE = 'P0002';
        END IF;
        IF q.queue_ticker_paused THEN
            RETURN NULL;
        END IF;
        SELECT * INTO lt FROM skiff.tick WHERE queue_id = q.queue_id ORDER BY tick_id DESC LIMIT 1;
        IF FOUND THEN
            pending := skiff.event_count(lt.tick_event_seq, skiff.event_seq_value(q.queue_id));
            due := pending >= q.queue_ticker_max_events
                   OR (pending > 0 AND now() - lt.tick_time >= q.queue_ticker_max_lag)
                   OR now() - lt.tick_time >= q.queue_ticker_idle_period;
            IF NOT due AND now() - lt.tick_time >= q.queue_ticker_max_lag THEN
                -- Only after a tick that took events (its event_seq moved since the tick
                -- before): an idle queue's polls cost no probe.
                SELECT tick_event_seq INTO prev_seq FROM skiff.tick
                 WHERE queue_id = q.queue_id AND tick_id < lt.tick_id ORDER BY tick_id DESC LIMIT 1;
                IF FOUND AND prev_seq <> lt.tick_event_seq THEN
                    due := skiff.tick_has_late_events(q.queue_id, lt.tick_snapshot);
                END IF;
            END IF;
            IF NOT due THEN
                RETURN NULL;
            END IF;
        END IF;
        IF locked THEN
            RETURN skiff.insert_tick(q.queue_id);
        END IF;
        locked := true;
    END LOOP;
END;
$$;
-- +goose StatementEnd

ALTER TABLE skiff.tick DROP COLUMN tick_lock_txid;
