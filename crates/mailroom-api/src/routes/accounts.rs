//! `/v1/accounts`: add, list, change, remove and test accounts.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::{AccountView, ConnectionTest, CreateAccount, UpdateAccount};
use crate::error::ApiError;
use crate::error::{ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::ValidationError;
use mailroom_core::account::{
    AccountLimits, ConnectorKind, CredentialEndpoint, DEFAULT_CONCURRENCY_LIMIT,
    DEFAULT_MAX_ATTEMPTS, MICROSOFT365_CONCURRENCY, MICROSOFT365_RATE_LIMIT, Security, SenderType,
    SmtpOptions, SmtpTimeouts, SubstituteMode, parse_display_text, parse_host,
};
use mailroom_core::address::EmailAddress;
use mailroom_store::{Account, AccountInput, PasswordChange};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account, delete_account))
        .routes(routes!(test_account))
}

/// Every field of an account in raw form, merged from a create or update request.
struct RawAccount {
    connector: ConnectorKind,
    name: String,
    email_address: String,
    sender_name: Option<String>,
    sender_type: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    has_password: bool,
    pickup_dir: Option<String>,
    rate_limit_per_minute: i64,
    concurrency_limit: i64,
    max_attempts: i64,
    substitute_mode: Option<String>,
    substitute_address: Option<String>,
    options: SmtpOptions,
}

fn validate(
    raw: RawAccount,
    pickup_root: &std::path::Path,
) -> Result<AccountInput, ValidationError> {
    let name = parse_display_text("name", &raw.name)?;
    let options = raw.options.validate()?;
    let email_address =
        EmailAddress::parse(raw.email_address.trim()).map_err(|e| e.at("email_address"))?;
    let sender_name = raw
        .sender_name
        .as_deref()
        .map(|n| parse_display_text("sender_name", n))
        .transpose()?;
    let sender_type = raw
        .sender_type
        .as_deref()
        .map(str::parse::<SenderType>)
        .transpose()
        .map_err(|e| e.at("sender_type"))?
        .unwrap_or(SenderType::SpecificUser);
    let limits = AccountLimits::new(
        raw.rate_limit_per_minute,
        raw.concurrency_limit,
        raw.max_attempts,
    )?;
    let substitute_mode = raw
        .substitute_mode
        .as_deref()
        .map(str::parse::<SubstituteMode>)
        .transpose()
        .map_err(|e| e.at("substitute_mode"))?;
    // "sales@cronus.example" or, with the name to show, "Cronus Sales <sales@cronus.example>".
    let substitute = raw
        .substitute_address
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|a| {
            mailroom_core::address::Mailbox::parse(a.trim()).map_err(|e| e.at("substitute_address"))
        })
        .transpose()?;
    let substitute_name = substitute.as_ref().and_then(|m| m.name.clone());
    let substitute_address = substitute.map(|m| m.address);
    if substitute_address.is_some() && substitute_mode.is_none() {
        return Err(ValidationError::new(
            "substitute_mode",
            "a substitute address needs substitute_mode send-as or send-on-behalf",
        ));
    }
    // microsoft365 accounts name their registration and permission; SMTP accounts may name a
    // registration, and then sign in with XOAUTH2 once connected (GET /v1/oauth/connect?account=).
    let takes_registration = matches!(
        raw.connector,
        ConnectorKind::Microsoft365 | ConnectorKind::Smtp
    );
    if options.app_registration_id.is_some() && !takes_registration {
        return Err(ValidationError::new(
            "app_registration_id",
            "only smtp (XOAUTH2) and microsoft365 accounts take an app registration",
        ));
    }
    if options.permission.is_some() && raw.connector != ConnectorKind::Microsoft365 {
        return Err(ValidationError::new(
            "permission",
            "only microsoft365 accounts take a permission",
        ));
    }
    // What every connector's account has in common; the connector gives its own endpoint fields.
    let input = |host: Option<String>,
                 port: Option<u16>,
                 security: Security,
                 username: Option<String>,
                 pickup_dir: Option<String>,
                 options: SmtpOptions| AccountInput {
        connector: raw.connector,
        name: name.clone(),
        email_address: email_address.clone(),
        sender_name: sender_name.clone(),
        sender_type,
        host,
        port,
        security,
        username,
        pickup_dir,
        limits,
        substitute_mode,
        substitute_address: substitute_address.clone(),
        substitute_name: substitute_name.clone(),
        options,
    };
    match raw.connector {
        ConnectorKind::Smtp => {
            let host =
                parse_host(raw.host.as_deref().ok_or_else(|| {
                    ValidationError::new("host", "an SMTP account needs a host")
                })?)?;
            let security = raw
                .security
                .as_deref()
                .map(str::parse::<Security>)
                .transpose()
                .map_err(|e| e.at("security"))?
                .unwrap_or(Security::Starttls);
            let port = raw.port.unwrap_or(match security {
                Security::None => 25,
                Security::Starttls => 587,
                Security::Tls => 465,
            });
            if port == 0 {
                return Err(ValidationError::new("port", "must be between 1 and 65535"));
            }
            let username = raw
                .username
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty());
            if let Some(username) = &username
                && username.chars().any(char::is_control)
            {
                return Err(ValidationError::new(
                    "username",
                    "may not contain control characters",
                ));
            }
            if options.app_registration_id.is_some() {
                if raw.has_password {
                    return Err(ValidationError::new(
                        "password",
                        "an account that signs in with OAuth (app_registration_id) takes no password: connect it instead",
                    ));
                }
            } else if username.is_some() != raw.has_password {
                return Err(ValidationError::new(
                    if username.is_some() {
                        "password"
                    } else {
                        "username"
                    },
                    "username and password go together: give both for authentication, or neither",
                ));
            }
            Ok(input(
                Some(host),
                Some(port),
                security,
                username,
                None,
                options,
            ))
        }
        ConnectorKind::Microsoft365 => {
            if raw.host.is_some()
                || raw.username.is_some()
                || raw.has_password
                || raw.pickup_dir.is_some()
            {
                return Err(ValidationError::new(
                    "connector",
                    "a microsoft365 account takes no host, username, password or pickup folder: it sends through Microsoft Graph with its app registration's tokens",
                ));
            }
            if options.app_registration_id.is_none() {
                return Err(ValidationError::new(
                    "app_registration_id",
                    "a microsoft365 account needs the app registration whose tokens it presents",
                ));
            }
            let mut options = options;
            options
                .permission
                .get_or_insert(mailroom_core::account::GraphPermission::Application);
            Ok(input(None, None, Security::None, None, None, options))
        }
        ConnectorKind::CurrentUser => {
            // Each message goes out through its sender's own mailbox: its server and credentials.
            if raw.host.is_some()
                || raw.username.is_some()
                || raw.has_password
                || raw.pickup_dir.is_some()
            {
                return Err(ValidationError::new(
                    "connector",
                    "a current-user account takes no host, username, password or pickup folder: each message goes out through the sending user's own mailbox",
                ));
            }
            Ok(input(None, None, Security::None, None, None, options))
        }
        ConnectorKind::Pickup => {
            if raw.host.is_some() || raw.username.is_some() || raw.has_password {
                return Err(ValidationError::new(
                    "connector",
                    "a pickup account takes no host, username or password",
                ));
            }
            // A relative folder is taken as relative to the pickup root.
            let pickup_dir = match raw.pickup_dir {
                None => pickup_root.to_path_buf(),
                Some(dir) if dir.chars().any(char::is_control) => {
                    return Err(ValidationError::new(
                        "pickup_dir",
                        "may not contain control characters",
                    ));
                }
                Some(dir) => pickup_root.join(dir),
            };
            mailroom_connect::check_inside_root(&pickup_dir, pickup_root)
                .map_err(|outside| ValidationError::new("pickup_dir", outside.0))?;
            let pickup_dir = pickup_dir.display().to_string();
            Ok(input(
                None,
                None,
                Security::None,
                None,
                Some(pickup_dir),
                options,
            ))
        }
    }
}

/// A `microsoft365` account's app registration must exist.
async fn check_registration(state: &AppState, input: &AccountInput) -> ApiResult<()> {
    if let Some(id) = input.options.app_registration_id {
        match state.store.app_registration(id).await {
            Ok(_) => {}
            Err(mailroom_store::StoreError::NotFound(_)) => {
                return Err(ApiError::invalid(
                    "app_registration_id",
                    format!("there is no app registration {id}"),
                ));
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), ValidationError> {
    if password.is_empty() || password.len() > 1024 || password.contains(['\r', '\n', '\0']) {
        return Err(ValidationError::new(
            "password",
            "must be 1-1024 bytes without CR, LF or NUL",
        ));
    }
    Ok(())
}

/// List accounts.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", responses((status = 200, body = Vec<AccountView>)))]
async fn list_accounts(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<AccountView>>> {
    Ok(axum::Json(
        state
            .store
            .accounts()
            .await?
            .iter()
            .map(AccountView::from)
            .collect(),
    ))
}

/// Add an account. The first account becomes the default account.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccount,
    responses((status = 201, body = AccountView), (status = 422, body = ErrorBody)))]
async fn create_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, axum::Json<AccountView>)> {
    let connector: ConnectorKind = body
        .connector
        .parse()
        .map_err(|e: ValidationError| e.at("connector"))?;
    if let Some(password) = &body.password {
        check_password(password)?;
    }
    let input = validate(
        RawAccount {
            connector,
            name: body.name,
            email_address: body.email_address,
            sender_name: body.sender_name,
            sender_type: body.sender_type,
            host: body.host,
            port: body.port,
            security: body.security,
            username: body.username,
            has_password: body.password.is_some(),
            pickup_dir: body.pickup_dir,
            // Exchange Online's limits are the defaults of accounts that send through it.
            rate_limit_per_minute: body.rate_limit_per_minute.unwrap_or(
                if connector == ConnectorKind::Microsoft365 {
                    i64::from(MICROSOFT365_RATE_LIMIT)
                } else {
                    0
                },
            ),
            concurrency_limit: body.concurrency_limit.unwrap_or(i64::from(
                if connector == ConnectorKind::Microsoft365 {
                    MICROSOFT365_CONCURRENCY
                } else {
                    DEFAULT_CONCURRENCY_LIMIT
                },
            )),
            max_attempts: body.max_attempts.unwrap_or(i64::from(DEFAULT_MAX_ATTEMPTS)),
            substitute_mode: body.substitute_mode,
            substitute_address: body.substitute_address,
            options: SmtpOptions {
                timeouts: body
                    .timeouts
                    .unwrap_or_default()
                    .over(SmtpTimeouts::default()),
                retry_after_unknown: body.retry_after_unknown.unwrap_or(true),
                ehlo_name: body.ehlo_name,
                allowed_sender_domains: body.allowed_sender_domains.unwrap_or_default(),
                bounce_domain: body.bounce_domain,
                app_registration_id: body.app_registration_id,
                permission: body
                    .permission
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e: ValidationError| e.at("permission"))?,
            },
        },
        &state.settings.pickup_root,
    )?;
    check_registration(&state, &input).await?;
    let account = state
        .store
        .create_account(&input, body.password.as_deref())
        .await?;
    tracing::info!(event = "account_created", account = %account.id, account_name = %account.name, connector = %account.connector, "account created");
    state.engine.accounts_changed();
    let view = AccountView::from(&account);
    audit(
        &state,
        &principal,
        "account.created",
        "account",
        &account.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Show one account.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = Uuid, Path)),
    responses((status = 200, body = AccountView), (status = 404, body = ErrorBody)))]
async fn get_account(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<AccountView>> {
    Ok(axum::Json(AccountView::from(
        &state.store.account(id).await?,
    )))
}

/// Change an account. Absent fields stay; `null` clears optional ones.
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = Uuid, Path)), request_body = UpdateAccount,
    responses((status = 200, body = AccountView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "`invalid_request`, or `password_required`: host, port, security or username changed without the password")))]
async fn update_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateAccount>,
) -> ApiResult<axum::Json<AccountView>> {
    let stored: Account = state.store.account(id).await?;
    let before = AccountView::from(&stored);
    let current = stored.clone();
    let password = match body.password {
        None => PasswordChange::Keep,
        Some(None) => PasswordChange::Clear,
        Some(Some(password)) => {
            check_password(&password)?;
            PasswordChange::Set(password)
        }
    };
    let has_password = match &password {
        PasswordChange::Keep => current.has_password,
        PasswordChange::Set(_) => true,
        PasswordChange::Clear => false,
    };
    let input = validate(
        RawAccount {
            connector: current.connector,
            name: body.name.unwrap_or(current.name),
            email_address: body
                .email_address
                .unwrap_or_else(|| current.email_address.to_string()),
            sender_name: body.sender_name.unwrap_or(current.sender_name),
            sender_type: Some(
                body.sender_type
                    .unwrap_or_else(|| current.sender_type.to_string()),
            ),
            host: body.host.or(current.host),
            port: body.port.or(current.port),
            security: Some(
                body.security
                    .unwrap_or_else(|| current.security.to_string()),
            ),
            username: body.username.unwrap_or(current.username),
            has_password,
            pickup_dir: body.pickup_dir.or(current.pickup_dir),
            rate_limit_per_minute: body
                .rate_limit_per_minute
                .unwrap_or(i64::from(current.limits.rate_limit_per_minute)),
            concurrency_limit: body
                .concurrency_limit
                .unwrap_or(i64::from(current.limits.concurrency_limit)),
            max_attempts: body
                .max_attempts
                .unwrap_or(i64::from(current.limits.max_attempts)),
            substitute_mode: body
                .substitute_mode
                .unwrap_or_else(|| current.substitute_mode.map(|m| m.to_string())),
            substitute_address: body
                .substitute_address
                .unwrap_or_else(|| stored.substitute_mailbox().map(|m| m.to_string())),
            options: SmtpOptions {
                timeouts: body
                    .timeouts
                    .unwrap_or_default()
                    .over(current.options.timeouts),
                retry_after_unknown: body
                    .retry_after_unknown
                    .unwrap_or(current.options.retry_after_unknown),
                ehlo_name: body.ehlo_name.unwrap_or(current.options.ehlo_name),
                allowed_sender_domains: body
                    .allowed_sender_domains
                    .unwrap_or(current.options.allowed_sender_domains),
                bounce_domain: body.bounce_domain.unwrap_or(current.options.bounce_domain),
                app_registration_id: body
                    .app_registration_id
                    .or(current.options.app_registration_id),
                permission: match body.permission.as_deref() {
                    Some(raw) => Some(
                        raw.parse()
                            .map_err(|e: ValidationError| e.at("permission"))?,
                    ),
                    None => current.options.permission,
                },
            },
        },
        &state.settings.pickup_root,
    )?;
    check_registration(&state, &input).await?;
    if stored.has_password && matches!(password, PasswordChange::Keep) {
        let given_for = CredentialEndpoint {
            host: stored.host.as_deref(),
            port: stored.port,
            security: stored.security,
            username: stored.username.as_deref(),
        };
        let changed = given_for.changes_to(&CredentialEndpoint {
            host: input.host.as_deref(),
            port: input.port,
            security: input.security,
            username: input.username.as_deref(),
        });
        if !changed.is_empty() {
            let refused = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "password_required",
                format!(
                    "changing {} of an account with a stored password needs the password again: the stored one \
                     stays with the server it was given for",
                    changed.join(", ")
                ),
            )
            .at("password");
            let attempted = AccountView::from(&Account {
                host: input.host.clone(),
                port: input.port,
                security: input.security,
                username: input.username.clone(),
                ..stored.clone()
            });
            audit(
                &state,
                &principal,
                "account.update_refused.password_required",
                "account",
                &id.to_string(),
                Some(&before),
                Some(&attempted),
            )
            .await?;
            tracing::warn!(event = "account_update_refused", account = %id, account_name = %stored.name,
                changed = %changed.join(","), user = %principal.user.name,
                "an account's server or user name was changed without its password; refused");
            return Err(refused);
        }
    }
    let account = state.store.update_account(id, &input, password).await?;
    tracing::info!(event = "account_updated", account = %account.id, account_name = %account.name, "account updated");
    state.engine.accounts_changed();
    let after = AccountView::from(&account);
    audit(
        &state,
        &principal,
        "account.updated",
        "account",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Remove an account. Refused while it has messages waiting to be sent.
#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_account(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let before = AccountView::from(&state.store.account(id).await?);
    state.store.delete_account(id).await?;
    audit(
        &state,
        &principal,
        "account.deleted",
        "account",
        &id.to_string(),
        Some(&before),
        None,
    )
    .await?;
    tracing::info!(event = "account_deleted", account = %id, account_name = %before.name, "account deleted");
    state.engine.accounts_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Test an account's connection (and authentication) without sending anything.
#[utoipa::path(post, path = "/v1/accounts/{id}/test", tag = "accounts", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConnectionTest), (status = 404, body = ErrorBody)))]
async fn test_account(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<ConnectionTest>> {
    let account = state.store.account(id).await?;
    let result = state.engine.test_account(&account).await;
    Ok(axum::Json(match result {
        Ok(detail) => ConnectionTest {
            ok: true,
            detail,
            failure: None,
            reply_code: None,
        },
        Err(error) => ConnectionTest {
            ok: false,
            detail: error.message,
            failure: Some(match error.kind {
                mailroom_connect::FailureKind::Transient => "transient".into(),
                mailroom_connect::FailureKind::Permanent => "permanent".into(),
                mailroom_connect::FailureKind::Unknown => "unknown".into(),
            }),
            reply_code: error.reply_code,
        },
    }))
}
