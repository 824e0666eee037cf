//! The library's rows: entities, collections, containers, images, tags, and the uploads and
//! ranged downloads in flight (library-api.md §4). The files themselves live in the object
//! store (`crate::objects`) under each image's `object_key`.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, User};

/// An entity: a user's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    /// 24 hex digits.
    pub id: String,
    /// The entity name (a user name).
    pub name: String,
    /// Row id of the owning user.
    pub owner_id: i64,
    /// Free text.
    pub description: String,
    /// New collections are private.
    pub default_private: bool,
    /// Unix ms.
    pub created_ms: i64,
}

/// A collection of containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionRow {
    /// 24 hex digits.
    pub id: String,
    /// Its entity.
    pub entity_id: String,
    /// Name within the entity.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Readable only by the owner.
    pub private: bool,
    /// Unix ms.
    pub created_ms: i64,
}

/// A container: one image name and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    /// 24 hex digits.
    pub id: String,
    /// Its collection.
    pub collection_id: String,
    /// Name within the collection.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Readable only by the owner.
    pub private: bool,
    /// Downloads so far.
    pub download_count: i64,
    /// Unix ms.
    pub created_ms: i64,
}

/// An image: one SIF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// 24 hex digits.
    pub id: String,
    /// Its container.
    pub container_id: String,
    /// `sha256.<hex>` of the file.
    pub hash: String,
    /// Free text.
    pub description: String,
    /// Go architecture name, `""` until a tag gave one.
    pub arch: String,
    /// Bytes, once uploaded.
    pub size: i64,
    /// The file is in the object store.
    pub uploaded: bool,
    /// Where the file is in the object store.
    pub object_key: String,
    /// The remote build this is the result of.
    pub build_id: Option<String>,
    /// Ephemeral images are deleted after this time, Unix ms.
    pub expires_ms: Option<i64>,
    /// Unix ms.
    pub created_ms: i64,
}

/// One tag: `(arch, tag) → image` within a container; arch `""` is a v1 (arch-less) tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    /// Go architecture name or `""`.
    pub arch: String,
    /// The tag.
    pub tag: String,
    /// The image it points at.
    pub image_id: String,
}

/// An upload in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    /// 24 hex digits; the multipart `uploadID`.
    pub id: String,
    /// The image it fills.
    pub image_id: String,
    /// One PUT or several parts.
    pub is_multipart: bool,
    /// Announced bytes.
    pub size: i64,
    /// Bytes per part (multipart).
    pub part_size: i64,
    /// The capability dies at this time, Unix ms.
    pub expires_ms: i64,
    /// The object store's multipart upload the parts go straight into (S3); `None` when each
    /// part is an object of its own, joined at completion.
    pub store_upload_id: Option<String>,
    /// Parts `1..=hashed_parts` went, in order, through the SHA-256 whose serialized state
    /// is `hash_state`.
    pub hashed_parts: i64,
    /// Hex of the serialized SHA-256 state after `hashed_parts` parts.
    pub hash_state: Option<String>,
}

/// A received part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    /// 1-based.
    pub part_number: i64,
    /// Bytes.
    pub size: i64,
    /// Quoted hex SHA-256.
    pub etag: String,
    /// The object store's ids of the parts this part became, in order (direct multipart).
    pub store_parts: Vec<String>,
}

const ENTITY_COLUMNS: &str =
    "SELECT id, name, owner_id, description, default_private, created_ms FROM library_entities ";
const COLLECTION_COLUMNS: &str =
    "SELECT id, entity_id, name, description, private, created_ms FROM library_collections ";
const CONTAINER_COLUMNS: &str = "SELECT id, collection_id, name, description, private, \
    download_count, created_ms FROM library_containers ";
const IMAGE_COLUMNS: &str = "SELECT id, container_id, hash, description, arch, size, uploaded, \
    object_key, build_id, expires_ms, created_ms FROM library_images ";
const UPLOAD_COLUMNS: &str = "SELECT id, image_id, kind, size, part_size, expires_ms, \
    store_upload_id, hashed_parts, hash_state FROM library_uploads ";

/// A `LIKE` pattern (with `ESCAPE '\\'`) matching text that contains `needle`.
fn like_pattern(needle: &str) -> String {
    format!(
        "%{}%",
        needle
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

fn flag(row: &AnyRow, name: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(name)? != 0)
}

fn entity_from_row(row: &AnyRow) -> Result<EntityRow> {
    Ok(EntityRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        description: row.try_get("description")?,
        default_private: flag(row, "default_private")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn collection_from_row(row: &AnyRow) -> Result<CollectionRow> {
    Ok(CollectionRow {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        private: flag(row, "private")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn container_from_row(row: &AnyRow) -> Result<ContainerRow> {
    Ok(ContainerRow {
        id: row.try_get("id")?,
        collection_id: row.try_get("collection_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        private: flag(row, "private")?,
        download_count: row.try_get("download_count")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn image_from_row(row: &AnyRow) -> Result<ImageRow> {
    Ok(ImageRow {
        id: row.try_get("id")?,
        container_id: row.try_get("container_id")?,
        hash: row.try_get("hash")?,
        description: row.try_get("description")?,
        arch: row.try_get("arch")?,
        size: row.try_get("size")?,
        uploaded: flag(row, "uploaded")?,
        object_key: row.try_get("object_key")?,
        build_id: row.try_get("build_id")?,
        expires_ms: row.try_get("expires_ms")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn upload_from_row(row: &AnyRow) -> Result<UploadRow> {
    Ok(UploadRow {
        id: row.try_get("id")?,
        image_id: row.try_get("image_id")?,
        is_multipart: row.try_get::<String, _>("kind")? == "multipart",
        size: row.try_get("size")?,
        part_size: row.try_get("part_size")?,
        expires_ms: row.try_get("expires_ms")?,
        store_upload_id: row.try_get("store_upload_id")?,
        hashed_parts: row.try_get("hashed_parts")?,
        hash_state: row.try_get("hash_state")?,
    })
}

impl Store {
    async fn fetch_one_of<T>(
        &self,
        sql: String,
        binds: &[&str],
        convert: fn(&AnyRow) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in binds {
            query = query.bind(*value);
        }
        let row = query.fetch_optional(self.pool()).await?;
        row.as_ref().map(convert).transpose()
    }

    async fn fetch_all_of<T>(
        &self,
        sql: String,
        binds: &[&str],
        convert: fn(&AnyRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in binds {
            query = query.bind(*value);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(convert).collect()
    }

    /// The entity called `name`.
    pub async fn entity_by_name(&self, name: &str) -> Result<Option<EntityRow>> {
        let sql = format!("{ENTITY_COLUMNS} WHERE name = $1");
        self.fetch_one_of(sql, &[name], entity_from_row).await
    }

    /// The entity with this id.
    pub async fn entity_by_id(&self, id: &str) -> Result<Option<EntityRow>> {
        let sql = format!("{ENTITY_COLUMNS} WHERE id = $1");
        self.fetch_one_of(sql, &[id], entity_from_row).await
    }

    /// Records an entity; false when the name is taken (a racing create).
    pub async fn insert_entity(&self, entity: &EntityRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO library_entities (id, name, owner_id, description, default_private, \
             created_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&entity.id)
        .bind(&entity.name)
        .bind(entity.owner_id)
        .bind(&entity.description)
        .bind(i64::from(entity.default_private))
        .bind(entity.created_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The collection `name` of entity `entity_id`.
    pub async fn collection_by_name(
        &self,
        entity_id: &str,
        name: &str,
    ) -> Result<Option<CollectionRow>> {
        let sql = format!("{COLLECTION_COLUMNS} WHERE entity_id = $1 AND name = $2");
        self.fetch_one_of(sql, &[entity_id, name], collection_from_row)
            .await
    }

    /// The collection with this id.
    pub async fn collection_by_id(&self, id: &str) -> Result<Option<CollectionRow>> {
        let sql = format!("{COLLECTION_COLUMNS} WHERE id = $1");
        self.fetch_one_of(sql, &[id], collection_from_row).await
    }

    /// Ids of the collections of an entity.
    pub async fn collections_of(&self, entity_id: &str) -> Result<Vec<CollectionRow>> {
        let sql = format!("{COLLECTION_COLUMNS} WHERE entity_id = $1 ORDER BY name");
        self.fetch_all_of(sql, &[entity_id], collection_from_row)
            .await
    }

    /// Records a collection; false when the name is taken in its entity.
    pub async fn insert_collection(&self, collection: &CollectionRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO library_collections (id, entity_id, name, description, private, \
             created_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (entity_id, name) DO NOTHING",
        )
        .bind(&collection.id)
        .bind(&collection.entity_id)
        .bind(&collection.name)
        .bind(&collection.description)
        .bind(i64::from(collection.private))
        .bind(collection.created_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The container `name` of collection `collection_id`.
    pub async fn container_by_name(
        &self,
        collection_id: &str,
        name: &str,
    ) -> Result<Option<ContainerRow>> {
        let sql = format!("{CONTAINER_COLUMNS} WHERE collection_id = $1 AND name = $2");
        self.fetch_one_of(sql, &[collection_id, name], container_from_row)
            .await
    }

    /// The container with this id.
    pub async fn container_by_id(&self, id: &str) -> Result<Option<ContainerRow>> {
        let sql = format!("{CONTAINER_COLUMNS} WHERE id = $1");
        self.fetch_one_of(sql, &[id], container_from_row).await
    }

    /// The containers of a collection.
    pub async fn containers_of(&self, collection_id: &str) -> Result<Vec<ContainerRow>> {
        let sql = format!("{CONTAINER_COLUMNS} WHERE collection_id = $1 ORDER BY name");
        self.fetch_all_of(sql, &[collection_id], container_from_row)
            .await
    }

    /// Records a container; false when the name is taken in its collection.
    pub async fn insert_container(&self, container: &ContainerRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO library_containers (id, collection_id, name, description, private, \
             created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (collection_id, name) DO NOTHING",
        )
        .bind(&container.id)
        .bind(&container.collection_id)
        .bind(&container.name)
        .bind(&container.description)
        .bind(i64::from(container.private))
        .bind(container.created_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts one download of a container.
    pub async fn count_download(&self, container_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE library_containers SET download_count = download_count + 1 WHERE id = $1",
        )
        .bind(container_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The image with this id.
    pub async fn image_by_id(&self, id: &str) -> Result<Option<ImageRow>> {
        let sql = format!("{IMAGE_COLUMNS} WHERE id = $1");
        self.fetch_one_of(sql, &[id], image_from_row).await
    }

    /// The image of `container_id` with file hash `hash` (`sha256.<hex>`).
    pub async fn image_by_hash(&self, container_id: &str, hash: &str) -> Result<Option<ImageRow>> {
        let sql = format!("{IMAGE_COLUMNS} WHERE container_id = $1 AND hash = $2");
        self.fetch_one_of(sql, &[container_id, hash], image_from_row)
            .await
    }

    /// The image stored for remote build `build_id`.
    pub async fn image_by_build(&self, build_id: &str) -> Result<Option<ImageRow>> {
        let sql = format!("{IMAGE_COLUMNS} WHERE build_id = $1");
        self.fetch_one_of(sql, &[build_id], image_from_row).await
    }

    /// The image `tag` points at for `arch` (`""`: the arch-less v1 tag) in a container.
    pub async fn image_by_tag(
        &self,
        container_id: &str,
        arch: &str,
        tag: &str,
    ) -> Result<Option<ImageRow>> {
        let sql = format!(
            "{IMAGE_COLUMNS} WHERE id = (SELECT image_id FROM library_tags \
             WHERE container_id = $1 AND arch = $2 AND tag = $3)"
        );
        self.fetch_one_of(sql, &[container_id, arch, tag], image_from_row)
            .await
    }

    /// The images of a container, oldest first.
    pub async fn images_of(&self, container_id: &str) -> Result<Vec<ImageRow>> {
        let sql = format!("{IMAGE_COLUMNS} WHERE container_id = $1 ORDER BY created_ms, id");
        self.fetch_all_of(sql, &[container_id], image_from_row)
            .await
    }

    /// Records an image; false when its container has an image with that hash already.
    pub async fn insert_image(&self, image: &ImageRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO library_images (id, container_id, hash, description, arch, size, \
             uploaded, object_key, build_id, expires_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(&image.id)
        .bind(&image.container_id)
        .bind(&image.hash)
        .bind(&image.description)
        .bind(&image.arch)
        .bind(image.size)
        .bind(i64::from(image.uploaded))
        .bind(&image.object_key)
        .bind(image.build_id.as_deref())
        .bind(image.expires_ms)
        .bind(image.created_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that an image's file is stored, with its size.
    pub async fn mark_uploaded(&self, image_id: &str, size: i64) -> Result<()> {
        sqlx::query("UPDATE library_images SET uploaded = 1, size = $1 WHERE id = $2")
            .bind(size)
            .bind(image_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Gives an image its arch when it has none yet.
    pub async fn set_image_arch(&self, image_id: &str, arch: &str) -> Result<()> {
        sqlx::query("UPDATE library_images SET arch = $1 WHERE id = $2 AND arch = ''")
            .bind(arch)
            .bind(image_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Points `(arch, tag)` of a container at an image, moving the tag if it exists.
    pub async fn set_tag(
        &self,
        container_id: &str,
        arch: &str,
        tag: &str,
        image_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO library_tags (container_id, arch, tag, image_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (container_id, arch, tag) DO UPDATE SET image_id = excluded.image_id",
        )
        .bind(container_id)
        .bind(arch)
        .bind(tag)
        .bind(image_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every tag of a container.
    pub async fn tags_of(&self, container_id: &str) -> Result<Vec<TagRow>> {
        let rows = sqlx::query(
            "SELECT arch, tag, image_id FROM library_tags WHERE container_id = $1 \
             ORDER BY arch, tag",
        )
        .bind(container_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TagRow {
                    arch: row.try_get("arch")?,
                    tag: row.try_get("tag")?,
                    image_id: row.try_get("image_id")?,
                })
            })
            .collect()
    }

    /// Removes an image with its tags, uploads and download capabilities.
    pub async fn delete_image(&self, image_id: &str) -> Result<()> {
        for sql in [
            "DELETE FROM library_tags WHERE image_id = $1",
            "DELETE FROM library_upload_parts WHERE upload_id IN \
             (SELECT id FROM library_uploads WHERE image_id = $1)",
            "DELETE FROM library_part_urls WHERE upload_id IN \
             (SELECT id FROM library_uploads WHERE image_id = $1)",
            "DELETE FROM library_uploads WHERE image_id = $1",
            "DELETE FROM library_downloads WHERE image_id = $1",
            "DELETE FROM library_images WHERE id = $1",
        ] {
            sqlx::query(sql).bind(image_id).execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Bytes of uploaded images in the entities `owner_id` owns.
    pub async fn library_usage(&self, owner_id: i64) -> Result<i64> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(i.size) AS BIGINT) FROM library_images i \
             JOIN library_containers c ON c.id = i.container_id \
             JOIN library_collections l ON l.id = c.collection_id \
             JOIN library_entities e ON e.id = l.entity_id \
             WHERE e.owner_id = $1 AND i.uploaded = 1",
        )
        .bind(owner_id)
        .fetch_one(self.pool())
        .await?;
        Ok(used.unwrap_or(0))
    }

    /// Ids of the images whose entity, collection or container name, description or hash
    /// contains `needle` (lowercase), with their container, newest first, at most `limit`.
    pub async fn search_images(&self, needle: &str, limit: i64) -> Result<Vec<ImageRow>> {
        let pattern = like_pattern(needle);
        let sql = format!(
            "SELECT i.id, i.container_id, i.hash, i.description, i.arch, i.size, i.uploaded, \
             i.object_key, i.build_id, i.expires_ms, i.created_ms FROM library_images i \
             JOIN library_containers c ON c.id = i.container_id \
             JOIN library_collections l ON l.id = c.collection_id \
             JOIN library_entities e ON e.id = l.entity_id \
             WHERE i.uploaded = 1 AND (LOWER(e.name) LIKE $1 ESCAPE '\\' \
             OR LOWER(l.name) LIKE $1 ESCAPE '\\' OR LOWER(c.name) LIKE $1 ESCAPE '\\' \
             OR LOWER(i.description) LIKE $1 ESCAPE '\\' OR i.hash LIKE $1 ESCAPE '\\') \
             ORDER BY i.created_ms DESC, i.id LIMIT {limit}"
        );
        self.fetch_all_of(sql, &[pattern.as_str()], image_from_row)
            .await
    }

    /// Entities whose name contains `needle` (lowercase), by name, at most `limit`. Every
    /// entity is visible: its name is public in every ref.
    pub async fn search_entities(&self, needle: &str, limit: i64) -> Result<Vec<EntityRow>> {
        let sql = format!(
            "{ENTITY_COLUMNS} WHERE LOWER(name) LIKE $1 ESCAPE '\\' ORDER BY name LIMIT {limit}"
        );
        self.fetch_all_of(sql, &[like_pattern(needle).as_str()], entity_from_row)
            .await
    }

    /// The rows of a search `sql` whose `$1` is the pattern of `needle`, `$2` the viewer's
    /// user id (-1 for none) and `$3` 1 for an admin viewer.
    async fn search_visible<T>(
        &self,
        sql: String,
        needle: &str,
        viewer: Option<&User>,
        convert: fn(&AnyRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(like_pattern(needle))
            .bind(viewer.map_or(-1, |u| u.id))
            .bind(i64::from(viewer.is_some_and(|u| u.is_admin)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(convert).collect()
    }

    /// Collections whose name contains `needle` (lowercase) that `viewer` may read (public
    /// ones, and private ones of entities they own), by name, at most `limit`.
    pub async fn search_collections(
        &self,
        needle: &str,
        viewer: Option<&User>,
        limit: i64,
    ) -> Result<Vec<CollectionRow>> {
        let sql = format!(
            "SELECT l.id, l.entity_id, l.name, l.description, l.private, l.created_ms \
             FROM library_collections l JOIN library_entities e ON e.id = l.entity_id \
             WHERE LOWER(l.name) LIKE $1 ESCAPE '\\' \
             AND (l.private = 0 OR e.owner_id = $2 OR $3 = 1) ORDER BY l.name, l.id LIMIT {limit}"
        );
        self.search_visible(sql, needle, viewer, collection_from_row)
            .await
    }

    /// Containers whose name contains `needle` (lowercase) that `viewer` may read (in a public
    /// collection and public themselves, or in an entity they own), by name, at most `limit`.
    pub async fn search_containers(
        &self,
        needle: &str,
        viewer: Option<&User>,
        limit: i64,
    ) -> Result<Vec<ContainerRow>> {
        let sql = format!(
            "SELECT c.id, c.collection_id, c.name, c.description, c.private, c.download_count, \
             c.created_ms FROM library_containers c \
             JOIN library_collections l ON l.id = c.collection_id \
             JOIN library_entities e ON e.id = l.entity_id \
             WHERE LOWER(c.name) LIKE $1 ESCAPE '\\' \
             AND ((l.private = 0 AND c.private = 0) OR e.owner_id = $2 OR $3 = 1) \
             ORDER BY c.name, c.id LIMIT {limit}"
        );
        self.search_visible(sql, needle, viewer, container_from_row)
            .await
    }

    /// Images whose expiry passed before `now_ms`.
    pub async fn expired_images(&self, now_ms: i64) -> Result<Vec<ImageRow>> {
        let sql = format!("{IMAGE_COLUMNS} WHERE expires_ms IS NOT NULL AND expires_ms < $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(image_from_row).collect()
    }

    /// Records an upload in flight under the digest of its capability.
    pub async fn insert_upload(&self, upload: &UploadRow, token_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO library_uploads (id, token_hash, image_id, kind, size, part_size, \
             expires_ms, store_upload_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&upload.id)
        .bind(token_hash)
        .bind(&upload.image_id)
        .bind(if upload.is_multipart {
            "multipart"
        } else {
            "single"
        })
        .bind(upload.size)
        .bind(upload.part_size)
        .bind(upload.expires_ms)
        .bind(upload.store_upload_id.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The upload whose capability has digest `token_hash`.
    pub async fn upload_by_token(&self, token_hash: &str) -> Result<Option<UploadRow>> {
        let sql = format!("{UPLOAD_COLUMNS} WHERE token_hash = $1");
        self.fetch_one_of(sql, &[token_hash], upload_from_row).await
    }

    /// The upload `id` of image `image_id`.
    pub async fn upload_by_id(&self, id: &str, image_id: &str) -> Result<Option<UploadRow>> {
        let sql = format!("{UPLOAD_COLUMNS} WHERE id = $1 AND image_id = $2");
        self.fetch_one_of(sql, &[id, image_id], upload_from_row)
            .await
    }

    /// The uploads in flight of an image.
    pub async fn uploads_of(&self, image_id: &str) -> Result<Vec<UploadRow>> {
        let sql = format!("{UPLOAD_COLUMNS} WHERE image_id = $1");
        self.fetch_all_of(sql, &[image_id], upload_from_row).await
    }

    /// Forgets an upload and its parts.
    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        for sql in [
            "DELETE FROM library_upload_parts WHERE upload_id = $1",
            "DELETE FROM library_part_urls WHERE upload_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(self.pool()).await?;
        }
        sqlx::query("DELETE FROM library_uploads WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Uploads whose capability died before `now_ms`.
    pub async fn expired_uploads(&self, now_ms: i64) -> Result<Vec<UploadRow>> {
        let sql = format!("{UPLOAD_COLUMNS} WHERE expires_ms < $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(upload_from_row).collect()
    }

    /// Records a received part (a resent part replaces the first).
    pub async fn put_part(&self, upload_id: &str, part: &PartRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO library_upload_parts (upload_id, part_number, size, etag, store_parts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (upload_id, part_number) \
             DO UPDATE SET size = excluded.size, etag = excluded.etag, \
             store_parts = excluded.store_parts",
        )
        .bind(upload_id)
        .bind(part.part_number)
        .bind(part.size)
        .bind(&part.etag)
        .bind(part.store_parts.join(" "))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The received parts of an upload, in order.
    pub async fn parts_of(&self, upload_id: &str) -> Result<Vec<PartRow>> {
        let rows = sqlx::query(
            "SELECT part_number, size, etag, store_parts FROM library_upload_parts \
             WHERE upload_id = $1 ORDER BY part_number",
        )
        .bind(upload_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PartRow {
                    part_number: row.try_get("part_number")?,
                    size: row.try_get("size")?,
                    etag: row.try_get("etag")?,
                    store_parts: row
                        .try_get::<String, _>("store_parts")?
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .collect()
    }

    /// Records that part `part_number` went through the running hash, now `hash_state`;
    /// false (and nothing changes) unless the hash had gone through the part before it.
    pub async fn advance_upload_hash(
        &self,
        upload_id: &str,
        part_number: i64,
        hash_state: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE library_uploads SET hashed_parts = $1, hash_state = $2 \
             WHERE id = $3 AND hashed_parts = $4",
        )
        .bind(part_number)
        .bind(hash_state)
        .bind(upload_id)
        .bind(part_number - 1)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the running hash of an upload (a hashed part was replaced by other bytes).
    pub async fn reset_upload_hash(&self, upload_id: &str) -> Result<()> {
        sqlx::query("UPDATE library_uploads SET hashed_parts = 0, hash_state = NULL WHERE id = $1")
            .bind(upload_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the capability of one part's upload URL.
    pub async fn insert_part_url(
        &self,
        token_hash: &str,
        upload_id: &str,
        part_number: i64,
        size: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO library_part_urls (token_hash, upload_id, part_number, size) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(upload_id)
        .bind(part_number)
        .bind(size)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The upload, part number and part size a part URL capability (by digest) names.
    pub async fn part_url(&self, token_hash: &str) -> Result<Option<(UploadRow, i64, i64)>> {
        let row = sqlx::query(
            "SELECT upload_id, part_number, size FROM library_part_urls WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let upload_id: String = row.try_get("upload_id")?;
        let sql = format!("{UPLOAD_COLUMNS} WHERE id = $1");
        let upload = self
            .fetch_one_of(sql, &[upload_id.as_str()], upload_from_row)
            .await?;
        Ok(upload.map(|u| {
            (
                u,
                row.try_get("part_number").unwrap_or(0),
                row.try_get("size").unwrap_or(0),
            )
        }))
    }

    /// Records a ranged-download capability for an image.
    pub async fn insert_download(
        &self,
        token_hash: &str,
        image_id: &str,
        expires_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO library_downloads (token_hash, image_id, expires_ms) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(image_id)
        .bind(expires_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The image a live download capability (by digest) names.
    pub async fn download_image(&self, token_hash: &str, now_ms: i64) -> Result<Option<ImageRow>> {
        let sql = format!(
            "{IMAGE_COLUMNS} WHERE id = (SELECT image_id FROM library_downloads \
             WHERE token_hash = $1 AND expires_ms >= $2)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(image_from_row).transpose()
    }

    /// Forgets download capabilities that died before `now_ms`.
    pub async fn delete_expired_downloads(&self, now_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM library_downloads WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
