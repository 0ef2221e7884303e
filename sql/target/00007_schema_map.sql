-- +goose Up
-- A subscription's schema map (`skiff subscribe --schema-map legacy=app`): every table of
-- provider schema source_schema that the subscription takes without a --table DEST of its
-- own goes to target schema dest_schema. Each table's destination is recorded in its
-- table_state row as before (the worker and the copy read only that); the map is kept here so
-- that a later `skiff subscribe` of the same subscription (tables added to the queue since)
-- routes the new tables the same way without the flags being given again.
CREATE TABLE skiff.schema_map (
    sub_id        integer NOT NULL REFERENCES skiff.subscription ON DELETE CASCADE,
    source_schema text NOT NULL,
    dest_schema   text NOT NULL,
    PRIMARY KEY (sub_id, source_schema)
);

-- +goose Down
DROP TABLE skiff.schema_map;
