//! The outbox engine: the loop that moves mail from `queued` to `sent` or `failed`.
//!
//! One dispatcher task claims due messages per account — never more than the account's sliding-window
//! rate limit allows, and never more than a small multiple of its concurrency limit ahead — under a
//! lease that a heartbeat keeps alive. Each claimed message is sent by its own task, which waits for one
//! of the account's concurrency permits. New mail that is due at once, for an account with room and
//! nothing older waiting, skips the queue: the API reserves a place, stores the message already
//! claimed and hands it straight to a send task (`Engine::reserve`). Outcomes are batched into one
//! transaction by a writer task. Expired leases (a crashed process) are recovered with an
//! `interrupted` attempt on record.

mod connectors;
mod dispatcher;
mod mailboxes;
pub mod oauth;
mod sync;
mod webhooks;

pub use connectors::{ConnectorDefaults, build_connector};
pub use dispatcher::{Engine, EngineConfig, Reservation};
pub use mailboxes::{MailboxTestConfig, MailboxWorker, TEST_MAILBOXES_JOB};
pub use sync::{SyncConfig, SyncWorker};
pub use webhooks::{WebhookConfig, WebhookWorker, delivery_body};
