//! The page frame every web builder page shares (header, navigation, who is signed in, sign-out)
//! and the small helpers that put user data into HTML safely. Pages are assembled as strings:
//! every value from a user or the database goes through [`escape`].

use std::fmt::Write;

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::store::Session;

/// Scripts and styles only from our own assets, no inline code, no framing: a value that
/// escaped [`escape`] by mistake still cannot run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Which navigation entry a page belongs to (it is marked `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The build form.
    Build,
    /// The user's builds.
    History,
    /// The library browser.
    Library,
    /// Access tokens.
    Tokens,
    /// The fleet view (admins).
    Fleet,
    /// Pages outside the navigation (sign-in).
    None,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A Unix-ms time as `2026-11-27 17:40 UTC`, in a `<time>` element whose `datetime` scripts can
/// read.
pub fn time(ms: i64) -> String {
    let rfc = crate::clock::rfc3339(ms);
    let shown = format!("{} {} UTC", &rfc[..10], &rfc[11..16]);
    format!("<time datetime=\"{rfc}\">{shown}</time>")
}

/// A duration in ms as `1 h 2 min`, `3 min 4 s` or `5 s`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// A byte count as `1.5 MiB` (and the exact count in a title).
pub fn bytes(size: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // for display only
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{size} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The `singularity pull` command of `library_ref` (`entity/collection/container:tag`, no
/// scheme) for `arch` (`""`: the client's own), as the build page and the library browser show
/// it. It pulls from the client's current remote, which `singularity remote use` sets to Kiln.
pub fn pull_command(arch: &str, library_ref: &str) -> String {
    if arch.is_empty() {
        format!("singularity pull library://{library_ref}")
    } else {
        format!("singularity pull --arch {arch} library://{library_ref}")
    }
}

/// A 404 page for a library path or page this viewer may not see (the same answer whether it
/// does not exist or is hidden).
pub fn not_found(session: Option<&Session>, nav: Nav, what: &str) -> Response {
    let main = format!(
        "<p id=\"not-found\">No {} here, or not one you may see.</p>\
         <p><a href=\"/library\">Back to the library</a></p>",
        escape(what)
    );
    render_with_status(StatusCode::NOT_FOUND, "Not found", nav, session, &main)
}

/// A complete page: `title`, the navigation with `nav` marked, who is signed in, and `main`
/// (already escaped HTML).
pub fn render(title: &str, nav: Nav, session: Option<&Session>, main: &str) -> Response {
    render_with_status(StatusCode::OK, title, nav, session, main)
}

/// [`render`] with another status (a form shown again with its error).
pub fn render_with_status(
    status: StatusCode,
    title: &str,
    nav: Nav,
    session: Option<&Session>,
    main: &str,
) -> Response {
    let mut header = String::new();
    // Strangers browse the public library; the rest needs signing in.
    let is_admin = session.is_some_and(|s| s.user.is_admin);
    header.push_str("<nav aria-label=\"Main\"><ul>");
    for (entry, href, label, shown) in [
        (Nav::Build, "/build", "Build", session.is_some()),
        (Nav::History, "/builds", "My builds", session.is_some()),
        (Nav::Library, "/library", "Library", true),
        (
            Nav::Tokens,
            "/auth/tokens",
            "Access tokens",
            session.is_some(),
        ),
        (Nav::Fleet, "/admin/workers", "Fleet", is_admin),
    ] {
        if !shown {
            continue;
        }
        let current = if entry == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(header, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    header.push_str("</ul></nav>");
    if let Some(session) = session {
        let _ = write!(
            header,
            "<div class=\"who\"><span id=\"signed-in-user\">Signed in as <strong>{}</strong></span>\
             <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" class=\"link\">Sign out</button></form></div>",
            escape(&session.user.name),
            escape(&session.csrf_token),
        );
    } else if nav != Nav::None {
        header.push_str(
            "<div class=\"who\"><a id=\"sign-in-link\" href=\"/login\">Sign in</a></div>",
        );
    }
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Kiln</title><link rel=\"stylesheet\" href=\"/web/style.css\">\
         <script src=\"/web/app.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><a class=\"brand\" href=\"/\">Kiln</a>{header}</header>\
         <main id=\"main\" tabindex=\"-1\"><h1>{title}</h1>{main}</main></body></html>",
        title = escape(title),
    );
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Pages show tokens and private builds: no shared or back-button caches.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_formats() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_encode("/builds?x=1&y"), "/builds%3Fx%3D1%26y");
        assert_eq!(duration(65_000), "1 min 5 s");
        assert_eq!(duration(3_720_000), "1 h 2 min");
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert!(time(1_714_564_800_123).contains(">2024-05-01 12:00 UTC<"));
    }
}
