//! Connectors: how mailroom hands a finished message to a provider.
//!
//! The engine holds `Arc<dyn Connector>` and never names a provider. Every failure says whether it is
//! worth retrying (`Transient`) or not (`Permanent`), with the server's reply code and text when there
//! was one. New providers (Microsoft Graph, Gmail…) implement the same trait without touching the core.

pub mod dkim;
mod graph;
pub mod http;
mod imap;
mod imap_source;
mod implicit_tls;
pub mod oauth;
mod pickup;
mod smtp;
mod webhook;

pub use graph::{AccessTokens, DeltaError, DeltaItem, DeltaPage, GraphConnector, GraphSettings};
pub use imap::{ImapSettings, test_imap};
pub use imap_source::{FetchedMail, FolderInfo, FolderStatus, ImapSource, ImapStream};
pub use pickup::{OutsideRoot, PickupConnector, check_inside_root};
pub use smtp::{SessionGate, SessionPermit, SmtpConnector, SmtpSettings};
pub use webhook::{RECEIVER_TIMEOUT, ReceiverAnswer, WebhookClient};

use async_trait::async_trait;
use mailroom_core::address::EmailAddress;
use std::sync::Arc;

/// A composed message and its SMTP envelope.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub envelope_from: EmailAddress,
    pub recipients: Vec<EmailAddress>,
    /// The RFC 5322 bytes (CRLF line endings).
    pub bytes: Arc<Vec<u8>>,
    /// The Message-ID header value, with angle brackets.
    pub message_id: String,
    /// The user who sent the message, for connectors that send through that user's own mailbox.
    pub sender_user: Option<String>,
}

/// The provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub reply_code: Option<u16>,
    pub reply_text: String,
}

/// Whether trying again later may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Transient,
    Permanent,
    /// The connection was lost or timed out after the whole message was handed over and before the
    /// provider answered: it may have accepted the message. Sending again may deliver it twice.
    Unknown,
}

/// A failed send or connection test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: FailureKind,
    pub reply_code: Option<u16>,
    pub message: String,
    /// The provider said when to try again (HTTP `Retry-After`): not before then.
    pub retry_after: Option<std::time::Duration>,
}

impl SendError {
    /// The same failure, to be retried no earlier than `after`.
    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn transient(reply_code: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            reply_code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unknown(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Unknown,
            reply_code: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reply_code: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            reply_code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A provider connection for one account.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// One line saying what this connector sends through, for logs and the API.
    fn describe(&self) -> String;

    /// Hands one message to the provider.
    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError>;

    /// Checks that the provider can be reached (and that credentials are accepted), without sending.
    async fn test_connection(&self) -> Result<String, SendError>;
}
