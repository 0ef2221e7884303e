-- +goose Up
-- Placeholder: the queue schema lands in the next migration.
CREATE TABLE skiff.provider_info (
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE skiff.provider_info;
