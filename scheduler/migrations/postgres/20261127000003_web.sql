-- The web builder (issue #9): passwords for local accounts, named tokens with expiry, last use and
-- revocation, and browser sessions. Times are Unix milliseconds. The SQLite twin is
-- ../sqlite/20261127000003_web.sql; keep them in step.

-- Argon2id PHC string; NULL: this user signs in with a token only.
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- What the token page shows and revokes by: the first 24 hex digits of token_hash (the token's
-- digest is not secret, and 96 bits never collide among one deployment's tokens).
ALTER TABLE tokens ADD COLUMN public_id TEXT;
ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT '';
-- NULL: never expires.
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_ms BIGINT;
-- NULL: not revoked. A revoked or expired token authenticates nothing.
ALTER TABLE tokens ADD COLUMN revoked_ms BIGINT;
UPDATE tokens SET public_id = substr(token_hash, 1, 24);
CREATE UNIQUE INDEX tokens_public_id ON tokens (public_id);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE web_sessions (
    -- SHA-256 (hex) of the session cookie's value; the cookie itself is never stored.
    session_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The token the session signed in with, if any: revoking it ends the session too.
    token_hash TEXT,
    -- Must come back in every form the session posts (cross-site request forgery).
    csrf_token TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_ms);
