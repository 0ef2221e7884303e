-- +goose Up
-- The ticker's probe for late events reads the event tables by their index, whatever their
-- statistics (issue 16, "Apply").
--
-- skiff.tick_has_late_events runs at every ticker poll after a tick that took events, as long
-- as other transactions commit (a worker applying a backlog commits on the provider at every
-- batch) and no tick is due: for the whole apply of a backlog. It finds nothing then (the
-- backlog's transactions are all below the tick's xmax). Its query was one EXISTS per event
-- table over `ev_txid = ANY (...) OR (ev_txid >= lo AND ev_txid < hi AND ...)`. Event tables
-- are emptied by TRUNCATE and usually have no statistics; on such a table of 1 M events the
-- planner expected an early match and took a sequential scan (or, with sequential scans off,
-- a scan of the whole index with the OR as a filter): every event read at every poll, some
-- 300 ms a poll and 8 s of a provider core during a 20 s apply on a 2-core machine. A table
-- autovacuum happened to analyze during the backlog got index scans, so the benchmark's apply
-- rate came out in two modes.
--
-- Now each condition is an EXISTS of its own whose condition on ev_txid is all the index needs
-- (the ANY list, the range), and the function runs with enable_seqscan off: the only plan
-- left reads the index entries of the range and of the listed txids, with or without
-- statistics (queue.TestLateEventProbeReadsNoEventTable). Same answer: the OR is split
-- across EXISTS. 8.4-safe.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.tick_has_late_events(i_queue_id integer, i_snap txid_snapshot) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    cur   txid_snapshot := txid_current_snapshot();
    cands bigint[];
    lo    bigint := txid_snapshot_xmax(i_snap);
    hi    bigint := txid_snapshot_xmax(txid_current_snapshot());
    n     integer;
    tbl   text;
    q_sql text;
    hit   boolean;
BEGIN
    cands := ARRAY(SELECT x FROM txid_snapshot_xip(i_snap) x WHERE txid_visible_in_snapshot(x, cur));
    IF array_upper(cands, 1) IS NULL AND hi <= lo + 1 THEN
        RETURN false;
    END IF;
    FOR n IN 0..2 LOOP
        tbl := skiff.event_table_name(i_queue_id, n);
        IF q_sql IS NULL THEN
            q_sql := 'SELECT ';
        ELSE
            q_sql := q_sql || ' OR ';
        END IF;
        IF array_upper(cands, 1) IS NOT NULL THEN
            q_sql := q_sql || 'EXISTS (SELECT 1 FROM ' || tbl || ' WHERE ev_txid = ANY ($1)) OR ';
        END IF;
        q_sql := q_sql || 'EXISTS (SELECT 1 FROM ' || tbl
            || ' WHERE ev_txid >= $2 AND ev_txid < $3 AND txid_visible_in_snapshot(ev_txid, $4))';
    END LOOP;
    EXECUTE q_sql INTO hit USING cands, lo, hi, cur;
    RETURN hit;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.tick_has_late_events(i_queue_id integer, i_snap txid_snapshot) RETURNS boolean
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
