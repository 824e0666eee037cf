//! Sign-in, the token page, and the build form's inline errors: everything but a real build,
//! which needs workers.

use std::time::Duration;

use kiln_scheduler::config::Limits;

use super::browser::Browser;
use super::server::{Kiln, PASSWORD, USER};

/// Signs in through the form the browser was sent to, and checks the header says who.
async fn sign_in(browser: &Browser) {
    assert!(
        browser.url().await.starts_with("/login"),
        "{}",
        browser.url().await
    );
    browser.fill("#user", USER).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    browser
        .wait_for_script(
            "the header naming the user",
            "document.getElementById('signed-in-user')",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        browser.text("#signed-in-user").await,
        format!("Signed in as {USER}")
    );
}

#[tokio::test]
async fn sign_in_create_use_and_revoke_a_token() {
    let kiln = Kiln::start(Limits::default()).await;
    let browser = Browser::start().await;

    // A wrong password is refused on the page.
    browser.goto(&kiln.url("/auth/tokens")).await;
    browser.fill("#user", USER).await;
    browser.fill("#password", "not the password").await;
    browser.click("#sign-in").await;
    assert_eq!(
        browser.text("#login-error").await,
        "Wrong user name, password or token."
    );
    sign_in(&browser).await;
    assert_eq!(
        browser.url().await,
        "/auth/tokens",
        "back where the user wanted to go"
    );

    browser.fill("#token-name", "browser test").await;
    browser
        .find("#token-expiry")
        .await
        .select_by_value("7")
        .await
        .unwrap();
    browser.click("#create-token").await;
    let token = browser.value("#new-token").await;
    assert!(
        token.starts_with("kiln_") && token.len() == 205,
        "{token:?}"
    );
    let commands = browser.value("#login-command").await;
    assert!(
        commands.contains(&format!(
            "singularity remote add --no-login kiln {}",
            kiln.base
        )) && commands.contains("singularity remote login kiln"),
        "{commands}"
    );
    browser.click("[data-copy='new-token']").await;
    browser
        .wait_for_script(
            "the copy button confirming",
            "document.querySelector(\"[data-copy='new-token']\").textContent === 'Copied'",
            Duration::from_secs(5),
        )
        .await;

    // The token works on the API, and the page shows its use.
    assert_eq!(kiln.status("/v1/token-status", Some(&token)).await, 200);
    browser.goto(&kiln.url("/auth/tokens")).await;
    let row = "#tokens tbody tr:first-child";
    assert!(browser.text(row).await.contains("browser test"));
    assert_ne!(browser.text(&format!("{row} .last-used")).await, "never");
    assert_eq!(browser.text(&format!("{row} .status")).await, "active");
    assert!(
        !browser.client.source().await.unwrap().contains(&token),
        "the token is shown only once"
    );

    // Revoked: refused at once, listed as revoked.
    browser.click(&format!("{row} button.danger")).await;
    browser
        .wait_for_script(
            "the token listed as revoked",
            "document.querySelector('#tokens tbody tr:first-child .status').textContent === 'revoked'",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(kiln.status("/v1/token-status", Some(&token)).await, 401);

    // Signing out ends the session.
    browser.sign_out().await;
    browser.goto(&kiln.url("/builds")).await;
    assert!(browser.url().await.starts_with("/login"));

    browser.close().await;
    kiln.stop().await;
}

#[tokio::test]
async fn a_broken_definition_is_refused_inline_with_its_line_marked() {
    let kiln = Kiln::start(Limits::default()).await;
    let browser = Browser::start().await;
    browser.goto(&kiln.url("/build")).await;
    sign_in(&browser).await;
    assert_eq!(browser.url().await, "/build");

    // Opened from a file: the third line names a section SingularityCE does not know.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.def");
    std::fs::write(
        &file,
        "Bootstrap: docker\nFrom: busybox\n%bogus\n    echo no\n",
    )
    .unwrap();
    browser
        .find("#definition-file")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    browser
        .wait_for_script(
            "the file loaded into the text area",
            "document.getElementById('definition').value.includes('%bogus')",
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_for_script(
            "five line numbers (the last line is empty)",
            "document.querySelectorAll('#gutter span').length === 5",
            Duration::from_secs(5),
        )
        .await;
    browser.click("#build-button").await;
    browser
        .wait_for_script(
            "the inline error",
            "!document.getElementById('definition-errors').hidden",
            Duration::from_secs(10),
        )
        .await;
    let error = browser.text("#definition-error-text").await;
    assert!(error.starts_with("definition:3:"), "{error}");
    assert!(
        browser
            .text("#definition-errors")
            .await
            .contains("Nothing was queued")
    );
    let marked = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#gutter .error-line')].map(e => e.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(marked, serde_json::json!(["3"]));
    assert_eq!(
        browser
            .find("#definition")
            .await
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert_eq!(browser.url().await, "/build", "no build page was opened");
    browser.screenshot("build-form-error.png").await;

    // Nothing was queued: the history is empty.
    browser.goto(&kiln.url("/builds")).await;
    assert!(browser.text("main").await.contains("No builds yet"));

    // The form on a phone-sized screen still shows the whole editor and the button.
    browser.client.set_window_size(380, 800).await.unwrap();
    browser.goto(&kiln.url("/build")).await;
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        serde_json::json!(true),
        "the page scrolls sideways"
    );
    browser.screenshot("build-form-narrow.png").await;

    browser.close().await;
    kiln.stop().await;
}
