//! The web builder in Debian's headless Chromium (`chromium` + `chromium-driver`): a person's
//! path through the pages, asserted on what the page shows. `browser` drives Chromium, `server`
//! runs the scheduler in this process; the screenshots go to `target/web-screenshots/`.

mod browser;
mod build;
mod library;
mod pages;
mod server;
