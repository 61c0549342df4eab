//! Short-lived in-memory copies of what every API request reads: token lookups and scenario routing.
//!
//! Each entry lives at most [`TTL`], so a change made by another node is seen within that time even if
//! its notification is lost; changes made through this store invalidate the copies at once, and on
//! PostgreSQL every other node drops its copies when notified.

use crate::{Account, ApiToken, ScenarioRow, User};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub(crate) const TTL: Duration = Duration::from_secs(1);

/// Scenarios and accounts, as routing needs them.
pub(crate) struct Routing {
    pub scenarios: Vec<ScenarioRow>,
    pub accounts: HashMap<Uuid, Account>,
}

/// A token, its user, and when they were read.
type CachedToken = ((ApiToken, User), Instant);

#[derive(Default)]
pub(crate) struct Caches {
    /// When the suppression list was last seen empty (sends skip their lookup for a second).
    pub(crate) suppressions_empty: Mutex<Option<Instant>>,
    /// The active DKIM signer of each domain, and when they were read.
    pub(crate) dkim_signers: Mutex<Option<(crate::DkimSigners, Instant)>>,
    /// Each webhook endpoint's signing secrets, and when they were read (a delivery costs no read
    /// and no decryption; a rotation on this node is seen at once, on another within a second).
    pub(crate) webhook_secrets:
        Mutex<HashMap<Uuid, (Vec<mailroom_core::webhook::SigningSecret>, Instant)>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    routing: Mutex<Option<(Arc<Routing>, Instant)>>,
}

impl Caches {
    pub(crate) fn token(&self, hash: &str) -> Option<(ApiToken, User)> {
        let tokens = self.tokens.lock().expect("cache lock");
        tokens
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(token, _)| token.clone())
    }

    pub(crate) fn remember_token(&self, hash: String, token: (ApiToken, User)) {
        let mut tokens = self.tokens.lock().expect("cache lock");
        if tokens.len() > 10_000 {
            tokens.retain(|_, (_, at)| at.elapsed() < TTL);
        }
        tokens.insert(hash, (token, Instant::now()));
    }

    pub(crate) fn forget_tokens(&self) {
        self.tokens.lock().expect("cache lock").clear();
    }

    /// A shared copy: every send asks, so nothing is cloned but the pointer.
    pub(crate) fn routing(&self) -> Option<Arc<Routing>> {
        let routing = self.routing.lock().expect("cache lock");
        routing
            .as_ref()
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(r, _)| r.clone())
    }

    pub(crate) fn remember_routing(&self, routing: Arc<Routing>) {
        *self.routing.lock().expect("cache lock") = Some((routing, Instant::now()));
    }

    pub(crate) fn forget_routing(&self) {
        *self.routing.lock().expect("cache lock") = None;
    }

    /// Drops every copy: another node changed something.
    pub(crate) fn forget_all(&self) {
        self.forget_tokens();
        self.forget_routing();
    }
}
