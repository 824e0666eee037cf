-- The fleet view (issue #7): one row per worker, replaced by each heartbeat. Times are
-- milliseconds since the Unix epoch, taken from the scheduler's clock when the heartbeat
-- arrived (worker clocks may be skewed). The SQLite twin is
-- ../sqlite/20261127000004_workers.sql; keep them in step.

CREATE TABLE workers (
    -- The worker's id (`EventMessage.worker_id`).
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    arch TEXT NOT NULL,
    version TEXT NOT NULL,
    -- Builds it runs at once.
    concurrency BIGINT NOT NULL,
    -- Ids of the builds it runs now, space-separated (build ids are hex).
    builds TEXT NOT NULL,
    -- 1 once it stopped taking jobs and only finishes what it runs.
    is_draining BIGINT NOT NULL DEFAULT 0,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);
CREATE INDEX workers_last_seen ON workers (last_seen_ms);
