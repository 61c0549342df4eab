//! Private PostgreSQL databases for tests, on the server our machines run at 127.0.0.1:5432 (trust
//! authentication, user `postgres`; `MAILROOM_TEST_POSTGRES` names another server). Each test gets
//! a database of its own, dropped when the handle is dropped.

use anyhow::{Context, Result};
use sqlx::Connection;

/// The server the test databases are created on.
pub fn server_url() -> String {
    std::env::var("MAILROOM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Which backend tests run `mailroom` servers on: `MAILROOM_TEST_STORE=postgres` or SQLite.
pub fn servers_use_postgres() -> bool {
    std::env::var("MAILROOM_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// A database created for one test.
pub struct TestDatabase {
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Result<Self> {
        let name = format!("mailroom_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .context("connecting to PostgreSQL (is it running on 127.0.0.1:5432?)")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self {
            url: format!("{}/{name}", server_url()),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime: a thread of its own with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin =
                    sqlx::PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("dropping test database {}: {error:#}", self.name);
        }
    }
}
