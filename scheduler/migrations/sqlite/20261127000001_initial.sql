-- Kiln scheduler state (SQLite). Times are milliseconds since the Unix epoch; flags are 0/1.
-- The PostgreSQL twin of this file is ../postgres/20261127000001_initial.sql; keep them in step.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin BIGINT NOT NULL DEFAULT 0,
    -- NULL: the deployment's default.
    build_timeout_seconds BIGINT,
    max_concurrent_builds BIGINT,
    created_ms BIGINT NOT NULL
);

CREATE TABLE tokens (
    -- SHA-256 (hex) of the token; the token itself is shown once and never stored.
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    -- queued | running | succeeded | failed | cancelled | timed_out | expired
    state TEXT NOT NULL,
    -- The worker's latest progress state (fetching, running:post, packing, ...).
    phase TEXT,
    arch TEXT NOT NULL,
    -- entity/collection/container:tag, without scheme.
    library_ref TEXT NOT NULL,
    definition TEXT NOT NULL,
    context_digest TEXT,
    -- SHA-256 of the capability tokens handed to the worker in the job.
    context_token_hash TEXT,
    result_token_hash TEXT,
    timeout_seconds BIGINT NOT NULL,
    submit_ms BIGINT NOT NULL,
    start_ms BIGINT,
    complete_ms BIGINT,
    worker_id TEXT,
    image_size BIGINT,
    image_checksum TEXT,
    failure_reason TEXT,
    -- The last applied event (attempt, seq); older ones are echoes of a redelivery.
    event_attempt BIGINT NOT NULL DEFAULT 0,
    event_seq BIGINT NOT NULL DEFAULT -1,
    -- The persisted log: total bytes, chunk count, bytes in the last chunk, clipped or not.
    log_bytes BIGINT NOT NULL DEFAULT 0,
    log_chunks BIGINT NOT NULL DEFAULT 0,
    log_tail_bytes BIGINT NOT NULL DEFAULT 0,
    log_truncated BIGINT NOT NULL DEFAULT 0,
    -- Where the result SIF was stored by the worker's upload (bytes, sha256.<hex>).
    result_size BIGINT,
    result_checksum TEXT
);
CREATE INDEX builds_user_state ON builds (user_id, state);
CREATE INDEX builds_state ON builds (state);
CREATE INDEX builds_library_ref ON builds (library_ref);

CREATE TABLE build_log_chunks (
    build_id TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    chunk_no BIGINT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (build_id, chunk_no)
);

CREATE TABLE build_contexts (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    -- pending (announced, upload URL handed out) | ready (verified archive on disk)
    state TEXT NOT NULL,
    upload_token_hash TEXT UNIQUE,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, digest)
);
