-- +goose Up
-- The error of a table's last failed copy, written by the copier from a connection of its
-- own (the copy's transaction rolled back). The table stays in state copying and the worker's
-- table manager copies it again later; skiff status reports the error as a problem until a
-- copy succeeds (MarkCopied clears it) or the table is resynced.
ALTER TABLE skiff.table_state
    ADD COLUMN copy_error text,
    ADD COLUMN copy_error_at timestamptz;

-- +goose Down
ALTER TABLE skiff.table_state
    DROP COLUMN copy_error,
    DROP COLUMN copy_error_at;
