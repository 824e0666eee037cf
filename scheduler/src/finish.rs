//! Ending a build from the scheduler's side (cancel, dead-lettered job, queue TTL, timeout):
//! the reason goes into the log first, then the state becomes final, so a viewer that sees the
//! final state has already been able to read why.

use crate::store::{FinalState, Result, Store};

/// Writes `note` (a whole line) to the log of build `id`, then moves the build to `outcome`.
/// Returns false when the build was final already (and then nothing changed, except that the
/// note may have been written just before another outcome won).
pub async fn finish_build(
    store: &Store,
    id: &str,
    outcome: &FinalState,
    note: &str,
    now_ms: i64,
) -> Result<bool> {
    store.append_note(id, note).await?;
    store.finish_build(id, outcome, now_ms).await
}

/// [`finish_build`] with the note `FATAL: <the outcome's reason>`, the form SingularityCE's
/// own fatal errors take, for outcomes the scheduler decides (failed, timed out, expired).
pub async fn finish_build_fatally(
    store: &Store,
    id: &str,
    outcome: &FinalState,
    now_ms: i64,
) -> Result<bool> {
    let note = format!(
        "FATAL: {}\n",
        outcome.reason().unwrap_or("the build was stopped")
    );
    finish_build(store, id, outcome, &note, now_ms).await
}

/// Why a build expired: nobody took its job within the queue TTL.
pub fn expired_reason(queue_ttl_seconds: u64) -> String {
    format!(
        "the build waited more than {queue_ttl_seconds} s in the queue without a worker taking it"
    )
}
