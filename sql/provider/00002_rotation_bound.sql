-- +goose Up
-- Rotation records, for each epoch switch, a txid taken in a transaction of its own after the
-- switch committed (step 2), instead of the xmax of a snapshot taken inside the switch.
--
-- Why. A snapshot's xmax is the latest *completed* xid + 1, not the next xid to be handed out:
-- a writer that got its xid before the switch and is still running can have an xid at or above
-- it. Version 1 took that xmax as "every writer of the old epoch has a txid below this", so a
-- consumer's tick with xmin >= it did not prove the old epoch's writers had ended; the rotation
-- that reused their table then truncated events committed after that tick (found by
-- queue.TestRotationUnderWrites, shown step by step by queue.TestRotationWaitsForRunningWriter).
-- A txid *assigned* after the switch committed is above every xid assigned before it, so a tick
-- whose xmin is at least that txid saw every old-epoch writer end. PgQ does the same
-- (maint_rotate_tables_step2).
--
-- Also: setval is not transactional. When a switch's transaction rolled back after its setval
-- (the ticker killed or cancelled), writers were already on the new epoch while queue_epoch
-- kept the old one, and the next rotation truncated the table they were filling. The first
-- step now takes the epoch from the sequence when the two disagree.
ALTER TABLE skiff.queue RENAME COLUMN queue_switch_xmax TO queue_switch_txid;
ALTER TABLE skiff.queue RENAME COLUMN queue_prev_switch_xmax TO queue_prev_switch_txid;
-- NULL: the switch to queue_epoch has committed, its step 2 has not run yet.
ALTER TABLE skiff.queue ALTER COLUMN queue_switch_txid DROP NOT NULL;
-- The bounds version 1 recorded may be too low. This transaction's txid is assigned by the
-- ALTER TABLE above, after its lock waited out any rotation in progress: it is above every
-- xid assigned before any switch made so far, a safe (if late) bound for both.
UPDATE skiff.queue SET queue_switch_txid = txid_current(), queue_prev_switch_txid = txid_current();

-- +goose StatementBegin
-- maint_rotate_tables, step 1 of a rotation, switches a queue to its next event table when the
-- current epoch is older than queue_rotation_period and the table it would reuse is safe to
-- truncate. Returns 1 when it switched epochs, 2 when step 2 of the last switch is still due
-- (nothing switched), 0 otherwise. After 1 or 2 the caller runs maint_rotate_tables_step2 in a
-- transaction of its own.
--
-- Why no event is lost. Let E be the current epoch; new events go to table E % 3. Rotating to
-- E + 1 truncates table (E + 1) % 3, which holds the events of epoch E - 2. A writer gets its
-- xid before it calls nextval (the row write that fires the trigger assigns it; retry
-- maintenance takes its xid first), and the writers of epoch E - 2 called nextval before the
-- setval that began E - 1. Step 2 of that switch ran after the switch committed and recorded
-- its own, newly assigned txid in queue_prev_switch_txid (now): xids are handed out in
-- increasing order, so every writer of epoch E - 2 has a smaller txid. Once every consumer has
-- finished a tick whose snapshot's xmin is at least that value, every such transaction had
-- ended by that tick: committed ones were in batches the consumers have finished, aborted
-- ones never count. Nothing else writes to that table any more (new ids are of epoch E or
-- later), so the TRUNCATE drops nothing anyone needs. With no consumer the queue's events
-- concern nobody (a new consumer starts at the latest tick).
--
-- The new epoch's ids keep the low 40 bits (the running event count, for event_count) and
-- are larger than every id handed out before, so ev_id order stays the lock order.
CREATE OR REPLACE FUNCTION skiff.maint_rotate_tables(i_queue text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q       skiff.queue%ROWTYPE;
    min_x   bigint;
    cur     bigint;
    low     bigint;
    nextid  bigint;
BEGIN
    SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: queue "%" does not exist', i_queue USING ERRCODE = 'P0002';
    END IF;
    IF q.queue_switch_txid IS NULL THEN
        RETURN 2;
    END IF;
    cur := skiff.event_seq_value(q.queue_id);
    IF (cur >> 40) < q.queue_epoch THEN
        RAISE EXCEPTION 'skiff: event sequence % of queue "%" is at epoch %, behind the queue''s epoch % (was it reset by hand?)',
            skiff.event_seq_name(q.queue_id), i_queue, cur >> 40, q.queue_epoch;
    END IF;
    IF (cur >> 40) > q.queue_epoch THEN
        -- An earlier switch set the sequence and then rolled back: writers are on the new
        -- epoch already. Record that switch as made; its TRUNCATE was rolled back, so the table
        -- keeps events of epoch E - 2 that no batch selects any more (their transactions are
        -- older than every consumer's position) until the table is reused again.
        UPDATE skiff.queue
           SET queue_epoch = cur >> 40,
               queue_switch_time = now(),
               queue_prev_switch_txid = queue_switch_txid,
               queue_switch_txid = NULL
         WHERE queue_id = q.queue_id;
        RETURN 1;
    END IF;
    IF now() - q.queue_switch_time < q.queue_rotation_period THEN
        RETURN 0;
    END IF;
    SELECT min(txid_snapshot_xmin(t.tick_snapshot)) INTO min_x
      FROM skiff.consumer s JOIN skiff.tick t ON t.queue_id = s.queue_id AND t.tick_id = s.sub_last_tick
     WHERE s.queue_id = q.queue_id;
    IF min_x IS NOT NULL AND min_x < q.queue_prev_switch_txid THEN
        RETURN 0;
    END IF;
    -- By the check above no transaction that wrote to this table is still running.
    EXECUTE 'TRUNCATE ' || skiff.event_table_name(q.queue_id, ((q.queue_epoch + 1) % 3)::integer);
    low := cur & 1099511627775;
    IF low >= 549755813888 THEN
        low := 0;  -- keep the counter far from the epoch bits
    END IF;
    nextid := ((q.queue_epoch + 1) << 40) | low;
    EXECUTE 'SELECT setval(' || quote_literal(skiff.event_seq_name(q.queue_id)) || ', $1, true)' USING nextid;
    UPDATE skiff.queue
       SET queue_epoch = queue_epoch + 1,
           queue_switch_time = now(),
           queue_prev_switch_txid = queue_switch_txid,
           queue_switch_txid = NULL
     WHERE queue_id = q.queue_id;
    RETURN 1;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- maint_rotate_tables_step2 completes the last epoch switch of a queue: it records a txid
-- assigned after the switch committed. It must run in a transaction of its own, begun after
-- the switch's commit and with no xid of its own yet: it reads first (seeing the switch
-- committed) and only then takes its txid. Returns 1 when it completed a switch, 0 when none
-- was pending.
CREATE OR REPLACE FUNCTION skiff.maint_rotate_tables_step2(i_queue text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    qid integer := skiff.queue_id(i_queue);
BEGIN
    PERFORM 1 FROM skiff.queue WHERE queue_id = qid AND queue_switch_txid IS NULL;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    UPDATE skiff.queue SET queue_switch_txid = txid_current()
     WHERE queue_id = qid AND queue_switch_txid IS NULL;
    IF FOUND THEN
        RETURN 1;
    END IF;
    RETURN 0;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- Back to version 1's single-step rotation, whose bound is unsafe (see above): a pending
-- step 2 is completed here so the column can be NOT NULL again.
DROP FUNCTION skiff.maint_rotate_tables_step2(text);
UPDATE skiff.queue SET queue_switch_txid = txid_current() WHERE queue_switch_txid IS NULL;
ALTER TABLE skiff.queue ALTER COLUMN queue_switch_txid SET NOT NULL;
ALTER TABLE skiff.queue RENAME COLUMN queue_switch_txid TO queue_switch_xmax;
ALTER TABLE skiff.queue RENAME COLUMN queue_prev_switch_txid TO queue_prev_switch_xmax;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION skiff.maint_rotate_tables(i_queue text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q       skiff.queue%ROWTYPE;
    min_x   bigint;
    cur     bigint;
    low     bigint;
    nextid  bigint;
BEGIN
    SELECT * INTO q FROM skiff.queue WHERE queue_name = i_queue FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'skiff: queue "%" does not exist', i_queue USING ERRCODE = 'P0002';
    END IF;
    IF now() - q.queue_switch_time < q.queue_rotation_period THEN
        RETURN 0;
    END IF;
    SELECT min(txid_snapshot_xmin(t.tick_snapshot)) INTO min_x
      FROM skiff.consumer s JOIN skiff.tick t ON t.queue_id = s.queue_id AND t.tick_id = s.sub_last_tick
     WHERE s.queue_id = q.queue_id;
    IF min_x IS NOT NULL AND min_x < q.queue_prev_switch_xmax THEN
        RETURN 0;
    END IF;
    EXECUTE 'TRUNCATE ' || skiff.event_table_name(q.queue_id, ((q.queue_epoch + 1) % 3)::integer);
    cur := skiff.event_seq_value(q.queue_id);
    low := cur & 1099511627775;
    IF low >= 549755813888 THEN
        low := 0;
    END IF;
    nextid := ((q.queue_epoch + 1) << 40) | low;
    EXECUTE 'SELECT setval(' || quote_literal(skiff.event_seq_name(q.queue_id)) || ', $1, true)' USING nextid;
    UPDATE skiff.queue
       SET queue_epoch = queue_epoch + 1,
           queue_switch_time = now(),
           queue_prev_switch_xmax = queue_switch_xmax,
           queue_switch_xmax = txid_snapshot_xmax(txid_current_snapshot())
     WHERE queue_id = q.queue_id;
    RETURN 1;
END;
$$;
-- +goose StatementEnd
