//! Random identifiers and capability tokens, and the digests under which tokens are stored.
//!
//! API tokens are long enough for `singularity remote login --tokenfile`, which refuses tokens
//! shorter than 200 characters (library-api.md §1). Tokens are compared by their SHA-256 digest,
//! so the database never holds a usable token.

use sha2::{Digest, Sha256};

/// Prefix of API tokens, so a leaked one is recognisable in logs and scanners.
const TOKEN_PREFIX: &str = "kiln_";

/// Random bytes in an API token; hex-encoded they make the token 205 characters long.
const TOKEN_BYTES: usize = 100;

/// Random bytes in a capability token (upload and download URLs).
const CAPABILITY_BYTES: usize = 32;

fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::fill(&mut bytes[..]);
    hex::encode(bytes)
}

/// A new API token: `kiln_` and 200 hex digits.
pub fn new_api_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_hex(TOKEN_BYTES))
}

/// A new one-time capability for a URL: 64 hex digits.
pub fn new_capability() -> String {
    random_hex(CAPABILITY_BYTES)
}

/// The digest a token is stored and looked up under: lowercase hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new build id: 24 lowercase hex digits, like the MongoDB ObjectIDs the hosted service uses
/// (build-api.md §1.1): 4 bytes of Unix seconds (so ids sort by submission) and 8 random bytes.
pub fn new_build_id(now_ms: i64) -> String {
    let seconds = u32::try_from(now_ms.div_euclid(1000)).unwrap_or(u32::MAX);
    format!("{seconds:08x}{}", random_hex(8))
}

/// True when `id` has the shape of a build id (24 lowercase hex digits).
pub fn is_build_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let token = new_api_token();
        assert_eq!(token.len(), 205);
        assert!(token.starts_with("kiln_"));
        assert_ne!(token, new_api_token());
        let id = new_build_id(1_764_254_820_000);
        assert!(is_build_id(&id), "{id}");
        assert!(id.starts_with(&format!("{:08x}", 1_764_254_820u32)));
        assert!(!is_build_id("5FE5B3609D4B6974C4FA0C99"));
        assert!(!is_build_id("../etc/passwd"));
        assert_eq!(new_capability().len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
