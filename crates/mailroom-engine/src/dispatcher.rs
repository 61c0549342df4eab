//! The dispatcher loop, the send tasks and the outcome writer.

use crate::connectors::{ConnectorCache, ConnectorDefaults};
use mailroom_connect::{FailureKind, OutgoingMessage};
use mailroom_core::account::ConnectorKind;
use mailroom_core::address::{EmailAddress, Mailbox};
use mailroom_core::compose::{AttachmentPart, Composition, compose};
use mailroom_core::message::AttemptOutcome;
use mailroom_core::rate::SlidingWindow;
use mailroom_core::retry::RetryPolicy;
use mailroom_store::{Account, AttemptRecord, ClaimedMessage, InsertClaim, Outcome, Store, now_ms};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

/// Timing and sizing of the engine. Tests shorten the windows through configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Owner name written on leases; unique per process start.
    pub node_id: String,
    pub poll_interval: Duration,
    pub lease_duration: Duration,
    /// The window of the per-account rate limit ("messages per minute" is per this window).
    pub rate_window: Duration,
    pub retry: RetryPolicy,
    /// How many claimed messages per concurrency slot may wait ahead of sending.
    pub prefetch_per_slot: u32,
    /// How long new mail may wait for a place in its account's lane when every place is taken,
    /// before it is stored queued instead (see [`Engine::reserve`]).
    pub in_flow_delay: Duration,
    pub connectors: ConnectorDefaults,
    /// Where attachment bytes are.
    pub blobs: mailroom_store::BlobStore,
    /// Bytes of messages with attachments that may be read and encoded at the same time; a message
    /// waits for its share, so memory stays bounded however many large messages are due.
    pub encode_budget_bytes: u64,
    /// Uploads no message refers to are deleted after this long.
    pub attachment_retention: Duration,
    /// Sent mail older than this loses its content (bodies, attachments); `None` keeps it for ever.
    pub sent_retention: Option<Duration>,
    /// How often retention passes over the sent archive (and over old events).
    pub retention_interval: Duration,
    /// Events (and their webhook deliveries and delivery log) older than this are deleted once
    /// every endpoint is done with them.
    pub event_retention: Duration,
    /// This machine's name, shown in the list of nodes.
    pub host: String,
    /// A node that has not heartbeat for this long is declared dead and its leases are recovered
    /// by another node (nodes heartbeat, and look for dead nodes, ten times per timeout).
    pub node_timeout: Duration,
    /// Timing of mailbox tests and the jobs that run them.
    pub mailbox_tests: crate::mailboxes::MailboxTestConfig,
    /// Timing and batch sizes of mailbox sync.
    pub sync: crate::sync::SyncConfig,
    /// How webhooks are delivered.
    pub webhooks: crate::webhooks::WebhookConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            node_id: format!("node-{}", Uuid::new_v4()),
            poll_interval: Duration::from_millis(250),
            lease_duration: Duration::from_secs(60),
            rate_window: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            prefetch_per_slot: 32,
            in_flow_delay: Duration::from_millis(100),
            connectors: ConnectorDefaults {
                hostname: "localhost".into(),
                extra_root_certificates: Vec::new(),
                pickup_root: "pickup".into(),
                node_id: String::new(),
                node_timeout: Duration::from_secs(10),
                live_nodes: Default::default(),
            },
            blobs: mailroom_store::BlobStore::new("blobs"),
            encode_budget_bytes: 256 * 1024 * 1024,
            attachment_retention: Duration::from_secs(24 * 3600),
            host: "localhost".into(),
            node_timeout: Duration::from_secs(10),
            sent_retention: None,
            retention_interval: Duration::from_secs(3600),
            event_retention: Duration::from_secs(30 * 86_400),
            mailbox_tests: Default::default(),
            sync: Default::default(),
            webhooks: Default::default(),
        }
    }
}

/// Per-account state of the dispatcher, shared with the send tasks and with reservations.
#[derive(Clone)]
struct AccountLane {
    account: Arc<Account>,
    /// Shared with the send tasks: a slot is taken when an attempt starts, not when it is claimed,
    /// so the limit holds for the moments messages actually go out.
    window: Arc<Mutex<SlidingWindow>>,
    permits: Arc<Semaphore>,
    concurrency: u32,
    /// Claimed and not yet finished (waiting for a permit or sending), reservations included.
    held: Arc<Places>,
    /// The queue generation at which the dispatcher last found no due mail left for this account
    /// (`NOT_DRAINED` if it has not). New mail may skip the queue only while this is current.
    drained_at: Arc<AtomicU64>,
}

const NOT_DRAINED: u64 = u64::MAX;

/// The places of an account's lane: messages claimed or reserved and not finished.
#[derive(Default)]
struct Places {
    taken: AtomicU32,
    /// Signalled each time a place is given back, for new mail waiting for room.
    room: Notify,
    /// Signalled when the dispatcher finds the account's queue drained, for new mail waiting
    /// behind it.
    drained: Notify,
}

impl Places {
    /// Takes a place; returns how many were taken before.
    fn take(&self) -> u32 {
        self.taken.fetch_add(1, Ordering::AcqRel)
    }

    fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_one();
    }

    /// Undoes a [`Places::take`] that did not fit, without waking anyone: no room was made.
    fn untake(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }

    fn taken(&self) -> u32 {
        self.taken.load(Ordering::Acquire)
    }
}

/// Why a lane gave no place to new mail.
enum NoPlace {
    /// Every place is taken; one may be given back soon.
    Full(Arc<Places>),
    /// Older mail of the account waits in the queue: new mail joins it, at the pace places are
    /// given back, unless the dispatcher finds the queue drained meanwhile.
    Behind(Arc<Places>),
    /// The engine is stopping, does not know the account, or the rate window has no room.
    Unavailable,
}

impl AccountLane {
    /// How many messages may be claimed and unfinished at once.
    fn capacity(&self, prefetch_per_slot: u32) -> u32 {
        self.concurrency * prefetch_per_slot.max(1)
    }
}

/// A place in an account's lane, taken for one message before it is stored so that it can be stored
/// already claimed and sent at once, without waiting for the dispatcher. Dropping it unused gives the
/// place back.
pub struct Reservation {
    engine: Engine,
    lane: AccountLane,
    used: bool,
}

/// The running engine. Cloning shares it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: EngineConfig,
    connectors: ConnectorCache,
    wake: Notify,
    /// A send ended and gave its place back: the dispatcher looks again, but claims only for
    /// lanes not known to be drained (see the dispatch loop).
    send_ended: Notify,
    accounts_changed: Notify,
    stopping: CancellationToken,
    tasks: TaskTracker,
    /// The encode budget in KiB permits.
    encode_budget: Arc<Semaphore>,
    /// A signer per DKIM key (by key id): parsing a key is costly, signing with it is not.
    dkim_signers: Mutex<HashMap<Uuid, Arc<mailroom_connect::dkim::Signer>>>,
    lanes: Mutex<HashMap<Uuid, AccountLane>>,
    /// Counts the times due mail may have joined the queue outside the store writer's sight (a
    /// retry, a release, a recovered lease): a lane found drained before the latest of them is
    /// not. New mail stored queued does not count: the store writer tracks it itself.
    queue_generation: AtomicU64,
    /// Where send tasks report; present from `start` until the dispatcher stops.
    outcomes: Mutex<Option<mpsc::UnboundedSender<AttemptRecord>>>,
    /// The runtime `start` ran on: send tasks started from elsewhere (the API) run there too.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Tests mailboxes and runs the jobs that do so.
    mailboxes: Arc<crate::mailboxes::MailboxWorker>,
    /// Synchronizes the mailboxes this node holds.
    sync: Arc<crate::sync::SyncWorker>,
    /// App registrations' checks and the tokens connectors present.
    oauth: Arc<crate::oauth::OAuthService>,
}

impl Engine {
    pub fn new(store: Store, config: EngineConfig) -> Self {
        let encode_budget = Arc::new(Semaphore::new(budget_permits(config.encode_budget_bytes)));
        let oauth = Arc::new(crate::oauth::OAuthService::new(
            store.clone(),
            &config.connectors.extra_root_certificates,
        ));
        let mailboxes = Arc::new(crate::mailboxes::MailboxWorker::new(
            store.clone(),
            config.connectors.clone(),
            config.mailbox_tests.clone(),
            config.node_id.clone(),
            oauth.clone(),
        ));
        let sync = Arc::new(crate::sync::SyncWorker::new(
            store.clone(),
            config.blobs.clone(),
            config.connectors.clone(),
            config.sync.clone(),
            config.node_id.clone(),
            mailboxes.clone(),
        ));
        Self {
            inner: Arc::new(Inner {
                oauth,
                sync,
                mailboxes,
                store,
                config,
                connectors: ConnectorCache::default(),
                wake: Notify::new(),
                send_ended: Notify::new(),
                accounts_changed: Notify::new(),
                stopping: CancellationToken::new(),
                tasks: TaskTracker::new(),
                encode_budget,
                dkim_signers: Mutex::default(),
                lanes: Mutex::new(HashMap::new()),
                queue_generation: AtomicU64::new(0),
                outcomes: Mutex::new(None),
                runtime: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// App registrations' checks and the tokens connectors present.
    pub fn oauth(&self) -> &Arc<crate::oauth::OAuthService> {
        &self.inner.oauth
    }

    /// Tests mailboxes and runs the jobs that do so.
    pub fn mailboxes(&self) -> &Arc<crate::mailboxes::MailboxWorker> {
        &self.inner.mailboxes
    }

    /// Tells the dispatcher that mail is waiting that the store writer did not queue itself (a
    /// retry, a confirmed draft): until the dispatcher has claimed it, no new mail skips the queue.
    pub fn wake(&self) {
        self.queue_grew();
        self.inner.wake.notify_one();
    }

    /// Tells the dispatcher that new mail was stored `queued`. The store writer, which stored it,
    /// already keeps new mail of that account from being stored claimed until a claim has found the
    /// account's queue empty; the queue generation is left alone, so that a reservation taken
    /// while the dispatcher claims is still granted once the claim has emptied the queue.
    pub fn new_mail_queued(&self) {
        self.inner.wake.notify_one();
    }

    /// Takes a place for one new message of `account_id` that is due now, so that it can be stored
    /// already claimed ([`Reservation::claim`]) and handed straight to a send task
    /// ([`Reservation::start`]). `None` when the message should be stored queued instead: the
    /// engine is stopping or does not know the account yet, older mail of the account is waiting
    /// (so new mail does not overtake it), or the account's concurrency or rate limit has no room.
    /// The store has the last word: it stores the message queued after all when new mail of the
    /// account was stored queued since the dispatcher's last claim emptied the queue.
    ///
    /// When every place of the account is taken, this waits up to the configured `in_flow_delay`
    /// for one to be given back (flow control, as Postfix's `in_flow_delay`): while mail arrives
    /// faster than it is delivered, callers are slowed to the delivery rate for a moment instead of
    /// their mail taking the longer way through the queue.
    ///
    /// While older mail of the account waits in the queue, the same flow control holds: a caller
    /// waits, up to the same delay, for the dispatcher to find the queue drained and then takes a
    /// place — or joins the queue when the delay runs out. Without this, a queue that formed under
    /// load stayed for as long as the load: mail joining it is answered at once, so nothing slowed
    /// the callers down to the rate the queue drains at. Letting one waiting caller join the queue
    /// per place given back (as this did before) held the queue at its length instead of draining
    /// it: callers were admitted at the delivery rate. With several nodes, whose lanes fill with
    /// claimed mail, that kept most mail going through the queue (three nodes: 15–56 % of the mail
    /// skipped it; waiting for the drain: 70–79 %, see the README's figures of 2026-11-29).
    pub async fn reserve(&self, account_id: Uuid) -> Option<Reservation> {
        let deadline = tokio::time::Instant::now() + self.inner.config.in_flow_delay;
        let mut waited_behind = false;
        // Why new mail is queued after all, counted: whether several nodes run in "skip the
        // queue" mode or in "queue" mode is decided here.
        let refused = |reason: &'static str| {
            metrics::counter!("mailroom_new_mail_queued_total", "reason" => reason).increment(1);
            None
        };
        loop {
            // Behind the queue: wait until the dispatcher finds it drained. Without room: until a
            // place is given back.
            let (places, behind) = match self.try_reserve(account_id) {
                Ok(reservation) => return Some(reservation),
                Err(NoPlace::Unavailable) => return refused("unavailable"),
                Err(NoPlace::Behind(_)) if waited_behind => return refused("behind"),
                Err(NoPlace::Behind(places)) => {
                    waited_behind = true;
                    (places, true)
                }
                Err(NoPlace::Full(places)) => (places, false),
            };
            let reason = if behind { "behind" } else { "full" };
            if tokio::time::Instant::now() >= deadline {
                return refused(reason);
            }
            let wake = if behind {
                places.drained.notified()
            } else {
                places.room.notified()
            };
            // Listening before looking again: a drain (announced to the waiters present only) or
            // a place given back between the look above and here is not missed.
            tokio::pin!(wake);
            wake.as_mut().enable();
            if let Ok(reservation) = self.try_reserve(account_id) {
                return Some(reservation);
            }
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep_until(deadline) => return refused(reason),
                _ = self.inner.stopping.cancelled() => return None,
            }
        }
    }

    fn try_reserve(&self, account_id: Uuid) -> Result<Reservation, NoPlace> {
        let inner = &self.inner;
        if inner.stopping.is_cancelled() {
            return Err(NoPlace::Unavailable);
        }
        let lane = inner
            .lanes
            .lock()
            .expect("lanes lock")
            .get(&account_id)
            .ok_or(NoPlace::Unavailable)?
            .clone();
        if lane.drained_at.load(Ordering::Acquire) != inner.queue_generation.load(Ordering::Acquire)
        {
            return Err(NoPlace::Behind(lane.held.clone()));
        }
        let held = lane.held.take();
        if held >= lane.capacity(inner.config.prefetch_per_slot) {
            lane.held.untake();
            return Err(NoPlace::Full(lane.held.clone()));
        }
        // Claimed messages not yet started will take slots of this window too.
        let window_has_room = lane
            .window
            .lock()
            .expect("window lock")
            .available(now_ms() as u64)
            .is_none_or(|available| available > held);
        if !window_has_room {
            lane.held.untake();
            return Err(NoPlace::Unavailable);
        }
        Ok(Reservation {
            engine: self.clone(),
            lane,
            used: false,
        })
    }

    /// Tells the dispatcher that accounts were added, changed or removed.
    pub fn accounts_changed(&self) {
        self.inner.accounts_changed.notify_one();
        self.inner.wake.notify_one();
    }

    /// Starts the dispatcher on the current runtime — where every send task will run, so that a
    /// runtime of its own keeps delivery from queueing behind API requests; returns a handle that
    /// finishes once shutdown has drained.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let _ = self.inner.runtime.set(tokio::runtime::Handle::current());
        // Garbage collection has its own task so that a long sweep never holds up claiming.
        let collector = self.clone();
        tokio::spawn(async move {
            let interval = (collector.inner.config.attachment_retention / 4)
                .clamp(Duration::from_millis(200), Duration::from_secs(600));
            loop {
                collector.collect_garbage().await;
                tokio::select! {
                    _ = collector.inner.stopping.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
        // Heartbeats and the recovery of dead nodes' leases too: a slow claim must not make this
        // node look dead.
        let watcher = self.clone();
        tokio::spawn(async move { watcher.watch_nodes().await });
        let worker = self.inner.mailboxes.clone();
        let stopping = self.inner.stopping.clone();
        tokio::spawn(async move { worker.run(stopping).await });
        let sync = self.inner.sync.clone();
        let stopping = self.inner.stopping.clone();
        self.inner
            .tasks
            .spawn(async move { sync.run(stopping).await });
        match crate::webhooks::WebhookWorker::new(
            self.inner.store.clone(),
            self.inner.config.node_id.clone(),
            self.inner.config.webhooks.clone(),
            &self.inner.config.connectors.extra_root_certificates,
        ) {
            Ok(webhooks) => {
                let stopping = self.inner.stopping.clone();
                self.inner
                    .tasks
                    .spawn(async move { std::sync::Arc::new(webhooks).run(stopping).await });
            }
            Err(error) => {
                tracing::error!(%error, "webhooks cannot be delivered: their HTTP client failed to start");
            }
        }
        if let Some(retention) = self.inner.config.sent_retention {
            let keeper = self.clone();
            tokio::spawn(async move { keeper.apply_retention(retention).await });
        }
        let keeper = self.clone();
        tokio::spawn(async move { keeper.forget_old_events().await });
        let (outcomes, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(run_outcome_writer(self.inner.store.clone(), receiver));
        *self.inner.outcomes.lock().expect("outcomes lock") = Some(outcomes.clone());
        let engine = self.clone();
        tokio::spawn(async move {
            engine.dispatch(outcomes).await;
            // `dispatch` returned: no new claims or reservations. Wait for send tasks, then for the
            // writer to flush.
            engine.inner.outcomes.lock().expect("outcomes lock").take();
            engine.inner.tasks.close();
            engine.inner.tasks.wait().await;
            let _ = writer.await;
        })
    }

    /// Stops claiming; claimed messages not yet being sent are released, messages being sent finish.
    pub fn shutdown(&self) {
        self.inner.stopping.cancel();
    }

    async fn dispatch(&self, outcomes: mpsc::UnboundedSender<AttemptRecord>) {
        let inner = &self.inner;
        let mut accounts: Vec<Arc<Account>> = Vec::new();
        let mut accounts_loaded_at: Option<Instant> = None;
        let mut last_renewal = Instant::now();
        let mut last_recovery: Option<Instant> = None;
        let lease_ms = inner.config.lease_duration.as_millis() as i64;
        // Other nodes queue mail and change accounts too (PostgreSQL).
        let queued_elsewhere = inner.store.mail_queued_signal();
        let changed_elsewhere = inner.store.config_changed_signal();
        // Woken only because sends ended: a lane whose last claim found its queue empty, with
        // nothing queued outside the store writer's sight since, has nothing to claim. New mail
        // stored queued wakes the dispatcher itself (`new_mail_queued`, or `NOTIFY` from any node
        // on PostgreSQL), and the poll remains. Claiming on every ended send instead cost an empty
        // claim transaction per few sends, and with several nodes filled the lanes with queued
        // mail, so that new mail found no room and was queued in turn.
        let mut only_sends_ended = false;
        loop {
            if inner.stopping.is_cancelled() {
                return;
            }
            let now = now_ms();
            if last_recovery.is_none_or(|t| {
                t.elapsed() >= Duration::from_secs(1).min(inner.config.lease_duration / 2)
            }) {
                last_recovery = Some(Instant::now());
                // Other nodes' expired leases only: this node's own are renewed below, and one
                // renewed late (a stall longer than the lease) still belongs to a running attempt.
                match inner
                    .store
                    .recover_expired_leases(&inner.config.node_id, now)
                    .await
                {
                    Ok(recovered) => {
                        if !recovered.is_empty() {
                            self.queue_grew();
                        }
                        for lease in recovered {
                            tracing::warn!(event = "lease_recovered", message_uuid = %lease.message_id, account = %lease.account_id,
                                status = %lease.new_status, "an attempt was interrupted; the message was queued again");
                        }
                    }
                    Err(error) if error.is_full() => {}
                    Err(error) => tracing::error!(%error, "recovering expired leases failed"),
                }
            }
            if last_renewal.elapsed() >= inner.config.lease_duration / 3 {
                last_renewal = Instant::now();
                if let Err(error) = inner
                    .store
                    .renew_leases(&inner.config.node_id, now + lease_ms)
                    .await
                    && !error.is_full()
                {
                    tracing::error!(%error, "renewing leases failed");
                }
            }
            if accounts_loaded_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                match inner.store.accounts().await {
                    Ok(list) => {
                        accounts = list.into_iter().map(Arc::new).collect();
                        accounts_loaded_at = Some(Instant::now());
                        let live: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
                        inner
                            .lanes
                            .lock()
                            .expect("lanes lock")
                            .retain(|id, _| live.contains(id));
                        inner.connectors.retain(&live);
                    }
                    Err(error) => tracing::error!(%error, "loading accounts failed"),
                }
            }
            let mut next_wake = inner.config.poll_interval;
            for account in &accounts {
                // Only this loop adds or changes lanes; reservations read them.
                let known = inner
                    .lanes
                    .lock()
                    .expect("lanes lock")
                    .get(&account.id)
                    .cloned();
                let (mut lane, changed) = match known {
                    // The same settings as last time (accounts are reloaded every few seconds).
                    Some(lane) => {
                        let changed = !Arc::ptr_eq(&lane.account, account);
                        (lane, changed)
                    }
                    None => (self.new_lane(account).await, true),
                };
                if changed {
                    lane.account = account.clone();
                    lane.window
                        .lock()
                        .expect("window lock")
                        .set_limit(account.limits.rate_limit_per_minute);
                    if lane.concurrency != account.limits.concurrency_limit {
                        // Replace the permits; tasks holding old permits finish on the old semaphore.
                        lane.permits = Arc::new(Semaphore::new(attempts_at_once(account)));
                        lane.concurrency = account.limits.concurrency_limit;
                    }
                    inner
                        .lanes
                        .lock()
                        .expect("lanes lock")
                        .insert(account.id, lane.clone());
                }
                if only_sends_ended
                    && lane.drained_at.load(Ordering::Acquire)
                        == inner.queue_generation.load(Ordering::Acquire)
                {
                    continue;
                }
                let capacity = lane.capacity(inner.config.prefetch_per_slot);
                let held = lane.held.taken();
                if held > capacity / 2 {
                    continue;
                }
                let now = now_ms();
                let mut wanted = capacity - held;
                {
                    let mut window = lane.window.lock().expect("window lock");
                    if let Some(available) = window.available(now as u64) {
                        // Claimed messages not yet started will take slots of this window too.
                        let available = available.saturating_sub(held);
                        wanted = wanted.min(available);
                        if available == 0 {
                            if let Some(opening) = window.next_opening_ms(now as u64) {
                                next_wake = next_wake.min(Duration::from_millis(
                                    opening.saturating_sub(now as u64).max(1),
                                ));
                            }
                            continue;
                        }
                    }
                }
                if wanted == 0 {
                    continue;
                }
                let clock = Instant::now();
                let generation = inner.queue_generation.load(Ordering::Acquire);
                let claimed = match inner
                    .store
                    .claim_due(
                        account.id,
                        &inner.config.node_id,
                        now,
                        now + lease_ms,
                        wanted,
                    )
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        lane.drained_at.store(NOT_DRAINED, Ordering::Release);
                        if !error.is_full() {
                            tracing::error!(%error, account = %account.id, "claiming messages failed");
                        }
                        continue;
                    }
                };
                // Fewer than asked for: nothing due is left behind, so new mail may skip the
                // queue until something joins it again — starting with the callers waiting
                // behind the queue.
                if (claimed.len() as u32) < wanted {
                    if lane.drained_at.swap(generation, Ordering::AcqRel) != generation {
                        lane.held.drained.notify_waiters();
                    }
                } else {
                    lane.drained_at.store(NOT_DRAINED, Ordering::Release);
                }
                metrics::histogram!("mailroom_store_operation_seconds", "operation" => "claim")
                    .record(clock.elapsed().as_secs_f64());
                if claimed.is_empty() {
                    continue;
                }
                metrics::histogram!("mailroom_store_batch_size", "operation" => "claim")
                    .record(claimed.len() as f64);
                let connector = match inner
                    .connectors
                    .get(
                        &inner.store,
                        account,
                        &inner.config.connectors,
                        &inner.oauth,
                    )
                    .await
                {
                    Ok(connector) => connector,
                    Err(error) => {
                        tracing::error!(%error, account = %account.id, "building the connector failed; releasing claimed messages");
                        let ids: Vec<Uuid> = claimed.iter().map(|m| m.id).collect();
                        self.release_unstarted(&ids).await;
                        continue;
                    }
                };
                for message in claimed {
                    lane.held.take();
                    let task = SendTask::new(self, &lane, connector.clone(), outcomes.clone());
                    let span = tracing::info_span!("send", message_uuid = %message.id, account = %account.id, attempt = message.attempt_number);
                    inner.tasks.spawn(task.run(message).instrument(span));
                }
                // More may be due right away.
                next_wake = Duration::ZERO;
            }
            only_sends_ended = false;
            if next_wake.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = inner.stopping.cancelled() => return,
                _ = inner.send_ended.notified() => only_sends_ended = true,
                _ = inner.wake.notified() => {}
                _ = inner.accounts_changed.notified() => accounts_loaded_at = None,
                _ = notified(&queued_elsewhere) => {}
                _ = notified(&changed_elsewhere) => accounts_loaded_at = None,
                _ = tokio::time::sleep(next_wake) => {}
            }
        }
    }

    /// Keeps this node's heartbeat and declares dead the nodes that stopped beating, recovering
    /// their leases at once (with an `interrupted` attempt each), until the engine stops.
    async fn watch_nodes(&self) {
        let inner = &self.inner;
        let timeout = inner.config.node_timeout;
        let node = &inner.config.node_id;
        if let Err(error) = inner
            .store
            .register_node(node, &inner.config.host, now_ms())
            .await
        {
            tracing::error!(%error, "registering this node failed");
        }
        let period = (timeout / 10).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = inner.stopping.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let now = now_ms();
            if let Err(error) = inner.store.heartbeat(node, now).await
                && !error.is_full()
            {
                tracing::error!(%error, "the node heartbeat failed");
            }
            if let Err(error) = inner
                .store
                .renew_session_slots(node, now + timeout.as_millis() as i64)
                .await
                && !error.is_full()
            {
                tracing::error!(%error, "renewing this node's connection places failed");
            }
            match inner
                .store
                .recover_dead_nodes(node, now, timeout.as_millis() as i64)
                .await
            {
                Ok(dead) => {
                    for (dead_node, leases) in dead {
                        tracing::warn!(event = "node_declared_dead", node = %dead_node, recovered = leases.len(),
                            "a node stopped beating; the messages it was sending are queued again (each has an interrupted attempt)");
                        if !leases.is_empty() {
                            self.queue_grew();
                            inner.wake.notify_one();
                        }
                    }
                }
                Err(error) if error.is_full() => {}
                Err(error) => tracing::error!(%error, "recovering dead nodes failed"),
            }
        }
    }

    /// Deletes the content of sent mail older than `retention`, a pass every retention interval,
    /// in batches of 500 messages with a pause between them, so that sending never waits for it.
    async fn apply_retention(&self, retention: Duration) {
        let inner = &self.inner;
        loop {
            let cutoff = now_ms() - retention.as_millis() as i64;
            let mut after: Option<String> = None;
            let mut deleted = 0;
            loop {
                if inner.stopping.is_cancelled() {
                    return;
                }
                match inner
                    .store
                    .delete_sent_content(cutoff, after.as_deref(), 500)
                    .await
                {
                    Ok(batch) => {
                        deleted += batch.deleted;
                        match batch.last_seen {
                            Some(last) if !batch.newer_only => after = Some(last),
                            _ => break,
                        }
                    }
                    Err(error) => {
                        if !error.is_full() {
                            tracing::error!(%error, "deleting the content of old sent mail failed");
                        }
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if deleted > 0 {
                tracing::info!(
                    event = "retention_applied",
                    deleted,
                    "the content of old sent mail was deleted"
                );
            }
            tokio::select! {
                _ = inner.stopping.cancelled() => return,
                _ = tokio::time::sleep(inner.config.retention_interval) => {}
            }
        }
    }

    /// Deletes events older than the event retention, with their webhook deliveries and log, a pass
    /// every retention interval, 1,000 at a time with a pause between batches.
    async fn forget_old_events(&self) {
        let inner = &self.inner;
        loop {
            let cutoff = now_ms() - inner.config.event_retention.as_millis() as i64;
            let mut deleted = 0;
            loop {
                if inner.stopping.is_cancelled() {
                    return;
                }
                match inner.store.delete_old_events(cutoff, 1_000).await {
                    Ok(taken) => {
                        deleted += taken;
                        if taken < 1_000 {
                            break;
                        }
                    }
                    Err(error) => {
                        if !error.is_full() {
                            tracing::error!(%error, "deleting old events failed");
                        }
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if deleted > 0 {
                tracing::info!(
                    event = "events_forgotten",
                    deleted,
                    "old events and their webhook logs were deleted"
                );
            }
            tokio::select! {
                _ = inner.stopping.cancelled() => return,
                _ = tokio::time::sleep(inner.config.retention_interval) => {}
            }
        }
    }

    async fn new_lane(&self, account: &Arc<Account>) -> AccountLane {
        let window_ms = self.inner.config.rate_window.as_millis() as u64;
        let mut window = SlidingWindow::new(account.limits.rate_limit_per_minute, window_ms);
        let since = now_ms() - window_ms as i64;
        match self
            .inner
            .store
            .attempt_starts_since(account.id, since)
            .await
        {
            Ok(starts) => starts.into_iter().for_each(|t| window.record(t as u64)),
            Err(error) => {
                tracing::error!(%error, "reading recent attempts failed; the rate window starts empty")
            }
        }
        AccountLane {
            account: account.clone(),
            window: Arc::new(Mutex::new(window)),
            permits: Arc::new(Semaphore::new(attempts_at_once(account))),
            concurrency: account.limits.concurrency_limit,
            held: Arc::new(Places::default()),
            drained_at: Arc::new(AtomicU64::new(NOT_DRAINED)),
        }
    }

    /// Due mail joined the queue other than through the API (a release, a recovered lease): new
    /// mail must not overtake it.
    fn queue_grew(&self) {
        self.inner.queue_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Puts claimed messages whose attempt never started back in the queue.
    async fn release_unstarted(&self, ids: &[Uuid]) {
        let inner = &self.inner;
        if let Err(error) = inner.store.release(&inner.config.node_id, ids).await
            && !error.is_full()
        {
            tracing::error!(%error, messages = ?ids, "releasing claimed messages failed; their leases will expire");
        }
        self.queue_grew();
    }
}

impl Reservation {
    /// The store kept the message queued although it was reserved a place: older mail of the
    /// account waits (stored by this node or another). Until the dispatcher finds the queue
    /// drained, new mail of the account waits behind it (see [`Engine::reserve`]).
    pub fn stored_behind_older_mail(mut self) {
        metrics::counter!("mailroom_new_mail_queued_total", "reason" => "store_behind")
            .increment(1);
        self.lane.drained_at.store(NOT_DRAINED, Ordering::Release);
        // The place goes back without waking anyone: no room was made.
        self.used = true;
        self.lane.held.untake();
        self.engine.inner.wake.notify_one();
    }

    /// The lease to store the message under, for its first attempt.
    pub fn claim(&self) -> InsertClaim {
        let config = &self.engine.inner.config;
        InsertClaim {
            owner: config.node_id.clone(),
            lease_until: now_ms() + config.lease_duration.as_millis() as i64,
        }
    }

    /// Sends the message, stored with [`Reservation::claim`], in its own task. If the engine has
    /// stopped meanwhile, or the account's connector cannot be built, the message is released back
    /// to the queue for the dispatcher.
    pub fn start(mut self, message: ClaimedMessage) {
        self.used = true;
        let engine = self.engine.clone();
        let lane = self.lane.clone();
        let outcomes = engine.inner.outcomes.lock().expect("outcomes lock").clone();
        let tasks = engine.inner.tasks.clone();
        let runtime = engine
            .inner
            .runtime
            .get()
            .cloned()
            .unwrap_or_else(tokio::runtime::Handle::current);
        let span = tracing::info_span!("send", message_uuid = %message.id, account = %lane.account.id, attempt = message.attempt_number);
        let task = async move {
            let inner = &engine.inner;
            let connector = match outcomes {
                None => Err("the engine has stopped".to_owned()),
                Some(_) => inner
                    .connectors
                    .get(
                        &inner.store,
                        &lane.account,
                        &inner.config.connectors,
                        &inner.oauth,
                    )
                    .await
                    .map_err(|e| e.to_string()),
            };
            match (connector, outcomes) {
                (Ok(connector), Some(outcomes)) => {
                    SendTask::new(&engine, &lane, connector, outcomes)
                        .run(message)
                        .await
                }
                (connector, _) => {
                    let reason = connector.err().unwrap_or_default();
                    tracing::warn!(%reason, message_uuid = %message.id, "a message claimed on arrival goes back to the queue");
                    engine.release_unstarted(&[message.id]).await;
                    lane.held.give_back();
                    inner.wake.notify_one();
                }
            }
        };
        tasks.spawn_on(task.instrument(span), &runtime);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            self.lane.held.give_back();
        }
    }
}

struct SendTask {
    engine: Engine,
    account: Arc<Account>,
    connector: Arc<dyn mailroom_connect::Connector>,
    permits: Arc<Semaphore>,
    window: Arc<Mutex<SlidingWindow>>,
    held: Arc<Places>,
    outcomes: mpsc::UnboundedSender<AttemptRecord>,
}

impl SendTask {
    fn new(
        engine: &Engine,
        lane: &AccountLane,
        connector: Arc<dyn mailroom_connect::Connector>,
        outcomes: mpsc::UnboundedSender<AttemptRecord>,
    ) -> Self {
        SendTask {
            engine: engine.clone(),
            account: lane.account.clone(),
            connector,
            permits: lane.permits.clone(),
            window: lane.window.clone(),
            held: lane.held.clone(),
            outcomes,
        }
    }

    async fn run(self, message: ClaimedMessage) {
        let inner = &self.engine.inner;
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.ok(),
            _ = inner.stopping.cancelled() => None,
        };
        let started_at = match permit {
            Some(_) => self.take_rate_slot().await,
            None => None,
        };
        let (Some(permit), Some(started_at)) = (permit, started_at) else {
            // Shutting down before the attempt started: give the message back untouched.
            self.engine.release_unstarted(&[message.id]).await;
            self.held.give_back();
            return;
        };
        let clock = Instant::now();
        let result = self.attempt(&message).await;
        drop(permit);
        let finished_at = now_ms();
        let connector_kind = self.account.connector.as_str();
        metrics::histogram!("mailroom_send_duration_seconds", "connector" => connector_kind)
            .record(clock.elapsed().as_secs_f64());
        let account_label = self.account.id.to_string();
        let record = match result {
            Ok(delivered) => {
                metrics::counter!("mailroom_messages_sent_total", "account" => account_label, "connector" => connector_kind).increment(1);
                metrics::histogram!("mailroom_delivery_latency_seconds", "connector" => connector_kind)
                    .record((finished_at - message.created_at_ms).max(0) as f64 / 1000.0);
                tracing::info!(event = "email_sent", message_uuid = %message.id, message_id = %message.message_id_header, account = %self.account.id, account_name = %self.account.name, reply_code = delivered.reply_code, "email sent");
                AttemptRecord {
                    message_id: message.id,
                    lease_owner: inner.config.node_id.clone(),
                    number: message.attempt_number,
                    started_at_ms: started_at,
                    finished_at_ms: finished_at,
                    outcome: AttemptOutcome::Sent,
                    reply_code: delivered.reply_code,
                    reply_text: delivered.reply_text,
                    next: Outcome::Sent,
                }
            }
            Err(error) => {
                let exhausted = message.attempts_used >= self.account.limits.max_attempts;
                // The next attempt's time, after the account's backoff with jitter.
                // A provider that said when to come back (HTTP Retry-After) is not asked sooner.
                let retry_later = || {
                    let delay = inner
                        .config
                        .retry
                        .delay_ms(message.attempts_used, rand::thread_rng().r#gen::<f64>())
                        .max(error.retry_after.map_or(0, |d| d.as_millis() as u64));
                    Outcome::RetryAt(finished_at + delay as i64)
                };
                let (outcome, next, reply_text) = match error.kind {
                    FailureKind::Unknown if !self.account.options.retry_after_unknown => (
                        AttemptOutcome::Unknown,
                        Outcome::Failed,
                        format!(
                            "{} — the server may have accepted the message; not sent again because the account's \
                             retry_after_unknown is off",
                            error.message
                        ),
                    ),
                    FailureKind::Unknown if exhausted => (
                        AttemptOutcome::Unknown,
                        Outcome::Failed,
                        format!(
                            "{} — the server may have accepted the message (gave up after {} attempts)",
                            error.message, message.attempts_used
                        ),
                    ),
                    FailureKind::Unknown => (
                        AttemptOutcome::Unknown,
                        retry_later(),
                        format!(
                            "{} — the server may have accepted the message; sending again (retry_after_unknown), \
                             a copy may arrive twice with the same Message-ID",
                            error.message
                        ),
                    ),
                    FailureKind::Permanent => (
                        AttemptOutcome::Permanent,
                        Outcome::Failed,
                        error.message.clone(),
                    ),
                    FailureKind::Transient if exhausted => (
                        AttemptOutcome::Transient,
                        Outcome::Failed,
                        format!(
                            "{} (gave up after {} attempts)",
                            error.message, message.attempts_used
                        ),
                    ),
                    FailureKind::Transient => (
                        AttemptOutcome::Transient,
                        retry_later(),
                        error.message.clone(),
                    ),
                };
                if next == Outcome::Failed {
                    metrics::counter!("mailroom_messages_failed_total", "account" => account_label, "connector" => connector_kind).increment(1);
                    tracing::warn!(event = "email_failed", message_uuid = %message.id, message_id = %message.message_id_header, account = %self.account.id, account_name = %self.account.name, reply_code = error.reply_code, error = %reply_text, "email failed");
                } else {
                    metrics::counter!("mailroom_send_retries_total", "account" => account_label, "connector" => connector_kind).increment(1);
                    tracing::info!(event = "email_deferred", message_uuid = %message.id, message_id = %message.message_id_header, account = %self.account.id, account_name = %self.account.name, reply_code = error.reply_code, error = %reply_text, "email deferred; will retry");
                }
                AttemptRecord {
                    message_id: message.id,
                    lease_owner: inner.config.node_id.clone(),
                    number: message.attempt_number,
                    started_at_ms: started_at,
                    finished_at_ms: finished_at,
                    outcome,
                    reply_code: error.reply_code,
                    reply_text,
                    next,
                }
            }
        };
        if self.outcomes.send(record).is_err() {
            tracing::error!(message_uuid = %message.id, "the outcome writer has stopped; the lease will expire and the attempt be recorded as interrupted");
        }
        self.held.give_back();
        inner.send_ended.notify_one();
    }

    /// Waits for a slot in the account's rate window and takes it; returns the start time of the
    /// attempt, or `None` when shutdown came first. On a store shared by several nodes the window
    /// that counts is the database's, for all nodes together (this node's own window then only
    /// paces its claims).
    async fn take_rate_slot(&self) -> Option<i64> {
        let inner = &self.engine.inner;
        let limit = self.account.limits.rate_limit_per_minute;
        let shared = inner.store.is_shared() && limit > 0;
        loop {
            let wait_ms = if shared {
                match inner
                    .store
                    .take_start_slot(
                        self.account.id,
                        &inner.config.node_id,
                        limit,
                        inner.config.rate_window.as_millis() as i64,
                    )
                    .await
                {
                    Ok(at) => {
                        // The place is reserved at `at`: start then (the clocks of this node
                        // and the database are taken to agree).
                        let wait = at - now_ms();
                        if wait > 0 {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                                _ = inner.stopping.cancelled() => return None,
                            }
                        }
                        self.window.lock().expect("window lock").record(at as u64);
                        return Some(at);
                    }
                    Err(error) => {
                        if !error.is_full() {
                            tracing::error!(%error, account = %self.account.id, "taking a place in the shared rate window failed; trying again");
                        }
                        250
                    }
                }
            } else {
                let mut window = self.window.lock().expect("window lock");
                let now = now_ms();
                match window.available(now as u64) {
                    None => return Some(now),
                    Some(available) if available > 0 => {
                        window.record(now as u64);
                        return Some(now);
                    }
                    Some(_) => window
                        .next_opening_ms(now as u64)
                        .map_or(1, |at| at.saturating_sub(now as u64).max(1)),
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                _ = inner.stopping.cancelled() => return None,
            }
        }
    }

    /// The composed message signed with the active DKIM key of its From domain, when it has one.
    /// A key that cannot be read or used defers the message: it is not sent unsigned by accident.
    async fn dkim_sign(
        &self,
        from: &Mailbox,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, mailroom_connect::SendError> {
        let domain = from.address.domain().to_ascii_lowercase();
        let key = self
            .engine
            .inner
            .store
            .dkim_signing_key(&domain)
            .await
            .map_err(|e| {
                mailroom_connect::SendError::transient(
                    None,
                    format!("reading the DKIM key of {domain}: {e}"),
                )
            })?;
        let Some(key) = key else {
            return Ok(bytes);
        };
        let cached = self
            .engine
            .inner
            .dkim_signers
            .lock()
            .expect("dkim lock")
            .get(&key.id)
            .cloned();
        let signer = match cached {
            Some(signer) => signer,
            None => {
                let signer = Arc::new(
                    mailroom_connect::dkim::Signer::new(&key.domain, &key.selector, &key.material)
                        .map_err(|e| mailroom_connect::SendError::transient(None, e.to_string()))?,
                );
                let mut signers = self.engine.inner.dkim_signers.lock().expect("dkim lock");
                // Keys deleted or rotated away leave their signers behind: keep the map small.
                if signers.len() > 64 {
                    signers.clear();
                }
                signers.insert(key.id, signer.clone());
                signer
            }
        };
        signer
            .sign(&bytes)
            .map_err(|e| mailroom_connect::SendError::transient(None, e))
    }

    async fn attempt(
        &self,
        message: &ClaimedMessage,
    ) -> Result<mailroom_connect::Delivered, mailroom_connect::SendError> {
        let content = message.content.as_ref().map_err(|reason| {
            mailroom_connect::SendError::permanent(
                None,
                format!("the stored message cannot be read: {reason}"),
            )
        })?;
        let sender_name = self
            .account
            .sender_name
            .as_deref()
            .unwrap_or(&self.account.name);
        let from = Mailbox::new(Some(sender_name), self.account.email_address.clone())
            .or_else(|_| Mailbox::new(None, self.account.email_address.clone()))
            .map_err(|e| mailroom_connect::SendError::permanent(None, e.to_string()))?;
        // Hold a share of the encode budget while the files are in memory: their bytes, plus base64.
        let _budget = if message.attachments.is_empty() {
            None
        } else {
            let estimate: u64 = message.attachments.iter().map(|a| a.size * 7 / 3).sum();
            let budget = &self.engine.inner.encode_budget;
            let permits = budget_permits(estimate)
                .min(budget_permits(self.engine.inner.config.encode_budget_bytes))
                as u32;
            Some(
                budget
                    .clone()
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| mailroom_connect::SendError::transient(None, "shutting down"))?,
            )
        };
        // An attachment that cannot be read fails the message: it is never sent without it.
        // The files are needed only until the message is composed; dropping them before the SMTP
        // transaction keeps one copy of each (the encoded one) in memory, not two.
        let bytes = {
            let mut files = Vec::with_capacity(message.attachments.len());
            for attachment in &message.attachments {
                let bytes = self
                    .engine
                    .inner
                    .config
                    .blobs
                    .read(&attachment.sha256)
                    .await
                    .map_err(|e| {
                    mailroom_connect::SendError::permanent(
                        None,
                        format!(
                            "attachment {:?} cannot be read ({e}); the message is not sent without it",
                            attachment.filename
                        ),
                    )
                })?;
                if bytes.len() as u64 != attachment.size {
                    return Err(mailroom_connect::SendError::permanent(
                        None,
                        format!(
                            "attachment {:?} is {} bytes on disk, not {}; the message is not sent without it",
                            attachment.filename,
                            bytes.len(),
                            attachment.size
                        ),
                    ));
                }
                files.push(bytes);
            }
            let parts: Vec<AttachmentPart<'_>> = message
                .attachments
                .iter()
                .zip(&files)
                .map(|(a, bytes)| AttachmentPart {
                    filename: &a.filename,
                    content_type: &a.content_type,
                    bytes,
                    content_id: a.content_id.as_deref(),
                })
                .collect();
            compose(&Composition {
                from: &from,
                content,
                message_id: &message.message_id_header,
                date_unix_seconds: message.created_at_ms / 1000,
                attachments: &parts,
            })
        };
        let bytes = self.dkim_sign(&from, bytes).await?;
        // With a bounce domain, the return path names the message (VERP), so that its bounces are
        // matched to it even when they quote nothing of it.
        let envelope_from = match &self.account.options.bounce_domain {
            Some(domain) => {
                EmailAddress::parse(&self.engine.inner.store.verp_return_path(message.id, domain))
                    .map_err(|e| mailroom_connect::SendError::permanent(None, e.to_string()))?
            }
            None => self.account.email_address.clone(),
        };
        let outgoing = OutgoingMessage {
            envelope_from,
            recipients: content.envelope_recipients().into_iter().cloned().collect(),
            bytes: Arc::new(bytes),
            message_id: message.message_id_header.clone(),
            // Only a connector sending through each user's own mailbox needs to know whose.
            sender_user: if self.account.connector == ConnectorKind::CurrentUser {
                Some(
                    self.engine
                        .inner
                        .store
                        .message_author(message.id)
                        .await
                        .map_err(|e| {
                            mailroom_connect::SendError::transient(
                                None,
                                format!("reading the message's sender: {e}"),
                            )
                        })?,
                )
            } else {
                None
            },
        };
        self.connector.send(&outgoing).await
    }
}

/// Writes outcomes in batches; keeps retrying a batch the database refused, so no outcome is dropped.
async fn run_outcome_writer(store: Store, mut receiver: mpsc::UnboundedReceiver<AttemptRecord>) {
    /// Most outcomes in one batch.
    const MOST: usize = 512;
    /// A batch smaller than this, taken while outcomes come in quickly, waits [`GATHER_FOR`] for
    /// more: a batch's statements cost about as much for 5 outcomes as for 50, and with several
    /// nodes each node's batches were a fifth of one node's (measured: 17 against 93 per batch).
    const GATHER_BELOW: usize = 128;
    const GATHER_FOR: Duration = Duration::from_millis(20);
    let drain = |receiver: &mut mpsc::UnboundedReceiver<AttemptRecord>, batch: &mut Vec<_>| {
        while batch.len() < MOST {
            match receiver.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
    };
    let mut batch = Vec::with_capacity(MOST);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        drain(&mut receiver, &mut batch);
        // A lone outcome (a quiet moment) is written at once.
        if batch.len() > 1 && batch.len() < GATHER_BELOW {
            tokio::time::sleep(GATHER_FOR).await;
            drain(&mut receiver, &mut batch);
        }
        let mut delay = Duration::from_millis(50);
        let clock = Instant::now();
        metrics::histogram!("mailroom_store_batch_size", "operation" => "record_outcomes")
            .record(batch.len() as f64);
        while let Err(error) = store.record_outcomes(&batch).await {
            if !error.is_full() {
                tracing::error!(%error, size = batch.len(), "recording attempt outcomes failed; retrying");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        metrics::histogram!("mailroom_store_operation_seconds", "operation" => "record_outcomes")
            .record(clock.elapsed().as_secs_f64());
        batch.clear();
    }
}

impl Engine {
    /// Tests an account's connection with its current settings.
    pub async fn test_account(
        &self,
        account: &Account,
    ) -> Result<String, mailroom_connect::SendError> {
        let connector = crate::build_connector(
            &self.inner.store,
            account,
            &self.inner.config.connectors,
            &self.inner.oauth,
        )
        .await
        .map_err(|e| mailroom_connect::SendError::permanent(None, e.to_string()))?;
        connector.test_connection().await
    }
}

/// Attempts of an account that may be under way at once: its concurrency limit counts connections
/// (what providers limit), and a connection may carry more than one attempt.
fn attempts_at_once(account: &Account) -> usize {
    (account.limits.concurrency_limit * account.connector.attempts_per_connection()) as usize
}

/// Budget permits (KiB, at least one) for a number of bytes.
fn budget_permits(bytes: u64) -> usize {
    (bytes / 1024).clamp(1, u64::from(u32::MAX >> 3)) as usize
}

impl Engine {
    /// Deletes uploads no message refers to once they are older than the retention, and their files.
    pub async fn collect_garbage(&self) {
        let retention = self.inner.config.attachment_retention;
        let cutoff = now_ms() - retention.as_millis() as i64;
        match self
            .inner
            .store
            .collect_unreferenced_attachments(cutoff)
            .await
        {
            Ok(orphaned) => {
                for sha256 in orphaned {
                    // Checked again right before removal, in case an upload of the same content came in.
                    if matches!(self.inner.store.blob_in_use(&sha256).await, Ok(false))
                        && let Err(error) = self
                            .inner
                            .config
                            .blobs
                            .remove_if_older_than(&sha256, retention)
                            .await
                    {
                        tracing::warn!(%error, blob = %sha256, "removing an unreferenced blob failed");
                    }
                }
            }
            Err(error) if error.is_full() => {}
            Err(error) => tracing::error!(%error, "collecting unreferenced attachments failed"),
        }
        // A write cut short by a crash takes minutes at most.
        match self
            .inner
            .config
            .blobs
            .remove_stale_temporaries(Duration::from_secs(3600))
            .await
        {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(
                    removed,
                    "removed temporary blob files left behind by a crash"
                )
            }
            Err(error) => tracing::warn!(%error, "removing stale temporary blob files failed"),
        }
    }
}

/// Waits for a signal that may not exist (on SQLite no other node signals).
async fn notified(signal: &Option<Arc<Notify>>) {
    match signal {
        Some(signal) => signal.notified().await,
        None => std::future::pending().await,
    }
}
