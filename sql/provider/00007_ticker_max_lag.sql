-- +goose Up
-- A queue's ticker_max_lag defaults to 100 ms instead of 500 ms: pending events get their tick
-- once the previous tick is 100 ms old, which with the ticker's 100 ms poll (re-phased on each
-- tick) keeps end-to-end lag p99 under 250 ms (docs/internals.md, "Lag"). An idle queue costs
-- no more: a tick is only cut early when events are pending, and the ticker polls at the same
-- rate either way.
--
-- Queues that still have the old default, 500 ms, are moved to the new one: the old value was
-- never asked for by those who kept it. A queue set to anything else keeps its setting (one set
-- to exactly 500 ms on purpose cannot be told from the default: set it again after upgrading).
-- Going down moves queues at 100 ms back to 500 ms by the same rule.
ALTER TABLE skiff.queue ALTER COLUMN queue_ticker_max_lag SET DEFAULT '100 milliseconds';
UPDATE skiff.queue SET queue_ticker_max_lag = '100 milliseconds'
    WHERE queue_ticker_max_lag = '500 milliseconds';

-- +goose Down
ALTER TABLE skiff.queue ALTER COLUMN queue_ticker_max_lag SET DEFAULT '500 milliseconds';
UPDATE skiff.queue SET queue_ticker_max_lag = '500 milliseconds'
    WHERE queue_ticker_max_lag = '100 milliseconds';
