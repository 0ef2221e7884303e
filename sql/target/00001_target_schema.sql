-- +goose Up
CREATE TABLE skiff.target_info (
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE skiff.target_info;
