-- +goose Up
-- Merge (`skiff subscribe --merge`): several providers replicate into the same target tables.
-- A merged subscription's tables are shared: its copy truncates nothing and writes the
-- provider's rows by key, and a change that finds the target's row in another state than the
-- provider's (an INSERT whose key exists, an UPDATE or DELETE whose key is missing) is a
-- conflict, settled by on_conflict. NULL on_conflict: not merged (the destination is the
-- subscription's alone). Conflicts are counted here, with the last one, for skiff status.
ALTER TABLE skiff.subscription ADD COLUMN on_conflict text;
ALTER TABLE skiff.subscription ADD CONSTRAINT subscription_on_conflict_check
    CHECK (on_conflict IN ('error', 'apply-remote', 'keep-local'));
ALTER TABLE skiff.subscription ADD COLUMN conflicts bigint NOT NULL DEFAULT 0;
ALTER TABLE skiff.subscription ADD COLUMN last_conflict text;
ALTER TABLE skiff.subscription ADD COLUMN last_conflict_at timestamptz;

-- +goose Down
ALTER TABLE skiff.subscription DROP COLUMN last_conflict_at;
ALTER TABLE skiff.subscription DROP COLUMN last_conflict;
ALTER TABLE skiff.subscription DROP COLUMN conflicts;
ALTER TABLE skiff.subscription DROP CONSTRAINT subscription_on_conflict_check;
ALTER TABLE skiff.subscription DROP COLUMN on_conflict;
