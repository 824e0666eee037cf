-- The library (issue #8): a per-user quota, and multipart uploads whose parts go straight
-- into one multipart upload of the object store (S3). The SQLite twin is
-- ../sqlite/20261127000006_library_quota_parts.sql; keep them in step.

-- Set with `kiln-scheduler admin user quota`: NULL means the deployment's `--library-quota`,
-- 0 unlimited, more a limit in bytes on the images stored in the entities the user owns.
ALTER TABLE users ADD COLUMN library_quota_bytes BIGINT;

-- The object store's own multipart upload id when parts go straight into the image's object;
-- NULL when each part is an object of its own, joined at completion (local directory).
ALTER TABLE library_uploads ADD COLUMN store_upload_id TEXT;
-- Parts 1..hashed_parts went, in order, through the SHA-256 whose serialized state (hex) is
-- hash_state: with parts that arrive in order, completion needs no second read of the file.
ALTER TABLE library_uploads ADD COLUMN hashed_parts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE library_uploads ADD COLUMN hash_state TEXT;

-- The object store's ids of the parts one client part became, space-separated, in order.
ALTER TABLE library_upload_parts ADD COLUMN store_parts TEXT NOT NULL DEFAULT '';
