-- +goose Up
-- The merge of ticks that add no commit (00011) never happened behind the ticker daemon (issue
-- 16, "Large transactions"). skiff.ticker() took its queue row with FOR UPDATE NOWAIT inside
-- an exception block: a subtransaction, whose row lock takes a transaction id of its own
-- besides its parent's. Every tick the daemon cut thus finished two ids, the tick row's xmin
-- and the subtransaction's, and ticks_add_no_commit rightly counted the second as a commit it
-- could not tell from any other: the merge stopped at once. A worker started after one large
-- transaction (bench bigtx, 400 k changes) replayed 23 empty batches, one per max_events ids,
-- before its first row.
--
-- From 9.5 the ticker takes the row with FOR UPDATE SKIP LOCKED instead: no row while another
-- session holds it (another ticker, drop_queue dropping the event sequence this transaction
-- has read: waiting could deadlock), the same answer as NOWAIT's error, without a
-- subtransaction, so a tick takes one transaction id. Before 9.5 it keeps NOWAIT and the
-- exception block (ticks do not merge there behind the daemon: each batch spans at most
-- max_events ids, as before 00011). 8.4-safe: the SKIP LOCKED statement runs through EXECUTE.
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

-- +goose Down
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
