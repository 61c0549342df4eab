//! `Store::copy_into`: every row from one backend into the other, secrets still sealed and still
//! opening with the same key, counts and checksums equal — and never into a store already in use.

mod common;

use common::{account_input, new_message};
use mailroom_store::{SecretBox, Store, StoreError};

fn key() -> SecretBox {
    SecretBox::from_key(&[5u8; 32]).unwrap()
}

#[tokio::test]
async fn a_sqlite_store_copied_into_postgresql_has_the_same_rows_and_its_secrets_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(
        &format!("sqlite://{}", dir.path().join("source.db").display()),
        key(),
    )
    .await
    .unwrap();
    let account = source
        .create_account(&account_input("sealed"), Some("correct horse battery"))
        .await
        .unwrap();
    let registration = source
        .add_app_registration(
            &mailroom_core::oauth::AppRegistrationSettings::parse(
                mailroom_core::oauth::AppRegistrationDraft {
                    name: "Contoso".into(),
                    provider: "microsoft-entra".into(),
                    client_id: "client-1".into(),
                    tenant: Some("contoso.example".into()),
                    redirect_uri: "https://mail.example/oauth/callback".into(),
                    ..Default::default()
                },
            )
            .unwrap(),
            Some("client secret value"),
        )
        .await
        .unwrap();
    for n in 0..1203 {
        source
            .insert_message(new_message(
                account.id,
                Some(&format!("k{n}")),
                &format!("m{n}"),
            ))
            .await
            .unwrap();
    }
    let database = mailroom_testkit::TestDatabase::create().await.unwrap();
    let target = Store::open(&database.url, key()).await.unwrap();
    let mut progress = Vec::new();
    let report = source
        .copy_into(&target, |table, rows| {
            progress.push((table.to_owned(), rows))
        })
        .await
        .unwrap();
    assert!(progress.contains(&("messages".to_owned(), 1203)));
    assert_eq!(report, target.table_checksums().await.unwrap());
    assert_eq!(
        target
            .account_password(account.id)
            .await
            .unwrap()
            .as_deref(),
        Some("correct horse battery")
    );
    assert_eq!(
        target
            .app_registration_secret(registration.id)
            .await
            .unwrap()
            .as_deref(),
        Some("client secret value")
    );
    assert_eq!(
        target.accounts().await.unwrap(),
        source.accounts().await.unwrap()
    );
    // The target is in use now: a second copy is refused and changes nothing.
    let refused = source.copy_into(&target, |_, _| {}).await.unwrap_err();
    assert!(matches!(
        refused,
        StoreError::Refused {
            code: "target_not_empty",
            ..
        }
    ));
    assert_eq!(report, target.table_checksums().await.unwrap());
}
