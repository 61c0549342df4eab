//! One-click unsubscribe (RFC 8058): the signed token a message's List-Unsubscribe link carries,
//! and the addresses that left each list (a list is a scenario).

use crate::db::{WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use uuid::Uuid;

/// What an unsubscribe token says: which message's link it is, for which list, and whom it takes
/// off that list (the message's To recipients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeToken {
    pub message_id: Uuid,
    pub list: String,
    pub addresses: Vec<String>,
}

/// An address that left a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub address: String,
    pub list: String,
    pub message_id: Option<String>,
    /// `one-click`, `mailto` or `manual`.
    pub method: String,
    pub created_at_ms: i64,
}

const PURPOSE: &str = "mailroom unsubscribe v1";

type Row = (String, String, Option<String>, String, i64);

impl Store {
    /// The token of a message's unsubscribe link: encrypted and authenticated, so it reveals
    /// nothing and cannot be altered to name someone else.
    pub fn unsubscribe_token(&self, token: &UnsubscribeToken) -> String {
        let mut plain = format!("{}\n{}", token.message_id.simple(), token.list);
        for address in &token.addresses {
            plain.push('\n');
            plain.push_str(address);
        }
        self.secrets.seal_token(PURPOSE, &plain)
    }

    /// What a token says, when this installation made it.
    pub fn open_unsubscribe_token(&self, token: &str) -> Option<UnsubscribeToken> {
        let plain = self.secrets.open_token(PURPOSE, token)?;
        let mut lines = plain.lines();
        let message_id = Uuid::parse_str(lines.next()?).ok()?;
        let list = lines.next()?.to_owned();
        let addresses: Vec<String> = lines.map(str::to_owned).collect();
        (!addresses.is_empty()).then_some(UnsubscribeToken {
            message_id,
            list,
            addresses,
        })
    }

    /// Takes the token's addresses off its list, with a `message.unsubscribed` event for each one
    /// newly taken off, in one transaction. Returns those newly taken off (a repeat changes nothing).
    pub async fn unsubscribe(
        &self,
        token: &UnsubscribeToken,
        method: &str,
    ) -> StoreResult<Vec<String>> {
        let now = now_ms();
        let message = token.message_id.to_string();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let mut newly = Vec::new();
            for address in &token.addresses {
                let inserted = sqlx::query(
                    "INSERT INTO unsubscribes (address, list, message_id, method, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address, list) DO NOTHING",
                )
                .bind(address)
                .bind(&token.list)
                .bind(&message)
                .bind(method)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO events (kind, subject_id, payload_json, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind("message.unsubscribed")
                .bind(&message)
                .bind(
                    serde_json::json!({"message_id": message, "address": address, "list": token.list,
                        "method": method})
                    .to_string(),
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
                newly.push(address.clone());
            }
            tx.commit().await?;
            Ok(newly)
        })
    }

    /// Which of `addresses` (lower-cased) left `list`.
    pub async fn unsubscribed_among(
        &self,
        list: &str,
        addresses: &[String],
    ) -> StoreResult<Vec<String>> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        on_db!(self, |writer, reader| {
            let mut query =
                sqlx::QueryBuilder::new("SELECT address FROM unsubscribes WHERE list = ");
            query.push_bind(list);
            query.push(" AND address IN (");
            let mut separated = query.separated(", ");
            for address in addresses {
                separated.push_bind(address.to_ascii_lowercase());
            }
            query.push(") ORDER BY address");
            Ok(query.build_query_scalar().fetch_all(reader).await?)
        })
    }

    /// Unsubscribes, newest first, `limit` from before the cursor `(created_at, address, list)`.
    pub async fn unsubscribes(
        &self,
        before: Option<(i64, String, String)>,
        limit: i64,
    ) -> StoreResult<Vec<Unsubscribe>> {
        let (at, address, list) = before.unwrap_or((i64::MAX, String::new(), String::new()));
        let rows: Vec<Row> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT address, list, message_id, method, created_at FROM unsubscribes
                 WHERE (created_at, address, list) < ($1, $2, $3) OR $1 = 9223372036854775807
                 ORDER BY created_at DESC, address DESC, list DESC LIMIT $4",
            )
            .bind(at)
            .bind(address)
            .bind(list)
            .bind(limit)
            .fetch_all(reader)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(address, list, message_id, method, created_at)| Unsubscribe {
                    address,
                    list,
                    message_id,
                    method,
                    created_at_ms: created_at,
                },
            )
            .collect())
    }

    /// Puts an address back on a list.
    pub async fn resubscribe(&self, address: &str, list: &str) -> StoreResult<()> {
        let deleted = on_db!(self, |writer, reader| {
            sqlx::query("DELETE FROM unsubscribes WHERE address = $1 AND list = $2")
                .bind(address.to_ascii_lowercase())
                .bind(list)
                .execute(writer)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::NotFound(format!(
                "unsubscribe of {address} from {list}"
            )));
        }
        Ok(())
    }
}
