-- +goose Up
-- The backlog of a table being copied. While a table is in state copying with its copy
-- snapshot published, the copy's target transaction holds the destination's lock (TRUNCATE)
-- until it commits; the worker does not write that table's events to it (they would wait on
-- the lock, and the whole batch with them, stalling every other table of the subscription).
-- It appends the events the copy snapshot does not see here instead, in the batch's
-- transaction, as the applier would write them (after handlers: dest is the table they go
-- to). The first batch that sees the table out of state copying applies the backlog, in seq
-- order and before any later event of the table, and deletes it, in its own transaction. A
-- copy that starts over deletes the table's backlog in its barrier transaction (every event
-- in it committed before the new copy's snapshot: the new copy holds them).
CREATE TABLE skiff.copy_backlog (
    sub_id        integer NOT NULL REFERENCES skiff.subscription ON DELETE CASCADE,
    source_schema text NOT NULL,               -- the subscribed table (skiff.table_state's key)
    source_name   text NOT NULL,
    seq           bigserial NOT NULL,          -- replay order
    event_id      bigint NOT NULL,             -- provider event id (messages)
    txid          bigint NOT NULL,             -- provider transaction id, 0 when unknown
    op            text NOT NULL,               -- I, U, D or T
    dest_schema   text NOT NULL,               -- the table the event is written to
    dest_name     text NOT NULL,
    columns       text[],                      -- column names
    vals          text[],                      -- values in text form, NULL elements for NULL
    key_columns   text[],                      -- primary-key column names
    old_key       text[],                      -- an update's key values before it changed the key
    PRIMARY KEY (sub_id, source_schema, source_name, seq)
);

-- +goose Down
DROP TABLE skiff.copy_backlog;
