//! Domain types and rules of mailroom. Everything here is pure: no I/O, no async, no SQL.
//!
//! Raw input is parsed into these types once, at the edge (API, CLI, store rows); inner code
//! takes the validated types and never re-checks.

pub mod access;
pub mod account;
pub mod address;
pub mod compose;
pub mod dkim;
pub mod graph;
pub mod header;
pub mod inbound;
pub mod mail_client_app;
pub mod mailbox;
pub mod message;
pub mod oauth;
pub mod rate;
pub mod retry;
pub mod scenario;
pub mod template;
pub mod verp;
pub mod webhook;

mod error;

pub use error::ValidationError;
