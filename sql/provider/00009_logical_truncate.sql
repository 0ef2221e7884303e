-- +goose Up
-- TRUNCATE under logical decoding before PostgreSQL 11 (issue 13). Servers before 11 decode
-- no TRUNCATE at all: a logical queue's subscription would keep the rows a TRUNCATE removed
-- on the provider. On those servers each table of a logical queue gets an AFTER TRUNCATE
-- statement trigger that writes a marker row here (and deletes it at once: the insert is
-- decoded all the same, in its transaction's place), which the logical source turns into a
-- TRUNCATE event of the table. skiff.logical_truncate is in the publication of every pgoutput
-- queue before 11; test_decoding decodes every table. From 11 on no marker is made: the
-- server decodes TRUNCATE itself.
CREATE TABLE skiff.logical_truncate (
    trunc_id     bigserial PRIMARY KEY,
    queue_id     integer NOT NULL,
    table_schema text    NOT NULL,
    table_name   text    NOT NULL
);

-- +goose StatementBegin
-- The trigger's argument is the queue's id. SECURITY DEFINER: the role that truncates a
-- captured table needs no right on schema skiff; search_path pinned as for every function
-- of the schema (00003_security.sql).
CREATE FUNCTION skiff.logical_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    INSERT INTO skiff.logical_truncate (queue_id, table_schema, table_name)
    VALUES (TG_ARGV[0]::integer, TG_TABLE_SCHEMA, TG_TABLE_NAME)
    RETURNING trunc_id INTO id;
    DELETE FROM skiff.logical_truncate WHERE trunc_id = id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.logical_truncate() FROM PUBLIC;

-- +goose Down
DROP FUNCTION skiff.logical_truncate();
DROP TABLE skiff.logical_truncate;
