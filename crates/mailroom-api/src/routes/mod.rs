//! Route groups of the API, one module each.

pub mod accounts;
pub mod addin;
pub mod app_registrations;
pub mod attachments;
pub mod dkim;
pub mod documents;
pub mod html;
pub mod inbound;
pub mod mailboxes;
pub mod messages;
pub mod nodes;
pub mod oauth;
pub mod scenarios;
pub mod stats;
pub mod suppressions;
pub mod system;
pub mod teams;
pub mod templates;
pub mod unsubscribes;
pub mod users;
pub mod webhooks;
