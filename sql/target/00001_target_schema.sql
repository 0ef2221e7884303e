-- +goose Up
-- The target schema: what a target knows about the subscriptions it receives. Written with
-- what PostgreSQL 8.4 has (a target may be as old as its provider).

-- One row per subscription (a queue of a provider replayed by one consumer). The position
-- (tick or lsn) is advanced in the same transaction as the batch it ends: after a crash a
-- batch is neither lost nor applied twice. NULL position: nothing applied yet, the first batch
-- the provider hands out is accepted as it comes.
-- One worker per subscription at a time: a worker holds the session advisory lock
-- pg_try_advisory_lock(1936419174 /* 'skif' */, sub_id) on the target while it runs.
CREATE TABLE skiff.subscription (
    sub_id          serial PRIMARY KEY,
    queue           text NOT NULL,
    consumer        text NOT NULL,
    provider        text NOT NULL,             -- user@host:port/db of the provider, no password
    tick            bigint,                    -- trigger queue: tick of the last applied batch
    lsn             bigint,                    -- logical decoding: end LSN of the last applied batch
    last_batch_id   bigint,
    batches_applied bigint NOT NULL DEFAULT 0,
    events_applied  bigint NOT NULL DEFAULT 0,
    applied_at      timestamptz,               -- commit time of the last applied batch
    last_error      text,                      -- the error of the last failed attempt, NULL once applied
    last_error_at   timestamptz,
    heartbeat       timestamptz,               -- a live worker refreshes it at least every batch
    worker          text,                      -- host and pid of the worker holding the lock
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscription_queue_consumer_key UNIQUE (queue, consumer)
);

-- One row per subscribed source table. state: copying (initial copy running; the worker skips
-- the table's events), catching-up (copy done under copy_snapshot; the worker skips events of
-- transactions the snapshot shows as committed), in-sync (every event applied).
-- handler names a custom handler of the worker's registry, handler_config is its JSON.
CREATE TABLE skiff.table_state (
    sub_id           integer NOT NULL REFERENCES skiff.subscription ON DELETE CASCADE,
    source_schema    text NOT NULL,
    source_name      text NOT NULL,
    dest_schema      text NOT NULL,
    dest_name        text NOT NULL,
    state            text NOT NULL,
    handler          text,
    handler_config   text,
    copy_snapshot    text,                     -- txid_snapshot of the initial copy
    copy_tick        bigint,                   -- tick the copy stands at (issue 5)
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sub_id, source_schema, source_name),
    CONSTRAINT table_state_state_check CHECK (state IN ('copying', 'catching-up', 'in-sync'))
);

-- One row per applied batch, written in the batch's transaction: the audit trail that shows
-- every batch applied exactly once. Rows older than a week are pruned by the worker.
CREATE TABLE skiff.batch_log (
    sub_id     integer NOT NULL REFERENCES skiff.subscription ON DELETE CASCADE,
    batch_id   bigint NOT NULL,
    prev_tick  bigint,
    end_tick   bigint,
    prev_lsn   bigint,
    end_lsn    bigint,
    events     bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_log_sub_applied_idx ON skiff.batch_log (sub_id, applied_at);

-- +goose Down
DROP TABLE skiff.batch_log;
DROP TABLE skiff.table_state;
DROP TABLE skiff.subscription;
