//! The blob store kept in PostgreSQL (`blob_store = "database"`): files in 1 MiB chunks, written in
//! one transaction under their SHA-256, read back whole or streamed, stored once per content, and
//! collected only once old enough; and what received mail writes (batches, pieces) on disk and in
//! the database alike.

use futures_util::StreamExt;
use mailroom_store::{BlobError, BlobStore, SecretBox, Store};
use std::time::Duration;

async fn database_blobs() -> (BlobStore, Store, mailroom_testkit::TestDatabase) {
    let database = mailroom_testkit::TestDatabase::create().await.unwrap();
    let store = Store::open(&database.url, SecretBox::from_key(&[3u8; 32]).unwrap())
        .await
        .unwrap();
    (BlobStore::in_database(&store).unwrap(), store, database)
}

fn pieces(
    bytes: &[u8],
    size: usize,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
    futures_util::stream::iter(
        bytes
            .chunks(size)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn a_file_is_stored_in_chunks_once_per_content_and_read_back_whole_or_streamed() {
    let (blobs, _store, _database) = database_blobs().await;
    assert!(blobs.is_database());
    // 2.5 MiB in odd-sized pieces: three chunks.
    let file: Vec<u8> = (0..2_621_440u32).map(|i| (i % 251) as u8).collect();
    let (sha256, size) = blobs
        .write_stream(pieces(&file, 333_333), 10 << 20)
        .await
        .unwrap();
    assert_eq!(size, file.len() as u64);
    assert_eq!(blobs.read(&sha256).await.unwrap(), file);
    let mut streamed = Vec::new();
    let mut chunks = 0;
    let mut stream = blobs.open(&sha256).await.unwrap();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 1024 * 1024);
        streamed.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert_eq!((streamed == file, chunks), (true, 3));
    // The same content again: the same blob.
    let (again, _) = blobs
        .write_stream(pieces(&file, 1 << 20), 10 << 20)
        .await
        .unwrap();
    assert_eq!(again, sha256);
    // Too large: refused, nothing left.
    let refused = blobs.write_stream(pieces(&file, 1 << 20), 1 << 20).await;
    assert!(matches!(refused, Err(BlobError::TooLarge { .. })));
    // Collected only once older than the given age.
    assert!(
        !blobs
            .remove_if_older_than(&sha256, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    assert!(
        blobs
            .remove_if_older_than(&sha256, Duration::ZERO)
            .await
            .unwrap()
    );
    assert_eq!(
        blobs.read(&sha256).await.unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

/// Received mail is written in batches of bytes already in memory, and large messages piece by
/// piece: both land under their SHA-256, on disk and in the database alike.
#[tokio::test]
async fn batches_and_pieces_are_stored_under_their_sha256_on_disk_and_in_the_database() {
    use mailroom_store::HashedBytes;
    use std::io::Write;
    let (database_blobs, _store, _database) = database_blobs().await;
    let folder = tempfile::tempdir().unwrap();
    for blobs in [BlobStore::new(folder.path()), database_blobs] {
        let one = bytes::Bytes::from_static(b"first message");
        let two = bytes::Bytes::from(vec![7u8; 3 * 1024 * 1024 + 1]);
        let batch = vec![
            HashedBytes::new(one.clone()),
            HashedBytes::new(two.clone()),
            // The same content twice in a batch, and again later: stored once.
            HashedBytes::new(one.clone()),
        ];
        let names: Vec<String> = batch.iter().map(|b| b.sha256().to_owned()).collect();
        blobs.write_batch(batch).await.unwrap();
        blobs
            .write_batch(vec![HashedBytes::new(one.clone())])
            .await
            .unwrap();
        assert_eq!(blobs.read(&names[0]).await.unwrap(), one);
        assert_eq!(blobs.read(&names[1]).await.unwrap(), two);

        let mut writer = blobs.writer().unwrap();
        for piece in two.chunks(1_000_003) {
            writer.write_all(piece).unwrap();
        }
        assert_eq!(std::fs::read(writer.path()).unwrap(), two);
        let (sha256, size) = writer.keep().await.unwrap();
        assert_eq!(
            (sha256.as_str(), size),
            (names[1].as_str(), two.len() as u64)
        );

        // A writer dropped before it is kept leaves nothing behind.
        let mut abandoned = blobs.writer().unwrap();
        abandoned.write_all(b"half a message").unwrap();
        let path = abandoned.path().to_owned();
        drop(abandoned);
        assert!(!path.exists());
    }
    // On disk: only the blobs (no temporary file) under the folder.
    let mut files = Vec::new();
    for entry in walk(folder.path()) {
        files.push(entry.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| !f.starts_with('.')));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn temporary_files_a_crash_left_behind_are_removed_once_stale_and_nothing_else_is() {
    let folder = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(folder.path());
    std::fs::create_dir_all(folder.path().join("ab")).unwrap();
    let stale = [
        folder.path().join(".mailroom-in-1"),
        folder.path().join("ab/.mailroom-in-2"),
    ];
    let kept = [
        folder.path().join(".mailroom-in-fresh"),
        folder.path().join("ab/ab12"),
    ];
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for path in stale.iter().chain(&kept) {
        let file = std::fs::File::create(path).unwrap();
        if stale.contains(path) || path.ends_with("ab12") {
            file.set_modified(two_hours_ago).unwrap();
        }
    }
    let removed = blobs
        .remove_stale_temporaries(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(stale.iter().all(|p| !p.exists()));
    assert!(kept.iter().all(|p| p.exists()));
}
