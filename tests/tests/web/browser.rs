//! Debian's Chromium, headless, driven through `chromedriver` and the WebDriver protocol
//! (fantoccini). Each [`Browser`] has its own driver on a free port and its own profile
//! directory; dropping it kills the driver's process group and any browser process still using
//! that profile, so a failed test leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// Where Debian's packages put them (`chromium`, `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser window as wide as a laptop's, for screenshots of the whole page.
const WINDOW: (u32, u32) = (1200, 1000);

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the browser tests need Debian's chromium and chromium-driver (tests/run.sh installs them)"
        );
        let port = kiln_tests::net::free_port().expect("a free port");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut driver = Command::new(CHROMEDRIVER);
        driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so Drop reaches the browser it starts too.
        std::os::unix::process::CommandExt::process_group(&mut driver, 0);
        let driver = driver.spawn().expect("start chromedriver");
        let mut browser_args = vec![
            "--headless".to_owned(),
            // Tests run as root, where Chromium's sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ];
        browser_args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "goog:chromeOptions": { "binary": CHROMIUM, "args": browser_args },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("no WebDriver session from {url} within 30 s: {error}"),
            }
        };
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element `css`, waiting up to 10 s for it to exist.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => panic!("no element {css} on {}: {error}", self.url().await),
        }
    }

    /// Types `text` into the field `css` after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// The text of the element `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The `value` property of the field `css`.
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// The page's path and query.
    pub async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            },
            Err(error) => format!("(unknown: {error})"),
        }
    }

    /// Waits up to `deadline` until the script `condition` (an expression) is true; panics
    /// naming `what` otherwise.
    pub async fn wait_for_script(&self, what: &str, condition: &str, deadline: Duration) {
        let start = Instant::now();
        let script = format!("return Boolean({condition});");
        loop {
            if let Ok(value) = self.client.execute(&script, vec![]).await
                && value.as_bool() == Some(true)
            {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "{what} did not happen within {deadline:?} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in with an access token on the sign-in page the browser is on or going to.
    pub async fn sign_in_with_token(&self, token: &str) {
        self.wait_for_script(
            "the sign-in page",
            "location.pathname === '/login'",
            Duration::from_secs(10),
        )
        .await;
        self.fill("#token", token).await;
        self.click("#sign-in").await;
        self.find("#signed-in-user").await;
    }

    /// Signs out with the header's button and waits for the sign-in page.
    pub async fn sign_out(&self) {
        self.click("header button[type=submit]").await;
        self.wait_for_script(
            "the sign-in page",
            "location.pathname === '/login'",
            Duration::from_secs(10),
        )
        .await;
    }

    /// Saves a PNG of the page as `name` under `target/web-screenshots/`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the WebDriver session (the browser quits), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// `<target dir>/web-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("web-screenshots")
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
        kill_users_of(self.profile.path());
    }
}

/// Kills the processes whose command line names `profile` (browser processes that left the
/// driver's process group).
fn kill_users_of(profile: &Path) {
    let needle = profile.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
