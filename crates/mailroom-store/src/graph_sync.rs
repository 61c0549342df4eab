//! The state of Exchange Online mailboxes synchronized over Microsoft Graph: each folder's delta
//! link, and a number per Graph message id (the inbound store keys messages by folder and number,
//! as IMAP gives them; a Graph id keeps its number across a resync, so nothing is stored twice).

use crate::db::{WritePool, on_db};
use crate::{Store, StoreResult, now_ms};
use uuid::Uuid;

/// The number space of Graph folders (an IMAP UIDVALIDITY that never changes).
pub const GRAPH_UIDVALIDITY: u32 = 1;

impl Store {
    /// Where the folder's next delta query starts; `None` for a sync from scratch.
    pub async fn graph_delta_link(
        &self,
        mailbox: Uuid,
        folder: &str,
    ) -> StoreResult<Option<String>> {
        let link: Option<Option<String>> = on_db!(self, |writer, reader| {
            sqlx::query_scalar(
                "SELECT delta_link FROM graph_folder_states WHERE mailbox_id = $1 AND folder = $2",
            )
            .bind(mailbox.to_string())
            .bind(folder)
            .fetch_optional(reader)
            .await?
        });
        Ok(link.flatten())
    }

    /// Keeps (or, with `None`, forgets) the folder's delta link.
    pub async fn save_graph_delta_link(
        &self,
        mailbox: Uuid,
        folder: &str,
        link: Option<&str>,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO graph_folder_states (mailbox_id, folder, delta_link, next_uid, synced_at) VALUES ($1, $2, $3, 1, $4)
                 ON CONFLICT (mailbox_id, folder) DO UPDATE SET delta_link = $3, synced_at = $4",
            )
            .bind(mailbox.to_string())
            .bind(folder)
            .bind(link)
            .bind(now_ms())
            .execute(writer)
            .await?;
        });
        Ok(())
    }

    /// The number of each Graph message id of the folder, given a new one on first sight.
    pub async fn graph_uids(
        &self,
        mailbox: Uuid,
        folder: &str,
        ids: &[String],
    ) -> StoreResult<Vec<u32>> {
        let mailbox = mailbox.to_string();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            sqlx::query(
                "INSERT INTO graph_folder_states (mailbox_id, folder, delta_link, next_uid) VALUES ($1, $2, NULL, 1)
                 ON CONFLICT (mailbox_id, folder) DO NOTHING",
            )
            .bind(&mailbox)
            .bind(folder)
            .execute(&mut *tx)
            .await?;
            let mut uids = Vec::with_capacity(ids.len());
            for id in ids {
                let known: Option<i64> = sqlx::query_scalar(
                    "SELECT uid FROM graph_message_uids WHERE mailbox_id = $1 AND folder = $2 AND graph_id = $3",
                )
                .bind(&mailbox)
                .bind(folder)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let uid = match known {
                    Some(uid) => uid,
                    None => {
                        let uid: i64 = sqlx::query_scalar(
                            "UPDATE graph_folder_states SET next_uid = next_uid + 1 WHERE mailbox_id = $1 AND folder = $2
                             RETURNING next_uid - 1",
                        )
                        .bind(&mailbox)
                        .bind(folder)
                        .fetch_one(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO graph_message_uids (mailbox_id, folder, graph_id, uid) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(&mailbox)
                        .bind(folder)
                        .bind(id)
                        .bind(uid)
                        .execute(&mut *tx)
                        .await?;
                        uid
                    }
                };
                uids.push(u32::try_from(uid).unwrap_or(u32::MAX));
            }
            tx.commit().await?;
            Ok(uids)
        })
    }
}
