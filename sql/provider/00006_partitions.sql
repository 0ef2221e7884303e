-- +goose Up
-- Partitioned tables and inheritance parents (schema version 6): a table is captured whole,
-- its partitions or inheritance children with it, under the parent's name and layout.
--
-- with_children: the capture covers the table's children, present and future. Captures made
-- before this version keep false: their trigger sees the parent's own rows only (compare and
-- the copy then read the parent with ONLY).
ALTER TABLE skiff.captured_table ADD COLUMN with_children boolean NOT NULL DEFAULT false;
-- key_assumed: `table add --assume-unique-key` was given: the key is unique across the
-- children by the user's word, since no index can make it so (inheritance, or a partitioned
-- table before PostgreSQL 11).
ALTER TABLE skiff.captured_table ADD COLUMN key_assumed boolean NOT NULL DEFAULT false;

-- +goose StatementBegin
-- insert_event queues one event of a queue in the event table of its id's epoch, as the
-- capture functions do. The ticker calls it when it gives a child that had no capture trigger
-- (a partition on PostgreSQL 10, an inheritance child) one, for the rows already in it.
CREATE FUNCTION skiff.insert_event(i_queue_id integer, i_op text, i_layout integer, i_data text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM txid_current();  -- take the xid before any nextval (see maint_rotate_tables)
    EXECUTE 'SELECT nextval(' || quote_literal(skiff.event_seq_name(i_queue_id)) || ')' INTO id;
    EXECUTE 'INSERT INTO ' || skiff.event_table_name(i_queue_id, ((id >> 40) % 3)::integer)
         || ' (ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data)'
         || ' VALUES ($1, now(), txid_current(), $2, $3, $4)'
        USING id, i_op, i_layout, i_data;
    RETURN id;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.insert_event(integer, text, integer, text) FROM PUBLIC;

-- +goose StatementBegin
-- drop_queue as in version 1, but a capture function is dropped with CASCADE: the triggers
-- skiff gave a captured table's partitions or children call it too.
CREATE OR REPLACE FUNCTION skiff.drop_queue(i_queue text, i_force boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q record;
    t record;
    n integer;
BEGIN
    SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF NOT i_force THEN
        PERFORM 1 FROM skiff.consumer WHERE queue_id = q.queue_id;
        IF FOUND THEN
            RAISE EXCEPTION 'skiff: queue "%" has consumers; unregister them or force', i_queue;
        END IF;
    END IF;
    FOR t IN SELECT c.*, EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.table_oid) AS present
             FROM skiff.captured_table c WHERE c.queue_id = q.queue_id LOOP
        IF t.present THEN
            EXECUTE 'DROP TRIGGER IF EXISTS ' || quote_ident(t.row_trigger) || ' ON '
                 || quote_ident(t.table_schema) || '.' || quote_ident(t.table_name);
            EXECUTE 'DROP TRIGGER IF EXISTS ' || quote_ident(t.trunc_trigger) || ' ON '
                 || quote_ident(t.table_schema) || '.' || quote_ident(t.table_name);
        END IF;
        EXECUTE 'DROP FUNCTION IF EXISTS skiff.' || quote_ident(t.func_name) || '() CASCADE';
    END LOOP;
    DELETE FROM skiff.captured_table WHERE queue_id = q.queue_id;
    DELETE FROM skiff.captured_sequence WHERE queue_id = q.queue_id;
    DELETE FROM skiff.retry_queue WHERE queue_id = q.queue_id;
    DELETE FROM skiff.consumer WHERE queue_id = q.queue_id;
    DELETE FROM skiff.tick WHERE queue_id = q.queue_id;
    DELETE FROM skiff.table_layout WHERE queue_id = q.queue_id;
    FOR n IN 0..2 LOOP
        EXECUTE 'DROP TABLE ' || skiff.event_table_name(q.queue_id, n);
    END LOOP;
    EXECUTE 'DROP SEQUENCE ' || skiff.event_seq_name(q.queue_id);
    DELETE FROM skiff.queue WHERE queue_id = q.queue_id;
    RETURN 1;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION skiff.insert_event(integer, text, integer, text);
ALTER TABLE skiff.captured_table DROP COLUMN key_assumed;
ALTER TABLE skiff.captured_table DROP COLUMN with_children;
-- drop_queue keeps its CASCADE: without it a queue whose captures reach children could not be
-- dropped at all.
