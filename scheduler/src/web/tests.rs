//! The web builder through the router (`tower::ServiceExt::oneshot`): sign-in and sign-out and
//! the delay after failed sign-ins, the token page and what revocation does everywhere, the
//! session cookie on the build API and its same-origin rule, the library browser's access
//! rules and escaping, the admins' fleet page. The browser suite in `tests/` drives the same
//! pages in Chromium.

use std::net::SocketAddr;

use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::header::{COOKIE, LOCATION, ORIGIN, RETRY_AFTER, SET_COOKIE};
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::router;
use crate::api::tests::{Harness, harness};
use crate::config::Limits;
use crate::password::hash_password;
use crate::store::{CollectionRow, ContainerRow, EntityRow, ImageRow, UserLimits};

const ORIGIN_URL: &str = "http://kiln.test";

struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    retry_after: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

struct Call<'a> {
    method: Method,
    uri: &'a str,
    cookie: Option<&'a str>,
    bearer: Option<&'a str>,
    origin: bool,
    form: Option<String>,
    json: Option<Value>,
    peer: Option<SocketAddr>,
}

fn call(method: Method, uri: &str) -> Call<'_> {
    Call {
        method,
        uri,
        cookie: None,
        bearer: None,
        origin: false,
        form: None,
        json: None,
        peer: None,
    }
}

impl<'a> Call<'a> {
    fn cookie(mut self, cookie: &'a str) -> Self {
        self.cookie = Some(cookie);
        self
    }
    fn bearer(mut self, token: &'a str) -> Self {
        self.bearer = Some(token);
        self
    }
    fn same_origin(mut self) -> Self {
        self.origin = true;
        self
    }
    fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    super::page::url_encode(k),
                    super::page::url_encode(v)
                )
            })
            .collect();
        self.form = Some(encoded.join("&"));
        self
    }
    fn json(mut self, value: Value) -> Self {
        self.json = Some(value);
        self
    }
    /// Comes from `peer` (as `serve` tells handlers with its connection info).
    fn from(mut self, peer: &str) -> Self {
        self.peer = Some(peer.parse().unwrap());
        self
    }

    async fn send(self, h: &Harness) -> Answer {
        let mut request = Request::builder()
            .method(self.method)
            .uri(self.uri)
            .header("host", "kiln.test");
        if let Some(cookie) = self.cookie {
            request = request.header(COOKIE, format!("kiln_session={cookie}"));
        }
        if let Some(token) = self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if self.origin {
            request = request.header(ORIGIN, ORIGIN_URL);
        }
        if let Some(peer) = self.peer {
            request = request.extension(ConnectInfo(peer));
        }
        let body = if let Some(form) = self.form {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            Body::from(form)
        } else if let Some(json) = self.json {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        } else {
            Body::empty()
        };
        let response = router(h.state.clone())
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let status = response.status();
        let location = header(LOCATION);
        let set_cookie = header(SET_COOKIE);
        let retry_after = header(RETRY_AFTER);
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Answer {
            status,
            location,
            set_cookie,
            retry_after,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// The session value a sign-in answer sets.
fn session_value(answer: &Answer) -> String {
    let cookie = answer.set_cookie.as_deref().expect("a Set-Cookie header");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    cookie
        .strip_prefix("kiln_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned()
}

/// The CSRF token in a page's forms.
fn csrf_of(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a csrf field")
        + 19;
    page[start..start + 64].to_owned()
}

async fn signed_in(h: &Harness) -> String {
    signed_in_as(h, "alice").await
}

/// Signs in as `name` (an existing user) with a password set for it; the session cookie.
async fn signed_in_as(h: &Harness, name: &str) -> String {
    let hash = hash_password("correct horse battery").unwrap();
    h.state
        .store
        .set_password_hash(name, Some(&hash))
        .await
        .unwrap();
    let answer = call(Method::POST, "/login")
        .same_origin()
        .form(&[
            ("user", name),
            ("password", "correct horse battery"),
            ("next", "/builds"),
        ])
        .send(h)
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    assert_eq!(answer.location.as_deref(), Some("/builds"));
    session_value(&answer)
}

#[tokio::test]
async fn sign_in_with_a_password_or_a_token_and_sign_out() {
    let h = harness(Limits::default()).await;
    let answer = call(Method::GET, "/auth/tokens").send(&h).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location.as_deref(), Some("/login?next=/auth/tokens"));

    let session = signed_in(&h).await;
    let page = call(Method::GET, "/build").cookie(&session).send(&h).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text.contains("Signed in as <strong>alice</strong>"),
        "{}",
        page.text
    );

    // A wrong password, and a sign-in posted from another site, start nothing.
    let wrong = call(Method::POST, "/login")
        .same_origin()
        .form(&[("user", "alice"), ("password", "wrong horse battery")])
        .send(&h)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.set_cookie.is_none());
    assert!(wrong.text.contains("Wrong user name, password or token."));
    let forged = call(Method::POST, "/login")
        .form(&[("user", "alice"), ("password", "correct horse battery")])
        .send(&h)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Sign-out needs the form's token, then ends the session.
    let stale = call(Method::POST, "/logout")
        .cookie(&session)
        .form(&[("csrf", "nope")])
        .send(&h)
        .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    let csrf = csrf_of(&page.text);
    let out = call(Method::POST, "/logout")
        .cookie(&session)
        .form(&[("csrf", &csrf)])
        .send(&h)
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    let after = call(Method::GET, "/build").cookie(&session).send(&h).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);

    // The admin's token signs in too.
    let with_token = call(Method::POST, "/login")
        .same_origin()
        .form(&[("token", &h.token)])
        .send(&h)
        .await;
    assert_eq!(with_token.status, StatusCode::SEE_OTHER);
    assert_eq!(with_token.location.as_deref(), Some("/build"));
    session_value(&with_token);
}

#[tokio::test]
async fn tokens_are_created_once_listed_with_last_use_and_revoked_everywhere() {
    let h = harness(Limits::default()).await;
    let session = signed_in(&h).await;
    let page = call(Method::GET, "/auth/tokens")
        .cookie(&session)
        .send(&h)
        .await;
    let csrf = csrf_of(&page.text);

    let forged = call(Method::POST, "/auth/tokens")
        .cookie(&session)
        .form(&[("name", "laptop"), ("expires_days", "30"), ("csrf", "x")])
        .send(&h)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let unnamed = call(Method::POST, "/auth/tokens")
        .cookie(&session)
        .form(&[("name", " "), ("expires_days", "30"), ("csrf", &csrf)])
        .send(&h)
        .await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);
    assert!(unnamed.text.contains("A token needs a name"));

    let created = call(Method::POST, "/auth/tokens")
        .cookie(&session)
        .form(&[
            ("name", "laptop <1>"),
            ("expires_days", "30"),
            ("csrf", &csrf),
        ])
        .send(&h)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.text.contains("laptop &lt;1&gt;"));
    assert!(created.text.contains("singularity remote login kiln"));
    let start = created.text.find("value=\"kiln_").unwrap() + 7;
    let token = created.text[start..start + 205].to_owned();

    let status = call(Method::GET, "/v1/token-status")
        .bearer(&token)
        .send(&h)
        .await;
    assert_eq!(status.status, StatusCode::OK);
    let listed = call(Method::GET, "/auth/tokens")
        .cookie(&session)
        .send(&h)
        .await;
    assert!(!listed.text.contains(&token), "a token is shown only once");
    let row = listed.text.split("<tr data-token-id=").nth(1).unwrap();
    assert!(
        row.contains("laptop &lt;1&gt;") && row.contains("active"),
        "{row}"
    );
    assert!(
        !row.contains("<td class=\"last-used\">never"),
        "last use recorded: {row}"
    );

    // A browser session that signed in with the token ends with it.
    let token_session = session_value(
        &call(Method::POST, "/login")
            .same_origin()
            .form(&[("token", &token)])
            .send(&h)
            .await,
    );
    let id = &row[1..25];
    let revoked = call(Method::POST, &format!("/auth/tokens/{id}/revoke"))
        .cookie(&session)
        .form(&[("csrf", &csrf)])
        .send(&h)
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.text);
    let refused = call(Method::GET, "/v1/token-status")
        .bearer(&token)
        .send(&h)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let page = call(Method::GET, "/build")
        .cookie(&token_session)
        .send(&h)
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let listed = call(Method::GET, "/auth/tokens")
        .cookie(&session)
        .send(&h)
        .await;
    assert!(listed.text.contains("status-revoked"));
    let again = call(Method::POST, &format!("/auth/tokens/{id}/revoke"))
        .cookie(&session)
        .form(&[("csrf", &csrf)])
        .send(&h)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

fn submission(definition: &str) -> Value {
    json!({
        "definitionRaw": STANDARD.encode(definition),
        "libraryRef": "",
        "builderRequirements": {"arch": "amd64"},
    })
}

#[tokio::test]
async fn the_session_cookie_drives_the_build_api_from_our_own_pages_only() {
    let h = harness(Limits::default()).await;
    let session = signed_in(&h).await;
    let definition = "Bootstrap: docker\nFrom: busybox\n%post\n    echo hi\n";

    let cross_site = call(Method::POST, "/v1/build")
        .cookie(&session)
        .json(submission(definition))
        .send(&h)
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_eq!(h.state.store.count_builds().await.unwrap(), 0);

    let broken = call(Method::POST, "/v1/build")
        .cookie(&session)
        .same_origin()
        .json(submission("Bootstrap: docker\nFrom: busybox\n%bogus\n"))
        .send(&h)
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    let message = broken.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("definition:3:"), "{message}");
    assert_eq!(h.state.store.count_builds().await.unwrap(), 0);

    let created = call(Method::POST, "/v1/build")
        .cookie(&session)
        .same_origin()
        .json(submission(definition))
        .send(&h)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["data"]["id"].as_str().unwrap().to_owned();

    let view = call(Method::GET, &format!("/web/api/builds/{id}"))
        .cookie(&session)
        .send(&h)
        .await
        .json();
    assert_eq!(view["state"], "queued");
    assert_eq!(view["queuePosition"], 0);
    assert!(view["downloadUrl"].is_null());
    let page = call(Method::GET, &format!("/builds/{id}"))
        .cookie(&session)
        .send(&h)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let history = call(Method::GET, "/builds").cookie(&session).send(&h).await;
    assert!(history.text.contains(&format!("href=\"/builds/{id}\"")));

    // Cancelling with the cookie needs our origin too.
    let forged = call(Method::PUT, &format!("/v1/build/{id}/_cancel"))
        .cookie(&session)
        .send(&h)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let cancelled = call(Method::PUT, &format!("/v1/build/{id}/_cancel"))
        .cookie(&session)
        .same_origin()
        .send(&h)
        .await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
    let view = call(Method::GET, &format!("/web/api/builds/{id}"))
        .bearer(&h.token)
        .send(&h)
        .await
        .json();
    assert_eq!(view["state"], "cancelled");
    assert_eq!(view["isFinal"], true);

    // Someone else's build is not found, by page or by API.
    let other = call(Method::GET, "/builds/000000000000000000000000")
        .cookie(&session)
        .send(&h)
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn assets_are_embedded_and_pages_forbid_inline_code() {
    let h = harness(Limits::default()).await;
    let css = call(Method::GET, "/web/style.css").send(&h).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.text.contains(".gutter"));
    let js = call(Method::GET, "/web/app.js").send(&h).await;
    assert!(js.text.contains("/v1/build-ws/"));
    let missing = call(Method::GET, "/web/../Cargo.toml").send(&h).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let login = call(Method::GET, "/login").send(&h).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .text
            .contains("<label for=\"password\">Password</label>")
    );
    assert!(!login.text.contains("<script>") && !login.text.contains("style=\""));
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_slowed_for_that_address_only() {
    let h = harness(Limits::default()).await;
    signed_in(&h).await;
    let attempt = |password: &'static str, peer: &'static str| {
        call(Method::POST, "/login")
            .same_origin()
            .from(peer)
            .form(&[("user", "alice"), ("password", password)])
    };
    for _ in 0..5 {
        let wrong = attempt("wrong", "192.0.2.7:4000").send(&h).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits, and is not checked until then.
    let held = attempt("correct horse battery", "192.0.2.7:4001")
        .send(&h)
        .await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "{}", held.text);
    assert_eq!(held.retry_after.as_deref(), Some("1"));
    assert!(held.set_cookie.is_none());
    assert!(
        held.text
            .contains("Too many failed sign-ins. Try again in 1 second."),
        "{}",
        held.text
    );
    // The same user from elsewhere is not slowed: an attacker cannot lock them out.
    let elsewhere = attempt("correct horse battery", "198.51.100.9:5000")
        .send(&h)
        .await;
    assert_eq!(elsewhere.status, StatusCode::SEE_OTHER);

    // Once the delay passed, the next failure doubles it; the right password clears it.
    h.clock.advance(1000);
    let wrong = attempt("wrong", "192.0.2.7:4002").send(&h).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let held = attempt("correct horse battery", "192.0.2.7:4003")
        .send(&h)
        .await;
    assert_eq!(held.retry_after.as_deref(), Some("2"));
    h.clock.advance(2000);
    let right = attempt("correct horse battery", "192.0.2.7:4004")
        .send(&h)
        .await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    let wrong = attempt("wrong", "192.0.2.7:4005").send(&h).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "counting anew");

    // Guessing tokens from one address is slowed too, after more tries.
    for _ in 0..20 {
        let wrong = call(Method::POST, "/login")
            .same_origin()
            .from("203.0.113.5:6000")
            .form(&[("token", "kiln_guess")])
            .send(&h)
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let held = call(Method::POST, "/login")
        .same_origin()
        .from("203.0.113.5:6000")
        .form(&[("token", &h.token)])
        .send(&h)
        .await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Puts `entity/collection/container` (created as needed, with these privacy flags) in the
/// library, owned by `owner`, with an uploaded image tagged `tags` (`(arch, tag)`); returns the
/// image's hash.
async fn put_image(
    h: &Harness,
    owner: i64,
    path: &str,
    private: (bool, bool),
    tags: &[(&str, &str)],
) -> String {
    let store = &h.state.store;
    let [entity, collection, container]: [&str; 3] =
        path.split('/').collect::<Vec<_>>().try_into().unwrap();
    let now_ms = h.state.clock.now_ms();
    let id = |n: usize| format!("{n:024x}");
    // The clock moves on by 1 ms per image, so ids from it never repeat.
    let count = usize::try_from(now_ms).unwrap() * 10;
    store
        .insert_entity(&EntityRow {
            id: id(count),
            name: entity.into(),
            owner_id: owner,
            description: format!("entity {entity}"),
            default_private: false,
            created_ms: now_ms,
        })
        .await
        .unwrap();
    let entity = store.entity_by_name(entity).await.unwrap().unwrap();
    store
        .insert_collection(&CollectionRow {
            id: id(count + 1),
            entity_id: entity.id.clone(),
            name: collection.into(),
            description: format!("collection {collection}"),
            private: private.0,
            created_ms: now_ms,
        })
        .await
        .unwrap();
    let collection = store
        .collection_by_name(&entity.id, collection)
        .await
        .unwrap()
        .unwrap();
    store
        .insert_container(&ContainerRow {
            id: id(count + 2),
            collection_id: collection.id.clone(),
            name: container.into(),
            description: format!("container {container}"),
            private: private.1,
            download_count: 0,
            created_ms: now_ms,
        })
        .await
        .unwrap();
    let container = store
        .container_by_name(&collection.id, container)
        .await
        .unwrap()
        .unwrap();
    let hash = format!("sha256.{:064x}", count + 3);
    let image_id = id(count + 3);
    store
        .insert_image(&ImageRow {
            id: image_id.clone(),
            container_id: container.id.clone(),
            hash: hash.clone(),
            description: String::new(),
            arch: "amd64".into(),
            size: 1536,
            uploaded: true,
            object_key: format!("images/{image_id}"),
            build_id: None,
            expires_ms: None,
            created_ms: now_ms,
        })
        .await
        .unwrap();
    for (arch, tag) in tags {
        store
            .set_tag(&container.id, arch, tag, &image_id)
            .await
            .unwrap();
    }
    h.clock.advance(1);
    hash
}

#[tokio::test]
async fn the_library_browser_shows_what_the_library_api_would() {
    let h = harness(Limits::default()).await;
    let alice = h.user.id;
    let bob = h
        .state
        .store
        .add_user("bob", false, UserLimits::default(), 0)
        .await
        .unwrap();
    let hash = put_image(
        &h,
        alice,
        "alice/tools/hello",
        (false, false),
        &[("amd64", "v1"), ("", "v1"), ("arm64", "v1")],
    )
    .await;
    put_image(
        &h,
        alice,
        "alice/tools/draft",
        (false, true),
        &[("amd64", "wip")],
    )
    .await;
    put_image(
        &h,
        alice,
        "alice/secret/plans",
        (true, false),
        &[("amd64", "latest")],
    )
    .await;
    put_image(
        &h,
        bob.id,
        "bob/private/only",
        (true, false),
        &[("amd64", "latest")],
    )
    .await;
    let alice_session = signed_in(&h).await;
    let bob_session = signed_in_as(&h, "bob").await;

    // Anonymous: public content only, and the header offers sign-in.
    let index = call(Method::GET, "/library").send(&h).await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(
        index.text.contains("href=\"/library/alice\""),
        "{}",
        index.text
    );
    assert!(
        !index.text.contains("/library/bob"),
        "bob has nothing public"
    );
    assert!(index.text.contains("id=\"sign-in-link\""));
    let entity = call(Method::GET, "/library/alice").send(&h).await;
    assert!(entity.text.contains("href=\"/library/alice/tools\""));
    assert!(!entity.text.contains("secret"), "{}", entity.text);
    let collection = call(Method::GET, "/library/alice/tools").send(&h).await;
    assert!(
        collection
            .text
            .contains("href=\"/library/alice/tools/hello\"")
    );
    assert!(!collection.text.contains("draft"));
    let container = call(Method::GET, "/library/alice/tools/hello")
        .send(&h)
        .await;
    assert_eq!(container.status, StatusCode::OK);
    let rows: Vec<&str> = container.text.split("<tbody data-tag=").skip(1).collect();
    assert_eq!(
        rows.len(),
        2,
        "v1 for amd64 (both tag forms) and arm64: {}",
        container.text
    );
    assert!(rows[0].contains("<td>amd64</td>") && rows[1].contains("<td>arm64</td>"));
    assert!(rows[0].contains(&hash["sha256.".len()..]));
    assert!(rows[0].contains("1.5 KiB"));
    assert!(
        rows[0].contains("value=\"singularity pull --arch amd64 library://alice/tools/hello:v1\""),
        "{}",
        rows[0]
    );
    assert!(container.text.contains("--library http://kiln.test"));

    // Hidden and missing look alike, to strangers and to other users.
    for (path, missing) in [
        ("/library/alice/secret", "/library/alice/nothing"),
        (
            "/library/alice/secret/plans",
            "/library/alice/nothing/plans",
        ),
        ("/library/alice/tools/draft", "/library/alice/tools/nothing"),
        ("/library/bob/private", "/library/bob/nothing"),
        ("/library/bob/private/only", "/library/bob/private/nothing"),
    ] {
        let hidden = call(Method::GET, path).send(&h).await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{path}");
        let missing = call(Method::GET, missing).send(&h).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(hidden.text, missing.text, "{path}");
        let to_bob = call(Method::GET, path).cookie(&bob_session).send(&h).await;
        let expected = if path.starts_with("/library/bob") {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(to_bob.status, expected, "{path} to bob");
    }
    let nowhere = call(Method::GET, "/library/nobody").send(&h).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);

    // The owner sees their private content, marked.
    let index = call(Method::GET, "/library")
        .cookie(&alice_session)
        .send(&h)
        .await;
    assert!(!index.text.contains("/library/bob"));
    let entity = call(Method::GET, "/library/alice")
        .cookie(&alice_session)
        .send(&h)
        .await;
    assert!(entity.text.contains("href=\"/library/alice/secret\""));
    let collection = call(Method::GET, "/library/alice/tools")
        .cookie(&alice_session)
        .send(&h)
        .await;
    let draft = collection.text.split("draft").nth(2).unwrap();
    assert!(
        draft.starts_with("</a> <span class=\"badge\">private</span>"),
        "{draft}"
    );
    let plans = call(Method::GET, "/library/alice/secret/plans")
        .cookie(&alice_session)
        .send(&h)
        .await;
    assert_eq!(plans.status, StatusCode::OK);
    assert!(plans.text.contains("<dd>private</dd>"));
    let index = call(Method::GET, "/library")
        .cookie(&bob_session)
        .send(&h)
        .await;
    assert!(index.text.contains("href=\"/library/bob\""));
}

#[tokio::test]
async fn hostile_names_and_descriptions_are_escaped() {
    let h = harness(Limits::default()).await;
    let store = &h.state.store;
    let hostile = "<script>alert(1)</script>";
    store
        .insert_entity(&EntityRow {
            id: "e".repeat(24),
            name: hostile.into(),
            owner_id: h.user.id,
            description: "\"><img src=x onerror=alert(2)>".into(),
            default_private: false,
            created_ms: 0,
        })
        .await
        .unwrap();
    store
        .insert_collection(&CollectionRow {
            id: "c".repeat(24),
            entity_id: "e".repeat(24),
            name: "a\"b'c&d".into(),
            description: "<b>bold</b>".into(),
            private: false,
            created_ms: 0,
        })
        .await
        .unwrap();
    let index = call(Method::GET, "/library").send(&h).await;
    assert!(!index.text.contains(hostile) && !index.text.contains("<img"));
    assert!(
        index
            .text
            .contains("href=\"/library/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\">&lt;script&gt;alert(1)&lt;/script&gt;</a>"),
        "{}",
        index.text
    );
    let entity = call(
        Method::GET,
        "/library/%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
    )
    .send(&h)
    .await;
    assert_eq!(entity.status, StatusCode::OK, "{}", entity.text);
    assert!(
        !entity.text.contains(hostile)
            && !entity.text.contains("<img")
            && !entity.text.contains("<b>")
    );
    assert!(
        entity
            .text
            .contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;")
    );
    assert!(entity.text.contains(">a&quot;b&#39;c&amp;d</a>"));
    assert!(entity.text.contains("/a%22b%27c%26d\""));
}

#[tokio::test]
async fn the_fleet_page_is_for_admins_and_marks_lost_workers() {
    use kiln_proto::amqp::WorkerHeartbeat;

    let h = harness(Limits::default()).await;
    h.state
        .store
        .add_user("root", true, UserLimits::default(), 0)
        .await
        .unwrap();
    let now_ms = h.state.clock.now_ms();
    let lost_after_ms = h.state.limits.worker_lost_after_ms();
    let heartbeat = |host: &str, builds: &[&str]| WorkerHeartbeat {
        host: host.into(),
        arch: "amd64".into(),
        worker_version: "0.1.0".into(),
        concurrency: 2,
        builds: builds.iter().map(|b| (*b).to_owned()).collect(),
        is_draining: false,
        stats: Default::default(),
    };
    let store = &h.state.store;
    let mut busy_beat = heartbeat("busy.example", &["0123456789abcdef01234567"]);
    busy_beat.stats.builds_finished = 7;
    busy_beat.stats.builds_failed = 2;
    busy_beat.stats.bytes_pulled = 3 << 20;
    busy_beat.stats.bytes_pushed = 1536;
    store
        .record_heartbeat("w-busy", &busy_beat, now_ms)
        .await
        .unwrap();
    store
        .record_heartbeat(
            "w-gone",
            &heartbeat("<gone>", &[]),
            now_ms - lost_after_ms - 1,
        )
        .await
        .unwrap();

    let anonymous = call(Method::GET, "/admin/workers").send(&h).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    let alice = signed_in(&h).await;
    let refused = call(Method::GET, "/admin/workers")
        .cookie(&alice)
        .send(&h)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.text.contains("w-busy"));
    let build = call(Method::GET, "/build").cookie(&alice).send(&h).await;
    assert!(
        !build.text.contains("/admin/workers"),
        "no Fleet link for users"
    );

    let root = signed_in_as(&h, "root").await;
    let page = call(Method::GET, "/admin/workers")
        .cookie(&root)
        .send(&h)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text
            .contains("href=\"/admin/workers\" aria-current=\"page\">Fleet")
    );
    assert!(
        page.text.contains("2 workers: 1 busy, 0 idle, 1 lost."),
        "{}",
        page.text
    );
    let busy = page.text.split("data-worker-id=\"w-busy\"").nth(1).unwrap();
    let busy = &busy[..busy.find("</tr>").unwrap()];
    for expected in [
        "<td>busy.example</td>",
        "<td>amd64</td>",
        "<td>0.1.0</td>",
        "<td>1 / 2</td>",
        "href=\"/builds/0123456789abcdef01234567\"",
        ">busy</span>",
        "7 finished, 2 failed, 0 cancelled; pulled 3.0 MiB, pushed 1.5 KiB",
    ] {
        assert!(busy.contains(expected), "{expected} in {busy}");
    }
    let gone = page
        .text
        .split("<tr class=\"worker-lost\" data-worker-id=\"w-gone\">")
        .nth(1)
        .unwrap();
    assert!(
        gone.contains("<td>&lt;gone&gt;</td>") && gone.contains(">lost</span>"),
        "{gone}"
    );
}
