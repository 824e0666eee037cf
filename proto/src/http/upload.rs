//! Answers to Kiln's own upload endpoints (not used by stock clients): what the scheduler stored.

use serde::{Deserialize, Serialize};

/// A stored upload: a build context archive or a build result, as the scheduler measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// Length in bytes.
    pub size: u64,
    /// `sha256.<lowercase hex>` of the bytes.
    pub digest: String,
}
