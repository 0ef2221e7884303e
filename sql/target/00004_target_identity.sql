-- +goose Up
-- The target's identity: a random id made once, when the schema is installed. A subscription's
-- default consumer name is derived from it and the database's name (skiff@<database>/<id>),
-- never from how a connection string spells the target's host (127.0.0.1, localhost, a
-- keyword/value string name the same database). Written with what PostgreSQL 8.4 has
-- (pg_control_system(), the cluster's system identifier, is 9.6+; a per-database id also
-- tells two databases of one cluster apart).
CREATE TABLE skiff.target (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),  -- a single row
    target_id  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO skiff.target (target_id)
SELECT substr(md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text || current_database()), 1, 16);

-- +goose Down
DROP TABLE skiff.target;
