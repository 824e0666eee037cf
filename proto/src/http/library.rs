//! Objects of the library API (`library://`, library-api.md §4–6), as the Go library client
//! (sylabs/scs-library-client, apptainer/container-library-client `client/models.go`) decodes
//! and sends them.
//!
//! The client decodes into Go structs, so every id is a JSON string, every time is RFC 3339
//! with a zone, and one field of the wrong type fails the whole call (§3). Request bodies are
//! the client's whole structs; we read the few fields that matter and ignore the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `BaseModel`, the fields every library object embeds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// Never true: deleted objects are gone.
    #[serde(default)]
    pub deleted: bool,
    /// Name of the user who created it.
    #[serde(rename = "createdBy", default)]
    pub created_by: String,
    /// RFC 3339 with a zone.
    #[serde(rename = "createdAt", default)]
    pub created_at: String,
    /// The owning user's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// An entity (a user's namespace), §4.1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// Common fields.
    #[serde(flatten)]
    pub base: BaseModel,
    /// 24 lowercase hex digits.
    pub id: String,
    /// `[a-z0-9]+([._-][a-z0-9]+)*`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Ids of its collections.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Bytes stored in its images.
    #[serde(default)]
    pub size: i64,
    /// The owner's storage quota, bytes; 0 means unlimited.
    #[serde(default)]
    pub quota: i64,
    /// New collections are private.
    #[serde(rename = "defaultPrivate", default)]
    pub default_private: bool,
}

/// A collection, §4.2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    /// Common fields.
    #[serde(flatten)]
    pub base: BaseModel,
    /// 24 lowercase hex digits.
    pub id: String,
    /// Name within the entity.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The entity's id.
    #[serde(default)]
    pub entity: String,
    /// The entity's name.
    #[serde(rename = "entityName", default)]
    pub entity_name: String,
    /// Ids of its containers.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Bytes stored in its images.
    #[serde(default)]
    pub size: i64,
    /// Readable only by its owner.
    #[serde(default)]
    pub private: bool,
}

/// A container (one image name with its tags), §4.3.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Common fields.
    #[serde(flatten)]
    pub base: BaseModel,
    /// 24 lowercase hex digits.
    pub id: String,
    /// Name within the collection.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The collection's id.
    #[serde(default)]
    pub collection: String,
    /// The collection's name.
    #[serde(rename = "collectionName", default)]
    pub collection_name: String,
    /// The entity's id.
    #[serde(default)]
    pub entity: String,
    /// The entity's name.
    #[serde(rename = "entityName", default)]
    pub entity_name: String,
    /// Ids of its images.
    #[serde(default)]
    pub images: Vec<String>,
    /// Tag → image id, whatever the arch (for clients before arch tags).
    #[serde(rename = "imageTags", default)]
    pub image_tags: TagMap,
    /// Arch → tag → image id.
    #[serde(rename = "archTags", default)]
    pub arch_tags: ArchTagMap,
    /// Bytes stored in its images.
    #[serde(default)]
    pub size: i64,
    /// Downloads so far.
    #[serde(rename = "downloadCount", default)]
    pub download_count: i64,
    /// Readable only by its owner.
    #[serde(default)]
    pub private: bool,
}

/// An image: one SIF file, §4.4.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Common fields.
    #[serde(flatten)]
    pub base: BaseModel,
    /// 24 lowercase hex digits.
    pub id: String,
    /// `sha256.<hex>` of the whole file; pull checks the download against it.
    pub hash: String,
    /// Free text (`push -D`).
    #[serde(default)]
    pub description: String,
    /// The container's id.
    #[serde(default)]
    pub container: String,
    /// Bytes; clients size concurrent downloads with it.
    #[serde(default)]
    pub size: i64,
    /// The file is stored (push skips the upload when true).
    #[serde(default)]
    pub uploaded: bool,
    /// Go architecture name, once a tag gave it one.
    #[serde(default)]
    pub arch: String,
    /// Signing key fingerprints (Kiln verifies none yet).
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// The entity's id.
    #[serde(default)]
    pub entity: String,
    /// The entity's name.
    #[serde(rename = "entityName", default)]
    pub entity_name: String,
    /// The collection's id.
    #[serde(default)]
    pub collection: String,
    /// The collection's name.
    #[serde(rename = "collectionName", default)]
    pub collection_name: String,
    /// The container's name.
    #[serde(rename = "containerName", default)]
    pub container_name: String,
    /// Tags pointing at this image (for its arch); search prints them.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Tag → image id.
pub type TagMap = BTreeMap<String, String>;

/// Arch → tag → image id.
pub type ArchTagMap = BTreeMap<String, TagMap>;

/// Body of `POST /v1/entities`: the client's whole `Entity`; these fields count.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewEntity {
    /// The entity's name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// New collections are private.
    #[serde(rename = "defaultPrivate", default)]
    pub default_private: Option<bool>,
}

/// Body of `POST /v1/collections` and `POST /v1/containers`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewCollectionOrContainer {
    /// The new object's name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Parent entity id (collections).
    #[serde(default)]
    pub entity: Option<String>,
    /// Parent collection id (containers).
    #[serde(default)]
    pub collection: Option<String>,
    /// Readable only by the owner.
    #[serde(default)]
    pub private: Option<bool>,
}

/// Body of `POST /v1/images`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewImage {
    /// `sha256.<hex>` of the file to come.
    #[serde(default)]
    pub hash: String,
    /// Parent container id.
    #[serde(default)]
    pub container: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Body of `POST /v1/tags/{id}` and `POST /v2/tags/{id}`: Go structs without json tags, so the
/// keys are capitalised (§4.5).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TagRequest {
    /// Go architecture name (v2 only).
    #[serde(rename = "Arch", default)]
    pub arch: Option<String>,
    /// The tag.
    #[serde(rename = "Tag", default)]
    pub tag: String,
    /// The image it points at.
    #[serde(rename = "ImageID", default)]
    pub image_id: String,
}

/// Body of `POST /v2/imagefile/{id}` and `POST /v2/imagefile/{id}/_multipart`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UploadRequest {
    /// Bytes the client will send.
    #[serde(default)]
    pub filesize: i64,
    /// Hex SHA-256 of the file (single part only).
    #[serde(default)]
    pub sha256sum: Option<String>,
    /// Hex MD5 of the file (single part only; not checked).
    #[serde(default)]
    pub md5sum: Option<String>,
}

/// Answer to `POST /v2/imagefile/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadUrl {
    /// Absolute capability URL the client PUTs the file to, without a token.
    #[serde(rename = "uploadURL")]
    pub upload_url: String,
}

/// Answer to `POST /v2/imagefile/{id}/_multipart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultipartUpload {
    /// Names the upload in the later calls.
    #[serde(rename = "uploadID")]
    pub upload_id: String,
    /// Parts the client sends.
    #[serde(rename = "totalParts")]
    pub total_parts: i64,
    /// Bytes per part (the last one may be shorter).
    #[serde(rename = "partSize")]
    pub part_size: i64,
    /// `{"s3compliant":"false"}`: the client then sends no per-part SHA-256 header.
    pub options: BTreeMap<String, String>,
}

/// Body of `PUT /v2/imagefile/{id}/_multipart`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartRequest {
    /// Bytes of this part.
    #[serde(rename = "partSize", default)]
    pub part_size: i64,
    /// From [`MultipartUpload`].
    #[serde(rename = "uploadID", default)]
    pub upload_id: String,
    /// 1-based.
    #[serde(rename = "partNumber", default)]
    pub part_number: i64,
    /// Hex SHA-256 of the part, or empty.
    #[serde(default)]
    pub sha256sum: Option<String>,
}

/// Answer to `PUT /v2/imagefile/{id}/_multipart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartUrl {
    /// Absolute capability URL the client PUTs the part to.
    #[serde(rename = "presignedURL")]
    pub presigned_url: String,
}

/// One entry of `completedParts`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CompletedPart {
    /// 1-based.
    #[serde(rename = "partNumber", default)]
    pub part_number: i64,
    /// The ETag the part PUT answered, quotes included.
    #[serde(default)]
    pub token: String,
}

/// Body of `PUT /v2/imagefile/{id}/_multipart_complete` and `_multipart_abort`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MultipartFinish {
    /// From [`MultipartUpload`].
    #[serde(rename = "uploadID", default)]
    pub upload_id: String,
    /// The parts, in any order (complete only).
    #[serde(rename = "completedParts", default)]
    pub completed_parts: Vec<CompletedPart>,
}

/// The owner's storage use, in upload answers and in 507 errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Bytes allowed; 0 means unlimited.
    #[serde(rename = "quotaTotal")]
    pub quota_total: i64,
    /// Bytes in use.
    #[serde(rename = "quotaUsage")]
    pub quota_usage: i64,
}

/// Answer to `_complete` and `_multipart_complete`; push prints both fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadComplete {
    /// Storage use after this upload.
    pub quota: Quota,
    /// `library/<entity>/<collection>/<container>`, appended to the remote's URL by the CLI.
    #[serde(rename = "containerUrl")]
    pub container_url: String,
}

/// Answer to `GET /v1/search`: only `image` is printed by the CLI.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchResults {
    /// Matching entities.
    pub entity: Vec<Entity>,
    /// Matching collections.
    pub collection: Vec<Collection>,
    /// Matching containers.
    pub container: Vec<Container>,
    /// Matching images.
    pub image: Vec<Image>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_clients_bodies_and_writes_string_ids() {
        let entity: NewEntity = serde_json::from_str(
            r#"{"deleted":false,"createdBy":"","createdAt":"0001-01-01T00:00:00Z","id":"",
            "name":"alice","description":"No description","collections":null,"size":0,
            "quota":0,"defaultPrivate":false,"customData":""}"#,
        )
        .unwrap();
        assert_eq!(entity.name, "alice");
        let tag: TagRequest =
            serde_json::from_str(r#"{"Arch":"amd64","Tag":"v1","ImageID":"abc"}"#).unwrap();
        assert_eq!(
            (tag.arch.as_deref(), tag.tag.as_str()),
            (Some("amd64"), "v1")
        );
        let image = serde_json::to_value(Image {
            id: "0123456789abcdef01234567".into(),
            ..Image::default()
        })
        .unwrap();
        assert!(image["id"].is_string());
        assert_eq!(image["uploaded"], false);
    }
}
