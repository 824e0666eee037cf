-- Worker counters (issue #7): the latest `WorkerStats` of each worker's heartbeat as JSON,
-- exported per worker on /metrics. The sqlite twin is
-- ../sqlite/20261127000005_worker_stats.sql; keep them in step.

ALTER TABLE workers ADD COLUMN stats TEXT NOT NULL DEFAULT '{}';
