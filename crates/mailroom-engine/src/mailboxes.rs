//! Test & enable (MISSION B5): testing a mailbox's incoming (IMAP) and outgoing (SMTP) sides, the
//! background job runner that tests many mailboxes (within each profile's `max_connections`), and
//! the loop that tries transiently failed tests again with backoff until they pass or give up.

use crate::connectors::ConnectorDefaults;
use mailroom_connect::{
    Connector, FailureKind, ImapSettings, SendError, SmtpConnector, SmtpSettings,
};
use mailroom_core::account::SmtpTimeouts;
use mailroom_core::mailbox::{
    Approval, MAX_TEST_TRIES, MissingStep, SyncMethod, TestStatus, test_retry_delay_ms,
};
use mailroom_store::{MailboxRecord, MailboxTestRecord, Store, StoreResult, now_ms};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The kind of job that tests mailboxes; its params may name one mailbox approved implicitly
/// (`approve_mailbox`: a user testing their own mailbox).
pub const TEST_MAILBOXES_JOB: &str = "test-mailboxes";

/// Timing of mailbox tests. Tests shorten them through configuration.
#[derive(Debug, Clone)]
pub struct MailboxTestConfig {
    /// The delay before the second try of a transiently failing test; doubled for each further try.
    pub retry_initial: Duration,
    /// One direction's test, from connecting to logging out.
    pub timeout: Duration,
    /// How often the runner looks for jobs and due retries (it is also woken when a job is made).
    pub poll_interval: Duration,
    /// How long a job stays this node's without a renewal; another node (or this one after a
    /// restart) resumes it afterwards.
    pub job_lease: Duration,
}

impl Default for MailboxTestConfig {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            job_lease: Duration::from_secs(30),
        }
    }
}

/// The connections a profile's servers may see from this node at once (its `max_connections`),
/// shared by tests and sync. A sync connection waiting in IDLE holds its place only while nobody
/// else waits for one: `contended` tells it to give the place back.
pub(crate) struct ProfilePlaces {
    semaphore: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    pub(crate) contended: Notify,
}

impl ProfilePlaces {
    fn new(max_connections: u32) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max_connections as usize)),
            waiting: Default::default(),
            contended: Notify::new(),
        }
    }

    /// Takes a place, waiting for one (in order of arrival) when all are taken; whoever idles on
    /// one is asked to give it back.
    pub(crate) async fn acquire(&self) -> tokio::sync::OwnedSemaphorePermit {
        use std::sync::atomic::Ordering;
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return permit;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.contended.notify_waiters();
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }

    /// Whether a connection may stay open waiting for news: a place is free and nobody waits.
    pub(crate) fn uncontended(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0
            && self.semaphore.available_permits() > 0
    }
}

/// Tests mailboxes and runs the jobs that do so.
pub struct MailboxWorker {
    /// Mailboxes' logins: passwords, or access tokens of connected mailboxes.
    pub(crate) oauth: Arc<crate::oauth::OAuthService>,
    store: Store,
    defaults: ConnectorDefaults,
    config: MailboxTestConfig,
    node_id: String,
    /// Connections to each profile's servers: at most its `max_connections` at once on this node.
    profile_places: Mutex<HashMap<Uuid, (u32, Arc<ProfilePlaces>)>>,
    wake: Notify,
}

/// The outcome of one direction's test.
enum Tested {
    Skipped,
    Passed(String),
    Failed(SendError),
}

impl MailboxWorker {
    pub fn new(
        store: Store,
        defaults: ConnectorDefaults,
        config: MailboxTestConfig,
        node_id: String,
        oauth: Arc<crate::oauth::OAuthService>,
    ) -> Self {
        Self {
            store,
            defaults,
            config,
            node_id,
            oauth,
            profile_places: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Wakes the runner: a job was just made.
    pub fn job_created(&self) {
        self.wake.notify_one();
    }

    /// The places for connections to a profile's servers on this node (tests and sync share them).
    pub(crate) fn profile_places(&self, profile: Uuid, max_connections: u32) -> Arc<ProfilePlaces> {
        let mut places = self.profile_places.lock().expect("places lock");
        let entry = places.entry(profile).or_insert_with(|| {
            (
                max_connections,
                Arc::new(ProfilePlaces::new(max_connections)),
            )
        });
        if entry.0 != max_connections {
            // The profile's limit changed: connections under way keep their old places.
            *entry = (
                max_connections,
                Arc::new(ProfilePlaces::new(max_connections)),
            );
        }
        entry.1.clone()
    }

    /// Tests one mailbox and records what the test did to it. With `approve`, an address that is
    /// not approved yet is approved by the test (a user testing their own mailbox, allowed to
    /// approve it); otherwise an unapproved mailbox is not connected to at all when the
    /// organisation processes only approved mailboxes.
    pub async fn test_mailbox(&self, id: Uuid, approve: bool) -> StoreResult<MailboxRecord> {
        let mailbox = self.store.mailbox(id).await?;
        let settings = self.store.email_settings().await?;
        let needs_approval =
            settings.approval_required(mailbox.kind) && mailbox.approval != Approval::Approved;
        let approve = approve && needs_approval;
        let refuse = |reason: String| MailboxTestRecord {
            incoming_status: TestStatus::Failure,
            outgoing_status: TestStatus::Failure,
            act_status: TestStatus::NotRun,
            enabled: false,
            last_error: Some(reason.clone()),
            test_tries: 0,
            next_test_at_ms: None,
            approve: false,
            disabled_because: mailbox.enabled.then_some(reason),
        };
        if needs_approval && !approve {
            let reason = MissingStep::NotApproved.message("incoming");
            return self.store.record_mailbox_test(id, &refuse(reason)).await;
        }
        let Some(profile_id) = mailbox.profile_id else {
            return self
                .store
                .record_mailbox_test(id, &refuse("the mailbox has no server profile".into()))
                .await;
        };
        let profile = self.store.server_profile(profile_id).await?;
        if profile.kind == mailroom_core::mailbox::ProfileKind::ExchangeOnline {
            // Exchange Online over Microsoft Graph: the registration's token must reach the mailbox.
            let reached = match self.oauth.graph_for_mailbox(&profile, &mailbox).await {
                Ok(graph) => graph.test_connection().await,
                Err(error) => Err(error),
            };
            let tested = |on: bool| match (&reached, on) {
                (_, false) => Tested::Skipped,
                (Ok(text), true) => Tested::Passed(text.clone()),
                (Err(error), true) => Tested::Failed(error.clone()),
            };
            let record = self.judge(
                &mailbox,
                &tested(mailbox.incoming == SyncMethod::ServerSideSync),
                &tested(mailbox.outgoing == SyncMethod::ServerSideSync),
                approve,
            );
            return self.store.record_mailbox_test(id, &record).await;
        }
        let login = match self.oauth.mailbox_login(&mailbox, &profile).await {
            Ok(login) => login,
            Err(error) => {
                // No way to log in (no password, not connected, sign-in refused): both directions
                // fail with the reason, transient ones to be tried again.
                let failed = |on: bool| {
                    if on {
                        Tested::Failed(error.clone())
                    } else {
                        Tested::Skipped
                    }
                };
                let record = self.judge(
                    &mailbox,
                    &failed(mailbox.incoming == SyncMethod::ServerSideSync),
                    &failed(mailbox.outgoing == SyncMethod::ServerSideSync),
                    approve,
                );
                return self.store.record_mailbox_test(id, &record).await;
            }
        };
        let (username, password) = (login.username.clone(), login.secret.clone());
        // One place for the whole test: its connections are opened one after the other, so a
        // mailbox holds at most one of the profile's connections, and each finishes in turn.
        let places = self.profile_places(profile.id, profile.processing.max_connections);
        let place = places.acquire().await;
        let incoming = if mailbox.incoming == SyncMethod::ServerSideSync {
            match mailroom_connect::test_imap(&ImapSettings {
                host: profile.incoming.host.clone(),
                port: profile.incoming.port,
                security: profile.incoming.security,
                username: username.clone(),
                password: password.clone(),
                oauth2: login.oauth2,
                timeout: self.config.timeout,
                extra_root_certificates: self.defaults.extra_root_certificates.clone(),
            })
            .await
            {
                Ok(text) => Tested::Passed(text),
                Err(error) => Tested::Failed(error),
            }
        } else {
            Tested::Skipped
        };
        let outgoing = if mailbox.outgoing == SyncMethod::ServerSideSync {
            let seconds = self.config.timeout.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
            let connector = SmtpConnector::new(SmtpSettings {
                account_label: format!("mailbox-{id}"),
                host: profile.outgoing.host.clone(),
                port: profile.outgoing.port,
                security: profile.outgoing.security,
                username: Some(username),
                password: Some(password),
                oauth2: login.oauth2,
                max_connections: 1,
                timeouts: SmtpTimeouts {
                    connect_s: seconds,
                    greeting_s: seconds,
                    command_s: seconds,
                    ..SmtpTimeouts::default()
                },
                ehlo_name: self.defaults.hostname.clone(),
                extra_root_certificates: self.defaults.extra_root_certificates.clone(),
                gate: None,
            });
            match connector.test_connection().await {
                Ok(text) => Tested::Passed(text),
                Err(error) => Tested::Failed(error),
            }
        } else {
            Tested::Skipped
        };
        drop(place);
        let record = self.judge(&mailbox, &incoming, &outgoing, approve);
        let said = |tested: &Tested| match tested {
            Tested::Skipped => "off".to_owned(),
            Tested::Passed(text) => text.clone(),
            Tested::Failed(error) => error.message.clone(),
        };
        tracing::info!(
            event = "mailbox_tested",
            mailbox = %id,
            enabled = record.enabled,
            incoming = %said(&incoming),
            outgoing = %said(&outgoing),
            error = record.last_error.as_deref().unwrap_or(""),
            "tested a mailbox"
        );
        self.store.record_mailbox_test(id, &record).await
    }

    /// What the directions' outcomes do to the mailbox: all passed enables it; a permanent failure
    /// disables it at once; a transient one is tried again later, up to `MAX_TEST_TRIES` tries.
    fn judge(
        &self,
        mailbox: &MailboxRecord,
        incoming: &Tested,
        outgoing: &Tested,
        approve: bool,
    ) -> MailboxTestRecord {
        let status = |tested: &Tested| match tested {
            Tested::Skipped => TestStatus::NotRun,
            Tested::Passed(_) => TestStatus::Success,
            Tested::Failed(_) => TestStatus::Failure,
        };
        let failures: Vec<(&str, &SendError)> = [("incoming", incoming), ("outgoing", outgoing)]
            .into_iter()
            .filter_map(|(direction, tested)| match tested {
                Tested::Failed(error) => Some((direction, error)),
                _ => None,
            })
            .collect();
        let reason = failures
            .iter()
            .map(|(direction, error)| format!("{direction}: {}", error.message))
            .collect::<Vec<_>>()
            .join("; ");
        let permanent = failures
            .iter()
            .any(|(_, error)| error.kind == FailureKind::Permanent);
        let base = MailboxTestRecord {
            incoming_status: status(incoming),
            outgoing_status: status(outgoing),
            // Appointments, contacts and tasks are not synchronized yet: nothing to test.
            act_status: TestStatus::NotRun,
            enabled: false,
            last_error: None,
            test_tries: 0,
            next_test_at_ms: None,
            approve,
            disabled_because: None,
        };
        if failures.is_empty() {
            let nothing_on =
                matches!(incoming, Tested::Skipped) && matches!(outgoing, Tested::Skipped);
            return MailboxTestRecord {
                enabled: !nothing_on,
                last_error: nothing_on
                    .then(|| "incoming and outgoing email are both off for this mailbox".into()),
                ..base
            };
        }
        if permanent {
            return MailboxTestRecord {
                last_error: Some(reason.clone()),
                disabled_because: Some(reason),
                ..base
            };
        }
        let tries = mailbox.test_tries + 1;
        if tries >= MAX_TEST_TRIES {
            let reason = format!("{reason} (gave up after {tries} tries)");
            return MailboxTestRecord {
                last_error: Some(reason.clone()),
                disabled_because: Some(reason),
                ..base
            };
        }
        let delay = test_retry_delay_ms(tries, self.config.retry_initial.as_millis() as u64);
        MailboxTestRecord {
            last_error: Some(format!(
                "{reason} (try {tries} of {MAX_TEST_TRIES}; trying again in {} s)",
                delay.div_ceil(1000)
            )),
            test_tries: tries,
            next_test_at_ms: Some(now_ms() + delay as i64),
            ..base
        }
    }

    /// Runs jobs and due retries until `stopping`.
    pub async fn run(self: Arc<Self>, stopping: CancellationToken) {
        loop {
            if stopping.is_cancelled() {
                return;
            }
            let mut busy = false;
            match self.run_one_job(&stopping).await {
                Ok(ran) => busy |= ran,
                Err(error) => tracing::warn!(%error, "running a mailbox job failed; trying again"),
            }
            match self.retry_due_tests().await {
                Ok(ran) => busy |= ran,
                Err(error) => tracing::warn!(%error, "retrying mailbox tests failed; trying again"),
            }
            if !busy {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
    }

    /// Takes one job and tests its pending mailboxes, many at once (each profile's connection cap
    /// holds through `places`). Returns whether there was a job.
    async fn run_one_job(self: &Arc<Self>, stopping: &CancellationToken) -> StoreResult<bool> {
        let lease = self.config.job_lease.as_millis() as i64;
        let now = now_ms();
        let Some(job) = self.store.take_job(&self.node_id, now, now + lease).await? else {
            return Ok(false);
        };
        let approve_mailbox: Option<Uuid> = job
            .params
            .get("approve_mailbox")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok());
        let pending = self.store.pending_job_items(job.id).await?;
        tracing::info!(event = "job_started", job = %job.id, kind = %job.kind, pending = pending.len(), "running a job");
        let lost = CancellationToken::new();
        let renewer = {
            let (store, node, lost, job_id) = (
                self.store.clone(),
                self.node_id.clone(),
                lost.clone(),
                job.id,
            );
            let every = self.config.job_lease / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match store.renew_job(job_id, &node, now_ms() + lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.cancel();
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(%error, job = %job_id, "renewing a job failed")
                        }
                    }
                }
            })
        };
        // Tests of different profiles run side by side; each waits for a place of its profile.
        let running = Arc::new(Semaphore::new(256));
        let mut tasks = tokio::task::JoinSet::new();
        for mailbox in pending {
            if stopping.is_cancelled() || lost.is_cancelled() {
                break;
            }
            let permit = running
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let worker = self.clone();
            let job_id = job.id;
            let approve = approve_mailbox == Some(mailbox);
            tasks.spawn(async move {
                let _permit = permit;
                let (succeeded, detail) = match worker.test_mailbox(mailbox, approve).await {
                    Ok(record) => (
                        record.enabled,
                        record.last_error.unwrap_or_else(|| "enabled".into()),
                    ),
                    Err(error) => (false, error.to_string()),
                };
                if let Err(error) = worker.store.finish_job_item(job_id, mailbox, succeeded, &detail).await {
                    tracing::warn!(%error, job = %job_id, "recording a job item failed; the job will test it again");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        renewer.abort();
        if stopping.is_cancelled() {
            let _ = self.store.release_job(job.id, &self.node_id).await;
        }
        Ok(true)
    }

    /// Tests again the mailboxes whose transiently failed test is due. Returns whether any was.
    async fn retry_due_tests(self: &Arc<Self>) -> StoreResult<bool> {
        let due = self
            .store
            .take_due_mailbox_retests(now_ms(), 5 * 60_000, 64)
            .await?;
        if due.is_empty() {
            return Ok(false);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for mailbox in due {
            let worker = self.clone();
            tasks.spawn(async move {
                if let Err(error) = worker.test_mailbox(mailbox, false).await {
                    tracing::warn!(%error, mailbox = %mailbox, "retrying a mailbox test failed");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(true)
    }
}
