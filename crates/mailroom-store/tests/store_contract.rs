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
            .recover_expired_leases(now + 500)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is not recovered"
    );

    let recovered = t.store.recover_expired_leases(now + 1_000).await.unwrap();
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
    let ask = |subject: &str| claiming(new_message(account.id, None, subject), now, lease);
    // SQLite's writer knows an account's queue is empty only from a claim that found fewer than it
    // asked for, and keeps new mail queued until then; PostgreSQL, shared by several nodes, looks
    // at the queue itself as it stores the message. Both never let new mail overtake due mail.
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
    let after_release = ask("after release");
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
    let recovered = t.store.recover_expired_leases(now + 1_000).await.unwrap();
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
