-- +goose Up
-- Progress of a table's initial copy, written by the copier every few seconds from its own
-- connection (the copy's transaction is invisible until it commits) and once more, final, in
-- the copy's transaction. skiff status shows it.
ALTER TABLE skiff.table_state
    ADD COLUMN copy_rows bigint,
    ADD COLUMN copy_bytes bigint,
    ADD COLUMN copy_progress_at timestamptz;

-- +goose Down
ALTER TABLE skiff.table_state
    DROP COLUMN copy_rows,
    DROP COLUMN copy_bytes,
    DROP COLUMN copy_progress_at;
