-- +goose Up
-- Ticks come sooner (issue 16, "Lag").
--
-- 1. A queue's ticker_max_lag defaults to 100 ms instead of 500 ms: pending events get their
-- tick once the previous tick is 100 ms old, which with the ticker's 100 ms poll (re-phased on
-- each tick) keeps end-to-end lag p99 under 250 ms (docs/internals.md, "Lag"). An idle queue
-- costs no more: a tick is only cut early when events are pending, and the ticker polls at the
-- same rate either way. Queues that still have the old default, 500 ms, are moved to the new
-- one: the old value was never asked for by those who kept it. A queue set to anything else
-- keeps its setting (one set to exactly 500 ms on purpose cannot be told from the default: set
-- it again after upgrading). Going down moves queues at 100 ms back to 500 ms by the same rule.
--
-- 2. Events of transactions in flight at a tick count as pending once they commit (see
-- tick_has_late_events below).
ALTER TABLE skiff.queue ALTER COLUMN queue_ticker_max_lag SET DEFAULT '100 milliseconds';
UPDATE skiff.queue SET queue_ticker_max_lag = '100 milliseconds'
    WHERE queue_ticker_max_lag = '500 milliseconds';

-- +goose StatementBegin
-- tick_has_late_events says whether transactions that were running when a queue's tick was
-- taken have committed since with events in the queue. Their events have ids at or below the
-- tick's tick_event_seq (nextval ran before the tick), so skiff.ticker does not count them as
-- pending: without this the tail of a burst of writes (the transactions in flight at its last
-- tick) waited for ticker_idle_period (a minute) when no event came after it. A transaction
-- running at the tick is in its snapshot's xip or at or above its xmax (the latest completed
-- txid + 1: a writer's txid can be above it); its events are visible now if it has committed.
-- Such an event is in no batch yet. The three event tables are probed (their (ev_txid, ev_id)
-- index, one statement) only when some such transaction has finished; the ticker's own tick
-- transaction is skipped, so a cluster with no other writes costs no probe; skiff.ticker calls
-- it only after a tick that took events, so an idle queue costs none either.
CREATE FUNCTION skiff.tick_has_late_events(i_queue_id integer, i_snap txid_snapshot) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur   txid_snapshot := txid_current_snapshot();
    cands bigint[];
    lo    bigint := txid_snapshot_xmax(i_snap);
    hi    bigint := txid_snapshot_xmax(txid_current_snapshot());
    n     integer;
    q_sql text;
    hit   boolean;
BEGIN
    cands := ARRAY(SELECT x FROM txid_snapshot_xip(i_snap) x WHERE txid_visible_in_snapshot(x, cur));
    IF array_upper(cands, 1) IS NULL AND hi <= lo + 1 THEN
        RETURN false;
    END IF;
    IF cands IS NULL OR array_upper(cands, 1) IS NULL THEN
        cands := '{}';
    END IF;
    FOR n IN 0..2 LOOP
        IF q_sql IS NULL THEN
            q_sql := 'SELECT ';
        ELSE
            q_sql := q_sql || ' OR ';
        END IF;
        q_sql := q_sql || 'EXISTS (SELECT 1 FROM ' || skiff.event_table_name(i_queue_id, n)
            || ' WHERE ev_txid = ANY ($1) OR (ev_txid >= $2 AND ev_txid < $3'
            || ' AND txid_visible_in_snapshot(ev_txid, $4)))';
    END LOOP;
    EXECUTE q_sql INTO hit USING cands, lo, hi, cur;
    RETURN hit;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.tick_has_late_events(integer, txid_snapshot) FROM PUBLIC;

-- +goose StatementBegin
-- ticker ticks a queue when a tick is due: ticker_max_events pending, or events pending and
-- the last tick older than ticker_max_lag, or the last tick older than ticker_idle_period.
-- Events of transactions that were running at the last tick and committed since count as
-- pending (skiff.tick_has_late_events), though their ids are not above the tick's, when the
-- last tick took events: the tail of a burst. (A transaction running across two ticks or more
-- whose last event came before the tick before the last still waits for the next tick due.)
-- Returns the new tick id, or NULL when no tick was due (or the ticker is paused).
-- The ticker daemon calls it several times a second: a poll with nothing due only reads (no
-- row lock, so no transaction id is spent); the queue row is locked, and the decision taken
-- again under the lock, only when a tick looks due. Ages are measured with now(), the clock
-- tick_time is recorded with.
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
            BEGIN
                SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE NOWAIT;
            EXCEPTION WHEN lock_not_available THEN
                RETURN NULL;
            END;
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

-- +goose Down
ALTER TABLE skiff.queue ALTER COLUMN queue_ticker_max_lag SET DEFAULT '500 milliseconds';
UPDATE skiff.queue SET queue_ticker_max_lag = '500 milliseconds'
    WHERE queue_ticker_max_lag = '100 milliseconds';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.ticker(i_queue text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q       skiff.queue%ROWTYPE;
    lt      skiff.tick%ROWTYPE;
    pending bigint;
    locked  boolean := false;
BEGIN
    LOOP
        IF locked THEN
            SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE;
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
            IF NOT (pending >= q.queue_ticker_max_events
                    OR (pending > 0 AND now() - lt.tick_time >= q.queue_ticker_max_lag)
                    OR now() - lt.tick_time >= q.queue_ticker_idle_period) THEN
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
DROP FUNCTION skiff.tick_has_late_events(integer, txid_snapshot);
