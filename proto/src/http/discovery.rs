//! The discovery document `GET /assets/config/config.prod.json` (build-api.md §2.2): plain JSON,
//! not enveloped, every top-level value an object, URIs without a trailing slash.

use serde::{Deserialize, Serialize};

/// One service's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Base URL of the service, without a trailing slash (clients append paths by concatenation).
    pub uri: String,
}

/// The services a Kiln deployment offers. SingularityCE's `push` and `pull` abort without a
/// keystore entry, so all four are always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDocument {
    /// The library API (push, pull, search).
    #[serde(rename = "libraryAPI")]
    pub library: ServiceEntry,
    /// The remote build API.
    #[serde(rename = "builderAPI")]
    pub builder: ServiceEntry,
    /// The key server (HKP).
    #[serde(rename = "keystoreAPI")]
    pub keystore: ServiceEntry,
    /// Token verification (`/v1/token-status`).
    #[serde(rename = "tokenAPI")]
    pub token: ServiceEntry,
}

impl ServiceDocument {
    /// Every service at one public base URL (a trailing slash is removed).
    pub fn single_host(public_url: &str) -> Self {
        let uri = public_url.trim_end_matches('/').to_owned();
        let entry = || ServiceEntry { uri: uri.clone() };
        Self {
            library: entry(),
            builder: entry(),
            keystore: entry(),
            token: entry(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_is_an_object_with_a_slashless_uri() {
        let document = ServiceDocument::single_host("http://127.0.0.1:8080/");
        let value = serde_json::to_value(&document).unwrap();
        let services = value.as_object().unwrap();
        for key in ["libraryAPI", "builderAPI", "keystoreAPI", "tokenAPI"] {
            assert_eq!(services[key]["uri"], "http://127.0.0.1:8080", "{key}");
        }
        assert_eq!(services.len(), 4);
    }
}
