//! `mailroom store copy`: moves everything from one store to another (SQLite to PostgreSQL when a
//! deployment grows to several nodes; the other way works too), with the servers stopped.
//!
//! Every table is copied in batches in key order; the target must be empty (no accounts, users,
//! tokens or messages — what its migrations seed is replaced). Afterwards each table's rows are
//! counted and checksummed on both sides (a sum of row hashes, independent of the order each
//! database sorts text in) and any difference fails the copy. Secrets are copied still sealed: the
//! servers on the target need the same secret key.

use crate::db::{Db, StoreRow, WritePool};
use crate::{Store, StoreError, StoreResult};
use sha2::{Digest, Sha256};
use sqlx::{Database, Encode, QueryBuilder, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
}

/// A table as both backends have it: its columns (key columns first) and how many form the key.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: usize,
}

use Kind::{Bool, Int, Text};

/// In an order that respects every reference.
const TABLES: &[Table] = &[
    Table {
        name: "accounts",
        key: 1,
        columns: &[
            ("id", Text),
            ("connector", Text),
            ("name", Text),
            ("email_address", Text),
            ("sender_name", Text),
            ("sender_type", Text),
            ("host", Text),
            ("port", Int),
            ("security", Text),
            ("username", Text),
            ("password_encrypted", Text),
            ("pickup_dir", Text),
            ("rate_limit_per_minute", Int),
            ("concurrency_limit", Int),
            ("max_attempts", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("deleted_at", Int),
            ("substitute_mode", Text),
            ("substitute_address", Text),
            ("options", Text),
            ("refresh_token_sealed", Text),
            ("substitute_name", Text),
        ],
    },
    Table {
        name: "scenarios",
        key: 1,
        columns: &[
            ("name", Text),
            ("description", Text),
            ("built_in", Bool),
            ("account_id", Text),
            ("unsubscribe", Bool),
        ],
    },
    Table {
        name: "users",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("contact_email", Text),
            ("licence", Text),
            ("enabled", Bool),
            ("permission_sets", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "api_tokens",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("token_hash", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("user_id", Text),
        ],
    },
    Table {
        name: "view_policies",
        key: 1,
        columns: &[("user_id", Text), ("policy", Text)],
    },
    Table {
        name: "audit_log",
        key: 1,
        columns: &[
            ("id", Int),
            ("at", Int),
            ("actor_id", Text),
            ("action", Text),
            ("target_type", Text),
            ("target_id", Text),
            ("before_json", Text),
            ("after_json", Text),
        ],
    },
    Table {
        name: "server_profiles",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("kind", Text),
            ("incoming_json", Text),
            ("outgoing_json", Text),
            ("endpoints_json", Text),
            ("auth_type", Text),
            ("owner_user_id", Text),
            ("is_default", Bool),
            ("processing_json", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "settings",
        key: 1,
        columns: &[("name", Text), ("value_json", Text), ("updated_at", Int)],
    },
    Table {
        name: "teams",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("permission_sets", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "team_members",
        key: 2,
        columns: &[("team_id", Text), ("user_id", Text)],
    },
    Table {
        name: "queues",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("email_address", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "queue_members",
        key: 2,
        columns: &[("queue_id", Text), ("user_id", Text)],
    },
    Table {
        name: "mailboxes",
        key: 1,
        columns: &[
            ("id", Text),
            ("kind", Text),
            ("user_id", Text),
            ("queue_id", Text),
            ("email_address", Text),
            ("profile_id", Text),
            ("incoming", Text),
            ("outgoing", Text),
            ("act", Text),
            ("username", Text),
            ("password_encrypted", Text),
            ("approval", Text),
            ("incoming_status", Text),
            ("outgoing_status", Text),
            ("act_status", Text),
            ("enabled", Bool),
            ("last_test_at", Int),
            ("last_error", Text),
            ("filter", Text),
            ("test_tries", Int),
            ("next_test_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("oauth_registration_id", Text),
            ("refresh_token_sealed", Text),
        ],
    },
    Table {
        name: "jobs",
        key: 1,
        columns: &[
            ("id", Text),
            ("kind", Text),
            ("state", Text),
            ("total", Int),
            ("done", Int),
            ("succeeded", Int),
            ("failed", Int),
            ("params_json", Text),
            ("created_by", Text),
            ("lease_owner", Text),
            ("lease_until", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("finished_at", Int),
        ],
    },
    Table {
        name: "job_items",
        key: 2,
        columns: &[
            ("job_id", Text),
            ("mailbox_id", Text),
            ("state", Text),
            ("detail", Text),
        ],
    },
    Table {
        name: "alerts",
        key: 1,
        columns: &[
            ("id", Text),
            ("user_id", Text),
            ("mailbox_id", Text),
            ("kind", Text),
            ("message", Text),
            ("created_at", Int),
            ("dismissed_at", Int),
        ],
    },
    Table {
        name: "mailbox_folders",
        key: 2,
        columns: &[
            ("mailbox_id", Text),
            ("folder", Text),
            ("uidvalidity", Int),
            ("uidnext", Int),
            ("highestmodseq", Int),
            ("initial_below", Int),
            ("validity_changes", Int),
            ("validity_changed_at", Int),
            ("synced_at", Int),
        ],
    },
    Table {
        name: "inbound_messages",
        key: 1,
        columns: &[
            ("id", Text),
            ("mailbox_id", Text),
            ("owner_user_id", Text),
            ("folder", Text),
            ("uidvalidity", Int),
            ("uid", Int),
            ("message_id_header", Text),
            ("subject", Text),
            ("from_address", Text),
            ("from_json", Text),
            ("to_json", Text),
            ("cc_json", Text),
            ("reply_to_json", Text),
            ("references_json", Text),
            ("sent_at", Int),
            ("received_at", Int),
            ("size", Int),
            ("flags_json", Text),
            ("seen", Bool),
            ("raw_sha256", Text),
            ("unparsed", Bool),
            ("thread_index", Text),
            ("correlation_method", Text),
            ("conversation_id", Text),
            ("created_at", Int),
            ("normalized_subject", Text),
            ("participants", Text),
        ],
    },
    Table {
        name: "inbound_contents",
        key: 1,
        columns: &[
            ("inbound_id", Text),
            ("headers_json", Text),
            ("text_body", Text),
            ("html_body", Text),
        ],
    },
    Table {
        name: "inbound_attachments",
        key: 2,
        columns: &[
            ("inbound_id", Text),
            ("part_path", Text),
            ("name", Text),
            ("content_type", Text),
            ("size", Int),
            ("sha256", Text),
        ],
    },
    Table {
        name: "inbound_related_records",
        key: 3,
        columns: &[
            ("inbound_id", Text),
            ("record_type", Text),
            ("record_id", Text),
        ],
    },
    Table {
        name: "conversation_tokens",
        key: 1,
        columns: &[
            ("token", Text),
            ("conversation_id", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "contacts",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "contact_addresses",
        key: 2,
        columns: &[("address", Text), ("contact_id", Text)],
    },
    Table {
        name: "contact_records",
        key: 3,
        columns: &[
            ("contact_id", Text),
            ("record_type", Text),
            ("record_id", Text),
        ],
    },
    Table {
        name: "mail_client_app_users",
        key: 1,
        columns: &[("user_id", Text), ("state", Text), ("updated_at", Int)],
    },
    Table {
        name: "events",
        key: 1,
        columns: &[
            ("id", Int),
            ("kind", Text),
            ("subject_id", Text),
            ("payload_json", Text),
            ("created_at", Int),
            ("fanned_out", Bool),
        ],
    },
    Table {
        name: "graph_folder_states",
        key: 2,
        columns: &[
            ("mailbox_id", Text),
            ("folder", Text),
            ("delta_link", Text),
            ("next_uid", Int),
            ("synced_at", Int),
        ],
    },
    Table {
        name: "graph_message_uids",
        key: 3,
        columns: &[
            ("mailbox_id", Text),
            ("folder", Text),
            ("graph_id", Text),
            ("uid", Int),
        ],
    },
    Table {
        name: "app_registrations",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("provider", Text),
            ("client_id", Text),
            ("client_secret_sealed", Text),
            ("tenant", Text),
            ("redirect_uri", Text),
            ("authority", Text),
            ("graph_base_url", Text),
            ("discovery_url", Text),
            ("authorization_endpoint", Text),
            ("token_endpoint", Text),
            ("scopes", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "dkim_keys",
        key: 1,
        columns: &[
            ("id", Text),
            ("domain", Text),
            ("selector", Text),
            ("algorithm", Text),
            ("private_key_sealed", Text),
            ("public_key", Text),
            ("active", Bool),
            ("created_by", Text),
            ("created_at", Int),
            ("activated_at", Int),
        ],
    },
    Table {
        name: "unsubscribes",
        key: 2,
        columns: &[
            ("address", Text),
            ("list", Text),
            ("message_id", Text),
            ("method", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "suppressions",
        key: 1,
        columns: &[
            ("address", Text),
            ("reason", Text),
            ("detail", Text),
            ("message_id", Text),
            ("created_by", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "webhook_endpoints",
        key: 1,
        columns: &[
            ("id", Text),
            ("url", Text),
            ("events_json", Text),
            ("secret_sealed", Text),
            ("previous_secret_sealed", Text),
            ("previous_until", Int),
            ("enabled", Bool),
            ("ordered", Bool),
            ("disabled_reason", Text),
            ("failing_since", Int),
            ("created_by", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "webhook_deliveries",
        key: 2,
        columns: &[
            ("endpoint_id", Text),
            ("event_id", Int),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("lease_owner", Text),
            ("lease_until", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "webhook_attempts",
        key: 3,
        columns: &[
            ("endpoint_id", Text),
            ("event_id", Int),
            ("number", Int),
            ("at", Int),
            ("status", Int),
            ("latency_ms", Int),
            ("response", Text),
            ("error", Text),
        ],
    },
    Table {
        name: "attachments",
        key: 1,
        columns: &[
            ("id", Text),
            ("sha256", Text),
            ("size", Int),
            ("filename", Text),
            ("content_type", Text),
            ("created_by", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "templates",
        key: 2,
        columns: &[
            ("id", Text),
            ("version", Int),
            ("document_type", Text),
            ("scenario", Text),
            ("subject", Text),
            ("html", Text),
            ("text", Text),
            ("built_in", Bool),
            ("created_by", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "scenario_attachments",
        key: 2,
        columns: &[
            ("scenario", Text),
            ("attachment_id", Text),
            ("mode", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "sending_profiles",
        key: 1,
        columns: &[
            ("name", Text),
            ("email", Text),
            ("attachment", Text),
            ("is_default", Bool),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "customer_profiles",
        key: 1,
        columns: &[("customer_id", Text), ("profile", Text)],
    },
    Table {
        name: "messages",
        key: 1,
        columns: &[
            ("id", Text),
            ("status", Text),
            ("scenario", Text),
            ("account_id", Text),
            ("message_id_header", Text),
            ("subject", Text),
            ("created_by", Text),
            ("idempotency_key", Text),
            ("request_hash", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("send_at", Int),
            ("next_attempt_at", Int),
            ("attempt_count", Int),
            ("retry_base", Int),
            ("lease_owner", Text),
            ("lease_until", Int),
            ("sent_at", Int),
            ("last_error", Text),
            ("template_id", Text),
            ("template_version", Int),
            ("record_types", Text),
            ("content_deleted_at", Int),
            ("conversation_id", Text),
            ("smart_key", Text),
        ],
    },
    Table {
        name: "message_contents",
        key: 1,
        columns: &[
            ("message_id", Text),
            ("to_json", Text),
            ("cc_json", Text),
            ("bcc_json", Text),
            ("text_body", Text),
            ("html_body", Text),
            ("related_json", Text),
            ("reply_to_json", Text),
            ("headers_json", Text),
            ("from_json", Text),
            ("sender_json", Text),
        ],
    },
    Table {
        name: "related_records",
        key: 3,
        columns: &[
            ("message_id", Text),
            ("record_type", Text),
            ("record_id", Text),
            ("relation", Text),
        ],
    },
    Table {
        name: "message_recipients",
        key: 2,
        columns: &[("address", Text), ("message_id", Text)],
    },
    Table {
        name: "message_bounces",
        key: 4,
        columns: &[
            ("message_id", Text),
            ("recipient", Text),
            ("kind", Text),
            ("action", Text),
            ("status", Text),
            ("diagnostic", Text),
            ("hard", Bool),
            ("inbound_id", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "attempts",
        key: 2,
        columns: &[
            ("message_id", Text),
            ("number", Int),
            ("started_at", Int),
            ("finished_at", Int),
            ("outcome", Text),
            ("reply_code", Int),
            ("reply_text", Text),
        ],
    },
    Table {
        name: "message_attachments",
        key: 2,
        columns: &[
            ("message_id", Text),
            ("position", Int),
            ("attachment_id", Text),
            ("content_id", Text),
        ],
    },
    Table {
        name: "record_type_sets",
        key: 1,
        columns: &[("types", Text)],
    },
];

/// Tables the target's migrations and start-up fill, replaced by the source's rows.
const SEEDED: &[&str] = &["scenarios", "templates", "sending_profiles"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Text(String),
    Int(i64),
}

type Row = Vec<Value>;

/// One table's result: rows and checksum on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    pub table: &'static str,
    pub rows: u64,
    pub checksum: String,
}

/// Rows per batch read and written.
const BATCH: i64 = 500;

fn read_value(row: &impl StoreRow, index: usize, kind: Kind) -> StoreResult<Value> {
    let value = match kind {
        Text => row
            .try_get::<Option<String>, _>(index)
            .map(|v| v.map(Value::Text)),
        Int => row
            .try_get::<Option<i64>, _>(index)
            .map(|v| v.map(Value::Int)),
        Bool => row
            .try_get::<Option<bool>, _>(index)
            .map(|v| v.map(|b| Value::Int(i64::from(b)))),
    };
    Ok(value.map_err(StoreError::from)?.unwrap_or(Value::Null))
}

fn push_value<DB: Database>(
    values: &mut sqlx::query_builder::Separated<'_, DB, &str>,
    value: &Value,
    kind: Kind,
) where
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
{
    match (value, kind) {
        (Value::Null, Text) => values.push_bind(None::<String>),
        (Value::Null, Int) => values.push_bind(None::<i64>),
        (Value::Null, Bool) => values.push_bind(None::<bool>),
        (Value::Text(text), _) => values.push_bind(Some(text.clone())),
        (Value::Int(n), Bool) => values.push_bind(Some(*n != 0)),
        (Value::Int(n), _) => values.push_bind(Some(*n)),
    };
}

/// A row's hash, as a number: the sum of these over a table does not depend on row order.
fn row_hash(row: &Row) -> u64 {
    let mut hasher = Sha256::new();
    for value in row {
        match value {
            Value::Null => hasher.update(b"\x00N"),
            Value::Text(text) => {
                hasher.update(b"\x00T");
                hasher.update((text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
            Value::Int(n) => {
                hasher.update(b"\x00I");
                hasher.update(n.to_le_bytes());
            }
        }
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// Reads the batch of `table` after the key `after`, in key order.
macro_rules! read_batch {
    ($pool:expr, $table:expr, $after:expr) => {{
        let table: &Table = $table;
        let after: &Option<Row> = $after;
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let key: Vec<&str> = columns[..table.key].to_vec();
        let mut query =
            QueryBuilder::new(format!("SELECT {} FROM {}", columns.join(", "), table.name));
        if let Some(after) = after {
            query.push(format!(" WHERE ({}) > (", key.join(", ")));
            let mut values = query.separated(", ");
            for (value, (_, kind)) in after.iter().zip(table.columns) {
                push_value(&mut values, value, *kind);
            }
            query.push(")");
        }
        query.push(format!(" ORDER BY {} LIMIT {BATCH}", key.join(", ")));
        let rows = query.build().fetch_all($pool).await?;
        let mut batch: Vec<Row> = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(table.columns.len());
            for (index, (_, kind)) in table.columns.iter().enumerate() {
                values.push(read_value(row, index, *kind)?);
            }
            batch.push(values);
        }
        batch
    }};
}

macro_rules! write_batch {
    ($tx:expr, $table:expr, $rows:expr, $postgres:expr) => {{
        let table: &Table = $table;
        let rows: &[Row] = $rows;
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        // An identity column takes the copied ids only when told to.
        let overriding = if $postgres && (table.name == "audit_log" || table.name == "events") {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let mut query = QueryBuilder::new(format!(
            "INSERT INTO {} ({}){overriding} ",
            table.name,
            columns.join(", ")
        ));
        query.push_values(rows, |mut values, row| {
            for (value, (_, kind)) in row.iter().zip(table.columns) {
                push_value(&mut values, value, *kind);
            }
        });
        query.build().execute(&mut *$tx).await?;
    }};
}

/// Runs `$body` with `$pool` bound to the store's writing pool.
macro_rules! with_pool {
    ($store:expr, |$pool:ident, $postgres:ident| $body:expr) => {
        match &*$store.db {
            Db::Sqlite(db) => {
                let $pool = &db.writer;
                let $postgres = false;
                $body
            }
            Db::Postgres(db) => {
                let $pool = &db.pool;
                let $postgres = true;
                $body
            }
        }
    };
}

impl Store {
    /// Whether the store holds nothing a copy would overwrite.
    async fn is_empty_for_copy(&self) -> StoreResult<bool> {
        let mut found = 0i64;
        for table in ["accounts", "users", "api_tokens", "messages"] {
            let n: i64 = with_pool!(self, |pool, _postgres| {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT 1) t"
                )))
                .fetch_one(pool)
                .await?
            });
            found += n;
        }
        Ok(found == 0)
    }

    /// Counts and checksums every table of the store.
    pub async fn table_checksums(&self) -> StoreResult<Vec<CopiedTable>> {
        let mut report = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let (mut rows, mut sum) = (0u64, 0u64);
            let mut after: Option<Row> = None;
            loop {
                let batch: Vec<Row> =
                    with_pool!(self, |pool, _postgres| read_batch!(pool, table, &after));
                for row in &batch {
                    rows += 1;
                    sum = sum.wrapping_add(row_hash(row));
                }
                match batch.last() {
                    Some(last) if batch.len() as i64 == BATCH => {
                        after = Some(last[..table.key].to_vec())
                    }
                    _ => break,
                }
            }
            report.push(CopiedTable {
                table: table.name,
                rows,
                checksum: format!("{sum:016x}"),
            });
        }
        Ok(report)
    }

    /// Copies every table of `self` into `target` (empty), then checks counts and checksums on
    /// both sides. `progress` hears of each table as it is done.
    pub async fn copy_into(
        &self,
        target: &Store,
        mut progress: impl FnMut(&str, u64),
    ) -> StoreResult<Vec<CopiedTable>> {
        if !target.is_empty_for_copy().await? {
            return Err(StoreError::Refused {
                code: "target_not_empty",
                message: "the target store already holds accounts, users, tokens or messages; copy only into a new, empty database".into(),
            });
        }
        // What the target seeded at its first start is replaced by the source's rows.
        with_pool!(target, |pool, _postgres| {
            let mut tx = pool.begin_write().await?;
            for table in ["customer_profiles", "scenario_attachments"]
                .iter()
                .chain(SEEDED.iter().rev())
            {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        for table in TABLES {
            let mut after: Option<Row> = None;
            let mut copied = 0u64;
            loop {
                let batch: Vec<Row> =
                    with_pool!(self, |pool, _postgres| read_batch!(pool, table, &after));
                if batch.is_empty() {
                    break;
                }
                with_pool!(target, |pool, postgres| {
                    let mut tx = pool.begin_write().await?;
                    write_batch!(tx, table, &batch, postgres);
                    tx.commit().await?;
                });
                copied += batch.len() as u64;
                if (batch.len() as i64) < BATCH {
                    break;
                }
                after = batch.last().map(|last| last[..table.key].to_vec());
            }
            progress(table.name, copied);
        }
        // The target's identity sequences continue after the copied audit entries and events.
        if let Db::Postgres(db) = &*target.db {
            for table in ["audit_log", "events"] {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&db.pool)
                    .await?;
            }
        }
        let source_sums = self.table_checksums().await?;
        let target_sums = target.table_checksums().await?;
        for (source, copied) in source_sums.iter().zip(&target_sums) {
            if source != copied {
                return Err(StoreError::Refused {
                    code: "copy_mismatch",
                    message: format!(
                        "table {}: {} rows (checksum {}) in the source but {} rows (checksum {}) in the target",
                        source.table, source.rows, source.checksum, copied.rows, copied.checksum
                    ),
                });
            }
        }
        target.caches.forget_all();
        Ok(source_sums)
    }
}
