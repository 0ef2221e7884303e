-- +goose Up
-- A consumer that comes back after the ticker kept ticking through one long transaction
-- (issue 16, "Large transactions") used to replay one empty batch per tick cut while that
-- transaction ran: the ticker sees its events' ids as pending, so it ticks every
-- ticker_max_lag, and next_batch merges ticks only up to i_max_events ids, which that
-- transaction's ids alone exceed. With the worker stopped through a 40-second bulk load that
-- is some 400 batches, each a few round trips on both servers, before the first row of the
-- load is applied.
--
-- next_batch now also merges the ticks after its batch's end while the batch provably stays
-- empty: no transaction became visible between its start tick and the candidate end tick,
-- except the transactions that inserted those ticks. Then the batch holds no event whatever
-- the ids say. The merge stops at the last tick before a commit, so the long transaction is
-- still running at the next batch's start tick and is read by itself, in index order
-- (batch_long_txids). A batch spanning several ticks is always a valid batch (the events
-- visible at its end tick and not at its start tick): a wrong "empty" could only make a batch
-- larger, never lose or repeat an event.
--
-- skiff.ticks_add_no_commit(a, b, queue): no transaction other than the ticks' own became
-- visible between snapshot a and snapshot b.
--   * every transaction running at a (its xip) still runs at b;
--   * every transaction id from a's xmax up to b's xmax is running at b or is one of the
--     queue's tick transactions from tick a to tick b (their xmin: only 32 bits, so the epoch
--     must be the same at both ends, else the answer is no).
-- Aborted transactions count as commits (txid snapshots cannot tell them apart), as do other
-- queues' ticks, maintenance, and any commit in another database of the cluster (txids are
-- the cluster's): the answer errs towards "no", which only leaves ticks unmerged, as before.
-- 8.4-safe.
-- +goose StatementBegin
CREATE FUNCTION skiff.ticks_add_no_commit(i_queue_id integer, i_from bigint, i_to bigint) RETURNS boolean
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
REVOKE ALL ON FUNCTION skiff.ticks_add_no_commit(integer, bigint, bigint) FROM PUBLIC;

-- +goose StatementBegin
-- next_batch(queue, consumer, max_events) returns the consumer's open batch, or opens the
-- next one: from its last tick to the next tick, or further while the ids between them stay
-- within i_max_events, and further again while no transaction commits in between (see
-- above; at most 1,000 ticks more). NULL when no tick follows the last one.
CREATE OR REPLACE FUNCTION skiff.next_batch(i_queue text, i_consumer text, i_max_events bigint DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s        record;
    last_seq bigint;
    first_t  bigint;
    next_t   bigint;
    cand     bigint;
    bid      bigint;
BEGIN
    SELECT sub.sub_id, sub.queue_id, sub.sub_last_tick, sub.sub_batch INTO s
      FROM skiff.consumer sub JOIN skiff.queue q ON q.queue_id = sub.queue_id
     WHERE q.queue_name = i_queue AND sub.sub_consumer = i_consumer
       FOR UPDATE OF sub;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: consumer "%" is not registered on queue "%"', i_consumer, i_queue
            USING ERRCODE = 'P0002';
    END IF;
    IF s.sub_batch IS NOT NULL THEN
        UPDATE skiff.consumer SET sub_active = now() WHERE sub_id = s.sub_id;
        RETURN s.sub_batch;
    END IF;
    SELECT tick_event_seq INTO last_seq FROM skiff.tick WHERE queue_id = s.queue_id AND tick_id = s.sub_last_tick;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: tick % of consumer "%" on queue "%" is gone', s.sub_last_tick, i_consumer, i_queue;
    END IF;
    SELECT min(tick_id) INTO first_t FROM skiff.tick WHERE queue_id = s.queue_id AND tick_id > s.sub_last_tick;
    IF first_t IS NULL THEN
        UPDATE skiff.consumer SET sub_active = now() WHERE sub_id = s.sub_id;
        RETURN NULL;
    END IF;
    next_t := first_t;
    IF i_max_events > 0 THEN
        SELECT max(tick_id) INTO next_t FROM skiff.tick
         WHERE queue_id = s.queue_id AND tick_id > first_t
           AND skiff.event_count(last_seq, tick_event_seq) <= i_max_events;
        next_t := greatest(first_t, coalesce(next_t, first_t));
        -- Ticks that add no commit add no event: merge them too, one at a time, while the
        -- batch so far is still empty.
        IF skiff.ticks_add_no_commit(s.queue_id, s.sub_last_tick, next_t) THEN
            FOR cand IN SELECT tick_id FROM skiff.tick
                         WHERE queue_id = s.queue_id AND tick_id > next_t
                         ORDER BY tick_id LIMIT 1000 LOOP
                EXIT WHEN NOT skiff.ticks_add_no_commit(s.queue_id, s.sub_last_tick, cand);
                next_t := cand;
            END LOOP;
        END IF;
    END IF;
    bid := nextval('skiff.batch_id_seq');
    UPDATE skiff.consumer
       SET sub_batch = bid, sub_next_tick = next_t, sub_active = now()
     WHERE sub_id = s.sub_id;
    RETURN bid;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.next_batch(i_queue text, i_consumer text, i_max_events bigint DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s        record;
    last_seq bigint;
    first_t  bigint;
    next_t   bigint;
    bid      bigint;
BEGIN
    SELECT sub.sub_id, sub.queue_id, sub.sub_last_tick, sub.sub_batch INTO s
      FROM skiff.consumer sub JOIN skiff.queue q ON q.queue_id = sub.queue_id
     WHERE q.queue_name = i_queue AND sub.sub_consumer = i_consumer
       FOR UPDATE OF sub;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: consumer "%" is not registered on queue "%"', i_consumer, i_queue
            USING ERRCODE = 'P0002';
    END IF;
    IF s.sub_batch IS NOT NULL THEN
        UPDATE skiff.consumer SET sub_active = now() WHERE sub_id = s.sub_id;
        RETURN s.sub_batch;
    END IF;
    SELECT tick_event_seq INTO last_seq FROM skiff.tick WHERE queue_id = s.queue_id AND tick_id = s.sub_last_tick;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: tick % of consumer "%" on queue "%" is gone', s.sub_last_tick, i_consumer, i_queue;
    END IF;
    SELECT min(tick_id) INTO first_t FROM skiff.tick WHERE queue_id = s.queue_id AND tick_id > s.sub_last_tick;
    IF first_t IS NULL THEN
        UPDATE skiff.consumer SET sub_active = now() WHERE sub_id = s.sub_id;
        RETURN NULL;
    END IF;
    next_t := first_t;
    IF i_max_events > 0 THEN
        SELECT max(tick_id) INTO next_t FROM skiff.tick
         WHERE queue_id = s.queue_id AND tick_id > first_t
           AND skiff.event_count(last_seq, tick_event_seq) <= i_max_events;
        next_t := greatest(first_t, coalesce(next_t, first_t));
    END IF;
    bid := nextval('skiff.batch_id_seq');
    UPDATE skiff.consumer
       SET sub_batch = bid, sub_next_tick = next_t, sub_active = now()
     WHERE sub_id = s.sub_id;
    RETURN bid;
END;
$$;
-- +goose StatementEnd
DROP FUNCTION skiff.ticks_add_no_commit(integer, bigint, bigint);
