//! Document sending profiles and which customer uses which.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::message::{AttachmentPolicy, EmailPolicy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingProfile {
    pub name: String,
    pub email: EmailPolicy,
    pub attachment: AttachmentPolicy,
    pub is_default: bool,
}

fn from_row(row: &impl StoreRow) -> StoreResult<SendingProfile> {
    Ok(SendingProfile {
        name: row.get("name"),
        email: row.get::<String, _>("email").parse()?,
        attachment: row.get::<String, _>("attachment").parse()?,
        is_default: row.get("is_default"),
    })
}

impl Store {
    pub async fn sending_profiles(&self) -> StoreResult<Vec<SendingProfile>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT name, email, attachment, is_default FROM sending_profiles ORDER BY name",
            )
            .fetch_all(reader)
            .await?;
            rows.iter().map(from_row).collect()
        })
    }

    /// Creates or changes a profile; `make_default` makes it the profile of customers without one.
    pub async fn set_sending_profile(
        &self,
        name: &str,
        email: EmailPolicy,
        attachment: AttachmentPolicy,
        make_default: bool,
    ) -> StoreResult<SendingProfile> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            if make_default {
                sqlx::query("UPDATE sending_profiles SET is_default = FALSE WHERE name <> $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO sending_profiles (name, email, attachment, is_default, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET email = excluded.email, attachment = excluded.attachment,
                   is_default = (sending_profiles.is_default OR excluded.is_default), updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(email.as_str())
            .bind(attachment.as_str())
            .bind(make_default)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let row = sqlx::query(
                "SELECT name, email, attachment, is_default FROM sending_profiles WHERE name = $1",
            )
            .bind(name)
            .fetch_one(writer)
            .await?;
            from_row(&row)
        })
    }

    /// The profile a customer uses: their own, else the default profile.
    pub async fn profile_for_customer(&self, customer_id: &str) -> StoreResult<SendingProfile> {
        on_db!(self, |writer, reader| {
            let row = sqlx::query(
                "SELECT p.name, p.email, p.attachment, p.is_default FROM sending_profiles p
                 WHERE p.name = (SELECT profile FROM customer_profiles WHERE customer_id = $1)
                    OR (p.is_default AND NOT EXISTS (SELECT 1 FROM customer_profiles WHERE customer_id = $1))
                 LIMIT 1",
            )
            .bind(customer_id)
            .fetch_optional(reader)
            .await?;
            row.map(|r| from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::Conflict("there is no default sending profile".into()))
        })
    }

    pub async fn set_customer_profile(&self, customer_id: &str, profile: &str) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM sending_profiles WHERE name = $1",
            )
            .bind(profile)
            .fetch_optional(reader)
            .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("sending profile {profile:?}")));
            }
            sqlx::query("INSERT INTO customer_profiles (customer_id, profile) VALUES ($1, $2) ON CONFLICT (customer_id) DO UPDATE SET profile = excluded.profile")
                .bind(customer_id)
                .bind(profile)
                .execute(writer)
                .await?;
            Ok(())
        })
    }
}
