//! The blob store: uploaded files on disk under `<dir>/<first two hex digits>/<sha256>`, written by
//! streaming (never held whole in memory), atomically (temporary file, fsync, rename), once per content.

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
}

impl BlobStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Whether the disk under the blob store has room: writes and syncs a 1 MiB probe file, then
    /// removes it. (Used only after a write failed for lack of space.)
    pub async fn has_room(&self) -> bool {
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
        tokio::fs::create_dir_all(&self.dir).await?;
        let temporary = self.dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
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
