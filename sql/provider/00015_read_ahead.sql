-- +goose Up
-- Read the next batch ahead (issue 16, apply of a backlog). A worker behind its queue spent
-- about half of each batch's time with the provider idle (the target applying the batch's
-- last rows and committing) and the other half with the target idle (the provider running
-- the next batch's query, sorting it, sending its first rows). peek_batch tells a second
-- connection of the worker which batch next_batch will open once the open one is finished,
-- and the query that reads its events, so that the worker reads them while the target still
-- applies the open batch. The worker uses what it read only when next_batch then opens that
-- very tick range: a batch's events are those of the transactions visible at its end tick and
-- not at its start tick, fixed once both ticks exist, whoever reads them and when.
--
-- The merge of ticks into a batch moves from next_batch to batch_end_tick, so that both use
-- the same; the queries of batch_event_sql and batch_long_txids move to functions of a tick
-- pair (tick_range_event_sql, tick_range_long_txids), which the batch functions call with
-- their batch's ticks. Nothing else changes in what they return. 8.4-safe.

-- +goose StatementBegin
-- batch_end_tick(queue, last tick, max events) is the end tick of the batch next_batch opens
-- after i_last_tick (see next_batch); NULL when no tick follows it or i_last_tick is gone.
CREATE FUNCTION skiff.batch_end_tick(i_queue_id integer, i_last_tick bigint, i_max_events bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    last_seq bigint;
    first_t  bigint;
    next_t   bigint;
    cand     bigint;
BEGIN
    SELECT tick_event_seq INTO last_seq FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id = i_last_tick;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT min(tick_id) INTO first_t FROM skiff.tick WHERE queue_id = i_queue_id AND tick_id > i_last_tick;
    IF first_t IS NULL THEN
        RETURN NULL;
    END IF;
    next_t := first_t;
    IF i_max_events > 0 THEN
        SELECT max(tick_id) INTO next_t FROM skiff.tick
         WHERE queue_id = i_queue_id AND tick_id > first_t
           AND skiff.event_count(last_seq, tick_event_seq) <= i_max_events;
        next_t := greatest(first_t, coalesce(next_t, first_t));
        -- Ticks that add no commit add no event: merge them too, one at a time, while the
        -- batch so far is still empty.
        IF skiff.ticks_add_no_commit(i_queue_id, i_last_tick, next_t) THEN
            FOR cand IN SELECT tick_id FROM skiff.tick
                         WHERE queue_id = i_queue_id AND tick_id > next_t
                         ORDER BY tick_id LIMIT 1000 LOOP
                EXIT WHEN NOT skiff.ticks_add_no_commit(i_queue_id, i_last_tick, cand);
                next_t := cand;
            END LOOP;
        END IF;
    END IF;
    RETURN next_t;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.batch_end_tick(integer, bigint, bigint) FROM PUBLIC;

-- +goose StatementBegin
-- next_batch(queue, consumer, max_events) returns the consumer's open batch, or opens the
-- next one: from its last tick to batch_end_tick's. NULL when no tick follows the last one.
CREATE OR REPLACE FUNCTION skiff.next_batch(i_queue text, i_consumer text, i_max_events bigint DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s      record;
    next_t bigint;
    bid    bigint;
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
    PERFORM 1 FROM skiff.tick WHERE queue_id = s.queue_id AND tick_id = s.sub_last_tick;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: tick % of consumer "%" on queue "%" is gone', s.sub_last_tick, i_consumer, i_queue;
    END IF;
    next_t := skiff.batch_end_tick(s.queue_id, s.sub_last_tick, i_max_events);
    IF next_t IS NULL THEN
        UPDATE skiff.consumer SET sub_active = now() WHERE sub_id = s.sub_id;
        RETURN NULL;
    END IF;
    bid := nextval('skiff.batch_id_seq');
    UPDATE skiff.consumer
       SET sub_batch = bid, sub_next_tick = next_t, sub_active = now()
     WHERE sub_id = s.sub_id;
    RETURN bid;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- tick_range_long_txids is batch_long_txids for the batch of subscription i_sub_id from the
-- tick of snapshot i_snap1 to the tick of i_snap2.
CREATE FUNCTION skiff.tick_range_long_txids(i_queue_id integer, i_sub_id integer, i_snap1 txid_snapshot, i_snap2 txid_snapshot,
    OUT o_txid bigint, OUT o_table text, OUT o_first bigint, OUT o_last bigint, OUT o_sub integer)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r     record;
    n     integer;
    tbl   text;
    cands bigint[];
BEGIN
    cands := ARRAY(SELECT x FROM txid_snapshot_xip(i_snap1) x
                    WHERE txid_visible_in_snapshot(x, i_snap2) ORDER BY x);
    IF array_upper(cands, 1) IS NULL THEN
        RETURN;
    END IF;
    FOR n IN 0..2 LOOP
        tbl := skiff.event_table_name(i_queue_id, n);
        FOR r IN EXECUTE 'SELECT c.x, '
                || '(SELECT ev_id FROM ' || tbl || ' WHERE ev_txid = c.x ORDER BY ev_txid, ev_id LIMIT 1) AS f, '
                || '(SELECT ev_id FROM ' || tbl || ' WHERE ev_txid = c.x ORDER BY ev_txid DESC, ev_id DESC LIMIT 1) AS l '
                || 'FROM (SELECT unnest($1) AS x) c' USING cands LOOP
            IF r.f IS NOT NULL THEN
                o_txid := r.x;
                o_table := tbl;
                o_first := r.f;
                o_last := r.l;
                o_sub := i_sub_id;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.tick_range_long_txids(integer, integer, txid_snapshot, txid_snapshot) FROM PUBLIC;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.batch_long_txids(i_batch_id bigint,
    OUT o_txid bigint, OUT o_table text, OUT o_first bigint, OUT o_last bigint, OUT o_sub integer)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
BEGIN
    SELECT sub.sub_id, sub.queue_id, t1.tick_snapshot AS snap1, t2.tick_snapshot AS snap2 INTO s
      FROM skiff.consumer sub
      JOIN skiff.tick t1 ON t1.queue_id = sub.queue_id AND t1.tick_id = sub.sub_last_tick
      JOIN skiff.tick t2 ON t2.queue_id = sub.queue_id AND t2.tick_id = sub.sub_next_tick
     WHERE sub.sub_batch = i_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: batch % is not open', i_batch_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY SELECT * FROM skiff.tick_range_long_txids(s.queue_id, s.sub_id, s.snap1, s.snap2);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- tick_range_event_sql is batch_event_sql(batch, except) for the batch of subscription
-- i_sub_id from the tick of snapshot i_snap1 to the tick of i_snap2; without its ORDER BY
-- ev_id unless i_sorted (the reader sorts the rows itself).
CREATE FUNCTION skiff.tick_range_event_sql(i_queue_id integer, i_sub_id integer, i_snap1 txid_snapshot, i_snap2 txid_snapshot,
    i_except bigint[], i_sorted boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cond   text;
    ranges text := '';
    lo     bigint;
    hi     bigint;
    x      bigint;
    q_sql  text := '';
    n      integer;
BEGIN
    FOR x IN SELECT u FROM txid_snapshot_xip(i_snap1) u
              WHERE txid_visible_in_snapshot(u, i_snap2)
                AND NOT (u = ANY (coalesce(i_except, '{}'::bigint[])))
              ORDER BY u LOOP
        IF ranges <> '' THEN
            ranges := ranges || ' OR ';
        END IF;
        ranges := ranges || 'ev_txid = ' || x;
    END LOOP;
    lo := txid_snapshot_xmax(i_snap1);
    hi := txid_snapshot_xmax(i_snap2);
    FOR x IN SELECT DISTINCT u FROM (
                 SELECT unnest(i_except) AS u
                 UNION ALL SELECT txid_snapshot_xip(i_snap2)) e
              WHERE u IS NOT NULL ORDER BY u LOOP
        IF x >= lo AND x < hi THEN
            IF x > lo THEN
                IF ranges <> '' THEN
                    ranges := ranges || ' OR ';
                END IF;
                ranges := ranges || '(ev_txid >= ' || lo || ' AND ev_txid < ' || x || ')';
            END IF;
            lo := x + 1;
        END IF;
    END LOOP;
    IF lo < hi THEN
        IF ranges <> '' THEN
            ranges := ranges || ' OR ';
        END IF;
        ranges := ranges || '(ev_txid >= ' || lo || ' AND ev_txid < ' || hi || ')';
    END IF;
    IF ranges = '' THEN
        ranges := 'false';
    END IF;
    cond := ' WHERE (' || ranges || ')'
         || ' AND txid_visible_in_snapshot(ev_txid, ' || quote_literal(i_snap2::text) || '::txid_snapshot)'
         || ' AND NOT txid_visible_in_snapshot(ev_txid, ' || quote_literal(i_snap1::text) || '::txid_snapshot)'
         || ' AND (ev_owner IS NULL OR ev_owner = ' || i_sub_id || ')';
    FOR n IN 0..2 LOOP
        IF n > 0 THEN
            q_sql := q_sql || ' UNION ALL ';
        END IF;
        q_sql := q_sql || 'SELECT ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra, ev_retry FROM '
            || skiff.event_table_name(i_queue_id, n) || cond;
    END LOOP;
    q_sql := 'SELECT ev_id, ev_time, ev_txid, ev_op::text AS ev_op, ev_layout, ev_data, ev_extra, ev_retry FROM ('
        || q_sql || ') ev';
    IF i_sorted THEN
        q_sql := q_sql || ' ORDER BY ev_id';
    END IF;
    RETURN q_sql;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.tick_range_event_sql(integer, integer, txid_snapshot, txid_snapshot, bigint[], boolean) FROM PUBLIC;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.batch_event_sql(i_batch_id bigint, i_except bigint[]) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
BEGIN
    SELECT sub.sub_id, sub.queue_id, t1.tick_snapshot AS snap1, t2.tick_snapshot AS snap2 INTO s
      FROM skiff.consumer sub
      JOIN skiff.tick t1 ON t1.queue_id = sub.queue_id AND t1.tick_id = sub.sub_last_tick
      JOIN skiff.tick t2 ON t2.queue_id = sub.queue_id AND t2.tick_id = sub.sub_next_tick
     WHERE sub.sub_batch = i_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: batch % is not open', i_batch_id USING ERRCODE = 'P0002';
    END IF;
    RETURN skiff.tick_range_event_sql(s.queue_id, s.sub_id, s.snap1, s.snap2, i_except, true);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- peek_batch(queue, consumer, after tick, max_events) describes the batch next_batch opens
-- after tick i_after_tick (the end of the consumer's batch being applied): its end tick, about
-- how many events it holds (event_count), the largest span of ids of a transaction running at
-- its start tick (see batch_long_txids; 0 when none) and the query reading its events
-- (batch_event_sql's, nothing excepted, without its ORDER BY: the reader holds the whole batch
-- and sorts it, which costs it far less than the provider's sort). No row when
-- that range could still change: no tick follows its end tick yet, so a tick cut meanwhile
-- could still be merged into it (or i_after_tick is gone). It changes nothing, takes no lock
-- and does not depend on the consumer's position.
CREATE FUNCTION skiff.peek_batch(i_queue text, i_consumer text, i_after_tick bigint, i_max_events bigint,
    OUT o_tick bigint, OUT o_events bigint, OUT o_long_span bigint, OUT o_sql text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s     record;
    snap1 txid_snapshot;
    snap2 txid_snapshot;
BEGIN
    SELECT sub.sub_id, sub.queue_id INTO s
      FROM skiff.consumer sub JOIN skiff.queue q ON q.queue_id = sub.queue_id
     WHERE q.queue_name = i_queue AND sub.sub_consumer = i_consumer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: consumer "%" is not registered on queue "%"', i_consumer, i_queue
            USING ERRCODE = 'P0002';
    END IF;
    o_tick := skiff.batch_end_tick(s.queue_id, i_after_tick, i_max_events);
    IF o_tick IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM skiff.tick WHERE queue_id = s.queue_id AND tick_id > o_tick;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT t1.tick_snapshot, t2.tick_snapshot, skiff.event_count(t1.tick_event_seq, t2.tick_event_seq)
      INTO snap1, snap2, o_events
      FROM skiff.tick t1, skiff.tick t2
     WHERE t1.queue_id = s.queue_id AND t1.tick_id = i_after_tick
       AND t2.queue_id = s.queue_id AND t2.tick_id = o_tick;
    IF NOT FOUND THEN
        RETURN; -- cleaned up meanwhile
    END IF;
    SELECT coalesce(max(span), 0) INTO o_long_span
      FROM (SELECT sum(l.o_last - l.o_first + 1) AS span
              FROM skiff.tick_range_long_txids(s.queue_id, s.sub_id, snap1, snap2) l
             GROUP BY l.o_txid) x;
    o_sql := skiff.tick_range_event_sql(s.queue_id, s.sub_id, snap1, snap2, '{}'::bigint[], false);
    RETURN NEXT;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.peek_batch(text, text, bigint, bigint) FROM PUBLIC;

-- +goose Down
DROP FUNCTION skiff.peek_batch(text, text, bigint, bigint);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.batch_event_sql(i_batch_id bigint, i_except bigint[]) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s      record;
    cond   text;
    ranges text := '';
    lo     bigint;
    hi     bigint;
    x      bigint;
    q_sql  text := '';
    n      integer;
BEGIN
    SELECT sub.sub_id, sub.queue_id, t1.tick_snapshot AS snap1, t2.tick_snapshot AS snap2 INTO s
      FROM skiff.consumer sub
      JOIN skiff.tick t1 ON t1.queue_id = sub.queue_id AND t1.tick_id = sub.sub_last_tick
      JOIN skiff.tick t2 ON t2.queue_id = sub.queue_id AND t2.tick_id = sub.sub_next_tick
     WHERE sub.sub_batch = i_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: batch % is not open', i_batch_id USING ERRCODE = 'P0002';
    END IF;
    FOR x IN SELECT u FROM txid_snapshot_xip(s.snap1) u
              WHERE txid_visible_in_snapshot(u, s.snap2)
                AND NOT (u = ANY (coalesce(i_except, '{}'::bigint[])))
              ORDER BY u LOOP
        IF ranges <> '' THEN
            ranges := ranges || ' OR ';
        END IF;
        ranges := ranges || 'ev_txid = ' || x;
    END LOOP;
    lo := txid_snapshot_xmax(s.snap1);
    hi := txid_snapshot_xmax(s.snap2);
    FOR x IN SELECT DISTINCT u FROM (
                 SELECT unnest(i_except) AS u
                 UNION ALL SELECT txid_snapshot_xip(s.snap2)) e
              WHERE u IS NOT NULL ORDER BY u LOOP
        IF x >= lo AND x < hi THEN
            IF x > lo THEN
                IF ranges <> '' THEN
                    ranges := ranges || ' OR ';
                END IF;
                ranges := ranges || '(ev_txid >= ' || lo || ' AND ev_txid < ' || x || ')';
            END IF;
            lo := x + 1;
        END IF;
    END LOOP;
    IF lo < hi THEN
        IF ranges <> '' THEN
            ranges := ranges || ' OR ';
        END IF;
        ranges := ranges || '(ev_txid >= ' || lo || ' AND ev_txid < ' || hi || ')';
    END IF;
    IF ranges = '' THEN
        ranges := 'false';
    END IF;
    cond := ' WHERE (' || ranges || ')'
         || ' AND txid_visible_in_snapshot(ev_txid, ' || quote_literal(s.snap2::text) || '::txid_snapshot)'
         || ' AND NOT txid_visible_in_snapshot(ev_txid, ' || quote_literal(s.snap1::text) || '::txid_snapshot)'
         || ' AND (ev_owner IS NULL OR ev_owner = ' || s.sub_id || ')';
    FOR n IN 0..2 LOOP
        IF n > 0 THEN
            q_sql := q_sql || ' UNION ALL ';
        END IF;
        q_sql := q_sql || 'SELECT ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra, ev_retry FROM '
            || skiff.event_table_name(s.queue_id, n) || cond;
    END LOOP;
    RETURN 'SELECT ev_id, ev_time, ev_txid, ev_op::text AS ev_op, ev_layout, ev_data, ev_extra, ev_retry FROM ('
        || q_sql || ') ev ORDER BY ev_id';
END;
$$;
-- +goose StatementEnd
DROP FUNCTION skiff.tick_range_event_sql(integer, integer, txid_snapshot, txid_snapshot, bigint[], boolean);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.batch_long_txids(i_batch_id bigint,
    OUT o_txid bigint, OUT o_table text, OUT o_first bigint, OUT o_last bigint, OUT o_sub integer)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s     record;
    r     record;
    n     integer;
    tbl   text;
    cands bigint[];
BEGIN
    SELECT sub.sub_id, sub.queue_id, t1.tick_snapshot AS snap1, t2.tick_snapshot AS snap2 INTO s
      FROM skiff.consumer sub
      JOIN skiff.tick t1 ON t1.queue_id = sub.queue_id AND t1.tick_id = sub.sub_last_tick
      JOIN skiff.tick t2 ON t2.queue_id = sub.queue_id AND t2.tick_id = sub.sub_next_tick
     WHERE sub.sub_batch = i_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: batch % is not open', i_batch_id USING ERRCODE = 'P0002';
    END IF;
    cands := ARRAY(SELECT x FROM txid_snapshot_xip(s.snap1) x
                    WHERE txid_visible_in_snapshot(x, s.snap2) ORDER BY x);
    IF array_upper(cands, 1) IS NULL THEN
        RETURN;
    END IF;
    FOR n IN 0..2 LOOP
        tbl := skiff.event_table_name(s.queue_id, n);
        FOR r IN EXECUTE 'SELECT c.x, '
                || '(SELECT ev_id FROM ' || tbl || ' WHERE ev_txid = c.x ORDER BY ev_txid, ev_id LIMIT 1) AS f, '
                || '(SELECT ev_id FROM ' || tbl || ' WHERE ev_txid = c.x ORDER BY ev_txid DESC, ev_id DESC LIMIT 1) AS l '
                || 'FROM (SELECT unnest($1) AS x) c' USING cands LOOP
            IF r.f IS NOT NULL THEN
                o_txid := r.x;
                o_table := tbl;
                o_first := r.f;
                o_last := r.l;
                o_sub := s.sub_id;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END;
$$;
-- +goose StatementEnd
DROP FUNCTION skiff.tick_range_long_txids(integer, integer, txid_snapshot, txid_snapshot);

-- +goose StatementBegin
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
DROP FUNCTION skiff.batch_end_tick(integer, bigint, bigint);
