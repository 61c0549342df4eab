//! The blob store: uploaded files, named by their SHA-256, written by streaming (never held whole in
//! memory), atomically, once per content. Either on disk under `<dir>/<first two hex digits>/<sha256>`
//! (temporary file, fsync, rename; one node, or several on a shared mount) or in PostgreSQL in
//! chunks of 1 MiB (`blob_store = "database"`: reachable from every node).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("the blob store could not write: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    /// Set: the blobs are in this PostgreSQL database instead of `dir`.
    database: Option<sqlx::PgPool>,
}

/// Bytes with their SHA-256, computed here (so a blob is always named by its content).
#[derive(Debug, Clone)]
pub struct HashedBytes {
    sha256: String,
    bytes: bytes::Bytes,
}

impl HashedBytes {
    pub fn new(bytes: bytes::Bytes) -> Self {
        Self {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes,
        }
    }

    /// The SHA-256, in lowercase hex: the blob's name.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// How the name of a blob being written begins (left behind only by a crash, then removed by
/// [`BlobStore::remove_stale_temporaries`]).
const TEMPORARY: &str = ".mailroom-in-";

/// The largest chunk of a blob kept in the database.
const CHUNK: usize = 1024 * 1024;

/// A blob's bytes as a stream of chunks (at most 1 MiB each).
pub type BlobStream =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

fn db_error(error: sqlx::Error) -> std::io::Error {
    std::io::Error::other(format!("the database blob store: {error}"))
}

impl BlobStore {
    /// Blobs on disk under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            database: None,
        }
    }

    /// Blobs in the store's PostgreSQL database; `None` on SQLite (use the filesystem there).
    pub fn in_database(store: &crate::Store) -> Option<Self> {
        match &*store.db {
            crate::db::Db::Postgres(db) => Some(Self {
                dir: PathBuf::new(),
                database: Some(db.pool.clone()),
            }),
            crate::db::Db::Sqlite(_) => None,
        }
    }

    /// Whether the blobs are in the database.
    pub fn is_database(&self) -> bool {
        self.database.is_some()
    }

    /// Reads a whole blob.
    pub async fn read(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let Some(pool) = &self.database else {
            return tokio::fs::read(self.path(sha256)).await;
        };
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
        let Some(size) = size else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no blob {sha256} in the database"),
            ));
        };
        let mut bytes = Vec::with_capacity(size as usize);
        let mut stream = self.open(sha256).await?;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// A blob's bytes, streamed chunk by chunk (one chunk in memory at a time).
    pub async fn open(&self, sha256: &str) -> std::io::Result<BlobStream> {
        let Some(pool) = &self.database else {
            let file = tokio::fs::File::open(self.path(sha256)).await?;
            return Ok(Box::pin(tokio_util::io::ReaderStream::new(file)));
        };
        let known: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
        if known.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no blob {sha256} in the database"),
            ));
        }
        let (pool, sha256) = (pool.clone(), sha256.to_owned());
        Ok(Box::pin(futures_util::stream::unfold(
            Some(0i64),
            move |next| {
                let (pool, sha256) = (pool.clone(), sha256.clone());
                async move {
                    let seq = next?;
                    let chunk: Result<Option<Vec<u8>>, _> = sqlx::query_scalar(
                        "SELECT data FROM blob_chunks WHERE blob = $1 AND seq = $2",
                    )
                    .bind(&sha256)
                    .bind(seq)
                    .fetch_optional(&pool)
                    .await;
                    match chunk {
                        Ok(Some(data)) => Some((Ok(bytes::Bytes::from(data)), Some(seq + 1))),
                        Ok(None) => None,
                        Err(error) => Some((Err(db_error(error)), None)),
                    }
                }
            },
        )))
    }

    /// Whether the disk under the blob store has room: writes and syncs a 1 MiB probe file, then
    /// removes it. (Used only after a write failed for lack of space.)
    pub async fn has_room(&self) -> bool {
        if self.database.is_some() {
            return true;
        }
        let probe = self
            .dir
            .join(format!(".room-probe-{}", uuid::Uuid::new_v4()));
        let written = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            let mut file = tokio::fs::File::create(&probe).await?;
            file.write_all(&vec![0u8; 1024 * 1024]).await?;
            file.sync_all().await
        }
        .await;
        let _ = tokio::fs::remove_file(&probe).await;
        written.is_ok()
    }

    /// Removes what writes cut short by a crash left behind: temporary files older than `min_age`
    /// beside the blobs (or, for the database store, in the system's temporary folder). Returns
    /// how many were removed.
    pub async fn remove_stale_temporaries(
        &self,
        min_age: std::time::Duration,
    ) -> std::io::Result<usize> {
        let dir = if self.database.is_some() {
            std::env::temp_dir()
        } else {
            self.dir.clone()
        };
        let database = self.database.is_some();
        tokio::task::spawn_blocking(move || {
            let mut folders = vec![dir.clone()];
            if !database {
                // The blobs' folders: two hex digits each.
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    if name.len() == 2 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                        folders.push(entry.path());
                    }
                }
            }
            let mut removed = 0;
            for folder in folders {
                for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                    let stale = entry.file_name().to_string_lossy().starts_with(TEMPORARY)
                        && entry.metadata().is_ok_and(|m| {
                            m.is_file()
                                && m.modified()
                                    .is_ok_and(|t| t.elapsed().unwrap_or_default() >= min_age)
                        });
                    if stale && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Where the blob with this SHA-256 lives.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2.min(sha256.len())]).join(sha256)
    }

    /// Removes a blob unless its file was written within `min_age` (an upload of the same content may
    /// just have renamed it into place and not yet recorded its attachment).
    pub async fn remove_if_older_than(
        &self,
        sha256: &str,
        min_age: std::time::Duration,
    ) -> std::io::Result<bool> {
        if let Some(pool) = &self.database {
            let cutoff = crate::now_ms() - min_age.as_millis() as i64;
            let mut tx = pool.begin().await.map_err(db_error)?;
            let removed = sqlx::query("DELETE FROM blobs WHERE sha256 = $1 AND created_at < $2")
                .bind(sha256)
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if removed > 0 {
                sqlx::query("DELETE FROM blob_chunks WHERE blob = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            return Ok(removed > 0);
        }
        let path = self.path(sha256);
        let modified = match tokio::fs::metadata(&path).await {
            Ok(metadata) => metadata.modified()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if modified.elapsed().unwrap_or_default() < min_age {
            return Ok(false);
        }
        tokio::fs::remove_file(&path).await?;
        Ok(true)
    }

    /// Writes byte strings already in memory and hashed (a batch of received messages and their
    /// parts); content stored before is not written again. On disk, every new content goes to a
    /// temporary file beside its target, then the file system is synced once (`syncfs`), then
    /// they are renamed into place: the batch costs one journal commit instead of one per file.
    pub async fn write_batch(&self, items: Vec<HashedBytes>) -> Result<(), BlobError> {
        if self.database.is_some() {
            for item in items {
                let size = item.bytes.len() as u64;
                let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(item.bytes)]);
                self.write_stream(stream, size).await?;
            }
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_batch_to_disk(items))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
    }

    fn write_batch_to_disk(&self, items: Vec<HashedBytes>) -> Result<(), BlobError> {
        use std::io::Write;
        let mut seen = std::collections::HashSet::new();
        let mut pending: Vec<(std::fs::File, PathBuf, PathBuf)> = Vec::new();
        let result = (|| {
            for item in &items {
                let target = self.path(&item.sha256);
                if !seen.insert(item.sha256.as_str()) || target.exists() {
                    continue;
                }
                let folder = target.parent().unwrap_or(Path::new(".")).to_path_buf();
                let temporary = folder.join(format!("{TEMPORARY}{}", uuid::Uuid::new_v4()));
                let file = match std::fs::File::create(&temporary) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(&folder)?;
                        std::fs::File::create(&temporary)?
                    }
                    other => other?,
                };
                pending.push((file, temporary, target));
                let (file, ..) = pending.last_mut().expect("just pushed");
                file.write_all(&item.bytes)?;
            }
            // One sync of the file system for the batch (one journal commit) rather than one
            // per file.
            if let Some((file, ..)) = pending.first() {
                rustix::fs::syncfs(file)?;
            }
            for (_, temporary, target) in &pending {
                std::fs::rename(temporary, target)?;
            }
            Ok::<_, std::io::Error>(())
        })();
        if let Err(error) = result {
            for (_, temporary, _) in &pending {
                let _ = std::fs::remove_file(temporary);
            }
            return Err(BlobError::Io(error));
        }
        Ok(())
    }

    /// Streams chunks to a temporary file while hashing, refusing more than `limit` bytes; returns the
    /// SHA-256 (hex) and size. Nothing is left behind when the upload fails.
    pub async fn write_stream<S, E>(
        &self,
        mut chunks: S,
        limit: u64,
    ) -> Result<(String, u64), BlobError>
    where
        S: futures_core::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if let Some(pool) = &self.database {
            return write_to_database(pool, chunks, limit).await;
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        let temporary = self
            .dir
            .join(format!("{TEMPORARY}{}", uuid::Uuid::new_v4()));
        let result = async {
            let mut file = tokio::fs::File::create(&temporary).await?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut chunks).poll_next(cx)).await
            {
                let chunk = chunk.map_err(|e| BlobError::Interrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            let sha256 = hex::encode(hasher.finalize());
            let target = self.path(&sha256);
            tokio::fs::create_dir_all(target.parent().unwrap_or(Path::new("."))).await?;
            tokio::fs::rename(&temporary, &target).await?;
            Ok((sha256, size))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temporary).await;
        }
        result
    }
}

/// A blob written a piece at a time (a large received message, an attachment decoded from it):
/// to a temporary file, hashed as it goes. Nothing is left behind unless it is kept.
#[derive(Debug)]
pub struct BlobWriter {
    store: BlobStore,
    file: std::fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    kept: bool,
}

impl BlobStore {
    /// A new blob to write piece by piece (blocking writes: use it on a blocking thread).
    pub fn writer(&self) -> std::io::Result<BlobWriter> {
        // Beside the blobs, so that keeping it is a rename; the database store keeps its
        // temporary files in the system's.
        let dir = if self.database.is_some() {
            std::env::temp_dir()
        } else {
            self.dir.clone()
        };
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{TEMPORARY}{}", uuid::Uuid::new_v4()));
        Ok(BlobWriter {
            store: self.clone(),
            file: std::fs::File::create(&path)?,
            path,
            hasher: Sha256::new(),
            size: 0,
            kept: false,
        })
    }
}

impl std::io::Write for BlobWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// The bytes written so far, to read back before the blob is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Syncs the blob and stores it under its SHA-256 (on disk, a rename); returns the SHA-256
    /// and size.
    pub async fn keep(mut self) -> Result<(String, u64), BlobError> {
        let sha256 = hex::encode(self.hasher.clone().finalize());
        let size = self.size;
        if self.store.database.is_some() {
            let file = tokio::fs::File::open(&self.path).await?;
            self.store
                .write_stream(tokio_util::io::ReaderStream::new(file), size)
                .await?;
            // Dropping removes the temporary file.
            return Ok((sha256, size));
        }
        let file = self.file.try_clone()?;
        let (path, target) = (self.path.clone(), self.store.path(&sha256));
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            std::fs::create_dir_all(target.parent().unwrap_or(Path::new(".")))?;
            std::fs::rename(&path, &target)
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))??;
        self.kept = true;
        Ok((sha256, size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams an upload into the database in chunks of 1 MiB, inside one transaction (a failed or
/// abandoned upload leaves nothing), under a temporary name renamed to its SHA-256 at the end — or
/// dropped if that content is already stored.
async fn write_to_database<S, E>(
    pool: &sqlx::PgPool,
    mut chunks: S,
    limit: u64,
) -> Result<(String, u64), BlobError>
where
    S: futures_core::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let io = |error: sqlx::Error| BlobError::Io(db_error(error));
    let temporary = format!("upload-{}", uuid::Uuid::new_v4());
    let mut tx = pool.begin().await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut seq = 0i64;
    loop {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut chunks).poll_next(cx)).await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| BlobError::Interrupted(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            buffer.extend_from_slice(&chunk);
        }
        while buffer.len() >= CHUNK || (done && !buffer.is_empty()) {
            let rest = buffer.split_off(CHUNK.min(buffer.len()));
            sqlx::query("INSERT INTO blob_chunks (blob, seq, data) VALUES ($1, $2, $3)")
                .bind(&temporary)
                .bind(seq)
                .bind(&buffer)
                .execute(&mut *tx)
                .await
                .map_err(io)?;
            seq += 1;
            buffer = rest;
        }
        if done {
            break;
        }
    }
    let sha256 = hex::encode(hasher.finalize());
    let created: u64 = sqlx::query(
        "INSERT INTO blobs (sha256, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&sha256)
    .bind(size as i64)
    .bind(crate::now_ms())
    .execute(&mut *tx)
    .await
    .map_err(io)?
    .rows_affected();
    if created > 0 {
        sqlx::query("UPDATE blob_chunks SET blob = $1 WHERE blob = $2")
            .bind(&sha256)
            .bind(&temporary)
            .execute(&mut *tx)
            .await
            .map_err(io)?;
    } else {
        // The same content is stored already: keep that copy (and refresh its age, so that the
        // collector does not take it before this upload's attachment is recorded).
        sqlx::query("DELETE FROM blob_chunks WHERE blob = $1")
            .bind(&temporary)
            .execute(&mut *tx)
            .await
            .map_err(io)?;
        sqlx::query("UPDATE blobs SET created_at = $2 WHERE sha256 = $1")
            .bind(&sha256)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(io)?;
    }
    tx.commit().await.map_err(io)?;
    Ok((sha256, size))
}
