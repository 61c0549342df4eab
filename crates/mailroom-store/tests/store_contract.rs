//! The store's contract, run against every backend: each test below runs once on SQLite and once
//! on PostgreSQL (a database of its own on the server at 127.0.0.1:5432, dropped afterwards).

mod common;

use common::{account_input, new_message};
use mailroom_core::message::{AttemptOutcome, MessageStatus};
use mailroom_core::scenario::ScenarioName;
use mailroom_store::{
    AttemptRecord, InsertClaim, InsertOutcome, MessageFilter, NewMessage, Outcome, SecretBox,
    Store, now_ms,
};
use uuid::Uuid;

struct TestStore {
    store: Store,
    _dir: tempfile::TempDir,
    _database: Option<mailroom_testkit::TestDatabase>,
    backend: Backend,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Declares each contract test twice: `<name>::on_sqlite` and `<name>::on_postgres`.
macro_rules! contract {
    ($(async fn $name:ident($t:ident) $body:block)*) => {$(
        mod $name {
            use super::*;
            async fn run($t: TestStore) $body
            #[tokio::test]
            async fn on_sqlite() {
                run(open_store(Backend::Sqlite).await).await
            }
            #[tokio::test]
            async fn on_postgres() {
                run(open_store(Backend::Postgres).await).await
            }
        }
    )*};
}

impl TestStore {
    /// A new SMTP account without a password.
    async fn account(&self, name: &str) -> mailroom_store::Account {
        self.store
            .create_account(&account_input(name), None)
            .await
            .unwrap()
    }
}

async fn open_store(backend: Backend) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let (url, database) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("store.db").display()),
            None,
        ),
        Backend::Postgres => {
            let database = mailroom_testkit::TestDatabase::create().await.unwrap();
            (database.url.clone(), Some(database))
        }
    };
    let store = Store::open(&url, SecretBox::from_key(&[9u8; 32]).unwrap())
        .await
        .unwrap();
    TestStore {
        store,
        _dir: dir,
        _database: database,
        backend,
    }
}

fn attempt(
    message_id: Uuid,
    owner: &str,
    number: u32,
    outcome: AttemptOutcome,
    next: Outcome,
    at: i64,
) -> AttemptRecord {
    AttemptRecord {
        message_id,
        lease_owner: owner.into(),
        number,
        started_at_ms: at,
        finished_at_ms: at + 5,
        outcome,
        reply_code: Some(if outcome == AttemptOutcome::Sent {
            250
        } else {
            451
        }),
        reply_text: outcome.to_string(),
        next,
    }
}
/// An account and a message accepted at `now`, stored already claimed by "node-a" under a lease
/// until `lease_until` (after a claim has found the account's queue empty).
async fn insert_claimed(
    t: &TestStore,
    now: i64,
    lease_until: i64,
) -> (mailroom_store::Account, Uuid) {
    let account = t.account("a").await;
    let found = t
        .store
        .claim_due(account.id, "node-a", now, lease_until, 10)
        .await
        .unwrap();
    assert!(found.is_empty());
    let message = claiming(
        new_message(account.id, None, "claimed at once"),
        now,
        lease_until,
    );
    let id = message.id;
    assert_eq!(
        t.store.insert_message(message).await.unwrap(),
        InsertOutcome::Claimed(id)
    );
    (account, id)
}

/// The message, accepted at `now`, asking to be stored claimed by "node-a".
fn claiming(mut message: NewMessage, now: i64, lease_until: i64) -> NewMessage {
    message.created_at_ms = now;
    message.claim = Some(InsertClaim {
        owner: "node-a".into(),
        lease_until,
    });
    message
}

contract! {
async fn live_nodes_are_listed_in_order_without_stopped_silent_or_dead_ones(t) {
    let store = &t.store;
    for id in ["node-c", "node-a", "node-b", "node-d", "node-e"] {
        store.register_node(id, "host", 1_000).await.unwrap();
    }
    store.heartbeat("node-c", 9_000).await.unwrap();
    store.heartbeat("node-a", 9_500).await.unwrap();
    store.heartbeat("node-b", 9_000).await.unwrap();
    store.heartbeat("node-d", 9_000).await.unwrap();
    // node-e stays silent since 1,000; node-b stops; node-d is declared dead by node-a.
    store.node_stopped("node-b", 9_100).await.unwrap();
    assert_eq!(
        store.live_nodes(10_000, 5_000).await.unwrap(),
        ["node-a", "node-c", "node-d"]
    );
    store.recover_dead_nodes("node-a", 20_000, 5_000).await.unwrap();
    assert!(store.live_nodes(20_000, 5_000).await.unwrap().is_empty());
    store.heartbeat("node-a", 20_000).await.unwrap();
    assert_eq!(store.live_nodes(20_000, 5_000).await.unwrap(), ["node-a"]);
}

async fn the_first_account_becomes_the_default_and_routes_unassigned_scenarios(t) {
    let first = t.account("first").await;
    let second = t.account("second").await;
    assert!(first.is_default && !second.is_default);
    let routed = t
        .store
        .resolve_account(&ScenarioName::parse("sales-order").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(routed.id, first.id);
}

async fn concurrent_inserts_are_all_stored_and_idempotency_keys_are_honoured_within_one_batch(t) {
    let account = t.account("a").await;
    let mut tasks = Vec::new();
    for n in 0..300 {
        let store = t.store.clone();
        let key = if n % 3 == 0 { Some("shared-key") } else { None };
        let message = new_message(account.id, key, "same request");
        tasks.push(tokio::spawn(async move {
            store.insert_message(message).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut replayed = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            InsertOutcome::Created(_) => created += 1,
            InsertOutcome::Replayed(id) => replayed.push(id),
            InsertOutcome::KeyReused(_) => panic!("the same request hash must replay"),
            InsertOutcome::Claimed(_) => panic!("nothing asked to be stored claimed"),
        }
    }
    assert_eq!(
        created,
        200 + 1,
        "200 without a key and one for the shared key"
    );
    assert_eq!(replayed.len(), 99);
    assert!(
        replayed.windows(2).all(|w| w[0] == w[1]),
        "every replay names the same message"
    );
    let page = t
        .store
        .list_messages(&MessageFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 201);
    let reused = t
        .store
        .insert_message(new_message(
            account.id,
            Some("shared-key"),
            "another request",
        ))
        .await
        .unwrap();
    assert!(matches!(reused, InsertOutcome::KeyReused(_)));
}

async fn an_insert_that_fails_inside_a_grouped_write_fails_alone_and_leaves_nothing_behind(t) {
    let account = t.account("a").await;
    let unknown_account = Uuid::now_v7();
    let mut tasks = Vec::new();
    for n in 0..60 {
        let store = t.store.clone();
        let target = if n == 30 { unknown_account } else { account.id };
        let message = new_message(target, None, "grouped");
        let id = message.id;
        tasks.push(tokio::spawn(async move {
            (id, store.insert_message(message).await)
        }));
    }
    let mut failed = Vec::new();
    for task in tasks {
        let (id, result) = task.await.unwrap();
        if result.is_err() {
            failed.push(id);
        }
    }
    assert_eq!(
        failed.len(),
        1,
        "only the message for an unknown account fails"
    );
    assert!(t.store.message(failed[0]).await.is_err());
    let page = t
        .store
        .list_messages(&MessageFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 59);
    assert_eq!(page.items.len(), 59);
    assert!(page.items.iter().all(|m| m.text.as_deref() == Some("body")));
}

async fn a_claimed_message_is_not_claimed_again_until_its_lease_expires_and_then_an_interruption_is_recorded(t)
 {
    let account = t.account("a").await;
    t.store
        .insert_message(new_message(account.id, None, "s"))
        .await
        .unwrap();
    let now = now_ms();
    let claimed = t
        .store
        .claim_due(account.id, "node-a", now, now + 1_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt_number, 1);
    assert!(claimed[0].content.is_ok());
    assert!(
        t.store
            .claim_due(account.id, "node-b", now, now + 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        t.store
            .recover_expired_leases("node-b", now + 500)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is not recovered"
    );

    let recovered = t
        .store
        .recover_expired_leases("node-b", now + 1_000)
        .await
        .unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].new_status, MessageStatus::Queued);
    let message = t.store.message(claimed[0].id).await.unwrap();
    assert_eq!(message.attempts.len(), 1);
    assert_eq!(message.attempts[0].outcome, AttemptOutcome::Interrupted);
    let again = t
        .store
        .claim_due(account.id, "node-b", now + 1_000, now + 2_000, 10)
        .await
        .unwrap();
    assert_eq!(again[0].attempt_number, 2);
}

async fn renewal_extends_only_the_owners_leases_and_a_node_never_recovers_a_lease_of_its_own(t) {
    let account = t.account("a").await;
    for subject in ["first", "second"] {
        t.store
            .insert_message(new_message(account.id, None, subject))
            .await
            .unwrap();
    }
    let now = now_ms();
    let of_a = t
        .store
        .claim_due(account.id, "node-a", now, now + 1_000, 1)
        .await
        .unwrap();
    let of_b = t
        .store
        .claim_due(account.id, "node-b", now, now + 1_000, 1)
        .await
        .unwrap();
    assert_eq!((of_a.len(), of_b.len()), (1, 1));
    assert_eq!(
        t.store.renew_leases("node-a", now + 5_000).await.unwrap(),
        1,
        "node-a renews its one lease and not node-b's"
    );

    let recovered = t
        .store
        .recover_expired_leases("node-c", now + 2_000)
        .await
        .unwrap();
    assert_eq!(
        recovered.iter().map(|r| r.message_id).collect::<Vec<_>>(),
        vec![of_b[0].id],
        "only the lease that was not renewed has expired"
    );

    // node-a's renewal came late: its lease has run out while its attempt may still be going on.
    assert!(
        t.store
            .recover_expired_leases("node-a", now + 6_000)
            .await
            .unwrap()
            .is_empty(),
        "a running node leaves its own leases alone"
    );
    assert_eq!(
        t.store.message(of_a[0].id).await.unwrap().status,
        MessageStatus::Sending
    );
    let recovered = t
        .store
        .recover_expired_leases("node-b", now + 6_000)
        .await
        .unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].message_id, of_a[0].id);
    assert_eq!(
        t.store.renew_leases("node-a", now + 9_000).await.unwrap(),
        0,
        "a lease taken over is not renewed by its former holder"
    );
}

async fn connection_places_are_held_up_to_the_limit_freed_places_are_taken_again_and_a_raised_limit_adds_places(
    t
) {
    let account = t.account("a").await;
    let take = |node: &'static str, limit: u32| {
        let store = t.store.clone();
        async move {
            store
                .take_session_slot(account.id, node, limit, now_ms() + 60_000, 10_000)
                .await
                .unwrap()
        }
    };
    if t.backend == Backend::Sqlite {
        // One node only: its own connection pool holds the limit; the store keeps no places.
        assert!(take("node-a", 1).await.is_some());
        assert!(take("node-a", 1).await.is_some());
        return;
    }
    let first = take("node-a", 2).await.expect("a first place");
    let second = take("node-a", 2).await.expect("a second place");
    assert_ne!(first, second);
    assert_eq!(take("node-b", 2).await, None, "every place is held");
    assert_eq!(take("node-b", 2).await, None, "still held when asked again");
    t.store
        .release_session_slot(account.id, first, "node-b")
        .await
        .unwrap();
    assert_eq!(
        take("node-b", 2).await,
        None,
        "only the holder gives a place back"
    );
    t.store
        .release_session_slot(account.id, first, "node-a")
        .await
        .unwrap();
    assert_eq!(take("node-b", 2).await, Some(first));
    assert_eq!(
        take("node-c", 3).await,
        Some(2),
        "a raised limit adds its places"
    );
    assert_eq!(take("node-c", 3).await, None);
}

async fn a_message_whose_upload_was_collected_before_it_was_stored_is_refused_and_nothing_is_stored(t)
 {
    let account = t.account("a").await;
    let upload = t
        .store
        .create_attachment("00", 2, "a.pdf", "application/pdf", "tester")
        .await
        .unwrap();
    // The API has checked the upload; it is collected before the message reaches the writer.
    let mut message = new_message(account.id, None, "with an attachment");
    message.attachments = vec![(upload.id, None)];
    let id = message.id;
    t.store
        .collect_unreferenced_attachments(now_ms() + 1)
        .await
        .unwrap();
    match t.store.insert_message(message).await {
        Err(mailroom_store::StoreError::Invalid(error)) => {
            assert_eq!(error.field, "attachments");
            assert!(error.reason.contains(&upload.id.to_string()), "{error:?}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(matches!(
        t.store.message(id).await,
        Err(mailroom_store::StoreError::NotFound(_))
    ));
}
async fn new_mail_is_stored_claimed_only_while_a_claim_has_left_nothing_of_its_account_waiting(t) {
    let now = now_ms();
    let lease = now + 60_000;
    let account = t.account("a").await;
    let other = t.account("b").await;
    let insert = |message: NewMessage| {
        let store = t.store.clone();
        async move { store.insert_message(message).await.unwrap() }
    };
    let claim = |account_id: Uuid, limit: u32| {
        let store = t.store.clone();
        async move {
            store
                .claim_due(account_id, "node-a", now + 10_000, lease, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    // New mail is accepted a few seconds after the waiting mail of this test was.
    let asked_at = now + 5_000;
    let ask_at = |subject: &str, at: i64| claiming(new_message(account.id, None, subject), at, lease);
    let ask = |subject: &str| ask_at(subject, asked_at);
    // SQLite's writer knows an account's queue is empty only from a claim that found fewer than it
    // asked for, and keeps new mail queued until then; PostgreSQL, shared by several nodes, looks
    // at the queue itself as it stores the message. Neither lets new mail overtake mail that has
    // waited (on PostgreSQL: for longer than a moment — see the end of this test).
    let exact = t.backend == Backend::Postgres;
    let unless_exact = |id: Uuid| {
        if exact {
            InsertOutcome::Claimed(id)
        } else {
            InsertOutcome::Created(id)
        }
    };
    let claimed_unless_exact = |ids: Vec<Uuid>| if exact { Vec::new() } else { ids };

    // Nothing is known about the account until a claim has looked: the message waits.
    let first = ask("first");
    let first_id = first.id;
    assert_eq!(insert(first).await, unless_exact(first_id));
    assert_eq!(claim(account.id, 10).await, claimed_unless_exact(vec![first_id]));
    // The claim took fewer than it asked for: nothing is left, new mail is claimed at once.
    let second = ask("second");
    let second_id = second.id;
    assert_eq!(insert(second).await, InsertOutcome::Claimed(second_id));

    // Mail stored queued (the engine had no room for it) is waiting: new mail queues behind it...
    let waiting = new_message(account.id, None, "waiting");
    let waiting_id = waiting.id;
    assert_eq!(insert(waiting).await, InsertOutcome::Created(waiting_id));
    let behind = ask("behind");
    let behind_id = behind.id;
    assert_eq!(insert(behind).await, InsertOutcome::Created(behind_id));
    // ...while another account's new mail is not held up by it.
    assert!(claim(other.id, 10).await.is_empty());
    let elsewhere = claiming(new_message(other.id, None, "elsewhere"), now, lease);
    let elsewhere_id = elsewhere.id;
    assert_eq!(
        insert(elsewhere).await,
        InsertOutcome::Claimed(elsewhere_id)
    );

    // A claim that takes all it asked for may have left more behind.
    assert_eq!(claim(account.id, 2).await, [waiting_id, behind_id]);
    let after_full_claim = ask("after a full claim");
    let after_full_claim_id = after_full_claim.id;
    assert_eq!(
        insert(after_full_claim).await,
        unless_exact(after_full_claim_id)
    );
    assert_eq!(
        claim(account.id, 10).await,
        claimed_unless_exact(vec![after_full_claim_id])
    );

    // Drafts and mail scheduled for later are not waiting to be sent now.
    let mut draft = new_message(account.id, None, "draft");
    draft.draft = true;
    insert(draft).await;
    let mut later = new_message(account.id, None, "later");
    later.send_at_ms = Some(now + 3_600_000);
    insert(later).await;
    let next = ask("next");
    let next_id = next.id;
    assert_eq!(insert(next).await, InsertOutcome::Claimed(next_id));

    // A claim whose clock ran behind the API's (the newest queued mail was not yet due for it)
    // does not count as having emptied the queue.
    let mut ahead = new_message(account.id, None, "accepted a moment later");
    ahead.created_at_ms = now + 20_000;
    let ahead_id = ahead.id;
    assert_eq!(insert(ahead).await, InsertOutcome::Created(ahead_id));
    assert!(
        claim(account.id, 10).await.is_empty(),
        "not due at claim time"
    );
    let still_behind = ask("still behind");
    let still_behind_id = still_behind.id;
    // (On PostgreSQL the mail accepted "later" is not due yet when this one is stored.)
    assert_eq!(insert(still_behind).await, unless_exact(still_behind_id));
    let caught_up: Vec<Uuid> = t
        .store
        .claim_due(account.id, "node-a", now + 30_000, lease, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(caught_up.len(), if exact { 1 } else { 2 });
    assert!(caught_up.contains(&ahead_id) && (exact || caught_up.contains(&still_behind_id)));
    let after_catching_up = ask("after catching up");
    let after_catching_up_id = after_catching_up.id;
    assert_eq!(
        insert(after_catching_up).await,
        InsertOutcome::Claimed(after_catching_up_id)
    );

    // Mail queued outside the writer (a claimed message released) keeps new mail waiting until
    // a claim has taken it.
    t.store.release("node-a", &[next_id]).await.unwrap();
    let after_release = ask_at("after release", asked_at + 1_000);
    let after_release_id = after_release.id;
    assert_eq!(
        insert(after_release).await,
        InsertOutcome::Created(after_release_id)
    );
    assert_eq!(
        claim(account.id, 10).await,
        [next_id, after_release_id],
        "oldest first"
    );

    // On PostgreSQL, mail queued only a moment ago (another node had no room for it at that
    // instant) does not hold new mail back: a dispatcher claims it within milliseconds anyway.
    // Once it has waited longer than the allowance, new mail queues behind it again.
    let mut fresh = new_message(account.id, None, "queued a moment ago");
    fresh.created_at_ms = now + 40_000;
    let fresh_id = fresh.id;
    assert_eq!(insert(fresh).await, InsertOutcome::Created(fresh_id));
    let right_after = ask_at("right after", now + 40_100);
    let right_after_id = right_after.id;
    assert_eq!(insert(right_after).await, unless_exact(right_after_id));
    let a_second_later = ask_at("a second later", now + 41_000);
    let a_second_later_id = a_second_later.id;
    assert_eq!(
        insert(a_second_later).await,
        InsertOutcome::Created(a_second_later_id)
    );
}

async fn a_message_stored_already_claimed_is_sending_under_its_lease_and_behaves_like_a_claimed_one(t)
 {
    let now = now_ms();
    let (account, id) = insert_claimed(&t, now, now + 1_000).await;
    let stored = t.store.message(id).await.unwrap();
    assert_eq!(
        (stored.status, stored.attempt_count),
        (MessageStatus::Sending, 1)
    );
    assert!(
        t.store
            .claim_due(account.id, "node-b", now + 1, now + 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "a message claimed as it was stored is not claimed again"
    );
    // A crash before the outcome: the lease expires and the interruption is on record.
    let recovered = t
        .store
        .recover_expired_leases("node-b", now + 1_000)
        .await
        .unwrap();
    assert_eq!(recovered.len(), 1);
    let requeued = t.store.message(id).await.unwrap();
    assert_eq!(requeued.status, MessageStatus::Queued);
    assert_eq!(requeued.attempts[0].outcome, AttemptOutcome::Interrupted);

    // A draft is never stored claimed, whatever it is given.
    let mut draft = new_message(account.id, None, "a draft");
    draft.draft = true;
    draft.claim = Some(InsertClaim {
        owner: "node-a".into(),
        lease_until: now + 60_000,
    });
    let draft_id = draft.id;
    t.store.insert_message(draft).await.unwrap();
    let draft = t.store.message(draft_id).await.unwrap();
    assert_eq!(
        (draft.status, draft.attempt_count),
        (MessageStatus::Draft, 0)
    );
}

async fn a_claimed_message_sent_under_its_lease_is_sent_with_one_attempt(t) {
    let now = now_ms();
    let (_, id) = insert_claimed(&t, now, now + 60_000).await;
    t.store
        .record_outcomes(&[attempt(
            id,
            "node-a",
            1,
            AttemptOutcome::Sent,
            Outcome::Sent,
            now,
        )])
        .await
        .unwrap();
    let sent = t.store.message(id).await.unwrap();
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.attempts.len(), 1);
    assert_eq!(sent.created_at_ms, now);
}

async fn a_released_message_returns_to_the_queue_without_using_an_attempt(t) {
    let account = t.account("a").await;
    t.store
        .insert_message(new_message(account.id, None, "s"))
        .await
        .unwrap();
    let now = now_ms();
    let claimed = t
        .store
        .claim_due(account.id, "node-a", now, now + 60_000, 10)
        .await
        .unwrap();
    t.store
        .release("node-other", &[claimed[0].id])
        .await
        .unwrap();
    assert_eq!(
        t.store.message(claimed[0].id).await.unwrap().status,
        MessageStatus::Sending,
        "only the lease owner may release"
    );
    t.store.release("node-a", &[claimed[0].id]).await.unwrap();
    let message = t.store.message(claimed[0].id).await.unwrap();
    assert_eq!(
        (message.status, message.attempt_count),
        (MessageStatus::Queued, 0)
    );
}

async fn outcomes_move_messages_to_their_next_state_only_under_the_lease_that_made_the_attempt(t) {
    let account = t.account("a").await;
    for n in 0..3 {
        t.store
            .insert_message(new_message(account.id, None, &format!("m{n}")))
            .await
            .unwrap();
    }
    let now = now_ms();
    let claimed = t
        .store
        .claim_due(account.id, "node-a", now, now + 60_000, 10)
        .await
        .unwrap();
    t.store
        .record_outcomes(&[
            attempt(
                claimed[0].id,
                "node-a",
                1,
                AttemptOutcome::Sent,
                Outcome::Sent,
                now,
            ),
            attempt(
                claimed[1].id,
                "node-a",
                1,
                AttemptOutcome::Transient,
                Outcome::RetryAt(now + 10_000),
                now,
            ),
            attempt(
                claimed[2].id,
                "node-stale",
                1,
                AttemptOutcome::Permanent,
                Outcome::Failed,
                now,
            ),
        ])
        .await
        .unwrap();
    let sent = t.store.message(claimed[0].id).await.unwrap();
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.sent_at_ms, Some(now + 5));
    let deferred = t.store.message(claimed[1].id).await.unwrap();
    assert_eq!(
        (deferred.status, deferred.next_attempt_at_ms),
        (MessageStatus::Queued, now + 10_000)
    );
    assert_eq!(deferred.last_error.as_deref(), Some("transient"));
    let stale = t.store.message(claimed[2].id).await.unwrap();
    assert_eq!(
        stale.status,
        MessageStatus::Sending,
        "an outcome from a lost lease does not move the message"
    );
    assert_eq!(stale.attempts.len(), 1, "but the attempt is on record");
    // The lease ends with the attempt: the outcome told again later (a retried write, say) finds
    // no lease to move the message under.
    t.store
        .record_outcomes(&[attempt(
            claimed[0].id,
            "node-a",
            1,
            AttemptOutcome::Sent,
            Outcome::Sent,
            now + 1_000,
        )])
        .await
        .unwrap();
    let sent_again = t.store.message(claimed[0].id).await.unwrap();
    assert_eq!(
        (sent_again.status, sent_again.sent_at_ms),
        (MessageStatus::Sent, Some(now + 5)),
        "a message whose attempt was recorded is not moved by the same lease again"
    );
    assert!(
        t.store
            .claim_due(account.id, "node-a", now_ms() + 1_000, now + 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "the deferred message is not due yet"
    );
}

async fn retry_gives_a_fresh_attempt_budget_and_cancel_refuses_a_message_being_sent(t) {
    let account = t.account("a").await;
    t.store
        .insert_message(new_message(account.id, None, "s"))
        .await
        .unwrap();
    let now = now_ms();
    let claimed = t
        .store
        .claim_due(account.id, "n", now, now + 60_000, 1)
        .await
        .unwrap();
    assert!(
        t.store.cancel_message(claimed[0].id).await.is_err(),
        "a message being sent cannot be cancelled"
    );
    t.store
        .record_outcomes(&[attempt(
            claimed[0].id,
            "n",
            1,
            AttemptOutcome::Permanent,
            Outcome::Failed,
            now,
        )])
        .await
        .unwrap();
    let retried = t.store.retry_message(claimed[0].id).await.unwrap();
    assert_eq!(retried.status, MessageStatus::Queued);
    let again = t
        .store
        .claim_due(account.id, "n", now_ms(), now_ms() + 60_000, 1)
        .await
        .unwrap();
    assert_eq!((again[0].attempt_number, again[0].attempts_used), (2, 1));
}

async fn a_password_is_returned_decrypted_only_through_the_connector_path(t) {
    let account = t
        .store
        .create_account(&account_input("a"), Some("hunter2"))
        .await
        .unwrap();
    assert!(account.has_password);
    assert_eq!(
        t.store
            .account_password(account.id)
            .await
            .unwrap()
            .as_deref(),
        Some("hunter2")
    );
}

async fn listings_page_through_exactly_what_each_view_policy_shows(t) {
    use mailroom_core::access::ViewPolicy;
    use mailroom_core::message::{RelatedRecord, Relation};
    use mailroom_store::Visibility;
    let account = t.account("lists").await;
    let type_sets: [&[&str]; 6] = [
        &[],
        &["customer"],
        &["customer", "sales-invoice"],
        &["vendor"],
        &["user"],
        &["customer", "user"],
    ];
    // (id, creator, record types) of every message, the oracle's copy.
    let mut stored: Vec<(Uuid, &str, Vec<&str>)> = Vec::new();
    for n in 0..72 {
        let creator = ["ann", "bob", "cy"][n % 3];
        let types = type_sets[(n / 3) % type_sets.len()];
        let mut message = new_message(account.id, None, &format!("m{n}"));
        message.created_by = creator.into();
        message.related_records = types
            .iter()
            .map(|t| RelatedRecord::new(t, &format!("R{}", n % 5), Relation::Related).unwrap())
            .collect();
        stored.push((message.id, creator, types.to_vec()));
        t.store.insert_message(message).await.unwrap();
    }
    let sees = |policy: ViewPolicy, readable: &Option<Vec<String>>, creator: &str, types: &[&str]| {
        let relevant: Vec<&str> = types.iter().copied().filter(|t| *t != "user").collect();
        let can_read = |t: &str| readable.as_ref().is_none_or(|r| r.iter().any(|x| x == t));
        creator == "ann"
            || match policy {
                ViewPolicy::All => true,
                ViewPolicy::Own => false,
                ViewPolicy::AllRelatedRecords => {
                    !relevant.is_empty() && relevant.iter().all(|t| can_read(t))
                }
                ViewPolicy::AnyRelatedRecord => relevant.iter().any(|t| can_read(t)),
            }
    };
    let readables: [Option<Vec<String>>; 4] = [
        None,
        Some(vec![]),
        Some(vec!["customer".into()]),
        Some(vec!["customer".into(), "sales-invoice".into()]),
    ];
    let policies = [
        ViewPolicy::All,
        ViewPolicy::Own,
        ViewPolicy::AllRelatedRecords,
        ViewPolicy::AnyRelatedRecord,
    ];
    for policy in policies {
        for readable in &readables {
            for related_to in [None, Some(("customer".to_string(), "R2".to_string()))] {
                let mut expected: Vec<Uuid> = stored
                    .iter()
                    .filter(|(_, creator, types)| sees(policy, readable, creator, types))
                    .filter(|(id, _, types)| {
                        related_to.is_none()
                            || (types.contains(&"customer")
                                && stored.iter().position(|(i, _, _)| i == id).unwrap() % 5 == 2)
                    })
                    .map(|(id, _, _)| *id)
                    .collect();
                expected.sort_unstable_by(|a, b| b.cmp(a));
                let mut filter = MessageFilter {
                    visibility: Some(Visibility {
                        viewer: "ann".into(),
                        policy,
                        readable_types: readable.clone(),
                    }),
                    related_to: related_to.clone(),
                    statuses: vec![mailroom_core::message::MessageStatus::Queued],
                    limit: 7,
                    ..Default::default()
                };
                let mut listed = Vec::new();
                loop {
                    let page = t.store.list_messages(&filter).await.unwrap();
                    assert_eq!(page.total, expected.len() as i64, "{policy:?} {readable:?} {related_to:?}");
                    assert!(!page.total_is_estimate);
                    assert_eq!(page.has_more, page.next_cursor.is_some());
                    listed.extend(page.items.iter().map(|m| m.id));
                    match page.next_cursor {
                        Some(cursor) => filter.before_id = Some(cursor),
                        None => break,
                    }
                }
                assert_eq!(listed, expected, "{policy:?} {readable:?} {related_to:?}");
            }
        }
    }
}

async fn a_total_beyond_a_thousand_is_marked_as_an_estimate(t) {
    let account = t.account("many").await;
    let mut tasks = Vec::new();
    for n in 0..(mailroom_store::EXACT_TOTAL_UP_TO + 1) {
        let store = t.store.clone();
        let message = new_message(account.id, None, &format!("m{n}"));
        tasks.push(tokio::spawn(async move { store.insert_message(message).await.unwrap() }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let page = t
        .store
        .list_messages(&MessageFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, mailroom_store::EXACT_TOTAL_UP_TO);
    assert!(page.total_is_estimate && page.has_more);
    assert_eq!(page.items.len(), 10);
}

async fn retention_deletes_the_content_of_old_sent_mail_and_keeps_its_envelope_and_attempts(t) {
    let account = t.account("kept").await;
    let now = now_ms();
    let day = 86_400_000;
    // Three sent (two long ago, one just now), one still queued.
    let mut sent = Vec::new();
    for (n, sent_at) in [now - 40 * day, now - 31 * day, now].into_iter().enumerate() {
        let message = new_message(account.id, None, &format!("sent {n}"));
        let id = message.id;
        t.store.insert_message(message).await.unwrap();
        let claimed = t
            .store
            .claim_due(account.id, "node-a", now_ms() + 1_000, now + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        t.store
            .record_outcomes(&[attempt(id, "node-a", 1, AttemptOutcome::Sent, Outcome::Sent, sent_at - 5)])
            .await
            .unwrap();
        sent.push(id);
    }
    let waiting = new_message(account.id, None, "waiting");
    let waiting_id = waiting.id;
    t.store.insert_message(waiting).await.unwrap();

    // In batches of two: the pass goes through the sent mail oldest first.
    let cutoff = now - 30 * day;
    let mut after: Option<String> = None;
    let mut deleted = 0;
    loop {
        let batch = t
            .store
            .delete_sent_content(cutoff, after.as_deref(), 2)
            .await
            .unwrap();
        deleted += batch.deleted;
        match batch.last_seen {
            Some(last) if !batch.newer_only => after = Some(last),
            _ => break,
        }
    }
    assert_eq!(deleted, 2);
    for id in &sent[..2] {
        let message = t.store.message(*id).await.unwrap();
        assert!(message.content_deleted_at_ms.is_some());
        assert_eq!(message.text, None);
        assert_eq!(message.to, ["a@example.com"], "the envelope stays");
        assert_eq!(message.attempts.len(), 1, "the attempts stay");
    }
    let recent = t.store.message(sent[2]).await.unwrap();
    assert_eq!(recent.text.as_deref(), Some("body"));
    assert!(recent.content_deleted_at_ms.is_none());
    let queued = t.store.message(waiting_id).await.unwrap();
    assert_eq!(queued.text.as_deref(), Some("body"));
    // A second pass finds nothing more to do.
    let again = t.store.delete_sent_content(cutoff, None, 500).await.unwrap();
    assert_eq!(again.deleted, 0);
}
}

// ----- mailboxes, profiles, teams, queues, jobs and alerts -----

fn profile_input(name: &str, is_default: bool) -> mailroom_store::ServerProfileInput {
    use mailroom_core::account::Security;
    use mailroom_core::mailbox::*;
    ServerProfileInput {
        name: name.into(),
        kind: ProfileKind::ImapSmtp,
        incoming: ServerEndpoint {
            host: "imap.example.com".into(),
            port: 993,
            security: Security::Tls,
        },
        outgoing: ServerEndpoint {
            host: "smtp.example.com".into(),
            port: 587,
            security: Security::Starttls,
        },
        endpoints: CloudEndpoints::default(),
        auth_type: AuthType::Password,
        owner_user_id: None,
        is_default,
        processing: ProcessingOptions::default(),
    }
}

use mailroom_store::ServerProfileInput;

async fn user_with_email(t: &TestStore, name: &str) -> mailroom_store::User {
    use mailroom_core::access::{Grants, Licence};
    t.store
        .create_user(&mailroom_store::UserInput {
            name: name.into(),
            contact_email: Some(
                mailroom_core::address::EmailAddress::parse(&format!("{name}@example.com"))
                    .unwrap(),
            ),
            licence: Licence::Full,
            enabled: true,
            grants: Grants::default(),
        })
        .await
        .unwrap()
}

async fn mailbox_for(t: &TestStore, name: &str) -> mailroom_store::MailboxRecord {
    let user = user_with_email(t, name).await;
    t.store
        .ensure_user_mailbox(user.id, user.contact_email.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap()
}

contract! {
async fn one_profile_is_the_default_and_one_in_use_cannot_be_deleted(t) {
    let first = t.store.create_server_profile(&profile_input("first", true)).await.unwrap();
    let second = t.store.create_server_profile(&profile_input("second", true)).await.unwrap();
    assert!(!t.store.server_profile(first.id).await.unwrap().is_default);
    assert!(second.is_default);
    assert_eq!(
        t.store.email_settings().await.unwrap().default_profile_id,
        Some(second.id.to_string())
    );
    let duplicate = t.store.create_server_profile(&profile_input("first", false)).await;
    assert!(matches!(duplicate, Err(mailroom_store::StoreError::Refused { code: "profile_name_taken", .. })));
    // New mailboxes take the default profile.
    let mailbox = mailbox_for(&t, "ann").await;
    assert_eq!(mailbox.profile_id, Some(second.id));
    assert_eq!(mailbox.approval, mailroom_core::mailbox::Approval::Empty);
    let refused = t.store.delete_server_profile(second.id).await.unwrap_err();
    match refused {
        mailroom_store::StoreError::Refused { code, message } => {
            assert_eq!(code, "profile_in_use");
            assert!(message.contains("ann@example.com"), "{message}");
        }
        other => panic!("expected profile_in_use, got {other:?}"),
    }
    t.store.delete_server_profile(first.id).await.unwrap();
    assert!(t.store.server_profile(first.id).await.is_err());
    // Moving the default in the settings moves the flag.
    let mut settings = t.store.email_settings().await.unwrap();
    assert!(settings.process_only_approved_users, "on by default");
    settings.default_profile_id = None;
    settings.require_privilege_to_self_approve = true;
    let saved = t.store.set_email_settings(&settings).await.unwrap();
    assert_eq!(saved.default_profile_id, None);
    assert!(saved.require_privilege_to_self_approve);
    assert!(!t.store.server_profile(second.id).await.unwrap().is_default);
}

async fn a_mailboxs_password_is_forgotten_when_its_servers_change(t) {
    let profile = t.store.create_server_profile(&profile_input("corp", true)).await.unwrap();
    let mailbox = mailbox_for(&t, "bea").await;
    let change = mailroom_store::MailboxChange {
        username: Some(Some("bea".into())),
        password: Some(Some("s3cret".into())),
        ..Default::default()
    };
    let updated = t.store.update_mailboxes(&[mailbox.id], &change).await.unwrap();
    assert!(updated[0].has_password);
    assert_eq!(t.store.mailbox_password(mailbox.id).await.unwrap().as_deref(), Some("s3cret"));
    // Another port on the profile: the password was given for the old server.
    let mut moved = profile_input("corp", true);
    moved.incoming.port = 1993;
    t.store.update_server_profile(profile.id, &moved).await.unwrap();
    let after = t.store.mailbox(mailbox.id).await.unwrap();
    assert!(!after.has_password);
    assert!(after.last_error.unwrap().contains("password again"));
    // Renaming the profile keeps the servers, and so the password.
    t.store.update_mailboxes(&[mailbox.id], &change).await.unwrap();
    let mut renamed = moved.clone();
    renamed.name = "corporate".into();
    t.store.update_server_profile(profile.id, &renamed).await.unwrap();
    assert!(t.store.mailbox(mailbox.id).await.unwrap().has_password);
}

async fn a_bulk_mailbox_edit_changes_all_of_them_or_none(t) {
    let a = mailbox_for(&t, "cat").await;
    let b = mailbox_for(&t, "dan").await;
    let off = mailroom_store::MailboxChange {
        incoming: Some(mailroom_core::mailbox::SyncMethod::None),
        ..Default::default()
    };
    let unknown = t.store.update_mailboxes(&[a.id, Uuid::new_v4()], &off).await;
    assert!(matches!(unknown, Err(mailroom_store::StoreError::NotFound(_))));
    assert_eq!(t.store.mailbox(a.id).await.unwrap().incoming, mailroom_core::mailbox::SyncMethod::ServerSideSync);
    let changed = t.store.update_mailboxes(&[a.id, b.id], &off).await.unwrap();
    assert!(changed.iter().all(|m| m.incoming == mailroom_core::mailbox::SyncMethod::None));
}

async fn a_job_counts_each_item_once_and_another_node_resumes_it_after_its_lease(t) {
    let a = mailbox_for(&t, "eve").await;
    let b = mailbox_for(&t, "fay").await;
    let job = t.store.create_job("test-mailboxes", "admin", &serde_json::json!({}), &[a.id, b.id]).await.unwrap();
    assert_eq!((job.state.as_str(), job.total), ("queued", 2));
    let now = now_ms();
    let taken = t.store.take_job("node-1", now, now + 1_000).await.unwrap().unwrap();
    assert_eq!(taken.id, job.id);
    assert!(t.store.take_job("node-2", now, now + 1_000).await.unwrap().is_none(), "held by node-1");
    t.store.finish_job_item(job.id, a.id, true, "ok").await.unwrap();
    t.store.finish_job_item(job.id, a.id, false, "again").await.unwrap();
    let halfway = t.store.job(job.id).await.unwrap();
    assert_eq!((halfway.done, halfway.succeeded, halfway.failed), (1, 1, 0), "an item counts once");
    // node-1 dies; once its lease has run out node-2 takes the job with what is left.
    let later = now + 2_000;
    let resumed = t.store.take_job("node-2", later, later + 1_000).await.unwrap().unwrap();
    assert_eq!(resumed.id, job.id);
    assert!(!t.store.renew_job(job.id, "node-1", later + 5_000).await.unwrap());
    assert_eq!(t.store.pending_job_items(job.id).await.unwrap(), vec![b.id]);
    t.store.finish_job_item(job.id, b.id, false, "refused").await.unwrap();
    let done = t.store.job(job.id).await.unwrap();
    assert_eq!((done.state.as_str(), done.done, done.failed), ("done", 2, 1));
    assert!(done.finished_at_ms.is_some());
    assert!(t.store.take_job("node-3", later + 5_000, later + 6_000).await.unwrap().is_none());
}

async fn a_disabling_test_alerts_the_mailbox_owner_and_the_profile_owner_and_writes_an_event(t) {
    use mailroom_core::mailbox::TestStatus;
    let owner = user_with_email(&t, "owner").await;
    let mut input = profile_input("corp", true);
    input.owner_user_id = Some(owner.id);
    t.store.create_server_profile(&input).await.unwrap();
    let mailbox = mailbox_for(&t, "gus").await;
    let record = mailroom_store::MailboxTestRecord {
        incoming_status: TestStatus::Failure,
        outgoing_status: TestStatus::Success,
        act_status: TestStatus::NotRun,
        enabled: false,
        last_error: Some("incoming: authentication failed".into()),
        test_tries: 0,
        next_test_at_ms: None,
        approve: false,
        disabled_because: Some("incoming: authentication failed".into()),
    };
    let after = t.store.record_mailbox_test(mailbox.id, &record).await.unwrap();
    assert!(!after.enabled);
    assert_eq!(after.incoming_status, TestStatus::Failure);
    for user in [mailbox.user_id.unwrap(), owner.id] {
        let alerts = t.store.alerts(user, false).await.unwrap();
        assert_eq!(alerts.len(), 1, "one alert for {user}");
        assert!(alerts[0].message.contains("gus@example.com"));
        assert!(alerts[0].message.contains("authentication failed"));
    }
    let alert = t.store.alerts(owner.id, false).await.unwrap().remove(0);
    t.store.dismiss_alert(owner.id, alert.id).await.unwrap();
    assert!(t.store.alerts(owner.id, false).await.unwrap().is_empty());
    assert_eq!(t.store.alerts(owner.id, true).await.unwrap().len(), 1);
    assert!(t.store.dismiss_alert(owner.id, alert.id).await.is_err(), "dismissed once");
    let events = t.store.events("mailbox.disabled", 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, mailbox.id.to_string());
}

async fn transiently_failed_tests_are_taken_again_once_each_when_due(t) {
    use mailroom_core::mailbox::TestStatus;
    let mailbox = mailbox_for(&t, "hal").await;
    let now = now_ms();
    let record = mailroom_store::MailboxTestRecord {
        incoming_status: TestStatus::Failure,
        outgoing_status: TestStatus::Failure,
        act_status: TestStatus::NotRun,
        enabled: false,
        last_error: Some("connection refused".into()),
        test_tries: 1,
        next_test_at_ms: Some(now + 100),
        approve: false,
        disabled_because: None,
    };
    t.store.record_mailbox_test(mailbox.id, &record).await.unwrap();
    assert!(t.store.take_due_mailbox_retests(now, 60_000, 10).await.unwrap().is_empty());
    let due = t.store.take_due_mailbox_retests(now + 200, 60_000, 10).await.unwrap();
    assert_eq!(due, vec![mailbox.id]);
    assert!(t.store.take_due_mailbox_retests(now + 300, 60_000, 10).await.unwrap().is_empty(), "held");
}

async fn a_teams_permission_sets_reach_its_members_at_once(t) {
    let user = user_with_email(&t, "ida").await;
    let (_, secret) = t.store.create_token(Some(user.id), "ida", None).await.unwrap();
    let (_, before) = t.store.authenticate_token(&secret).await.unwrap().unwrap();
    assert!(!before.grants.allows(&mailroom_core::access::PermissionSet::MailboxApprove));
    let grants = mailroom_core::access::Grants::new(vec![mailroom_core::access::PermissionSet::MailboxApprove]);
    let team = t.store.create_team("approvers", &grants, &[user.id]).await.unwrap();
    let (_, after) = t.store.authenticate_token(&secret).await.unwrap().unwrap();
    assert!(after.grants.allows(&mailroom_core::access::PermissionSet::MailboxApprove));
    t.store.update_team(team.id, &grants, &[]).await.unwrap();
    let (_, removed) = t.store.authenticate_token(&secret).await.unwrap().unwrap();
    assert!(!removed.grants.allows(&mailroom_core::access::PermissionSet::MailboxApprove));
    assert!(t.store.create_team("bad", &grants, &[Uuid::new_v4()]).await.is_err(), "unknown member");
}

async fn a_queue_gets_a_mailbox_with_the_organisation_defaults(t) {
    let member = user_with_email(&t, "jo").await;
    let profile = t.store.create_server_profile(&profile_input("corp", true)).await.unwrap();
    let address = mailroom_core::address::EmailAddress::parse("support@example.com").unwrap();
    let queue = t.store.create_queue("support", &address, &[member.id]).await.unwrap();
    assert_eq!(queue.members, vec![member.id]);
    let mailbox = t.store.mailbox(queue.mailbox_id.unwrap()).await.unwrap();
    assert_eq!(mailbox.kind, mailroom_core::mailbox::MailboxKind::Queue);
    assert_eq!(mailbox.queue_id, Some(queue.id));
    assert_eq!(mailbox.profile_id, Some(profile.id));
    assert_eq!(mailbox.email_address, address);
    assert!(matches!(
        t.store.create_queue("support", &address, &[]).await,
        Err(mailroom_store::StoreError::Refused { code: "queue_name_taken", .. })
    ));
}
}

/// A received message as the sync engine hands it to the store (parts already in the blob store).
fn received<'a>(
    mailbox: &mailroom_store::MailboxRecord,
    parsed: &'a mailroom_core::inbound::ParsedInbound,
    uid: u32,
    filter: mailroom_core::mailbox::MailboxFilter,
) -> mailroom_store::NewInbound<'a> {
    mailroom_store::NewInbound {
        mailbox_id: mailbox.id,
        owner_user_id: mailbox.user_id,
        folder: "INBOX",
        uidvalidity: 7,
        uid,
        size: 100 + u64::from(uid),
        flags: vec!["\\Seen".into()],
        received_at_ms: 1_700_000_000_000 + i64::from(uid),
        raw_sha256: format!("{uid:064}"),
        parsed,
        parts: vec![
            mailroom_store::StoredPart {
                path: "2.1".into(),
                name: Some("inner.pdf".into()),
                content_type: "application/pdf".into(),
                size: 5,
                sha256: "b".repeat(64),
            },
            mailroom_store::StoredPart {
                path: "2".into(),
                name: Some("fwd.eml".into()),
                content_type: "message/rfc822".into(),
                size: 50,
                sha256: "a".repeat(64),
            },
        ],
        keys: mailroom_core::inbound::correlation_keys(parsed, &Default::default()),
        filter,
    }
}

fn parsed_mail(
    subject: &str,
    references: &[String],
    thread_index: Option<&str>,
) -> mailroom_core::inbound::ParsedInbound {
    mailroom_core::inbound::ParsedInbound {
        message_id: Some(format!("{}@client.example", Uuid::new_v4().simple())),
        subject: subject.into(),
        references: references.to_vec(),
        thread_index: thread_index.map(str::to_owned),
        from: Some(mailroom_core::inbound::InboundAddress {
            name: Some("Ann".into()),
            address: "Ann@Customer.example".into(),
        }),
        text: Some("hello".into()),
        ..Default::default()
    }
}

contract! {
async fn a_received_message_is_stored_once_per_uid_with_its_parts_and_its_event(t) {
    use mailroom_core::mailbox::MailboxFilter;
    use mailroom_store::InboundOutcome;
    let mailbox = mailbox_for(&t, "reader").await;
    let parsed = parsed_mail("Hello", &[], None);
    let first = t.store.insert_inbound(received(&mailbox, &parsed, 1, MailboxFilter::All)).await.unwrap();
    let InboundOutcome::Stored(id) = first else { panic!("not stored: {first:?}") };
    let again = t.store.insert_inbound(received(&mailbox, &parsed, 1, MailboxFilter::All)).await.unwrap();
    assert_eq!(again, InboundOutcome::AlreadyStored(id));
    let detail = t.store.inbound_detail(id, None).await.unwrap();
    assert_eq!(detail.message.subject, "Hello");
    assert_eq!(detail.message.conversation_id, id, "a message that answers nothing starts a conversation");
    assert_eq!(detail.message.correlation_method, None);
    assert!(detail.message.seen);
    assert_eq!(detail.text.as_deref(), Some("hello"));
    let paths: Vec<&str> = detail.attachments.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["2", "2.1"]);
    let events = t.store.events("message.received", 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, id.to_string());
    assert_eq!(t.store.inbound_stored_uids(mailbox.id, "INBOX", 7, &[1, 2]).await.unwrap(), vec![1]);
    // Listing filters: sender, unread, folder.
    let list = |filter: mailroom_store::InboundFilter| {
        let store = t.store.clone();
        async move { store.inbound_page(&filter).await.unwrap().len() }
    };
    let base = mailroom_store::InboundFilter { mailbox_id: Some(mailbox.id), limit: 50, ..Default::default() };
    assert_eq!(list(base.clone()).await, 1);
    assert_eq!(list(mailroom_store::InboundFilter { from: Some("ann@customer".into()), ..base.clone() }).await, 1);
    assert_eq!(list(mailroom_store::InboundFilter { from: Some("bob@".into()), ..base.clone() }).await, 0);
    assert_eq!(list(mailroom_store::InboundFilter { unread: Some(true), ..base.clone() }).await, 0);
    assert_eq!(list(mailroom_store::InboundFilter { folder: Some("Sent".into()), ..base.clone() }).await, 0);
    assert!(matches!(
        t.store.inbound_detail(Uuid::now_v7(), None).await,
        Err(mailroom_store::StoreError::NotFound(_))
    ));
}

async fn a_reply_joins_the_conversation_it_answers_and_inherits_its_records_by_the_first_method_that_matches(t) {
    use mailroom_core::inbound::CorrelationMethod;
    use mailroom_core::mailbox::MailboxFilter;
    use mailroom_core::message::{RelatedRecord, Relation};
    use mailroom_store::InboundOutcome;
    let account = t.account("replies").await;
    let mut outbound = new_message(account.id, None, "Invoice 103001");
    outbound.related_records = vec![RelatedRecord::new("sales-invoice", "103001", Relation::Primary).unwrap()];
    let outbound_id = outbound.id;
    let outbound_message_id = outbound.message_id_header.trim_matches(['<', '>']).to_owned();
    t.store.insert_message(outbound).await.unwrap();
    let mailbox = mailbox_for(&t, "sales").await;
    let stored = |outcome: InboundOutcome| match outcome {
        InboundOutcome::Stored(id) => id,
        other => panic!("not stored: {other:?}"),
    };
    // An unrelated message from Outlook starts a conversation of its own.
    let index = "AdkAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let outlook = parsed_mail("Question", &[], Some(index));
    let outlook_id = stored(t.store.insert_inbound(received(&mailbox, &outlook, 1, MailboxFilter::All)).await.unwrap());
    t.store
        .set_inbound_related_records(outlook_id, &[RelatedRecord::new("customer", "C7", Relation::Related).unwrap()])
        .await
        .unwrap();
    // A reply naming the invoice mail in References and carrying the Outlook conversation:
    // In-Reply-To/References come first.
    let both = parsed_mail("Re: Invoice 103001", &["unknown@x".into(), outbound_message_id.clone()], Some(index));
    let reply = t.store.inbound_detail(stored(t.store.insert_inbound(received(&mailbox, &both, 2, MailboxFilter::All)).await.unwrap()), None).await.unwrap();
    assert_eq!(reply.message.correlation_method, Some(CorrelationMethod::InReplyTo));
    assert_eq!(reply.message.conversation_id, outbound_id);
    let records: Vec<(&str, &str)> = reply.related_records.iter().map(|r| (r.record_type.as_str(), r.record_id.as_str())).collect();
    assert_eq!(records, [("sales-invoice", "103001")]);
    // Only the Thread-Index matches: the Outlook conversation, with its records.
    let threaded = parsed_mail("Re: Question", &[], Some(index));
    let follow_up = t.store.inbound_detail(stored(t.store.insert_inbound(received(&mailbox, &threaded, 3, MailboxFilter::All)).await.unwrap()), None).await.unwrap();
    assert_eq!(follow_up.message.correlation_method, Some(CorrelationMethod::ThreadIndex));
    assert_eq!(follow_up.message.conversation_id, outlook_id);
    assert_eq!(follow_up.related_records.len(), 1);
    // A reply to a received message (by its Message-ID) joins that one's conversation.
    let answer = parsed_mail("Re: Re: Invoice", &[both.message_id.clone().unwrap()], None);
    let answered = t.store.inbound_detail(stored(t.store.insert_inbound(received(&mailbox, &answer, 4, MailboxFilter::All)).await.unwrap()), None).await.unwrap();
    assert_eq!(answered.message.conversation_id, outbound_id);
    // The conversation: the outbound message and the two inbound ones in it.
    assert_eq!(t.store.conversation_outbound_ids(outbound_id).await.unwrap(), vec![outbound_id]);
    let inbound = t.store.inbound_page(&mailroom_store::InboundFilter { conversation_id: Some(outbound_id), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(inbound.len(), 2);
    // Record timelines include the inbound mail.
    let timeline = t.store.inbound_page(&mailroom_store::InboundFilter { related_to: Some(("sales-invoice".into(), "103001".into())), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(timeline.len(), 2, "the answer to the reply inherits from the reply: {:?}", answered.related_records);
}

async fn responses_to_tracked_mail_keep_only_correlated_messages(t) {
    use mailroom_core::mailbox::MailboxFilter;
    use mailroom_store::InboundOutcome;
    let account = t.account("tracked").await;
    let outbound = new_message(account.id, None, "Offer");
    let reference = outbound.message_id_header.trim_matches(['<', '>']).to_owned();
    t.store.insert_message(outbound).await.unwrap();
    let mailbox = mailbox_for(&t, "tracker").await;
    let stray = parsed_mail("Newsletter", &[], None);
    assert_eq!(
        t.store.insert_inbound(received(&mailbox, &stray, 1, MailboxFilter::ResponsesToTracked)).await.unwrap(),
        InboundOutcome::Filtered
    );
    let reply = parsed_mail("Re: Offer", &[reference], None);
    assert!(matches!(
        t.store.insert_inbound(received(&mailbox, &reply, 2, MailboxFilter::ResponsesToTracked)).await.unwrap(),
        InboundOutcome::Stored(_)
    ));
    assert_eq!(t.store.events("message.received", 0).await.unwrap().len(), 1, "no event for filtered mail");
}

async fn folder_state_is_kept_and_a_reindex_moves_messages_to_their_new_uids(t) {
    use mailroom_core::mailbox::MailboxFilter;
    let mailbox = mailbox_for(&t, "folders").await;
    let state = mailroom_store::FolderState {
        folder: "INBOX".into(),
        uidvalidity: 7,
        uidnext: 42,
        highestmodseq: Some(99),
        initial_below: 3,
        validity_changes: 0,
        validity_changed_at_ms: None,
        synced_at_ms: Some(5),
    };
    t.store.save_folder_state(mailbox.id, &state).await.unwrap();
    let next = mailroom_store::FolderState { initial_below: 0, uidnext: 50, ..state.clone() };
    t.store.save_folder_state(mailbox.id, &next).await.unwrap();
    assert_eq!(t.store.folder_states(mailbox.id).await.unwrap(), vec![next]);
    let parsed = parsed_mail("Kept", &[], None);
    t.store.insert_inbound(received(&mailbox, &parsed, 5, MailboxFilter::All)).await.unwrap();
    let before = t.store.inbound_under_other_validity(mailbox.id, "INBOX", 8).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].1, parsed.message_id);
    // Storing the same message under the new UIDVALIDITY moves the record rather than copying it.
    let mut again = received(&mailbox, &parsed, 3, MailboxFilter::All);
    again.uidvalidity = 8;
    again.size = 105;
    assert_eq!(
        t.store.insert_inbound(again).await.unwrap(),
        mailroom_store::InboundOutcome::AlreadyStored(before[0].0)
    );
    assert_eq!(t.store.inbound_stored_uids(mailbox.id, "INBOX", 8, &[3]).await.unwrap(), vec![3]);
    t.store.move_inbound_uids(8, &[(before[0].0, 1)]).await.unwrap();
    // Flags changed on the server are brought over; UIDs not stored are ignored.
    let moved = before[0].0;
    assert!(t.store.inbound_detail(moved, None).await.unwrap().message.seen);
    // Marked unread and flagged in another client.
    let flagged = vec!["\\Flagged".to_owned()];
    let changes = [(1, flagged.clone()), (99, flagged.clone())];
    assert_eq!(t.store.update_inbound_flags(mailbox.id, "INBOX", 8, &changes).await.unwrap(), 1);
    assert_eq!(t.store.update_inbound_flags(mailbox.id, "INBOX", 8, &changes).await.unwrap(), 0, "no change the second time");
    assert_eq!(t.store.update_inbound_flags(mailbox.id, "INBOX", 7, &changes).await.unwrap(), 0, "another UIDVALIDITY");
    let now = t.store.inbound_detail(moved, None).await.unwrap().message;
    assert_eq!((now.seen, now.flags), (false, flagged));
    // One node holds a mailbox's sync at a time; another takes it once the hold has expired.
    let (id, now) = (mailbox.id, now_ms());
    assert!(t.store.hold_mailbox_sync(id, "a", now, now + 1_000).await.unwrap());
    assert!(!t.store.hold_mailbox_sync(id, "b", now, now + 1_000).await.unwrap());
    assert_eq!(t.store.renew_mailbox_sync_holds("a", now + 2_000).await.unwrap(), vec![id]);
    assert!(t.store.renew_mailbox_sync_holds("b", now + 2_000).await.unwrap().is_empty());
    assert!(t.store.hold_mailbox_sync(id, "b", now + 2_001, now + 3_000).await.unwrap());
    assert!(t.store.renew_mailbox_sync_holds("a", now + 4_000).await.unwrap().is_empty());
    t.store.release_mailbox_sync(id, "b").await.unwrap();
    assert!(t.store.hold_mailbox_sync(id, "a", now, now + 1_000).await.unwrap());
    // Not enabled yet: not among the mailboxes to synchronize.
    assert!(t.store.mailboxes_to_sync().await.unwrap().is_empty());
    assert!(t.store.inbound_under_other_validity(mailbox.id, "INBOX", 8).await.unwrap().is_empty());
    assert_eq!(t.store.inbound_stored_uids(mailbox.id, "INBOX", 8, &[1]).await.unwrap(), vec![1]);
}

async fn inbound_listings_show_exactly_what_each_view_policy_shows(t) {
    use mailroom_core::access::ViewPolicy;
    use mailroom_core::mailbox::MailboxFilter;
    use mailroom_core::message::{RelatedRecord, Relation};
    use mailroom_store::{InboundOutcome, Visibility};
    let owners = [mailbox_for(&t, "ann").await, mailbox_for(&t, "bob").await];
    let ann = owners[0].user_id.unwrap().to_string();
    let type_sets: [&[&str]; 5] = [&[], &["customer"], &["customer", "sales-invoice"], &["vendor"], &["user"]];
    let mut stored: Vec<(Uuid, bool, Vec<&str>)> = Vec::new();
    for n in 0..20u32 {
        let mailbox = &owners[(n % 2) as usize];
        let types = type_sets[(n / 2) as usize % type_sets.len()];
        let parsed = parsed_mail(&format!("m{n}"), &[], None);
        let InboundOutcome::Stored(id) = t.store.insert_inbound(received(mailbox, &parsed, n + 1, MailboxFilter::All)).await.unwrap() else { panic!() };
        let records: Vec<RelatedRecord> = types.iter().map(|ty| RelatedRecord::new(ty, "R1", Relation::Related).unwrap()).collect();
        t.store.set_inbound_related_records(id, &records).await.unwrap();
        stored.push((id, n % 2 == 0, types.to_vec()));
    }
    let readables: [Option<Vec<String>>; 3] = [None, Some(vec![]), Some(vec!["customer".into()])];
    for policy in [ViewPolicy::All, ViewPolicy::Own, ViewPolicy::AllRelatedRecords, ViewPolicy::AnyRelatedRecord] {
        for readable in &readables {
            let can_read = |ty: &str| readable.as_ref().is_none_or(|r| r.iter().any(|x| x == ty));
            let mut expected: Vec<Uuid> = stored
                .iter()
                .filter(|(_, own, types)| {
                    let relevant: Vec<&str> = types.iter().copied().filter(|ty| *ty != "user").collect();
                    *own || match policy {
                        ViewPolicy::All => true,
                        ViewPolicy::Own => false,
                        ViewPolicy::AllRelatedRecords => !relevant.is_empty() && relevant.iter().all(|ty| can_read(ty)),
                        ViewPolicy::AnyRelatedRecord => relevant.iter().any(|ty| can_read(ty)),
                    }
                })
                .map(|(id, _, _)| *id)
                .collect();
            expected.sort();
            let visibility = Visibility { viewer: ann.clone(), policy, readable_types: readable.clone() };
            let mut listed: Vec<Uuid> = t
                .store
                .inbound_page(&mailroom_store::InboundFilter { visibility: Some(visibility.clone()), limit: 100, ..Default::default() })
                .await
                .unwrap()
                .iter()
                .map(|m| m.id)
                .collect();
            listed.sort();
            assert_eq!(listed, expected, "{policy:?} {readable:?}");
            for (id, _, _) in &stored {
                let shown = t.store.inbound_detail(*id, Some(&visibility)).await.is_ok();
                assert_eq!(shown, expected.contains(id), "detail of {id} under {policy:?} {readable:?}");
            }
        }
    }
}
}

contract! {
async fn tracking_tokens_contacts_and_smart_matching_follow_the_precedence_of_the_pipeline(t) {
    use mailroom_core::inbound::{CorrelationMethod, CorrelationSettings, correlation_keys};
    use mailroom_core::mailbox::MailboxFilter;
    use mailroom_core::message::{RelatedRecord, Relation};
    use mailroom_store::InboundOutcome;
    let on = CorrelationSettings { subject_token: true, plus_addressing: true, smart_match_days: 7, ..Default::default() };
    let account = t.account("tokens").await;
    let mut offer = new_message(account.id, None, "Offer");
    offer.related_records = vec![RelatedRecord::new("quote", "Q-1", Relation::Primary).unwrap()];
    let offer_id = offer.id;
    t.store.insert_message(offer).await.unwrap();
    let token = t.store.conversation_token(offer_id).await.unwrap();
    assert_eq!(t.store.conversation_token(offer_id).await.unwrap(), token, "one token per conversation");
    let other = new_message(account.id, None, "Other");
    let other_id = other.id;
    let other_reference = other.message_id_header.trim_matches(['<', '>']).to_owned();
    t.store.insert_message(other).await.unwrap();
    let mailbox = mailbox_for(&t, "tokens").await;
    let on = &on;
    let store = |parsed: mailroom_core::inbound::ParsedInbound, uid: u32, filter: MailboxFilter| {
        let t = &t;
        let mailbox = mailbox.clone();
        async move {
            let mut new = received(&mailbox, &parsed, uid, filter);
            new.keys = correlation_keys(&parsed, on);
            match t.store.insert_inbound(new).await.unwrap() {
                InboundOutcome::Stored(id) => Some(t.store.inbound_detail(id, None).await.unwrap()),
                _ => None,
            }
        }
    };
    // The subject token finds the offer's conversation and its records.
    let by_subject = store(parsed_mail(&format!("Re: Offer [MR-{token}]"), &[], Some("AdkAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")), 1, MailboxFilter::All).await.unwrap();
    assert_eq!(by_subject.message.correlation_method, Some(CorrelationMethod::SubjectToken));
    assert_eq!(by_subject.message.conversation_id, offer_id);
    assert_eq!(by_subject.related_records[0].record_id, "Q-1");
    // In-Reply-To comes before the subject token.
    let both = store(parsed_mail(&format!("Re: Offer [MR-{token}]"), &[other_reference], None), 2, MailboxFilter::All).await.unwrap();
    assert_eq!(both.message.correlation_method, Some(CorrelationMethod::InReplyTo));
    assert_eq!(both.message.conversation_id, other_id);
    // A plus-addressed recipient.
    let mut plus = parsed_mail("Re: something else", &[], None);
    plus.to = vec![mailroom_core::inbound::InboundAddress { name: None, address: format!("sales+{token}@corp.test") }];
    let by_address = store(plus, 3, MailboxFilter::All).await.unwrap();
    assert_eq!(by_address.message.correlation_method, Some(CorrelationMethod::AddressToken));
    assert_eq!(by_address.message.conversation_id, offer_id);
    // Smart matching: the same subject between the same people, within the window.
    let first = store(parsed_mail("Delivery dates", &[], None), 4, MailboxFilter::All).await.unwrap();
    assert_eq!(first.message.correlation_method, None);
    let again = store(parsed_mail("RE: Delivery  dates", &[], None), 5, MailboxFilter::All).await.unwrap();
    assert_eq!(again.message.correlation_method, Some(CorrelationMethod::SmartMatch));
    assert_eq!(again.message.conversation_id, first.message.conversation_id);
    // Smart matching finds sent mail too: a reply that lost its threading headers and carries no
    // token, to a quote sent to the same person.
    let mut quote = new_message(account.id, None, "Quote for the pumps");
    std::sync::Arc::make_mut(&mut quote.content).to = vec![mailroom_core::address::Mailbox::new(
        None,
        mailroom_core::address::EmailAddress::parse("ann@customer.example").unwrap(),
    )
    .unwrap()];
    quote.related_records = vec![RelatedRecord::new("quote", "Q-2", Relation::Primary).unwrap()];
    quote.smart_key = mailroom_core::inbound::outbound_smart_key("Quote for the pumps", ["ann@customer.example"]);
    let quote_id = quote.id;
    t.store.insert_message(quote).await.unwrap();
    let answer = store(parsed_mail("AW: Quote for the pumps", &[], None), 20, MailboxFilter::All).await.unwrap();
    assert_eq!(answer.message.correlation_method, Some(CorrelationMethod::SmartMatch));
    assert_eq!(answer.message.conversation_id, quote_id);
    assert_eq!(answer.related_records[0].record_id, "Q-2");

    // Contacts: mail from a known contact is kept by the known-contacts filter and linked to
    // the contact's records; mail from a stranger is not kept.
    t.store
        .put_contact(&mailroom_store::Contact {
            id: "ann".into(),
            name: Some("Ann".into()),
            addresses: vec!["ann@customer.example".into()],
            records: vec![("customer".into(), "C-1".into())],
            updated_at_ms: 0,
        })
        .await
        .unwrap();
    let known = store(parsed_mail("Hello again", &[], None), 6, MailboxFilter::KnownContacts).await.expect("kept");
    let records: Vec<(&str, &str)> = known.related_records.iter().map(|r| (r.record_type.as_str(), r.record_id.as_str())).collect();
    assert_eq!(records, [("customer", "C-1")]);
    let mut stranger = parsed_mail("Buy now", &[], None);
    stranger.from = Some(mailroom_core::inbound::InboundAddress { name: None, address: "spam@elsewhere.example".into() });
    assert!(store(stranger, 7, MailboxFilter::KnownContacts).await.is_none());
    assert_eq!(t.store.contact("ann").await.unwrap().addresses, ["ann@customer.example"]);
    t.store.delete_contact("ann").await.unwrap();
    assert!(matches!(t.store.contact("ann").await, Err(mailroom_store::StoreError::NotFound(_))));
}
}

contract! {
async fn the_mail_client_app_records_deployments_and_finds_the_records_of_a_messages_participants(t) {
    use mailroom_core::mail_client_app::{Deployed, DeploymentMode};
    use mailroom_core::mailbox::MailboxFilter;
    use mailroom_core::message::{RelatedRecord, Relation};
    use mailroom_store::InboundOutcome;
    assert_eq!(t.store.mail_client_app_mode().await.unwrap(), DeploymentMode::Manual, "manual until set");
    t.store.set_mail_client_app_mode(DeploymentMode::Automatic).await.unwrap();
    assert_eq!(t.store.mail_client_app_mode().await.unwrap(), DeploymentMode::Automatic);

    let mailbox = mailbox_for(&t, "seller").await;
    let seller = mailbox.user_id.unwrap();
    let other = user_with_email(&t, "buyer").await;
    let team = t.store
        .create_team("outlook users", &mailroom_core::access::Grants::new(vec![mailroom_core::access::PermissionSet::MailClientApp]), &[seller])
        .await
        .unwrap();
    assert_eq!(team.members, [seller]);
    // Nothing recorded yet; the team's role is seen.
    let users = t.store.mail_client_app_users().await.unwrap();
    let row = users.iter().find(|u| u.user.id == seller).unwrap();
    assert!(row.recorded.is_none());
    assert_eq!(row.mailbox.as_ref().map(|m| m.id), Some(mailbox.id));
    assert!(row.user.grants.allows(&mailroom_core::access::PermissionSet::MailClientApp));
    assert!(users.iter().find(|u| u.user.id == other.id).unwrap().mailbox.is_none());

    // Requested, then opened; requesting again does not take back the opened state.
    t.store.record_mail_client_app(&[seller, other.id], Deployed::Requested).await.unwrap();
    assert_eq!(t.store.mail_client_app_user(seller).await.unwrap().recorded, Some(Deployed::Requested));
    t.store.record_mail_client_app(&[seller], Deployed::Opened).await.unwrap();
    t.store.record_mail_client_app(&[seller], Deployed::Requested).await.unwrap();
    assert_eq!(t.store.mail_client_app_user(seller).await.unwrap().recorded, Some(Deployed::Opened));
    // An unknown user refuses the whole call.
    let unknown = t.store.record_mail_client_app(&[seller, Uuid::new_v4()], Deployed::Opened).await;
    assert!(matches!(unknown, Err(mailroom_store::StoreError::NotFound(_))));

    // The records of a participant: their contact's, then those of earlier mail from them.
    t.store
        .put_contact(&mailroom_store::Contact {
            id: "ann".into(),
            name: Some("Ann".into()),
            addresses: vec!["ann@customer.example".into()],
            records: vec![("customer".into(), "C-1".into())],
            updated_at_ms: 0,
        })
        .await
        .unwrap();
    let parsed = parsed_mail("Order", &[], None);
    let InboundOutcome::Stored(id) = t.store.insert_inbound(received(&mailbox, &parsed, 1, MailboxFilter::All)).await.unwrap() else {
        panic!("stored")
    };
    let deal = RelatedRecord::new("deal", "D-9", Relation::Related).unwrap();
    let customer = RelatedRecord::new("customer", "C-1", Relation::Related).unwrap();
    t.store.set_inbound_related_records(id, &[deal, customer]).await.unwrap();
    let found = t.store
        .records_of_addresses(mailbox.id, &["ANN@customer.example".into(), "nobody@else.example".into()], 10)
        .await
        .unwrap();
    let found: Vec<(&str, &str, &str)> = found.iter().map(|r| (r.record_type.as_str(), r.record_id.as_str(), r.source)).collect();
    assert_eq!(found, [("customer", "C-1", "contact"), ("deal", "D-9", "mail")], "no repeats, contacts first");
    let other_mailbox = mailbox_for(&t, "third").await;
    let elsewhere = t.store.records_of_addresses(other_mailbox.id, &["ann@customer.example".into()], 10).await.unwrap();
    assert_eq!(elsewhere.len(), 1, "mail in another mailbox is not looked at, only the contact");
    assert_eq!(t.store.records_of_addresses(mailbox.id, &["ann@customer.example".into()], 1).await.unwrap().len(), 1);

    // The open message is found by its Message-ID in the user's mailbox only.
    let message_id = parsed.message_id.clone().unwrap();
    assert_eq!(t.store.inbound_by_message_id(mailbox.id, &message_id).await.unwrap(), Some(id));
    assert_eq!(t.store.inbound_by_message_id(other_mailbox.id, &message_id).await.unwrap(), None);
}
}

contract! {
async fn the_dashboard_figures_count_outcomes_per_hour_the_outbox_by_state_and_failures_by_account(t) {
    let hour = 3_600_000;
    let now = (now_ms() / hour) * hour + hour / 2;
    let account = t.account("figures").await;
    let mut ids = Vec::new();
    for subject in ["sent", "deferred", "failed"] {
        let message = new_message(account.id, None, subject);
        ids.push(message.id);
        t.store.insert_message(message).await.unwrap();
    }
    let claimed = t.store.claim_due(account.id, "node-a", now_ms(), now_ms() + hour, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    t.store
        .record_outcomes(&[
            attempt(ids[0], "node-a", 1, AttemptOutcome::Sent, Outcome::Sent, now - 2 * hour),
            attempt(ids[1], "node-a", 1, AttemptOutcome::Transient, Outcome::RetryAt(now + hour), now - hour),
            attempt(ids[2], "node-a", 1, AttemptOutcome::Permanent, Outcome::Failed, now),
        ])
        .await
        .unwrap();
    t.store.insert_message(new_message(account.id, None, "waiting")).await.unwrap();

    let hours = t.store.hourly_outcomes(now, 24).await.unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[23].hour_start_ms, now - hour / 2, "the current hour comes last");
    let figures: Vec<(i64, i64, i64)> = hours[20..].iter().map(|h| (h.sent, h.deferred, h.failed)).collect();
    assert_eq!(figures, [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]);
    assert_eq!(hours[..20].iter().map(|h| h.sent + h.deferred + h.failed).sum::<i64>(), 0);
    assert!(t.store.hourly_outcomes(now + 30 * hour, 24).await.unwrap().iter().all(|h| h.sent == 0), "older attempts fall out");

    let outbox = t.store.outbox_counts().await.unwrap();
    assert_eq!((outbox.queued, outbox.deferred, outbox.failed, outbox.sending, outbox.draft), (1, 1, 1, 0, 0));
    let other = t.account("quiet").await;
    let failures = t.store.failures_by_account().await.unwrap();
    assert_eq!(failures.len(), 1, "accounts without failures are left out: {failures:?} ({})", other.name);
    assert_eq!((failures[0].account_name.as_str(), failures[0].failed), ("figures", 1));
}
}

contract! {
async fn listings_filter_by_recipient_from_its_index_and_search_subjects_window_by_window(t) {
    use mailroom_core::address::{EmailAddress, Mailbox};
    use mailroom_core::message::{RelatedRecord, Relation};
    let account = t.account("search").await;
    let to = |address: &str| vec![Mailbox::new(None, EmailAddress::parse(address).unwrap()).unwrap()];
    let mut ids = Vec::new();
    for n in 0..30 {
        let subject = match n % 3 {
            0 => format!("Invoice {n} 100%_paid"),
            1 => format!("Reminder {n}"),
            _ => format!("Quote {n}"),
        };
        let mut message = new_message(account.id, None, &subject);
        let content = std::sync::Arc::make_mut(&mut message.content);
        content.to = to(if n % 2 == 0 { "Ann@Customer.example" } else { "bob@customer.example" });
        if n == 7 {
            content.cc = to("ann@customer.example");
            message.related_records = vec![RelatedRecord::new("deal", "D-7", Relation::Primary).unwrap()];
        }
        ids.push(message.id);
        t.store.insert_message(message).await.unwrap();
    }
    let listed = |filter: MessageFilter| {
        let store = t.store.clone();
        async move {
            let mut filter = filter;
            let mut all = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.list_messages(&filter).await.unwrap();
                pages += 1;
                all.extend(page.items.iter().map(|m| (m.id, m.subject.clone())));
                match page.next_cursor {
                    Some(cursor) => filter.before_id = Some(cursor),
                    None => return (all, pages),
                }
            }
        }
    };
    // By recipient, any case, To or Cc; newest first across pages.
    let (ann, _) = listed(MessageFilter { recipient: Some("ann@customer.example".into()), limit: 4, ..Default::default() }).await;
    let mut expected: Vec<Uuid> = ids.iter().enumerate().filter(|(n, _)| n % 2 == 0 || *n == 7).map(|(_, id)| *id).collect();
    expected.reverse();
    assert_eq!(ann.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    let page = t.store.list_messages(&MessageFilter { recipient: Some("ann@customer.example".into()), limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!((page.total, page.total_is_estimate), (16, false));
    let none = t.store.list_messages(&MessageFilter { recipient: Some("carol@customer.example".into()), limit: 50, ..Default::default() }).await.unwrap();
    assert!(none.items.is_empty() && none.total == 0);
    // With a record: both must hold.
    let (on_deal, _) = listed(MessageFilter { recipient: Some("ann@customer.example".into()), related_to: Some(("deal".into(), "D-7".into())), limit: 10, ..Default::default() }).await;
    assert_eq!(on_deal.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[7]]);

    // Subjects: contains, any case, `%` and `_` taken literally.
    let (invoices, _) = listed(MessageFilter { subject_contains: Some("INVOICE".into()), limit: 50, ..Default::default() }).await;
    assert_eq!(invoices.len(), 10);
    assert!(invoices.iter().all(|(_, s)| s.starts_with("Invoice")));
    let (literal, _) = listed(MessageFilter { subject_contains: Some("100%_p".into()), limit: 50, ..Default::default() }).await;
    assert_eq!(literal.len(), 10);
    let (wild, _) = listed(MessageFilter { subject_contains: Some("%".into()), limit: 50, ..Default::default() }).await;
    assert_eq!(wild.len(), 10, "a % is a percent sign, not a wildcard");
    // A window of 7 messages per page: the search walks back window by window and finds every
    // match exactly once, newest first; a page that ended its window says there is more.
    let (windowed, pages) = listed(MessageFilter { subject_contains: Some("invoice".into()), subject_window: Some(7), limit: 50, ..Default::default() }).await;
    assert_eq!(windowed, invoices);
    assert_eq!(pages, 5, "30 messages in windows of 7");
    let first = t.store.list_messages(&MessageFilter { subject_contains: Some("invoice".into()), subject_window: Some(7), limit: 50, ..Default::default() }).await.unwrap();
    assert!(first.total_is_estimate && first.has_more);
    // Subject and recipient together.
    let (both, _) = listed(MessageFilter { subject_contains: Some("reminder".into()), recipient: Some("bob@customer.example".into()), limit: 2, ..Default::default() }).await;
    assert_eq!(both.len(), 5, "reminders are n = 1, 7, 13, 19, 25: all odd, all to bob");
}
}

contract! {
async fn webhook_events_fan_out_to_subscribed_endpoints_and_deliveries_are_leased_retried_and_logged(t) {
    use mailroom_core::webhook::{EventType, SigningSecret};
    use mailroom_store::{DeliveryAttempt, WebhookChange};
    let secret = SigningSecret::from_bytes(vec![7; 32]);
    let sent_only = t.store.create_webhook("http://127.0.0.1:1/a", &[EventType::MessageSent], false, &secret, "admin").await.unwrap();
    let ordered = t.store.create_webhook("http://127.0.0.1:1/b", &[EventType::MessageSent, EventType::MessageFailed], true, &secret, "admin").await.unwrap();
    assert_eq!(t.store.webhook_secrets(sent_only.id).await.unwrap(), std::slice::from_ref(&secret), "sealed, and opened again");

    // Three outcomes: two sent, one failed — each writes its event in its transaction.
    let account = t.account("hooks").await;
    let mut ids = Vec::new();
    for subject in ["a", "b", "c"] {
        let message = new_message(account.id, None, subject);
        ids.push(message.id);
        t.store.insert_message(message).await.unwrap();
    }
    assert_eq!(t.store.claim_due(account.id, "node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap().len(), 3);
    let now = now_ms();
    t.store
        .record_outcomes(&[
            attempt(ids[0], "node-a", 1, AttemptOutcome::Sent, Outcome::Sent, now),
            attempt(ids[1], "node-a", 1, AttemptOutcome::Permanent, Outcome::Failed, now),
            attempt(ids[2], "node-a", 1, AttemptOutcome::Sent, Outcome::Sent, now),
        ])
        .await
        .unwrap();
    // A stale outcome from a lost lease moves nothing and says nothing.
    t.store
        .record_outcomes(&[attempt(ids[0], "node-b", 1, AttemptOutcome::Sent, Outcome::Sent, now)])
        .await
        .unwrap();
    assert_eq!(t.store.fan_out_events(500).await.unwrap(), 3);
    assert_eq!(t.store.fan_out_events(500).await.unwrap(), 0, "each event is fanned out once");

    // Unordered: both sent events at once. Ordered: its oldest pending only, one at a time.
    let due = t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap();
    let of = |endpoint: uuid::Uuid| due.iter().filter(|d| d.endpoint_id == endpoint).collect::<Vec<_>>();
    assert_eq!(of(sent_only.id).len(), 2);
    assert!(of(sent_only.id).iter().all(|d| d.kind == "message.sent"));
    assert_eq!(of(ordered.id).len(), 1);
    let first = of(ordered.id)[0].clone();
    assert!(t.store.claim_deliveries("node-b", now_ms(), now_ms() + 60_000, 10).await.unwrap().is_empty(), "leased");
    let payload: serde_json::Value = serde_json::from_str(&first.payload_json).unwrap();
    assert_eq!(payload["message_id"], ids[0].to_string());

    // A failure: tried again later, the endpoint's failing streak starts; the log says so.
    let failed = DeliveryAttempt { at_ms: now_ms(), status: Some(503), latency_ms: 12, response: Some("busy".into()), error: None };
    assert!(t.store.record_delivery("node-a", &first, &failed, now_ms() + 3_600_000).await.unwrap());
    assert!(t.store.webhook(ordered.id).await.unwrap().failing_since_ms.is_some());
    assert!(t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap().is_empty(),
        "the ordered endpoint waits for its oldest event");
    // A node that lost the lease records nothing but the log line.
    assert!(!t.store.record_delivery("node-b", &first, &failed, now_ms()).await.unwrap());

    // Replay makes it due now; a success ends the streak and the next event follows.
    t.store.replay_event(ordered.id, first.event_id).await.unwrap();
    let again = t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].event_id, again[0].attempts), (first.event_id, 1));
    let ok = DeliveryAttempt { at_ms: now_ms(), status: Some(200), latency_ms: 5, response: None, error: None };
    assert!(t.store.record_delivery("node-a", &again[0], &ok, 0).await.unwrap());
    assert!(t.store.webhook(ordered.id).await.unwrap().failing_since_ms.is_none());
    let next = t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].event_id > first.event_id);
    assert_eq!(next[0].kind, "message.failed");
    let log = t.store.webhook_log(ordered.id, 10).await.unwrap();
    assert_eq!(log.len(), 2, "two attempts of the first event (node-b's stale one shares attempt 1): {log:?}");
    assert!(log.iter().all(|l| l.event_id == first.event_id && l.state == "delivered"));

    // Failing for a day disables the endpoint and alerts its creator; its events wait.
    let day_ago = DeliveryAttempt { at_ms: now_ms() - 25 * 3_600_000, status: None, latency_ms: 10_000, response: None, error: Some("timeout".into()) };
    let mut stale = next[0].clone();
    stale.event_at_ms = now_ms();
    assert!(t.store.record_delivery("node-a", &stale, &day_ago, now_ms()).await.unwrap());
    let later = t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap();
    let latest = later.iter().find(|d| d.endpoint_id == ordered.id).cloned().unwrap();
    assert!(t.store.record_delivery("node-a", &latest, &DeliveryAttempt { at_ms: now_ms(), ..day_ago.clone() }, now_ms()).await.unwrap());
    let disabled = t.store.webhook(ordered.id).await.unwrap();
    assert!(!disabled.enabled && disabled.disabled_reason.is_some(), "{disabled:?}");
    assert!(t.store.claim_deliveries("node-a", now_ms() + 10_000_000, now_ms() + 20_000_000, 10).await.unwrap().iter().all(|d| d.endpoint_id != ordered.id));
    let enabled = t.store.update_webhook(ordered.id, &WebhookChange { enabled: Some(true), ..Default::default() }).await.unwrap();
    assert!(enabled.enabled && enabled.failing_since_ms.is_none() && enabled.disabled_reason.is_none());

    // An event three days old is given up after its attempt.
    let mut ancient = latest.clone();
    ancient.event_at_ms = now_ms() - 4 * 24 * 3_600_000;
    ancient.attempts = 2;
    let due = t.store.claim_deliveries("node-a", now_ms() + 10_000_000, now_ms() + 20_000_000, 10).await.unwrap();
    if let Some(d) = due.iter().find(|d| d.endpoint_id == ordered.id) {
        let mut d = d.clone();
        d.event_at_ms = ancient.event_at_ms;
        assert!(t.store.record_delivery("node-a", &d, &DeliveryAttempt { at_ms: now_ms(), ..day_ago }, now_ms()).await.unwrap());
        assert!(t.store.webhook_log(ordered.id, 1).await.unwrap()[0].state == "given-up");
    } else {
        panic!("the re-enabled endpoint's event is due again");
    }
    t.store.delete_webhook(sent_only.id).await.unwrap();
    assert!(matches!(t.store.webhook(sent_only.id).await, Err(mailroom_store::StoreError::NotFound(_))));
}
}

contract! {
async fn an_outcome_recorded_while_no_webhook_is_enabled_leaves_no_event_to_fan_out(t) {
    use mailroom_core::webhook::{EventType, SigningSecret};
    use mailroom_store::WebhookChange;
    let account = t.account("quiet").await;
    let send_one = |subject: &'static str| {
        let store = t.store.clone();
        async move {
            let message = new_message(account.id, None, subject);
            let id = message.id;
            store.insert_message(message).await.unwrap();
            assert_eq!(store.claim_due(account.id, "node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap().len(), 1);
            store.record_outcomes(&[attempt(id, "node-a", 1, AttemptOutcome::Sent, Outcome::Sent, now_ms())]).await.unwrap();
        }
    };
    send_one("nobody listens").await;
    assert_eq!(t.store.fan_out_events(500).await.unwrap(), 0, "nobody to fan it out to");
    let hook = t.store.create_webhook("http://127.0.0.1:1/q", &[EventType::MessageSent], false, &SigningSecret::from_bytes(vec![5; 32]), "admin").await.unwrap();
    send_one("someone listens").await;
    assert_eq!(t.store.fan_out_events(500).await.unwrap(), 1);
    let due = t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(due.len(), 1, "only the event recorded after the endpoint was enabled: {due:?}");
    // A disabled endpoint counts as none.
    t.store.update_webhook(hook.id, &WebhookChange { enabled: Some(false), ..Default::default() }).await.unwrap();
    send_one("listener away").await;
    assert_eq!(t.store.fan_out_events(500).await.unwrap(), 0);
}
}

contract! {
async fn suppressed_addresses_are_found_among_recipients_listed_newest_first_and_removed(t) {
    assert!(t.store.suppressed_among(&["ann@example.com".into()]).await.unwrap().is_empty(), "an empty list");
    assert!(t.store.suppress("Ann@Example.com", "hard-bounce", Some("550 5.1.1 user unknown"), Some("m-1"), None).await.unwrap());
    assert!(!t.store.suppress("ann@example.com", "complaint", None, None, None).await.unwrap(), "the first reason stays");
    // Seen at once on this node, though the list was just seen empty.
    let found = t.store.suppressed_among(&["bob@example.com".into(), "ANN@example.com".into()]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].address.as_str(), found[0].reason.as_str(), found[0].detail.as_deref()), ("ann@example.com", "hard-bounce", Some("550 5.1.1 user unknown")));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t.store.suppress("carol@example.com", "manual", None, None, Some("admin")).await.unwrap();
    let page = t.store.suppressions(None, 1).await.unwrap();
    assert_eq!(page[0].address, "carol@example.com", "newest first");
    let next = t.store.suppressions(Some((page[0].created_at_ms, page[0].address.clone())), 10).await.unwrap();
    assert_eq!(next.iter().map(|s| s.address.as_str()).collect::<Vec<_>>(), ["ann@example.com"]);
    t.store.unsuppress("ANN@example.com").await.unwrap();
    assert!(t.store.suppressed_among(&["ann@example.com".into()]).await.unwrap().is_empty());
    assert!(matches!(t.store.unsuppress("ann@example.com").await, Err(mailroom_store::StoreError::NotFound(_))));
}
}

contract! {
async fn an_unsubscribe_token_opens_only_unchanged_and_takes_its_addresses_off_its_list_once_with_an_event(t) {
    use mailroom_store::UnsubscribeToken;
    let token = UnsubscribeToken {
        message_id: uuid::Uuid::new_v4(),
        list: "newsletter".into(),
        addresses: vec!["ann@example.com".into(), "bob@example.com".into()],
    };
    let sealed = t.store.unsubscribe_token(&token);
    assert!(!sealed.contains("ann") && !sealed.contains("newsletter"), "it reveals nothing: {sealed}");
    assert_eq!(t.store.open_unsubscribe_token(&sealed), Some(token.clone()));
    let mut changed = sealed.clone().into_bytes();
    changed[10] = if changed[10] == b'A' { b'B' } else { b'A' };
    assert_eq!(t.store.open_unsubscribe_token(&String::from_utf8(changed).unwrap()), None);

    assert_eq!(t.store.unsubscribe(&token, "one-click").await.unwrap().len(), 2);
    assert!(t.store.unsubscribe(&token, "one-click").await.unwrap().is_empty(), "a repeat changes nothing");
    let events = t.store.events("message.unsubscribed", 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].1, token.message_id.to_string());
    let asked = ["ANN@example.com".to_owned(), "carol@example.com".to_owned()];
    assert_eq!(t.store.unsubscribed_among("newsletter", &asked).await.unwrap(), ["ann@example.com"]);
    assert!(t.store.unsubscribed_among("reminders", &asked).await.unwrap().is_empty(), "only that list");
    let page = t.store.unsubscribes(None, 1).await.unwrap();
    let rest = t.store.unsubscribes(Some((page[0].created_at_ms, page[0].address.clone(), page[0].list.clone())), 10).await.unwrap();
    assert_eq!(page.len() + rest.len(), 2);
    t.store.resubscribe("Ann@example.com", "newsletter").await.unwrap();
    assert!(t.store.unsubscribed_among("newsletter", &asked).await.unwrap().is_empty());
    assert!(matches!(t.store.resubscribe("ann@example.com", "newsletter").await, Err(mailroom_store::StoreError::NotFound(_))));
}
}

contract! {
async fn a_domain_signs_with_its_one_active_dkim_key_and_keeps_the_others_listed(t) {
    use mailroom_connect::dkim::generate;
    use mailroom_core::dkim::DkimAlgorithm;
    assert!(t.store.dkim_signing_key("cronus.example").await.unwrap().is_none());
    let first = t.store.add_dkim_key("cronus.example", "s1", &generate(DkimAlgorithm::Ed25519).unwrap(), Some("admin")).await.unwrap();
    assert!(first.active, "a domain's first key signs at once");
    assert!(t.store.dkim_signing_key("cronus.example").await.unwrap().is_some(), "seen at once on this node");
    let second = t.store.add_dkim_key("cronus.example", "s2", &generate(DkimAlgorithm::Ed25519).unwrap(), None).await.unwrap();
    assert!(!second.active);
    let taken = t.store.add_dkim_key("cronus.example", "s2", &generate(DkimAlgorithm::Ed25519).unwrap(), None).await;
    assert!(matches!(taken, Err(mailroom_store::StoreError::Refused { code: "dkim_selector_taken", .. })));
    t.store.activate_dkim_key(second.id).await.unwrap();
    let keys = t.store.dkim_keys(Some("cronus.example")).await.unwrap();
    assert_eq!(keys.iter().map(|k| (k.selector.as_str(), k.active)).collect::<Vec<_>>(), [("s2", true), ("s1", false)]);
    let signing = t.store.dkim_signing_key("cronus.example").await.unwrap().unwrap();
    assert_eq!((signing.id, signing.selector.as_str()), (second.id, "s2"));
    // The sealed private key comes back whole: it signs.
    let signer = mailroom_connect::dkim::Signer::new(&signing.domain, &signing.selector, &signing.material).unwrap();
    assert!(String::from_utf8_lossy(&signer.sign(b"From: a@cronus.example\r\n\r\nx\r\n").unwrap()).contains("s=s2"));
    assert!(matches!(t.store.delete_dkim_key(second.id).await, Err(mailroom_store::StoreError::Refused { code: "dkim_key_active", .. })));
    t.store.delete_dkim_key(first.id).await.unwrap();
    t.store.delete_dkim_key(second.id).await.unwrap();
    assert!(t.store.dkim_keys(None).await.unwrap().is_empty());
    assert!(t.store.dkim_signing_key("cronus.example").await.unwrap().is_none());
}
}

contract! {
async fn old_events_go_with_their_deliveries_and_log_once_no_delivery_is_pending(t) {
    use mailroom_core::webhook::{EventType, SigningSecret};
    use mailroom_store::{DeliveryAttempt, UnsubscribeToken};
    let hook = t.store.create_webhook("http://127.0.0.1:1/u", &[EventType::MessageUnsubscribed], false, &SigningSecret::from_bytes(vec![3; 32]), "admin").await.unwrap();
    let token = UnsubscribeToken { message_id: uuid::Uuid::new_v4(), list: "news".into(), addresses: vec!["ann@example.com".into(), "bob@example.com".into()] };
    t.store.unsubscribe(&token, "one-click").await.unwrap();
    assert_eq!(t.store.fan_out_events(500).await.unwrap(), 2);
    let later = now_ms() + 1_000;
    assert_eq!(t.store.delete_old_events(later, 100).await.unwrap(), 0, "deliveries are pending");
    let due = t.store.claim_deliveries("node-a", now_ms(), now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    let ok = DeliveryAttempt { at_ms: now_ms(), status: Some(200), latency_ms: 3, response: None, error: None };
    t.store.record_delivery("node-a", &due[0], &ok, now_ms()).await.unwrap();
    assert_eq!(t.store.delete_old_events(later, 100).await.unwrap(), 1, "the delivered one goes");
    assert_eq!(t.store.webhook_log(hook.id, 10).await.unwrap().len(), 0, "with its log");
    assert_eq!(t.store.events("message.unsubscribed", 0).await.unwrap().len(), 1, "the pending one stays");
    assert_eq!(t.store.delete_old_events(now_ms() - 60_000, 100).await.unwrap(), 0, "nothing is old yet");
}
}

contract! {
async fn an_app_registration_keeps_its_secret_sealed_and_its_name_unique(t) {
    use mailroom_core::oauth::{AppRegistrationDraft, AppRegistrationSettings};
    use mailroom_store::{SecretChange, StoreError};
    let settings = |name: &str| AppRegistrationSettings::parse(AppRegistrationDraft {
        name: name.into(),
        provider: "microsoft-entra".into(),
        client_id: "client-1".into(),
        tenant: Some("contoso.example".into()),
        redirect_uri: "https://mail.example/oauth/callback".into(),
        ..Default::default()
    }).unwrap();
    let first = t.store.add_app_registration(&settings("Contoso"), Some("s3cret value")).await.unwrap();
    assert!(first.has_client_secret);
    assert_eq!(first.settings, settings("Contoso"));
    assert!(matches!(
        t.store.add_app_registration(&settings("Contoso"), None).await,
        Err(StoreError::Refused { code: "app_registration_name_taken", .. })
    ));
    let second = t.store.add_app_registration(&settings("Fabrikam"), None).await.unwrap();
    assert!(!second.has_client_secret);
    assert_eq!(t.store.app_registration_secret(second.id).await.unwrap(), None);
    assert_eq!(t.store.app_registration_secret(first.id).await.unwrap().as_deref(), Some("s3cret value"));
    // Renaming onto another's name is refused; keeping the secret keeps it, setting one replaces it.
    assert!(matches!(
        t.store.update_app_registration(second.id, &settings("Contoso"), SecretChange::Keep).await,
        Err(StoreError::Refused { code: "app_registration_name_taken", .. })
    ));
    let mut edited = settings("Contoso EU");
    edited.tenant = Some("contoso.eu".into());
    let updated = t.store.update_app_registration(first.id, &edited, SecretChange::Keep).await.unwrap();
    assert_eq!(updated.settings.tenant.as_deref(), Some("contoso.eu"));
    assert_eq!(t.store.app_registration_secret(first.id).await.unwrap().as_deref(), Some("s3cret value"));
    t.store.update_app_registration(first.id, &edited, SecretChange::Set("new value".into())).await.unwrap();
    assert_eq!(t.store.app_registration_secret(first.id).await.unwrap().as_deref(), Some("new value"));
    assert_eq!(t.store.app_registrations().await.unwrap().iter().map(|r| r.settings.name.as_str()).collect::<Vec<_>>(), ["Contoso EU", "Fabrikam"]);
    t.store.delete_app_registration(second.id).await.unwrap();
    assert!(matches!(t.store.delete_app_registration(second.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(t.store.app_registration(second.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(t.store.update_app_registration(Uuid::new_v4(), &edited, SecretChange::Keep).await, Err(StoreError::NotFound(_))));
}
}

contract! {
async fn an_authorization_request_is_used_once_and_a_connected_mailbox_keeps_its_refresh_token_sealed(t) {
    use mailroom_store::OAuthState;
    let mailbox = mailbox_for(&t, "ann").await;
    let registration = Uuid::new_v4();
    let state = |id: &str, expires_at_ms: i64| OAuthState {
        id: id.into(),
        user_id: mailbox.user_id.unwrap(),
        registration_id: registration,
        target: mailroom_store::OAuthTarget::Mailbox,
        mailbox_id: mailbox.id,
        verifier: "verifier-of-the-flow".into(),
        binding: "browser-binding".into(),
        expires_at_ms,
    };
    t.store.create_oauth_state(&state("fresh", now_ms() + 60_000)).await.unwrap();
    t.store.create_oauth_state(&state("stale", now_ms() - 1)).await.unwrap();
    let peeked = t.store.peek_oauth_state("fresh").await.unwrap().unwrap();
    assert_eq!((peeked.verifier.as_str(), peeked.binding.as_str(), peeked.mailbox_id), ("verifier-of-the-flow", "browser-binding", mailbox.id));
    assert!(t.store.take_oauth_state("fresh").await.unwrap().is_some());
    assert!(t.store.take_oauth_state("fresh").await.unwrap().is_none(), "used once");
    assert!(t.store.take_oauth_state("stale").await.unwrap().is_none(), "expired");
    assert!(t.store.take_oauth_state("unknown").await.unwrap().is_none());

    assert_eq!(t.store.mailbox_refresh_token(mailbox.id).await.unwrap(), None);
    let connected = t.store.connect_mailbox_oauth(mailbox.id, registration, "ann@corp.test", "refresh-1").await.unwrap();
    assert_eq!((connected.oauth_registration_id, connected.username.as_deref(), connected.enabled), (Some(registration), Some("ann@corp.test"), false));
    assert_eq!(t.store.mailbox_refresh_token(mailbox.id).await.unwrap(), Some((registration, "refresh-1".into())));
    t.store.replace_mailbox_refresh_token(mailbox.id, registration, "refresh-2").await.unwrap();
    assert_eq!(t.store.mailbox_refresh_token(mailbox.id).await.unwrap(), Some((registration, "refresh-2".into())));
    // Another registration's rotation does not touch it.
    t.store.replace_mailbox_refresh_token(mailbox.id, Uuid::new_v4(), "elsewhere").await.unwrap();
    assert_eq!(t.store.mailbox_refresh_token(mailbox.id).await.unwrap().unwrap().1, "refresh-2");
    // Moving the mailbox to another identity forgets the sign-in, as it forgets a password.
    t.store.update_mailboxes(&[mailbox.id], &mailroom_store::MailboxChange { username: Some(Some("other".into())), ..Default::default() }).await.unwrap();
    assert_eq!(t.store.mailbox_refresh_token(mailbox.id).await.unwrap(), None);
    assert_eq!(t.store.mailbox(mailbox.id).await.unwrap().oauth_registration_id, None);
}
}

contract! {
async fn a_graph_message_keeps_its_number_and_a_folder_its_delta_link(t) {
    let mailbox = Uuid::new_v4();
    assert_eq!(t.store.graph_delta_link(mailbox, "Inbox").await.unwrap(), None);
    let ids: Vec<String> = ["AAMk1=", "AAMk2=", "AAMk3="].iter().map(|s| s.to_string()).collect();
    assert_eq!(t.store.graph_uids(mailbox, "Inbox", &ids).await.unwrap(), [1, 2, 3]);
    let again: Vec<String> = ["AAMk3=", "AAMk4=", "AAMk1="].iter().map(|s| s.to_string()).collect();
    assert_eq!(t.store.graph_uids(mailbox, "Inbox", &again).await.unwrap(), [3, 4, 1], "a known id keeps its number");
    assert_eq!(t.store.graph_uids(mailbox, "Archive", &ids[..1]).await.unwrap(), [1], "numbers are per folder");
    t.store.save_graph_delta_link(mailbox, "Inbox", Some("https://graph.example/delta?$deltatoken=x")).await.unwrap();
    assert_eq!(t.store.graph_delta_link(mailbox, "Inbox").await.unwrap().as_deref(), Some("https://graph.example/delta?$deltatoken=x"));
    t.store.save_graph_delta_link(mailbox, "Inbox", None).await.unwrap();
    assert_eq!(t.store.graph_delta_link(mailbox, "Inbox").await.unwrap(), None);
    assert_eq!(t.store.graph_uids(mailbox, "Inbox", &["AAMk5=".to_string()]).await.unwrap(), [5], "a resync does not reuse numbers");
}
}

contract! {
async fn a_connected_account_keeps_a_refresh_token_that_opens_only_for_its_registration(t) {
    use mailroom_core::oauth::{AppRegistrationDraft, AppRegistrationSettings};
    let registration = t.store.add_app_registration(&AppRegistrationSettings::parse(AppRegistrationDraft {
        name: "Corp".into(), provider: "oidc".into(), client_id: "c".into(),
        redirect_uri: "https://mail.example/oauth/callback".into(),
        discovery_url: Some("https://sso.example/.well-known/openid-configuration".into()),
        ..Default::default()
    }).unwrap(), Some("s")).await.unwrap();
    let mut input = account_input("billing");
    input.options.app_registration_id = Some(registration.id);
    let account = t.store.create_account(&input, None).await.unwrap();
    assert!(!account.oauth_connected);
    assert_eq!(t.store.account_refresh_token(account.id).await.unwrap(), None);
    let connected = t.store.connect_account_oauth(account.id, registration.id, "billing@corp.test", "rt-1").await.unwrap();
    assert!(connected.oauth_connected && !connected.has_password);
    assert_eq!(connected.username.as_deref(), Some("billing@corp.test"));
    assert_eq!(t.store.account_refresh_token(account.id).await.unwrap(), Some((registration.id, "rt-1".into())));
    t.store.replace_account_refresh_token(account.id, registration.id, "rt-2").await.unwrap();
    assert_eq!(t.store.account_refresh_token(account.id).await.unwrap().unwrap().1, "rt-2");
    // Pointed at another registration, the token given for the first one no longer opens.
    let mut moved = input.clone();
    moved.options.app_registration_id = Some(Uuid::new_v4());
    t.store.update_account(account.id, &moved, mailroom_store::PasswordChange::Keep).await.unwrap();
    assert_eq!(t.store.account_refresh_token(account.id).await.unwrap(), None);
    assert!(matches!(t.store.connect_account_oauth(Uuid::new_v4(), registration.id, "x", "y").await, Err(mailroom_store::StoreError::NotFound(_))));
}
}
