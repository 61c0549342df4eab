//! The blob store kept in PostgreSQL (`blob_store = "database"`): files in 1 MiB chunks, written in
//! one transaction under their SHA-256, read back whole or streamed, stored once per content, and
//! collected only once old enough.

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
