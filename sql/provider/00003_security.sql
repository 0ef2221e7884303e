-- +goose Up
-- Security (schema version 3): no role that writes or owns a captured table can run code with
-- the rights of skiff's owner, and nothing of skiff is reachable by PUBLIC.
--
-- * Every function of schema skiff runs with search_path pinned to pg_catalog, pg_temp. An
--   unqualified operator or function in a body (`(id >> 40) % 3`, `IS DISTINCT FROM`, `=`) then
--   resolves only in pg_catalog, whatever the caller's search_path holds: a role that can
--   create an operator in a schema on a writer's path (public before PostgreSQL 15) can no
--   longer have it chosen. pg_temp is listed last so that temporary objects never come first
--   (functions and operators are never looked up there unless qualified). The capture
--   functions are SECURITY DEFINER: for them this is what stops a writer from running its own
--   code as skiff's owner. The other functions run as their caller (the operator), whose
--   sessions it protects the same way. SET clauses on functions exist from 8.3.
-- * EXECUTE on every function is revoked from PUBLIC (PostgreSQL grants it by default). The
--   schema never granted USAGE to PUBLIC; this makes the functions private even where a
--   careless GRANT USAGE ON SCHEMA skiff TO PUBLIC is made later.
-- * The capture functions generated before this version are pinned and revoked here; `skiff
--   init provider` then regenerates their bodies (they read a row through record_out instead of
--   a ::text cast, which a table's owner could redirect with CREATE CAST).
-- Which generator made a capture function: 1 before this version; skiff init provider
-- regenerates those below the version it writes (queue.UpgradeCaptures).
ALTER TABLE skiff.captured_table ADD COLUMN capture_version integer NOT NULL DEFAULT 1;

-- Every later migration that creates a function must pin and revoke it too
-- (internal/migrate.TestNoPublicPrivileges checks the installed schema).

ALTER FUNCTION skiff.event_count(bigint, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.event_seq_name(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.event_table_name(integer, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.event_seq_value(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.queue_id(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.create_queue(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.drop_queue(text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.set_queue_config(text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.register_consumer(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.unregister_consumer(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.insert_tick(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.ticker(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.force_tick(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.next_batch(text, text, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.get_batch_info(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.batch_event_sql(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.finish_batch(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.event_retry(bigint, bigint, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.maint_retry_events() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.maint_rotate_tables(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.maint_rotate_tables_step2(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.maint_cleanup_ticks(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.maint_tables_to_vacuum() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.get_queue_info() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.get_consumer_info() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION skiff.get_sequences(text) SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION skiff.event_count(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.event_seq_name(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.event_table_name(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.event_seq_value(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.queue_id(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.create_queue(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.drop_queue(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.set_queue_config(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.register_consumer(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.unregister_consumer(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.insert_tick(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.ticker(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.force_tick(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.next_batch(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.get_batch_info(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.batch_event_sql(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.finish_batch(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.event_retry(bigint, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.maint_retry_events() FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.maint_rotate_tables(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.maint_rotate_tables_step2(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.maint_cleanup_ticks(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.maint_tables_to_vacuum() FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.get_queue_info() FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.get_consumer_info() FROM PUBLIC;
REVOKE ALL ON FUNCTION skiff.get_sequences(text) FROM PUBLIC;

-- +goose StatementBegin
-- The capture functions already generated: pinned and revoked in place (names come from
-- skiff.captured_table, quoted). A temporary function, dropped below: 8.4 has no DO.
CREATE FUNCTION skiff.secure_capture_functions_v3() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f record;
    n integer := 0;
BEGIN
    FOR f IN SELECT DISTINCT c.func_name FROM skiff.captured_table c
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                             WHERE p.proname = c.func_name
                               AND p.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'skiff'))
    LOOP
        EXECUTE 'ALTER FUNCTION skiff.' || pg_catalog.quote_ident(f.func_name) || '() SET search_path = pg_catalog, pg_temp';
        EXECUTE 'REVOKE ALL ON FUNCTION skiff.' || pg_catalog.quote_ident(f.func_name) || '() FROM PUBLIC';
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;
-- +goose StatementEnd
SELECT skiff.secure_capture_functions_v3();
DROP FUNCTION skiff.secure_capture_functions_v3();

-- +goose Down
ALTER TABLE skiff.captured_table DROP COLUMN capture_version;
-- Privileges stay revoked (granting EXECUTE to PUBLIC again would only reopen a hole); the
-- pins are removed so that version 2's functions are as they were.
ALTER FUNCTION skiff.event_count(bigint, bigint) RESET search_path;
ALTER FUNCTION skiff.event_seq_name(integer) RESET search_path;
ALTER FUNCTION skiff.event_table_name(integer, integer) RESET search_path;
ALTER FUNCTION skiff.event_seq_value(integer) RESET search_path;
ALTER FUNCTION skiff.queue_id(text) RESET search_path;
ALTER FUNCTION skiff.create_queue(text) RESET search_path;
ALTER FUNCTION skiff.drop_queue(text, boolean) RESET search_path;
ALTER FUNCTION skiff.set_queue_config(text, text, text) RESET search_path;
ALTER FUNCTION skiff.register_consumer(text, text) RESET search_path;
ALTER FUNCTION skiff.unregister_consumer(text, text) RESET search_path;
ALTER FUNCTION skiff.insert_tick(integer) RESET search_path;
ALTER FUNCTION skiff.ticker(text) RESET search_path;
ALTER FUNCTION skiff.force_tick(text) RESET search_path;
ALTER FUNCTION skiff.next_batch(text, text, bigint) RESET search_path;
ALTER FUNCTION skiff.get_batch_info(bigint) RESET search_path;
ALTER FUNCTION skiff.batch_event_sql(bigint) RESET search_path;
ALTER FUNCTION skiff.finish_batch(bigint) RESET search_path;
ALTER FUNCTION skiff.event_retry(bigint, bigint, integer) RESET search_path;
ALTER FUNCTION skiff.maint_retry_events() RESET search_path;
ALTER FUNCTION skiff.maint_rotate_tables(text) RESET search_path;
ALTER FUNCTION skiff.maint_rotate_tables_step2(text) RESET search_path;
ALTER FUNCTION skiff.maint_cleanup_ticks(text) RESET search_path;
ALTER FUNCTION skiff.maint_tables_to_vacuum() RESET search_path;
ALTER FUNCTION skiff.get_queue_info() RESET search_path;
ALTER FUNCTION skiff.get_consumer_info() RESET search_path;
ALTER FUNCTION skiff.get_sequences(text) RESET search_path;
