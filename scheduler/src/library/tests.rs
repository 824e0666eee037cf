//! The library API through the router (`tower::ServiceExt::oneshot`), as the Go client drives
//! it (library-api.md §12's recorded sequence), against a SQLite store and a local object store
//! in a temp dir. The Go client itself runs against a real server in `tests/`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::tests::{Answer, Harness, assert_error, harness, walk};
use crate::config::{DownloadMode, LibraryConfig, Limits};
use crate::secrets::{new_api_token, token_hash};
use crate::store::UserLimits;

fn hash_of(bytes: &[u8]) -> String {
    format!("sha256.{}", hex::encode(Sha256::digest(bytes)))
}

async fn library_harness(library: LibraryConfig) -> Harness {
    let mut h = harness(Limits::default()).await;
    h.state.library = Arc::new(library);
    h
}

/// Adds user `name` with a token; returns `BEARER <token>`.
async fn add_user(h: &Harness, name: &str) -> String {
    h.state
        .store
        .add_user(name, false, UserLimits::default(), 0)
        .await
        .unwrap();
    let token = new_api_token();
    h.state
        .store
        .add_token(name, &token_hash(&token), 0)
        .await
        .unwrap();
    format!("Bearer {token}")
}

async fn json_call(h: &Harness, method: Method, uri: &str, auth: &str, body: Value) -> Answer {
    h.call(method, uri, Some(auth), Body::from(body.to_string()))
        .await
}

/// What push does up to the upload: entity, collection, container, image; returns the
/// container and image ids.
async fn create_image(h: &Harness, auth: &str, path: &str, hash: &str) -> (String, String) {
    let [entity, collection, container]: [&str; 3] =
        path.split('/').collect::<Vec<_>>().try_into().unwrap();
    let found = h
        .call(
            Method::GET,
            &format!("/v1/entities/{entity}"),
            Some(auth),
            Body::empty(),
        )
        .await;
    let entity_id = if found.status == StatusCode::OK {
        found.body["data"]["id"].as_str().unwrap().to_owned()
    } else {
        let created = json_call(
            h,
            Method::POST,
            "/v1/entities",
            auth,
            json!({"id": "", "name": entity, "createdAt": "0001-01-01T00:00:00Z",
                   "collections": null, "defaultPrivate": false}),
        )
        .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        created.body["data"]["id"].as_str().unwrap().to_owned()
    };
    let created = json_call(
        h,
        Method::POST,
        "/v1/collections",
        auth,
        json!({"name": collection, "entity": entity_id, "private": false}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let collection_id = created.body["data"]["id"].as_str().unwrap().to_owned();
    let created = json_call(
        h,
        Method::POST,
        "/v1/containers",
        auth,
        json!({"name": container, "collection": collection_id, "images": null}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let container_id = created.body["data"]["id"].as_str().unwrap().to_owned();
    let created = json_call(
        h,
        Method::POST,
        "/v1/images",
        auth,
        json!({"hash": hash, "container": container_id, "description": "test image"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["data"]["uploaded"], false);
    (
        container_id,
        created.body["data"]["id"].as_str().unwrap().to_owned(),
    )
}

/// The v2 single-part upload: announce, PUT to the URL, complete.
async fn upload(h: &Harness, auth: &str, image_id: &str, file: &[u8]) -> Answer {
    let started = json_call(
        h,
        Method::POST,
        &format!("/v2/imagefile/{image_id}"),
        auth,
        json!({"filesize": file.len(), "sha256sum": hash_of(file)[7..], "md5sum": ""}),
    )
    .await;
    if started.status != StatusCode::OK {
        return started;
    }
    let url = started.body["data"]["uploadURL"].as_str().unwrap();
    let path = url
        .strip_prefix("http://kiln.test")
        .expect("an absolute URL");
    let put = h
        .call(Method::PUT, path, None, Body::from(file.to_vec()))
        .await;
    if put.status != StatusCode::OK {
        return put;
    }
    json_call(
        h,
        Method::PUT,
        &format!("/v2/imagefile/{image_id}/_complete"),
        auth,
        json!({}),
    )
    .await
}

/// A whole push of `file` to `path` tagged `latest` for amd64; returns the container and
/// image ids.
async fn push(h: &Harness, auth: &str, path: &str, file: &[u8]) -> (String, String) {
    let (container, id) = create_image(h, auth, path, &hash_of(file)).await;
    let done = upload(h, auth, &id, file).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    tag(h, auth, &container, &id, "amd64", "latest").await;
    (container, id)
}

/// Creates the private collection `name` in `auth`'s entity `entity`.
async fn private_collection(h: &Harness, auth: &str, entity: &str, name: &str) {
    let entity = h
        .call(
            Method::GET,
            &format!("/v1/entities/{entity}"),
            None,
            Body::empty(),
        )
        .await;
    let private = json_call(
        h,
        Method::POST,
        "/v1/collections",
        auth,
        json!({"name": name, "entity": entity.body["data"]["id"], "private": true}),
    )
    .await;
    assert_eq!(private.body["data"]["private"], true, "{}", private.body);
}

async fn tag(h: &Harness, auth: &str, container_id: &str, image_id: &str, arch: &str, tag: &str) {
    let answer = json_call(
        h,
        Method::POST,
        &format!("/v2/tags/{container_id}"),
        auth,
        json!({"Arch": arch, "Tag": tag, "ImageID": image_id}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn push_search_pull_by_tag_and_hash_with_arch_tags() {
    let h = library_harness(LibraryConfig::default()).await;
    let alice = h.bearer();
    let amd = b"SIF amd64 image".to_vec();
    let arm = b"SIF arm64 image, longer".to_vec();
    let (container, amd_id) = create_image(&h, &alice, "alice/builds/hello", &hash_of(&amd)).await;
    // Push looks the new image up by hash before it has an arch or a file (§5.5).
    let by_hash = format!("/v1/images/alice/builds/hello:{}?arch=amd64", hash_of(&amd));
    let found = h
        .call(Method::GET, &by_hash, Some(&alice), Body::empty())
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["data"]["id"], amd_id.as_str());
    let done = upload(&h, &alice, &amd_id, &amd).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        done.body["data"]["containerUrl"],
        "library/alice/builds/hello"
    );
    assert_eq!(done.body["data"]["quota"]["quotaUsage"], amd.len());
    tag(&h, &alice, &container, &amd_id, "amd64", "v1").await;
    let (_, arm_id) = create_image(&h, &alice, "alice/builds/hello", &hash_of(&arm)).await;
    assert_eq!(
        upload(&h, &alice, &arm_id, &arm).await.status,
        StatusCode::OK
    );
    tag(&h, &alice, &container, &arm_id, "arm64", "v1").await;

    for (arch, file) in [("amd64", &amd), ("arm64", &arm)] {
        let image = h
            .call(
                Method::GET,
                &format!("/v1/images/alice/builds/hello:v1?arch={arch}"),
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(image.status, StatusCode::OK, "{}", image.body);
        assert_eq!(image.body["data"]["hash"], hash_of(file).as_str());
        assert_eq!(image.body["data"]["size"], file.len());
        assert_eq!(image.body["data"]["arch"], arch);
        let pulled = h
            .call(
                Method::GET,
                &format!("/v1/imagefile/alice/builds/hello:v1?arch={arch}"),
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(pulled.status, StatusCode::OK);
        assert_eq!(&pulled.bytes, file);
    }
    let by_hash = format!("/v1/imagefile/alice/builds/hello:{}", hash_of(&arm));
    let pulled = h.call(Method::GET, &by_hash, None, Body::empty()).await;
    assert_eq!(pulled.bytes, arm);
    let tags = h
        .call(
            Method::GET,
            &format!("/v2/tags/{container}"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(
        tags.body["data"],
        json!({"amd64": {"v1": amd_id}, "arm64": {"v1": arm_id}})
    );
    // The arch-less tag follows the latest image tagged, for old clients.
    let tags = h
        .call(
            Method::GET,
            &format!("/v1/tags/{container}"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(tags.body["data"], json!({"v1": arm_id}));

    let search = h
        .call(
            Method::GET,
            "/v1/search?value=HELLO&arch=arm64",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.body);
    let images = search.body["data"]["image"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{}", search.body);
    assert_eq!(images[0]["entityName"], "alice");
    assert_eq!(images[0]["containerName"], "hello");
    assert_eq!(images[0]["tags"], json!(["v1"]));
    assert_eq!(search.body["data"]["entity"], json!([]));
    assert_error(
        &h.call(Method::GET, "/v1/search?value=he", None, Body::empty())
            .await,
        StatusCode::BAD_REQUEST,
        "at least 3",
    );
    assert_error(
        &h.call(
            Method::GET,
            "/v1/imagefile/alice/builds/hello:v2?arch=amd64",
            None,
            Body::empty(),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    // Unsigned images push and pull because the key server knows no key.
    let keys = h
        .call(
            Method::GET,
            "/pks/lookup?op=get&search=0xABCD",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(keys.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn short_refs_map_to_the_default_entity() {
    let h = library_harness(LibraryConfig {
        default_entity: "alice".into(),
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let file = b"short".to_vec();
    let (container, id) = create_image(&h, &alice, "alice/default/alpine", &hash_of(&file)).await;
    upload(&h, &alice, &id, &file).await;
    tag(&h, &alice, &container, &id, "amd64", "latest").await;
    for path in [
        "/v1/imagefile/alpine?arch=amd64",
        "/v1/imagefile/default/alpine:latest?arch=amd64",
        "/v1/imagefile//default/alpine?arch=amd64",
    ] {
        let pulled = h.call(Method::GET, path, None, Body::empty()).await;
        assert_eq!(pulled.status, StatusCode::OK, "{path}");
        assert_eq!(pulled.bytes, file, "{path}");
    }
}

#[tokio::test]
async fn private_images_tokens_and_ownership() {
    let h = library_harness(LibraryConfig::default()).await;
    let alice = h.bearer();
    let bob = add_user(&h, "bob").await;
    let file = b"private".to_vec();
    let (container, id) = push(&h, &alice, "alice/secret/thing", &file).await;
    // Make the collection private the way a client would create one.
    private_collection(&h, &alice, "alice", "hidden").await;
    push(&h, &alice, "alice/hidden/thing", &file).await;
    let hidden = "/v1/imagefile/alice/hidden/thing:latest?arch=amd64";
    assert_eq!(
        h.call(Method::GET, hidden, Some(&alice), Body::empty())
            .await
            .bytes,
        file
    );
    for auth in [None, Some(bob.as_str())] {
        assert_error(
            &h.call(Method::GET, hidden, auth, Body::empty()).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
    }
    let search = h
        .call(
            Method::GET,
            "/v1/search?value=thing",
            Some(&bob),
            Body::empty(),
        )
        .await;
    assert_eq!(
        search.body["data"]["image"].as_array().unwrap().len(),
        1,
        "only the public one"
    );
    assert_error(
        &h.call(
            Method::GET,
            hidden,
            Some("Bearer kiln_wrong"),
            Body::empty(),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid token",
    );
    // Writes need a token, and the entity's owner.
    assert_error(
        &h.call(
            Method::POST,
            "/v1/entities",
            None,
            Body::from(json!({"name": "alice"}).to_string()),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "missing token",
    );
    assert_error(
        &json_call(
            &h,
            Method::POST,
            "/v1/entities",
            &bob,
            json!({"name": "alice"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "your own entity",
    );
    assert_error(
        &json_call(
            &h,
            Method::POST,
            &format!("/v2/tags/{container}"),
            &bob,
            json!({"Arch": "amd64", "Tag": "evil", "ImageID": id}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "another user",
    );
    assert_error(
        &h.call(
            Method::DELETE,
            "/v1/images/alice/secret/thing:latest?arch=amd64",
            Some(&bob),
            Body::empty(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "another user",
    );
}

/// The names a search found: `[entities, collections, containers, images]`, each as
/// `entity[/collection[/container]]`, sorted and without repeats.
fn found_names(search: &Answer) -> [Vec<String>; 4] {
    let data = &search.body["data"];
    let names = |kind: &str, fields: &[&str]| -> Vec<String> {
        data[kind]
            .as_array()
            .unwrap_or_else(|| panic!("{kind} is a list: {data}"))
            .iter()
            .map(|item| {
                fields
                    .iter()
                    .map(|f| item[*f].as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    [
        names("entity", &["name"]),
        names("collection", &["entityName", "name"]),
        names("container", &["entityName", "collectionName", "name"]),
        names("image", &["entityName", "collectionName", "containerName"]),
    ]
}

#[tokio::test]
async fn search_finds_entities_collections_and_containers_the_caller_may_read() {
    let h = library_harness(LibraryConfig::default()).await;
    let alice = h.bearer();
    let bob = add_user(&h, "bob").await;
    let file = b"found".to_vec();
    let (_, id) = push(&h, &alice, "alice/tools/finder", &file).await;
    private_collection(&h, &alice, "alice", "findings").await;
    let (hidden, _) = push(&h, &alice, "alice/findings/finder", &file).await;
    let finder = json_call(
        &h,
        Method::POST,
        "/v1/entities",
        &add_user(&h, "pathfinder").await,
        json!({"name": "pathfinder"}),
    )
    .await;
    assert_eq!(finder.status, StatusCode::OK, "{}", finder.body);

    let search = |auth: Option<String>, query: &'static str| {
        let h = &h;
        async move {
            let answer = h
                .call(Method::GET, query, auth.as_deref(), Body::empty())
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            answer
        }
    };
    // Anonymous and another user: the public collection and container only.
    for auth in [None, Some(bob.clone())] {
        let found = search(auth, "/v1/search?value=FIND").await;
        assert_eq!(
            found_names(&found),
            [
                vec!["pathfinder".to_owned()],
                vec![],
                vec!["alice/tools/finder".to_owned()],
                vec!["alice/tools/finder".to_owned()],
            ],
            "{}",
            found.body
        );
    }
    // The owner also finds the private collection and what is in it.
    let found = search(Some(alice.clone()), "/v1/search?value=find").await;
    assert_eq!(
        found_names(&found),
        [
            vec!["pathfinder".to_owned()],
            vec!["alice/findings".to_owned()],
            vec![
                "alice/findings/finder".to_owned(),
                "alice/tools/finder".to_owned()
            ],
            vec![
                "alice/findings/finder".to_owned(),
                "alice/tools/finder".to_owned()
            ],
        ],
        "{}",
        found.body
    );
    let data = &found.body["data"];
    assert_eq!(data["collection"][0]["private"], true);
    assert_eq!(data["collection"][0]["containers"], json!([hidden]));
    let public = data["container"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collectionName"] == "tools")
        .unwrap();
    assert_eq!(public["archTags"], json!({"amd64": {"latest": id}}));
    assert_eq!(public["images"], json!([id]));
    // An entity lists only the collections the caller may read.
    let found = search(Some(bob.clone()), "/v1/search?value=alice").await;
    let public_only = found.body["data"]["entity"][0]["collections"].clone();
    let found = search(Some(alice.clone()), "/v1/search?value=alice").await;
    let all = found.body["data"]["entity"][0]["collections"].clone();
    assert_eq!(
        (
            public_only.as_array().unwrap().len(),
            all.as_array().unwrap().len()
        ),
        (1, 2)
    );
    // With an arch (what the CLI always sends) or `signed`, images only (§5.6).
    let found = search(Some(alice.clone()), "/v1/search?value=find&arch=amd64").await;
    let [entities, collections, containers, images] = found_names(&found);
    assert!(entities.is_empty() && collections.is_empty() && containers.is_empty());
    assert_eq!(images.len(), 2);
    let found = search(None, "/v1/search?value=find&signed=false").await;
    let [entities, _, containers, images] = found_names(&found);
    assert!(entities.is_empty() && containers.is_empty());
    assert_eq!(images, ["alice/tools/finder"]);
    // LIKE's wildcards are plain characters in a search.
    let found = search(None, "/v1/search?value=f%25d").await;
    assert_eq!(
        found_names(&found),
        [vec![], vec![], vec![], vec![]] as [Vec<String>; 4]
    );
}

#[tokio::test]
async fn quota_refuses_with_507_and_delete_frees_it() {
    let h = library_harness(LibraryConfig {
        quota_bytes: 100,
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let first = vec![1u8; 60];
    let second = vec![2u8; 60];
    let (container, first_id) = create_image(&h, &alice, "alice/q/img", &hash_of(&first)).await;
    let done = upload(&h, &alice, &first_id, &first).await;
    assert_eq!(
        done.body["data"]["quota"],
        json!({"quotaTotal": 100, "quotaUsage": 60})
    );
    tag(&h, &alice, &container, &first_id, "amd64", "one").await;
    let (_, second_id) = create_image(&h, &alice, "alice/q/img", &hash_of(&second)).await;
    let refused = upload(&h, &alice, &second_id, &second).await;
    assert_error(
        &refused,
        StatusCode::INSUFFICIENT_STORAGE,
        "60 of 100 bytes used",
    );
    let deleted = h
        .call(
            Method::DELETE,
            "/v1/images/alice/q/img:one?arch=amd64",
            Some(&alice),
            Body::empty(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let done = upload(&h, &alice, &second_id, &second).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["data"]["quota"]["quotaUsage"], 60);
    let objects = walk(&h.state.data_dir.join("objects"));
    assert_eq!(
        objects.len(),
        1,
        "the deleted image's file is gone: {objects:?}"
    );
}

#[tokio::test]
async fn a_users_own_quota_overrides_the_deployments() {
    let h = library_harness(LibraryConfig {
        quota_bytes: 100,
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let file = vec![7u8; 60];
    let (_, id) = create_image(&h, &alice, "alice/q/img", &hash_of(&file)).await;
    h.state
        .store
        .set_library_quota("alice", Some(50))
        .await
        .unwrap();
    assert_error(
        &upload(&h, &alice, &id, &file).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "0 of 50 bytes used, the image needs 60 more",
    );
    let entity = h
        .call(Method::GET, "/v1/entities/alice", None, Body::empty())
        .await;
    assert_eq!(entity.body["data"]["quota"], 50);
    // Unlimited reads as `quotaTotal: 0`, which push prints as "out of unlimited quota".
    h.state
        .store
        .set_library_quota("alice", Some(0))
        .await
        .unwrap();
    let done = upload(&h, &alice, &id, &file).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        done.body["data"]["quota"],
        json!({"quotaTotal": 0, "quotaUsage": 60})
    );
    h.state
        .store
        .set_library_quota("alice", None)
        .await
        .unwrap();
    let second = vec![8u8; 60];
    let (_, second_id) = create_image(&h, &alice, "alice/q/img", &hash_of(&second)).await;
    assert_error(
        &upload(&h, &alice, &second_id, &second).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "60 of 100 bytes used",
    );
}

#[tokio::test]
async fn head_answers_the_size_and_counts_no_download() {
    let h = library_harness(LibraryConfig {
        download: DownloadMode::Redirect,
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let file = vec![9u8; 1234];
    push(&h, &alice, "alice/h/img", &file).await;
    let path = "/v1/imagefile/alice/h/img:latest?arch=amd64";
    let downloads = async || {
        h.call(
            Method::GET,
            "/v1/containers/alice/h/img",
            None,
            Body::empty(),
        )
        .await
        .body["data"]["downloadCount"]
            .clone()
    };
    for _ in 0..2 {
        let head = h.call(Method::HEAD, path, None, Body::empty()).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["content-length"], "1234");
        assert!(head.bytes.is_empty());
    }
    assert_eq!(downloads().await, 0);
    let got = h.call(Method::GET, path, None, Body::empty()).await;
    assert_eq!(got.status, StatusCode::SEE_OTHER);
    assert_eq!(downloads().await, 1);
    let missing = h
        .call(
            Method::HEAD,
            "/v1/imagefile/alice/h/img:v9?arch=amd64",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_wrong_file_is_refused_and_leaves_nothing() {
    let h = library_harness(LibraryConfig::default()).await;
    let alice = h.bearer();
    let file = b"the real file".to_vec();
    let (_, id) = create_image(&h, &alice, "alice/c/n", &hash_of(&file)).await;
    let started = json_call(
        &h,
        Method::POST,
        &format!("/v2/imagefile/{id}"),
        &alice,
        json!({"filesize": file.len()}),
    )
    .await;
    let url = started.body["data"]["uploadURL"].as_str().unwrap();
    let path = url.strip_prefix("http://kiln.test").unwrap().to_owned();
    let forged = b"the fake file".to_vec();
    assert_error(
        &h.call(Method::PUT, &path, None, Body::from(forged)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "hash",
    );
    assert_error(
        &h.call(Method::PUT, &path, None, Body::from(b"short".to_vec()))
            .await,
        StatusCode::BAD_REQUEST,
        "announced",
    );
    assert!(walk(&h.state.data_dir.join("objects")).is_empty());
    let image = h
        .call(
            Method::GET,
            &format!("/v1/images/alice/c/n:{}", hash_of(&file)),
            Some(&alice),
            Body::empty(),
        )
        .await;
    assert_eq!(image.body["data"]["uploaded"], false);
    assert_error(
        &h.call(
            Method::PUT,
            "/v1/library-upload/0000",
            None,
            Body::from(file),
        )
        .await,
        StatusCode::NOT_FOUND,
        "",
    );
}

#[tokio::test]
async fn multipart_uploads_join_checked_parts() {
    let h = library_harness(LibraryConfig {
        part_size_bytes: 5 * 1024 * 1024,
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let file: Vec<u8> = (0..11 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let (_, id) = create_image(&h, &alice, "alice/big/img", &hash_of(&file)).await;
    let started = json_call(
        &h,
        Method::POST,
        &format!("/v2/imagefile/{id}/_multipart"),
        &alice,
        json!({"filesize": file.len()}),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let upload_id = started.body["data"]["uploadID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(started.body["data"]["totalParts"], 3);
    let part_size = 5 * 1024 * 1024;
    let mut completed = Vec::new();
    for (index, chunk) in file.chunks(part_size).enumerate() {
        let number = index + 1;
        let url = json_call(
            &h,
            Method::PUT,
            &format!("/v2/imagefile/{id}/_multipart"),
            &alice,
            json!({"partSize": chunk.len(), "uploadID": upload_id, "partNumber": number, "sha256sum": ""}),
        )
        .await;
        assert_eq!(url.status, StatusCode::OK, "{}", url.body);
        let url = url.body["data"]["presignedURL"].as_str().unwrap();
        let path = url.strip_prefix("http://kiln.test").unwrap();
        let put = h
            .call(Method::PUT, path, None, Body::from(chunk.to_vec()))
            .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        let etag = put.headers["etag"].to_str().unwrap().to_owned();
        completed.push(json!({"partNumber": number, "token": etag}));
    }
    let done = json_call(
        &h,
        Method::PUT,
        &format!("/v2/imagefile/{id}/_multipart_complete"),
        &alice,
        json!({"uploadID": upload_id, "completedParts": completed}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["data"]["containerUrl"], "library/alice/big/img");
    let pulled = h
        .call(
            Method::GET,
            &format!("/v1/imagefile/alice/big/img:{}", hash_of(&file)),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(pulled.bytes.len(), file.len());
    assert!(pulled.bytes == file);
    let objects = walk(&h.state.data_dir.join("objects"));
    assert_eq!(objects.len(), 1, "parts are gone: {objects:?}");
}

#[tokio::test]
async fn deleting_an_image_drops_its_uploads_in_flight() {
    let h = library_harness(LibraryConfig {
        part_size_bytes: 5 * 1024 * 1024,
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let file = vec![3u8; 6 * 1024 * 1024];
    let (_, id) = create_image(&h, &alice, "alice/gone/img", &hash_of(&file)).await;
    let started = json_call(
        &h,
        Method::POST,
        &format!("/v2/imagefile/{id}/_multipart"),
        &alice,
        json!({"filesize": file.len()}),
    )
    .await;
    let upload_id = started.body["data"]["uploadID"].clone();
    let part = 5 * 1024 * 1024;
    let url = json_call(
        &h,
        Method::PUT,
        &format!("/v2/imagefile/{id}/_multipart"),
        &alice,
        json!({"partSize": part, "uploadID": upload_id, "partNumber": 1}),
    )
    .await;
    let url = url.body["data"]["presignedURL"].as_str().unwrap();
    let path = url.strip_prefix("http://kiln.test").unwrap();
    let put = h
        .call(Method::PUT, path, None, Body::from(file[..part].to_vec()))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(walk(&h.state.data_dir.join("objects")).len(), 1);
    let deleted = h
        .call(
            Method::DELETE,
            &format!("/v1/images/alice/gone/img:{}?arch=amd64", hash_of(&file)),
            Some(&alice),
            Body::empty(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert!(walk(&h.state.data_dir.join("objects")).is_empty());
    assert!(h.state.store.uploads_of(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn redirect_mode_answers_303_to_a_ranged_capability() {
    let h = library_harness(LibraryConfig {
        download: DownloadMode::Redirect,
        ..LibraryConfig::default()
    })
    .await;
    let alice = h.bearer();
    let file: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
    let (container, id) = create_image(&h, &alice, "alice/r/img", &hash_of(&file)).await;
    upload(&h, &alice, &id, &file).await;
    tag(&h, &alice, &container, &id, "amd64", "latest").await;
    let redirect = h
        .call(
            Method::GET,
            "/v1/imagefile/alice/r/img?arch=amd64",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(redirect.status, StatusCode::SEE_OTHER);
    let location = redirect.headers["location"].to_str().unwrap();
    let path = location
        .strip_prefix("http://kiln.test/")
        .expect("absolute")
        .to_owned();
    let path = format!("/{path}");
    let ranged = ranged_call(&h, &path, "bytes=0-1024").await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.headers["content-range"], "bytes 0-1024/3000");
    assert_eq!(ranged.bytes, file[..1025]);
    let tail = ranged_call(&h, &path, "bytes=2048-4095").await;
    assert_eq!(tail.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.headers["content-range"], "bytes 2048-2999/3000");
    assert_eq!(tail.bytes, file[2048..]);
    let beyond = ranged_call(&h, &path, "bytes=3000-3001").await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let whole = h.call(Method::GET, &path, None, Body::empty()).await;
    assert_eq!((whole.status, whole.bytes.len()), (StatusCode::OK, 3000));
    h.clock.advance(3_600_001);
    assert_eq!(
        ranged_call(&h, &path, "bytes=0-1").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn ranged_call(h: &Harness, path: &str, range: &str) -> Answer {
    use axum::http::Request;
    use tower::ServiceExt;
    let request = Request::builder()
        .uri(path)
        .header("range", range)
        .body(Body::empty())
        .unwrap();
    let response = crate::api::router(h.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    }
}

#[tokio::test]
async fn ephemeral_results_expire() {
    let h = library_harness(LibraryConfig::default()).await;
    let file = b"result".to_vec();
    // A finished remote build whose worker uploaded `file`.
    let answer = h
        .call(
            Method::POST,
            "/v1/build",
            Some(&h.bearer()),
            Body::from(
                json!({"definitionRaw": base64_of("Bootstrap: docker\nFrom: alpine:3.19\n"), "libraryRef": ""})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let id = answer.body["data"]["id"].as_str().unwrap().to_owned();
    let job = h.broker.jobs.lock().unwrap()[0].clone();
    let path = job
        .result_url
        .unwrap()
        .trim_start_matches("http://kiln.test")
        .to_owned();
    assert_eq!(
        h.call(Method::PUT, &path, None, Body::from(file.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    let row = h.state.store.build(&id).await.unwrap().unwrap();
    super::publish_build_result(&h.state, &row).await.unwrap();
    let image = format!("/v1/imagefile/alice/remote-builds/rb-{id}:latest?arch=amd64");
    assert_eq!(
        h.call(Method::GET, &image, Some(&h.bearer()), Body::empty())
            .await
            .bytes,
        file
    );
    h.clock.advance(86_400_000 - 1000);
    assert_eq!(super::sweep_library(&h.state).await.unwrap(), 0);
    h.clock.advance(2000);
    assert_eq!(super::sweep_library(&h.state).await.unwrap(), 1);
    assert_eq!(
        h.call(Method::GET, &image, Some(&h.bearer()), Body::empty())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(walk(&h.state.data_dir.join("objects")).is_empty());
}

#[tokio::test]
async fn a_build_result_over_quota_is_refused_and_leaves_nothing() {
    let h = library_harness(LibraryConfig {
        quota_bytes: 1000,
        ..LibraryConfig::default()
    })
    .await;
    let finished = async |file: &[u8], library_ref: &str| {
        let answer = h
            .call(
                Method::POST,
                "/v1/build",
                Some(&h.bearer()),
                Body::from(
                    json!({"definitionRaw": base64_of("Bootstrap: docker\nFrom: alpine:3.19\n"),
                           "libraryRef": library_ref})
                    .to_string(),
                ),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        let id = answer.body["data"]["id"].as_str().unwrap().to_owned();
        let job = h.broker.jobs.lock().unwrap().last().unwrap().clone();
        let path = job
            .result_url
            .unwrap()
            .trim_start_matches("http://kiln.test")
            .to_owned();
        let put = h
            .call(Method::PUT, &path, None, Body::from(file.to_vec()))
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
        h.state.store.build(&id).await.unwrap().unwrap()
    };
    let fits = finished(&[1u8; 600], "library://alice/builds/fits:v1").await;
    super::publish_build_result(&h.state, &fits).await.unwrap();
    for library_ref in ["library://alice/builds/big:v1", ""] {
        let big = finished(&[2u8; 600], library_ref).await;
        let refused = super::publish_build_result(&h.state, &big).await;
        match refused {
            Err(crate::api::ApiError::InsufficientStorage(reason)) => assert_eq!(
                reason,
                "the image (600 bytes) does not fit in the library: library storage quota \
                 exceeded: 600 of 1000 bytes used, the image needs 600 more"
            ),
            other => panic!("expected a quota refusal, got {other:?}"),
        }
    }
    // Only the first result is kept: no rows, no file for the refused ones.
    assert_eq!(walk(&h.state.data_dir.join("objects")).len(), 1);
    let builds = h
        .state
        .store
        .entity_by_name("alice")
        .await
        .unwrap()
        .unwrap();
    let collections = h.state.store.collections_of(&builds.id).await.unwrap();
    assert_eq!(collections.len(), 1, "no remote-builds collection");
    let containers = h
        .state
        .store
        .containers_of(&collections[0].id)
        .await
        .unwrap();
    assert_eq!(containers.len(), 1, "no container for the refused result");
    // The same file again costs nothing: it is tagged, not stored twice.
    let again = finished(&[1u8; 600], "library://alice/builds/fits:v2").await;
    super::publish_build_result(&h.state, &again).await.unwrap();
    let tagged = h
        .call(
            Method::GET,
            "/v1/images/alice/builds/fits:v2?arch=amd64",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(tagged.status, StatusCode::OK, "{}", tagged.body);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
