//! Passwords of local accounts: Argon2id with a random salt, stored as a PHC string
//! (`$argon2id$v=19$m=...`), so the parameters travel with each hash and can be raised later
//! without invalidating old ones. An admin sets them (`kiln-scheduler admin user passwd`); the
//! web builder checks them at sign-in.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Longest password accepted, bytes: hashing cost is per byte, and sign-in is unauthenticated.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Shortest password an admin may set, characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Why a password could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`] or longer than [`MAX_PASSWORD_BYTES`].
    #[error(
        "a password must have at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes"
    )]
    Length,
    /// The hasher failed (no randomness for the salt).
    #[error("failed to hash the password: {0}")]
    Hash(String),
}

/// The PHC string of `password`, with a fresh salt. Slow on purpose (tens of ms): call it off
/// the async threads.
///
/// # Errors
/// [`PasswordError`].
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::Length);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordError::Hash(error.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false as well for a malformed hash or an
/// oversized password). Slow on purpose, like [`hash_password`].
pub fn verify_password(password: &str, hash: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_salts_differ() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert_ne!(hash, hash_password("correct horse").unwrap());
        assert!(matches!(hash_password("short"), Err(PasswordError::Length)));
    }
}
