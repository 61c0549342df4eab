//! How the SQLite store keeps its files: the page size of a new database, and a write-ahead log that
//! is restarted from its beginning even while writes never pause. (SQLite only: another backend has
//! no such files.)

mod common;

use common::{account_input, message_with_text};
use mailroom_store::{SecretBox, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn open_store(dir: &Path) -> (Store, PathBuf) {
    let path = dir.join("store.db");
    let store = Store::open(
        &format!("sqlite://{}", path.display()),
        SecretBox::from_key(&[7u8; 32]).unwrap(),
    )
    .await
    .unwrap();
    (store, path)
}

async fn account(store: &Store) -> Uuid {
    store
        .create_account(&account_input("log"), None)
        .await
        .unwrap()
        .id
}

/// The checkpoint sequence number in the log's header: SQLite adds one each time the log is
/// restarted from its beginning.
fn log_restarts(database: &Path) -> u32 {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::read(&wal) {
        Ok(bytes) if bytes.len() >= 16 => u32::from_be_bytes(bytes[12..16].try_into().unwrap()),
        _ => 0,
    }
}

#[tokio::test]
async fn a_new_database_uses_eight_kib_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, path) = open_store(dir.path()).await;
    let connection = rusqlite::Connection::open(&path).unwrap();
    let page_size: i64 = connection
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .unwrap();
    assert_eq!(page_size, 8192);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_restarts_from_its_beginning_while_writes_never_pause() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = open_store(dir.path()).await;
    let account_id = account(&store).await;
    // Sixteen writers that never stop keep the store writer committing back to back, so the
    // background checkpoint never finds the log fully copied on its own.
    let stop = Arc::new(AtomicBool::new(false));
    let body = "x".repeat(4 * 1024);
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (store, stop, body) = (store.clone(), stop.clone(), body.clone());
        writers.push(tokio::spawn(async move {
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                store
                    .insert_message(message_with_text(account_id, None, "log", &body))
                    .await
                    .unwrap();
                written += 1;
            }
            written
        }));
    }
    let first = log_restarts(&path);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_restarts(&path) < first + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarts = log_restarts(&path) - first;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    assert!(
        restarts >= 2,
        "the log was restarted {restarts} times while {written} messages were written"
    );
}
