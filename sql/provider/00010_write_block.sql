-- +goose Up
-- skiff switchover (issue 14): once the tables of a queue have moved to a new server, writes
-- to them on the old one are refused by a BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
-- statement trigger calling this function (trigger skiff_block_q<queue_id>, made by
-- queue.BlockWrites). Its argument is the message: where the database went (host and
-- database, never a password). SQLSTATE 25006 (read_only_sql_transaction), the code a
-- client sees writing to a standby, so that an application treats it as "not the primary".
-- The trigger is enabled ORIGIN (the default): a replication worker's session, which sets
-- session_replication_role = replica, does not fire it, so the reverse replication of
-- switchover --reverse writes to the blocked tables. Not SECURITY DEFINER: it reads and
-- writes nothing. 8.4-safe (RAISE ... USING is 8.4).
-- +goose StatementBegin
CREATE FUNCTION skiff.write_blocked() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'table %.% is blocked for writes by skiff switchover: %', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = '25006';
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION skiff.write_blocked() FROM PUBLIC;

-- +goose Down
DROP FUNCTION skiff.write_blocked();
