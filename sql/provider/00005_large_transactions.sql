-- +goose Up
-- Large transactions (schema version 5): a batch's read streams without sorting a large
-- transaction's events.
--
-- Why. batch_event_sql(batch) returns one query ordered by ev_id over the three event tables,
-- which have no index in ev_id order: PostgreSQL sorts the whole batch before the first row
-- comes out. For one provider transaction of 2 M changes that is a sort on disk of hundreds of
-- MB, and nothing is applied until it ends.
--
-- How.
-- * The event tables' index becomes (ev_txid, ev_id) instead of (ev_txid): still one btree per
--   event row (capture cost), and one transaction's events are read in ev_id order by an index
--   scan, with no sort.
-- * batch_long_txids(batch) lists the transactions of a batch that were running when its first
--   tick was taken (txid_snapshot_xip of the start tick, visible in the end tick): the only
--   ones that can have written many events over many ticks. For each, per event table, the
--   first and last ev_id (two index probes). The consumer (queue.Source.Events) streams each
--   one whose events span many ids by itself, and every other event with
--   batch_event_sql(batch, except txids), which leaves them out by splitting the txid range
--   around them (so the index scan never visits their rows).
-- * Replay order. A transaction streamed by itself is replayed whole at the place of its last
--   event, the others' events in ev_id order. This keeps the order of every two writes of one
--   row (and of a TRUNCATE against a table's writes) that ev_id order keeps: when T wrote a
--   row before L did, T committed before L's write (row lock held to commit), so all of T's
--   events precede L's last; when L wrote it first, T's write came after L's commit, so after
--   L's last event. Within a transaction the order is ev_id order.

-- +goose StatementBegin
CREATE FUNCTION skiff.event_index_columns_tmp(i_cols text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q   record;
    n   integer;
    cnt integer := 0;
BEGIN
    FOR q IN SELECT queue_id FROM skiff.queue ORDER BY queue_id LOOP
        FOR n IN 0..2 LOOP
            EXECUTE 'DROP INDEX IF EXISTS skiff.' || quote_ident('event_' || q.queue_id || '_' || n || '_txid_idx');
            EXECUTE 'CREATE INDEX ' || quote_ident('event_' || q.queue_id || '_' || n || '_txid_idx')
                 || ' ON ' || skiff.event_table_name(q.queue_id, n) || ' (' || i_cols || ')';
            cnt := cnt + 1;
        END LOOP;
    END LOOP;
    RETURN cnt;
END;
$$;
-- +goose StatementEnd
SELECT skiff.event_index_columns_tmp('ev_txid, ev_id');
DROP FUNCTION skiff.event_index_columns_tmp(text);

-- +goose StatementBegin
-- create_queue makes a queue, its three event tables, its event sequence and its first tick.
-- Returns 1 when created, 0 when the queue existed.
CREATE OR REPLACE FUNCTION skiff.create_queue(i_queue text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    qid integer;
    n   integer;
BEGIN
    -- Serialise concurrent creators: the second waits, then sees the queue.
    LOCK TABLE skiff.queue IN SHARE ROW EXCLUSIVE MODE;
    PERFORM 1 FROM skiff.queue WHERE queue_name = i_queue;
    IF FOUND THEN
        RETURN 0;
    END IF;
    IF i_queue IS NULL OR i_queue = '' THEN
        RAISE EXCEPTION 'skiff: queue name must not be empty';
    END IF;
    INSERT INTO skiff.queue (queue_name) VALUES (i_queue) RETURNING queue_id INTO qid;
    EXECUTE 'CREATE SEQUENCE ' || skiff.event_seq_name(qid) || ' MINVALUE 0 START 0 CACHE 1';
    EXECUTE 'SELECT setval(' || quote_literal(skiff.event_seq_name(qid)) || ', 0, true)';
    FOR n IN 0..2 LOOP
        EXECUTE 'CREATE TABLE ' || skiff.event_table_name(qid, n)
             || ' (LIKE skiff.event_template INCLUDING DEFAULTS)';
        EXECUTE 'CREATE INDEX ' || quote_ident('event_' || qid || '_' || n || '_txid_idx')
             || ' ON ' || skiff.event_table_name(qid, n) || ' (ev_txid, ev_id)';
    END LOOP;
    INSERT INTO skiff.tick (queue_id, tick_id, tick_snapshot, tick_event_seq)
    VALUES (qid, nextval('skiff.tick_id_seq'), txid_current_snapshot(), 0);
    RETURN 1;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- batch_long_txids lists the transactions of an open batch that were running at its start
-- tick, one row per transaction and event table holding some of its events: the table's name,
-- the first and last ev_id there, and the batch's subscription (the owner of retry events).
CREATE FUNCTION skiff.batch_long_txids(i_batch_id bigint,
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

-- +goose StatementBegin
-- batch_event_sql(batch, except) is batch_event_sql(batch) without the events of the
-- transactions in i_except (read by themselves, see batch_long_txids), and with tighter
-- bounds for the ev_txid index (PgQ's batch_event_sql does the same): a batch's transactions
-- are those running at the start tick (xip1) that the end tick sees, and those from the start
-- tick's xmax up to the end tick's xmax that were not running at the end tick (xip2). The
-- first are looked up one by one, the range is cut around the second and around i_except, so
-- that the index never visits the rows of a transaction still running — a long one is
-- otherwise read (and its rows checked) by every batch cut while it runs.
CREATE FUNCTION skiff.batch_event_sql(i_batch_id bigint, i_except bigint[]) RETURNS text
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

REVOKE ALL ON FUNCTION skiff.batch_long_txids(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.batch_event_sql(bigint, bigint[]) FROM PUBLIC;

-- +goose Down
DROP FUNCTION skiff.batch_event_sql(bigint, bigint[]);
DROP FUNCTION skiff.batch_long_txids(bigint);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.create_queue(i_queue text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    qid integer;
    n   integer;
BEGIN
    LOCK TABLE skiff.queue IN SHARE ROW EXCLUSIVE MODE;
    PERFORM 1 FROM skiff.queue WHERE queue_name = i_queue;
    IF FOUND THEN
        RETURN 0;
    END IF;
    IF i_queue IS NULL OR i_queue = '' THEN
        RAISE EXCEPTION 'skiff: queue name must not be empty';
    END IF;
    INSERT INTO skiff.queue (queue_name) VALUES (i_queue) RETURNING queue_id INTO qid;
    EXECUTE 'CREATE SEQUENCE ' || skiff.event_seq_name(qid) || ' MINVALUE 0 START 0 CACHE 1';
    EXECUTE 'SELECT setval(' || quote_literal(skiff.event_seq_name(qid)) || ', 0, true)';
    FOR n IN 0..2 LOOP
        EXECUTE 'CREATE TABLE ' || skiff.event_table_name(qid, n)
             || ' (LIKE skiff.event_template INCLUDING DEFAULTS)';
        EXECUTE 'CREATE INDEX ' || quote_ident('event_' || qid || '_' || n || '_txid_idx')
             || ' ON ' || skiff.event_table_name(qid, n) || ' (ev_txid)';
    END LOOP;
    INSERT INTO skiff.tick (queue_id, tick_id, tick_snapshot, tick_event_seq)
    VALUES (qid, nextval('skiff.tick_id_seq'), txid_current_snapshot(), 0);
    RETURN 1;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION skiff.event_index_columns_tmp(i_cols text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q   record;
    n   integer;
    cnt integer := 0;
BEGIN
    FOR q IN SELECT queue_id FROM skiff.queue ORDER BY queue_id LOOP
        FOR n IN 0..2 LOOP
            EXECUTE 'DROP INDEX IF EXISTS skiff.' || quote_ident('event_' || q.queue_id || '_' || n || '_txid_idx');
            EXECUTE 'CREATE INDEX ' || quote_ident('event_' || q.queue_id || '_' || n || '_txid_idx')
                 || ' ON ' || skiff.event_table_name(q.queue_id, n) || ' (' || i_cols || ')';
            cnt := cnt + 1;
        END LOOP;
    END LOOP;
    RETURN cnt;
END;
$$;
-- +goose StatementEnd
SELECT skiff.event_index_columns_tmp('ev_txid');
DROP FUNCTION skiff.event_index_columns_tmp(text);
