-- +goose Up
-- Logical queues (issue 13). A queue's source is chosen when it is first created and never
-- changes: 'trigger' (capture triggers write events into the queue's event tables, the ticker
-- cuts batches) or 'logical' (no trigger: each subscription streams the queue's tables from a
-- logical replication slot of its own, 9.4+). A logical queue records its tables in
-- skiff.captured_table as a trigger queue does (their key and layout), with empty trigger and
-- function names; the ticker leaves it alone.
--
-- queue_plugin is the output plugin the queue's slots decode with: 'pgoutput' (10+, through
-- the publication queue_publication, which holds the queue's tables) or 'test_decoding'
-- (9.4+; no publication). sub_slot is the replication slot of a subscription to a logical
-- queue, created by skiff subscribe and dropped by skiff unsubscribe.
ALTER TABLE skiff.queue ADD COLUMN queue_source text NOT NULL DEFAULT 'trigger';
ALTER TABLE skiff.queue ADD CONSTRAINT queue_source_known CHECK (queue_source IN ('trigger', 'logical'));
ALTER TABLE skiff.queue ADD COLUMN queue_plugin text;
ALTER TABLE skiff.queue ADD COLUMN queue_publication text;
ALTER TABLE skiff.queue ADD CONSTRAINT queue_logical_plugin
    CHECK ((queue_source = 'logical') = (queue_plugin IS NOT NULL)
       AND queue_plugin IN ('pgoutput', 'test_decoding')
       AND (queue_publication IS NULL OR queue_plugin = 'pgoutput'));
ALTER TABLE skiff.consumer ADD COLUMN sub_slot text UNIQUE;

-- +goose Down
ALTER TABLE skiff.consumer DROP COLUMN sub_slot;
ALTER TABLE skiff.queue DROP CONSTRAINT queue_logical_plugin;
ALTER TABLE skiff.queue DROP COLUMN queue_publication;
ALTER TABLE skiff.queue DROP COLUMN queue_plugin;
ALTER TABLE skiff.queue DROP CONSTRAINT queue_source_known;
ALTER TABLE skiff.queue DROP COLUMN queue_source;
