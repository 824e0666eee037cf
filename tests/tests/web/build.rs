//! A real build from the web form: the scheduler, `kiln-worker serve` processes and the
//! fixture registry (`kiln_tests::cluster`, as the remote-build suite starts them), driven from
//! Chromium. Sign in with the admin's token, submit busybox with an `echo` in `%post`, watch the
//! line arrive while the build still runs, see success, fetch the SIF through the page's link
//! and let siftool judge it; and cancel a long build from its page.

use std::time::Duration;

use kiln_tests::cluster::Db;
use serde_json::json;

use super::browser::Browser;
use crate::remote::{BUILD_TIMEOUT, busybox_definition, cluster, registry, siftool_list};

/// Puts `definition` into the form's text area and submits it; returns the new build's id.
async fn submit(browser: &Browser, definition: &str) -> String {
    browser
        .client
        .execute(
            "const t = document.getElementById('definition'); t.value = arguments[0]; \
             t.dispatchEvent(new Event('input'));",
            vec![json!(definition)],
        )
        .await
        .unwrap();
    browser.click("#build-button").await;
    browser
        .wait_for_script(
            "the build page",
            "location.pathname.startsWith('/builds/')",
            Duration::from_secs(30),
        )
        .await;
    browser
        .url()
        .await
        .trim_start_matches("/builds/")
        .to_owned()
}

#[tokio::test]
async fn a_build_from_the_form_streams_its_log_and_offers_the_image() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/build", cluster.base)).await;
    browser.sign_in_with_token(&cluster.token).await;
    browser.screenshot("build-form.png").await;

    // The marker is computed by the shell, so only the command's output can contain it; the
    // sleep keeps the build running after it.
    let definition = busybox_definition(&registry, "    echo \"web-marker-$((6*7))\"\n    sleep 4");
    let id = submit(&browser, &definition).await;
    assert_eq!(id.len(), 24, "{id}");
    browser
        .wait_for_script(
            "the %post line in the live log while the build runs",
            "document.getElementById('log').textContent.includes('web-marker-42') && \
             document.getElementById('build').dataset.state === 'running'",
            BUILD_TIMEOUT,
        )
        .await;
    browser
        .wait_for_script(
            "success",
            "document.getElementById('build').dataset.state === 'succeeded' && \
             !document.getElementById('result').hidden",
            BUILD_TIMEOUT,
        )
        .await;
    browser
        .wait_for_script(
            "the end of the log",
            "document.getElementById('build').dataset.logClosed === '1000'",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(browser.text("#build-state").await, "succeeded");
    assert!(
        !browser
            .find("#cancel-button")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "a finished build offers no cancel"
    );
    browser.screenshot("build-finished.png").await;

    // The page's link downloads the SIF with the session; its digest is the one shown.
    let shown_sha = browser.text("#image-sha256").await;
    let fetched = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(document.getElementById('download-link').href) \
               .then(r => r.arrayBuffer()) \
               .then(b => crypto.subtle.digest('SHA-256', b).then(d => done({size: b.byteLength, \
                 sha: [...new Uint8Array(d)].map(x => x.toString(16).padStart(2, '0')).join('')})));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fetched["sha"], json!(shown_sha), "{fetched}");
    let status = cluster.status(&id).await;
    assert_eq!(fetched["size"], status["imageSize"], "{status}");

    let pull = browser.value("#pull-command").await;
    let library_ref = status["libraryRef"].as_str().unwrap().to_owned();
    assert_eq!(pull, format!("singularity pull --arch amd64 {library_ref}"));
    let image = cluster.download(&library_ref).await;
    let listed = siftool_list(cluster.scratch(), &image);
    assert!(listed.contains("FS"), "{listed}");

    // The history lists it.
    browser.goto(&format!("{}/builds", cluster.base)).await;
    assert!(browser.text("#history").await.contains(&id));

    browser.close().await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_long_build_is_cancelled_from_its_page() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/build", cluster.base)).await;
    browser.sign_in_with_token(&cluster.token).await;
    let definition = busybox_definition(&registry, "    echo long-build-started\n    sleep 300");
    let id = submit(&browser, &definition).await;
    browser
        .wait_for_script(
            "the build running its %post",
            "document.getElementById('log').textContent.includes('long-build-started')",
            BUILD_TIMEOUT,
        )
        .await;
    browser.click("#cancel-button").await;
    browser
        .wait_for_script(
            "the page showing the build cancelled",
            "document.getElementById('build').dataset.state === 'cancelled' && \
             getComputedStyle(document.getElementById('cancel-button')).display === 'none'",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(cluster.state(&id).await, "cancelled");
    assert!(browser.text("#build-timing-label").await == "Took");

    browser.close().await;
    cluster.stop().await;
}
