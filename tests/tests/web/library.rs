//! The library browser and the fleet view in Chromium, on a real cluster (scheduler, workers,
//! fixture registry): a build puts an image into `alice/webtests/hello:v1`; a stranger sees the
//! public entity; `alice` signs in and clicks from entity to collection to container, where the
//! tag shows its arch, size, sha256 and the pull command; an admin opens the fleet page and
//! sees the worker that built it.

use std::time::Duration;

use kiln_tests::cluster::Db;

use super::browser::Browser;
use crate::remote::{BUILD_TIMEOUT, busybox_definition, cluster, registry};

/// Clicks the link whose text is `text` and waits for `path` to open.
async fn follow(browser: &Browser, text: &str, path: &str) {
    browser
        .find(&format!("main table a[href='{path}']"))
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {text}: {e}"));
    browser
        .wait_for_script(
            &format!("the page {path}"),
            &format!("location.pathname === '{path}'"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        browser.text("h1").await,
        path.trim_start_matches("/library/")
    );
}

#[tokio::test]
async fn browse_the_library_to_a_pull_command_and_see_the_fleet() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let submitted = cluster
        .submit(
            &busybox_definition(&registry, "    echo library-browser"),
            None,
            "library://alice/webtests/hello:v1",
        )
        .await;
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    let id = submitted.body["data"]["id"].as_str().unwrap().to_owned();
    let status = cluster.wait_complete(&id, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let size = status["imageSize"].as_u64().unwrap();
    let checksum = status["imageChecksum"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let browser = Browser::start().await;
    // A stranger sees the public entity and is offered to sign in.
    browser.goto(&format!("{}/library", cluster.base)).await;
    assert!(browser.text("#entities").await.contains("alice"));
    browser.click("#sign-in-link").await;
    browser.sign_in_with_token(&cluster.token).await;

    browser.click("header nav a[href='/library']").await;
    browser
        .wait_for_script(
            "the library index",
            "location.pathname === '/library'",
            Duration::from_secs(10),
        )
        .await;
    follow(&browser, "alice", "/library/alice").await;
    follow(&browser, "webtests", "/library/alice/webtests").await;
    follow(&browser, "hello", "/library/alice/webtests/hello").await;

    let row = browser.text("#tags tbody[data-tag='v1']").await;
    assert!(row.contains("amd64"), "{row}");
    let sha = browser.text("#tags tbody[data-tag='v1'] td.sha").await;
    assert_eq!(sha.len(), 64, "{sha}");
    if !checksum.is_empty() {
        assert!(checksum.ends_with(&sha), "{checksum} vs {sha}");
    }
    let size_title = browser
        .find("#tags tbody[data-tag='v1'] td[title]")
        .await
        .attr("title")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(size_title, format!("{size} bytes"));
    let command = browser
        .value("#tags tbody[data-tag='v1'] input.pull-command")
        .await;
    assert_eq!(
        command,
        "singularity pull --arch amd64 library://alice/webtests/hello:v1"
    );
    browser
        .click("#tags tbody[data-tag='v1'] [data-copy]")
        .await;
    browser
        .wait_for_script(
            "the copy button confirming",
            "document.querySelector(\"#tags tbody[data-tag='v1'] [data-copy]\").textContent === 'Copied'",
            Duration::from_secs(5),
        )
        .await;
    browser.screenshot("library-container.png").await;

    // alice is no admin: no fleet link, and the page refuses her.
    assert!(
        !browser.text("header nav").await.contains("Fleet"),
        "a user sees no fleet link"
    );
    browser
        .goto(&format!("{}/admin/workers", cluster.base))
        .await;
    assert!(
        browser
            .find("#forbidden")
            .await
            .is_displayed()
            .await
            .unwrap()
    );

    // An admin sees the worker that built the image.
    browser.sign_out().await;
    let admin_token = cluster.admin_token().await;
    browser.sign_in_with_token(&admin_token).await;
    browser.click("header nav a[href='/admin/workers']").await;
    browser
        .wait_for_script(
            "the fleet page",
            "location.pathname === '/admin/workers'",
            Duration::from_secs(10),
        )
        .await;
    let worker = cluster.workers[0].id.clone();
    let row = browser
        .text(&format!("#workers tr[data-worker-id='{worker}']"))
        .await;
    assert!(row.contains("amd64"), "{row}");
    assert!(row.contains("idle") || row.contains("busy"), "{row}");
    assert!(!row.contains("lost"), "{row}");
    browser.screenshot("fleet.png").await;

    browser.close().await;
    cluster.stop().await;
}
