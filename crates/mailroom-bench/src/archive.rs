//! `mailroom-bench archive`: how fast the listing routes answer over a large archive, for an
//! administrator and for users under each view policy.
//!
//! The archive is written straight into the database of a running server (one SQL statement per
//! table, generated rows — the API would take an hour for a million messages): every message has a
//! 1.9 KB body, one attempt and two related records (a customer — C42 has one message in 2,500 —
//! and its own sales invoice, or a vendor for one message in seven), ten accounts, twenty scenarios,
//! one in a thousand failed (the outbox), authors spread over the users. Then each route is asked
//! for its first page and for a page 100 pages deep (the last page when there are fewer), 20 times
//! each, and p50/p95 are reported.

use anyhow::{Result, bail};
use mailroom_testkit::MailroomServer;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One user the archive is listed for.
struct Viewer {
    kind: &'static str,
    token: String,
    id: String,
}

async fn create_user(
    server: &MailroomServer,
    name: &str,
    sets: &[&str],
    policy: &str,
) -> Result<(String, String)> {
    let (status, user) = server
        .post(
            "/v1/users",
            &json!({"name": name, "licence": "full", "permission_sets": sets}),
        )
        .await?;
    if status != 201 {
        bail!("creating {name} answered {status}: {user}");
    }
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    let (status, answer) = server
        .call(
            reqwest::Method::PUT,
            &format!("/v1/view-policies/{id}"),
            Some(&json!({"policy": policy})),
            &[],
        )
        .await?;
    if status != 200 {
        bail!("setting {name}'s view policy answered {status}: {answer}");
    }
    let (status, token) = server
        .post(
            &format!("/v1/users/{id}/tokens"),
            &json!({"name": format!("{name} bench")}),
        )
        .await?;
    if status != 201 {
        bail!("creating {name}'s token answered {status}: {token}");
    }
    Ok((id, token["token"].as_str().unwrap_or_default().to_owned()))
}

/// The SQL that writes `$N` messages, for one backend. `$ACCOUNTS` is replaced by a CASE over the
/// ten account ids, `$AUTHORS` by one over the authors. Only the numbered rows (`seq`, with each
/// message's time and UUIDv7-shaped id) and the repeated body are written differently.
fn fill_statements(postgres: bool) -> Vec<String> {
    let (seq, body) = if postgres {
        (
            "CREATE TEMP TABLE seq AS SELECT i::bigint AS i, ($BASE + i * 10)::bigint AS ms,
               lpad(to_hex(($BASE + i * 10) >> 16), 8, '0') || '-' || lpad(to_hex(($BASE + i * 10) & 65535), 4, '0')
               || '-7' || lpad(to_hex(i & 4095), 3, '0') || '-' || to_hex(32768 | (i & 16383)) || '-' || lpad(to_hex(i), 12, '0') AS id
             FROM generate_series(1, $N) AS i",
            "repeat('Dear customer, please find invoice I' || i || ' attached. ', 32)",
        )
    } else {
        (
            "CREATE TEMP TABLE seq AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
             SELECT i, $BASE + i * 10 AS ms,
               printf('%08x-%04x-7%03x-%04x-%012x', ($BASE + i * 10) >> 16, ($BASE + i * 10) & 65535, i & 4095, 32768 | (i & 16383), i) AS id
             FROM n",
            "replace(printf('%.32c', '*'), '*', 'Dear customer, please find invoice I' || i || ' attached. ')",
        )
    };
    vec![
        seq.to_owned(),
        "INSERT INTO messages (id, status, scenario, account_id, message_id_header, subject, created_by, created_at,
           updated_at, next_attempt_at, attempt_count, sent_at, record_types)
         SELECT id, CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'sent' END, 'scenario-' || (i % 20),
           $ACCOUNTS, '<' || i || '@bench.example>', 'Invoice I' || i, $AUTHORS, ms, ms, ms, 1,
           CASE WHEN i % 1000 = 0 THEN NULL ELSE ms + 5 END,
           CASE WHEN i % 7 = 0 THEN 'sales-invoice,vendor' ELSE 'customer,sales-invoice' END
         FROM seq"
            .to_owned(),
        format!(
            "INSERT INTO message_contents (message_id, to_json, cc_json, bcc_json, reply_to_json, headers_json, text_body, related_json)
             SELECT id, '[{{\"name\":null,\"address\":\"c' || (i % 2500) || '@customer.example\"}}]', '[]', '[]', '[]', '[]',
               {body}, '[]'
             FROM seq"
        ),
        "INSERT INTO related_records (message_id, record_type, record_id, relation)
         SELECT id, CASE WHEN i % 7 = 0 THEN 'vendor' ELSE 'customer' END,
           CASE WHEN i % 7 = 0 THEN 'V' || (i % 300) ELSE 'C' || (i % 2500) END, 'related' FROM seq"
            .to_owned(),
        "INSERT INTO related_records (message_id, record_type, record_id, relation)
         SELECT id, 'sales-invoice', 'I' || i, 'primary' FROM seq"
            .to_owned(),
        "INSERT INTO message_recipients (address, message_id)
         SELECT 'c' || (i % 2500) || '@customer.example', id FROM seq"
            .to_owned(),
        "INSERT INTO attempts (message_id, number, started_at, finished_at, outcome, reply_code, reply_text)
         SELECT id, 1, ms, ms + 5, CASE WHEN i % 1000 = 0 THEN 'permanent' ELSE 'sent' END,
           CASE WHEN i % 1000 = 0 THEN 550 ELSE 250 END, 'bench' FROM seq"
            .to_owned(),
        "INSERT INTO record_type_sets (types) VALUES ('customer,sales-invoice'), ('sales-invoice,vendor') ON CONFLICT DO NOTHING"
            .to_owned(),
        "DROP TABLE seq".to_owned(),
        "ANALYZE".to_owned(),
    ]
}

/// A CASE choosing one of `values` by `i % values.len()`.
fn case_over(values: &[String]) -> String {
    let mut case = format!("CASE i % {}", values.len());
    for (n, value) in values.iter().enumerate() {
        case.push_str(&format!(" WHEN {n} THEN '{value}'"));
    }
    case.push_str(" END");
    case
}

async fn fill(
    server: &MailroomServer,
    messages: usize,
    accounts: &[String],
    authors: &[String],
) -> Result<()> {
    use sqlx::Connection;
    let url = server.database_url();
    let postgres = url.starts_with("postgres");
    let base = mailroom_testkit_now_ms() - messages as i64 * 10 - 60_000;
    let statements: Vec<String> = fill_statements(postgres)
        .into_iter()
        .map(|s| {
            s.replace("$N", &messages.to_string())
                .replace("$BASE", &base.to_string())
                .replace("$ACCOUNTS", &case_over(accounts))
                .replace("$AUTHORS", &case_over(authors))
        })
        .collect();
    let started = Instant::now();
    if postgres {
        let mut connection = sqlx::PgConnection::connect(&url).await?;
        for statement in &statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut connection)
                .await?;
        }
    } else {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
        let mut connection = sqlx::SqliteConnection::connect_with(&options).await?;
        sqlx::raw_sql("BEGIN").execute(&mut connection).await?;
        for statement in &statements[..statements.len() - 1] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut connection)
                .await?;
        }
        sqlx::raw_sql("COMMIT").execute(&mut connection).await?;
        sqlx::raw_sql("ANALYZE").execute(&mut connection).await?;
    }
    println!(
        "wrote {messages} messages in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn mailroom_testkit_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn get(
    client: &reqwest::Client,
    server: &MailroomServer,
    token: &str,
    path: &str,
) -> Result<Value> {
    let response = client
        .get(format!("{}{path}", server.base_url))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{path} answered {status}: {body}");
    }
    Ok(body)
}

fn with_cursor(path: &str, cursor: &str) -> String {
    let joiner = if path.contains('?') { '&' } else { '?' };
    format!("{path}{joiner}cursor={cursor}")
}

/// p50 and p95 of 20 requests of `path`.
async fn time_route(
    client: &reqwest::Client,
    server: &MailroomServer,
    token: &str,
    path: &str,
) -> Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(20);
    for _ in 0..20 {
        let started = Instant::now();
        get(client, server, token, path).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times[10], times[18]))
}

pub async fn archive(binary: &std::path::Path, messages: usize, postgres: bool) -> Result<()> {
    // As many connections as a server takes by default (the kit gives its test servers fewer).
    let config = format!(
        "database_connections = {}\n",
        mailroom_store::DEFAULT_DATABASE_CONNECTIONS
    );
    let server = MailroomServer::start_on(binary, &config, postgres).await?;
    println!(
        "archive of {messages} messages on {}",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    // Ten accounts (the default pickup account and nine more).
    for n in 1..10 {
        server
            .add_smtp_account(&format!("account{n}"), 25, json!({}))
            .await?;
    }
    let (_, listed) = server.get("/v1/accounts").await?;
    let accounts: Vec<String> = listed
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (_, users) = server.get("/v1/users").await?;
    let admin_id = users[0]["id"].as_str().unwrap_or_default().to_owned();
    let mut viewers = vec![Viewer {
        kind: "admin",
        token: server.token.clone(),
        id: admin_id,
    }];
    for (kind, sets, policy) in [
        ("own", vec!["email-send"], "own"),
        (
            "all-related-records",
            vec!["email-send", "read customer", "read sales-invoice"],
            "all-related-records",
        ),
        (
            "any-related-record",
            vec!["email-send", "read vendor"],
            "any-related-record",
        ),
        (
            "hides-everything",
            vec!["email-send"],
            "all-related-records",
        ),
    ] {
        let (id, token) = create_user(&server, kind, &sets, policy).await?;
        viewers.push(Viewer { kind, token, id });
    }
    // Authors: the admin, the own user and the two related-record users (never the last one).
    let authors: Vec<String> = viewers[..4].iter().map(|v| v.id.clone()).collect();
    fill(&server, messages, &accounts, &authors).await?;

    let from = {
        let middle = mailroom_testkit_now_ms() - messages as i64 * 5;
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(middle) * 1_000_000)?
            .format(&time::format_description::well_known::Rfc3339)?
    };
    let routes = [
        ("/v1/outbox", "/v1/outbox?limit=50".to_owned()),
        ("/v1/sent", "/v1/sent?limit=50".to_owned()),
        (
            "/v1/sent?account_id",
            format!("/v1/sent?limit=50&account_id={}", accounts[3]),
        ),
        (
            "/v1/sent?scenario",
            "/v1/sent?limit=50&scenario=scenario-7".to_owned(),
        ),
        ("/v1/sent?from", format!("/v1/sent?limit=50&from={from}")),
        (
            "/v1/records/sales-invoice/I4242/messages",
            "/v1/records/sales-invoice/I4242/messages?limit=50".to_owned(),
        ),
        (
            "/v1/records/customer/C42/messages",
            "/v1/records/customer/C42/messages?limit=50".to_owned(),
        ),
        (
            "/v1/sent?recipient",
            "/v1/sent?limit=50&recipient=c42@customer.example".to_owned(),
        ),
        (
            "/v1/sent?subject",
            "/v1/sent?limit=50&subject=I4242".to_owned(),
        ),
    ];
    let client = reqwest::Client::new();
    println!("| user | route | first page p50 / p95 | page 100 (or last) p50 / p95 | total |");
    println!("|---|---|---|---|---|");
    let mut worst = Duration::ZERO;
    for viewer in &viewers {
        for (name, path) in &routes {
            let first = get(&client, &server, &viewer.token, path).await?;
            let total = if first["total_is_estimate"] == true {
                format!(">{}", first["total"])
            } else {
                first["total"].to_string()
            };
            let (first_p50, first_p95) = time_route(&client, &server, &viewer.token, path).await?;
            // Walk to page 100 (or the last page).
            let mut deep_path = path.clone();
            let mut page = first;
            let mut depth = 1;
            while depth < 100 {
                let Some(cursor) = page["next_cursor"].as_str() else {
                    break;
                };
                deep_path = with_cursor(path, cursor);
                page = get(&client, &server, &viewer.token, &deep_path).await?;
                depth += 1;
            }
            let (deep_p50, deep_p95) =
                time_route(&client, &server, &viewer.token, &deep_path).await?;
            worst = worst.max(first_p95).max(deep_p95);
            println!(
                "| {} | `{name}` | {:.1} / {:.1} ms | page {depth}: {:.1} / {:.1} ms | {total} |",
                viewer.kind,
                first_p50.as_secs_f64() * 1000.0,
                first_p95.as_secs_f64() * 1000.0,
                deep_p50.as_secs_f64() * 1000.0,
                deep_p95.as_secs_f64() * 1000.0,
            );
        }
    }
    println!(
        "slowest p95: {:.1} ms (target ≤ 20 ms)",
        worst.as_secs_f64() * 1000.0
    );
    console_pages(&server, &viewers).await
}

/// p50 and p95 of 20 requests of a console page with a session cookie (the page must answer 200).
async fn time_page(
    client: &reqwest::Client,
    server: &MailroomServer,
    cookie: &str,
    path: &str,
) -> Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(20);
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .get(format!("{}{path}", server.base_url))
            .header("cookie", cookie)
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        if !status.is_success() {
            bail!("{path} answered {status}");
        }
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times[10], times[18]))
}

/// Every console page that reads the archive, as the admin and as a user whose view policy filters
/// it: the time from request to the last byte of the page on loopback.
async fn console_pages(server: &MailroomServer, viewers: &[Viewer]) -> Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (_, sent) = server.get("/v1/sent?limit=1").await?;
    let message = sent["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    server.get("/v1/stats?hours=24").await?;
    println!(
        "counting the last 24 hours' attempts for the dashboard (once per 30 s, in the background after the first): {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let pages = [
        "/console".to_owned(),
        "/console/outbox".to_owned(),
        "/console/sent".to_owned(),
        "/console/sent?recipient=c42%40customer.example".to_owned(),
        "/console/sent?subject=I4242".to_owned(),
        format!("/console/messages/{message}"),
        "/console/records/customer/C42".to_owned(),
        "/console/scenarios".to_owned(),
        "/console/users".to_owned(),
    ];
    println!();
    println!("| user | console page | p50 / p95 |");
    println!("|---|---|---|");
    let mut worst = Duration::ZERO;
    for viewer in viewers
        .iter()
        .filter(|v| v.kind == "admin" || v.kind == "any-related-record")
    {
        let answer = client
            .post(format!("{}/console/sign-in", server.base_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", viewer.token))
            .send()
            .await?;
        let cookie = answer
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_owned();
        // The dashboard's figures are counted once, then served while recounted: the first visit
        // pays the count, which this warm-up (not timed) does.
        time_page(&client, server, &cookie, "/console").await?;
        for page in &pages {
            let (p50, p95) = time_page(&client, server, &cookie, page).await?;
            worst = worst.max(p95);
            println!(
                "| {} | `{page}` | {:.1} / {:.1} ms |",
                viewer.kind,
                p50.as_secs_f64() * 1000.0,
                p95.as_secs_f64() * 1000.0
            );
        }
    }
    println!(
        "slowest console p95: {:.1} ms (target ≤ 50 ms)",
        worst.as_secs_f64() * 1000.0
    );
    Ok(())
}
