//! The web builder through the router (`tower::ServiceExt::oneshot`): sign-in and sign-out,
//! the token page and what revocation does everywhere, the session cookie on the build API and
//! its same-origin rule. The browser suite in `tests/` drives the same pages in Chromium.

use axum::body::{Body, to_bytes};
use axum::http::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::router;
use crate::api::tests::{Harness, harness};
use crate::config::Limits;
use crate::password::hash_password;

const ORIGIN_URL: &str = "http://kiln.test";

struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
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
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Answer {
            status,
            location,
            set_cookie,
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
    let hash = hash_password("correct horse battery").unwrap();
    h.state
        .store
        .set_password_hash("alice", Some(&hash))
        .await
        .unwrap();
    let answer = call(Method::POST, "/login")
        .same_origin()
        .form(&[
            ("user", "alice"),
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
