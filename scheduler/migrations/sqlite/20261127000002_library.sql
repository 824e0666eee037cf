-- The library (library-api.md §4): entities, collections, containers, images and their tags,
-- and the uploads in flight. Ids are 24 lowercase hex digits (the client wants strings).
-- Times are Unix milliseconds, flags 0/1. The PostgreSQL twin is
-- ../postgres/20261127000002_library.sql; keep them in step.

CREATE TABLE library_entities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- The user who owns everything below it.
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    default_private BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);

CREATE TABLE library_collections (
    id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL REFERENCES library_entities (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    private BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    UNIQUE (entity_id, name)
);

CREATE TABLE library_containers (
    id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES library_collections (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    private BIGINT NOT NULL DEFAULT 0,
    download_count BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    UNIQUE (collection_id, name)
);

CREATE TABLE library_images (
    id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL REFERENCES library_containers (id) ON DELETE CASCADE,
    -- sha256.<hex> of the whole file.
    hash TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- Go architecture name, set by the first arch tag ('' until then).
    arch TEXT NOT NULL DEFAULT '',
    size BIGINT NOT NULL DEFAULT 0,
    uploaded BIGINT NOT NULL DEFAULT 0,
    -- Key of the file in the object store.
    object_key TEXT NOT NULL,
    -- The remote build whose result this is (one image per build, however often it uploads).
    build_id TEXT UNIQUE,
    -- Ephemeral results of remote builds go after this time.
    expires_ms BIGINT,
    created_ms BIGINT NOT NULL,
    UNIQUE (container_id, hash)
);
CREATE INDEX library_images_expires ON library_images (expires_ms);

CREATE TABLE library_tags (
    container_id TEXT NOT NULL REFERENCES library_containers (id) ON DELETE CASCADE,
    -- '' for the arch-less tags of v1 clients (imageTags).
    arch TEXT NOT NULL,
    tag TEXT NOT NULL,
    image_id TEXT NOT NULL REFERENCES library_images (id) ON DELETE CASCADE,
    PRIMARY KEY (container_id, arch, tag)
);

CREATE TABLE library_uploads (
    -- 24 hex digits: the multipart uploadID (not a secret).
    id TEXT PRIMARY KEY,
    -- SHA-256 of the capability in the upload URL (single part; multipart parts have their own).
    token_hash TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL REFERENCES library_images (id) ON DELETE CASCADE,
    -- single | multipart
    kind TEXT NOT NULL,
    size BIGINT NOT NULL,
    part_size BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE TABLE library_upload_parts (
    upload_id TEXT NOT NULL REFERENCES library_uploads (id) ON DELETE CASCADE,
    part_number BIGINT NOT NULL,
    size BIGINT NOT NULL,
    -- Quoted hex SHA-256 of the part, the ETag its PUT answered.
    etag TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

CREATE TABLE library_part_urls (
    -- SHA-256 of the capability in one part's upload URL (the presignedURL).
    token_hash TEXT PRIMARY KEY,
    upload_id TEXT NOT NULL REFERENCES library_uploads (id) ON DELETE CASCADE,
    part_number BIGINT NOT NULL,
    size BIGINT NOT NULL
);

CREATE TABLE library_downloads (
    -- SHA-256 of the capability in a ranged download URL (the 303 target).
    token_hash TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES library_images (id) ON DELETE CASCADE,
    expires_ms BIGINT NOT NULL
);
