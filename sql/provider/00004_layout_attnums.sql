-- +goose Up
-- A layout records which attributes of its table its columns are, so that the consumer can
-- tell the columns of a row written between a DDL and the next `skiff table add --refresh`.
--
-- Why. A capture trigger writes the row as record_out(NEW), whose fields are the table's live
-- columns *when the row is written*, and the layout id baked into the trigger when it was
-- made. After an ALTER TABLE that adds or drops columns, rows carry the old layout id with
-- another set of fields until the refresh. Attribute numbers identify columns for good (a
-- column keeps its number through RENAME and ALTER TYPE; a dropped column's number is never
-- reused; an added column gets a number above every earlier one), so the consumer can compare
-- a layout's numbers with the next layout's, or with the catalog's (dropped columns included),
-- and find which columns were added or dropped since: see queue/plan.go and docs/internals.md.
--
-- column_attnums: pg_attribute.attnum of each of columns, in order.
-- natts: pg_class.relnatts when the layout was made (numbers above it were added later).
-- created_xmin: txid_snapshot_xmin of the making transaction's snapshot, a lower bound of the
--   txid of any transaction that changed the table's columns afterwards (it was running then
--   or started later): with it a 32-bit pg_attribute.xmin is widened to a txid safely.
-- All three are NULL for layouts made before this version.
ALTER TABLE skiff.table_layout
    ADD COLUMN column_attnums smallint[],
    ADD COLUMN natts smallint,
    ADD COLUMN created_xmin bigint;

-- +goose Down
ALTER TABLE skiff.table_layout
    DROP COLUMN column_attnums,
    DROP COLUMN natts,
    DROP COLUMN created_xmin;
