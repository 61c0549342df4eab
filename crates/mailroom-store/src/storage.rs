//! The storage alarm: whether the disk under the data folder was found full, and logging that once a
//! minute rather than at every failed write (the engine retries several writes a second).
//!
//! It is process-wide: one process serves one data folder.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// When a write last failed for lack of space (ms since the epoch; 0 = never, or cleared).
static FULL_SINCE_MS: AtomicI64 = AtomicI64::new(0);
/// When the alarm was last logged.
static LOGGED_AT_MS: AtomicI64 = AtomicI64::new(0);
/// The last reason, for `/healthz`.
static REASON: Mutex<String> = Mutex::new(String::new());

/// How often a full disk is logged while it lasts.
const LOG_EVERY_MS: i64 = 60_000;

/// Records that a write failed because the disk is full; logs it at most once a minute.
pub fn note_storage_full(reason: &str) {
    let now = crate::now_ms();
    FULL_SINCE_MS.store(now, Ordering::Release);
    if let Ok(mut last) = REASON.lock() {
        reason.clone_into(&mut last);
    }
    let logged = LOGGED_AT_MS.load(Ordering::Acquire);
    if now - logged >= LOG_EVERY_MS
        && LOGGED_AT_MS
            .compare_exchange(logged, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        tracing::error!(event = "storage_full", %reason,
            "the disk under the data folder is full: new mail and changes are refused (507 storage_full) until space is freed; \
             this is logged once a minute while it lasts");
    }
}

/// The reason writes failed for lack of space, if that has been seen and not cleared since, and
/// whether it was seen within the last `recent_ms`.
pub fn storage_full(recent_ms: i64) -> Option<(String, bool)> {
    let since = FULL_SINCE_MS.load(Ordering::Acquire);
    (since != 0).then(|| {
        (
            REASON.lock().map(|r| r.clone()).unwrap_or_default(),
            crate::now_ms() - since < recent_ms,
        )
    })
}

/// Clears the alarm once space is known to be available again (a probe write succeeded). Small
/// writes can still succeed on a full disk (SQLite reuses pages of its log), so a successful commit
/// alone does not clear it; and the once-a-minute log holds across a disk that fills and frees.
pub fn clear_storage_full() {
    if FULL_SINCE_MS.swap(0, Ordering::AcqRel) != 0 {
        tracing::info!(
            event = "storage_available",
            "the disk under the data folder has room again"
        );
    }
}

/// Whether an sqlx error is a full disk: SQLite's "database or disk is full" (SQLITE_FULL, 13) or
/// PostgreSQL's `disk_full` (SQLSTATE 53100).
pub(crate) fn sqlx_is_full(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "13" || code == "53100")
}

/// Whether a rusqlite error is SQLITE_FULL.
pub(crate) fn rusqlite_is_full(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(failure, _) if failure.code == rusqlite::ErrorCode::DiskFull)
}

/// Whether an I/O error is a full disk (ENOSPC) or quota (EDQUOT).
pub fn io_is_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
