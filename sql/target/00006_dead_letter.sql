-- +goose Up
-- Events an operator set aside with `skiff event skip`: a row the worker cannot decode or
-- apply (after a DDL it cannot follow, a constraint the target adds, ...) stops its batch, and
-- every later one, until its cause is fixed; when it cannot be, the operator names the event
-- and a reason. skiff event skip writes the row here (set_aside_at NULL: requested); the
-- worker leaves the event out of its batch and sets set_aside_at in the batch's transaction,
-- so the event is skipped exactly once and the rest of the batch applies. Nothing is written
-- here but by that command: the worker never sets an event aside by itself.
CREATE TABLE skiff.dead_letter (
    sub_id        integer NOT NULL REFERENCES skiff.subscription ON DELETE CASCADE,
    event_id      bigint NOT NULL,             -- provider event id
    batch_id      bigint NOT NULL,             -- provider batch that holds it (open when it was set aside)
    txid          bigint,                      -- provider transaction id
    source_schema text NOT NULL,               -- the captured table on the provider
    source_name   text NOT NULL,
    op            text NOT NULL,               -- I, U, D or T
    layout_id     integer,                     -- provider layout the event was written with
    key_columns   text[],                      -- the row's key, when the row could be decoded
    key_values    text[],
    data          text,                        -- the row as the provider queued it (a record literal)
    old_key       text,                        -- an update's old key (record literal), when it changed
    error         text,                        -- why the worker could not apply it
    reason        text NOT NULL,               -- the operator's reason
    requested_by  text NOT NULL DEFAULT current_user,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    set_aside_at  timestamptz,                 -- when the batch that left it out committed
    PRIMARY KEY (sub_id, event_id)
);

-- The event the last failed attempt names (skiff event show without --event).
ALTER TABLE skiff.subscription ADD COLUMN last_error_event bigint;

-- +goose Down
ALTER TABLE skiff.subscription DROP COLUMN last_error_event;
DROP TABLE skiff.dead_letter;
