//! Kiln's end-to-end test support: fixture builders (base images from Debian packages), the
//! private test registry, and helpers shared by the test binary in `tests/tests/`.
