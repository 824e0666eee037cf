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
    let (container, id) = create_image(&h, &alice, "alice/secret/thing", &hash_of(&file)).await;
    upload(&h, &alice, &id, &file).await;
    tag(&h, &alice, &container, &id, "amd64", "latest").await;
    let collection = h
        .call(
            Method::GET,
            "/v1/collections/alice/secret",
            Some(&alice),
            Body::empty(),
        )
        .await;
    // Make the collection private the way a client would create one.
    let private = json_call(
        &h,
        Method::POST,
        "/v1/collections",
        &alice,
        json!({"name": "hidden", "entity": collection.body["data"]["entity"], "private": true}),
    )
    .await;
    assert_eq!(private.body["data"]["private"], true);
    let (hidden_container, hidden_id) =
        create_image(&h, &alice, "alice/hidden/thing", &hash_of(&file)).await;
    upload(&h, &alice, &hidden_id, &file).await;
    tag(&h, &alice, &hidden_container, &hidden_id, "amd64", "latest").await;
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

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
