-- +goose Up
-- The ticker's probe for late events reads the event tables by their index, whatever their
-- statistics (issue 16, "Apply").
--
-- skiff.tick_has_late_events runs at every ticker poll after a tick that took events, as long
-- as other transactions commit (a worker applying the backlog commits on the provider at
-- every batch) and no tick is due: for a whole backlog's apply. Its EXISTS over
-- `ev_txid = ANY (...) OR (ev_txid >= lo AND ev_txid < hi AND ...)` finds nothing then (the
-- backlog's transactions are all below lo). Event tables are emptied by TRUNCATE and usually
-- have no statistics; on such a table of some 200,000 rows or more the planner took a
-- sequential scan for the EXISTS (a row expected early), which read every event at every
-- poll: with 1 M events queued, some 300 ms a poll and 8 s of a provider core during a 20 s
-- apply on a 2-core machine. A table autovacuum happened to analyze during the backlog got
-- index scans: the benchmark's apply rate came out in two modes. With enable_seqscan off for
-- the function the probe is a bitmap of index ranges on (ev_txid, ev_id): a few pages, with
-- or without statistics (queue.TestLateEventProbeReadsNoEventTable). 8.4-safe.
ALTER FUNCTION skiff.tick_has_late_events(integer, txid_snapshot) SET enable_seqscan = off;

-- +goose Down
ALTER FUNCTION skiff.tick_has_late_events(integer, txid_snapshot) RESET enable_seqscan;
