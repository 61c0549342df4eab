//! Several `mailroom serve` processes on one PostgreSQL database share the work: a node killed in
//! the middle of a batch loses nothing and its mail resumes on the others within the node timeout;
//! a change made through one node holds on the others within a second.

mod common;

/// Named `several_nodes::…`: these tests run on PostgreSQL whatever `MAILROOM_TEST_STORE` says, so the
/// README's PostgreSQL pass skips them (they ran in the first).
mod several_nodes {
    use crate::common::{binary, id_of};
    use mailroom_testkit::{MailroomServer, SmtpSink, wait_until};
    use serde_json::json;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    /// Short engine timings, a two-second node timeout and a lease far longer than that, so that
    /// only the node timeout can explain a quick recovery.
    const CLUSTER_ENGINE: &str = "[engine]
poll_interval_ms = 50
lease_ms = 60000
rate_window_ms = 1000
retry_base_ms = 200
retry_cap_ms = 800
shutdown_grace_ms = 10000
node_timeout_ms = 2000
";

    /// One cluster at a time: three nodes of one test already share this machine's cores with
    /// PostgreSQL and the sinks, and the timings asserted here (recovery within the node timeout, the
    /// rate reached) mean nothing on a machine running twelve nodes at once.
    static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn cluster(nodes: usize) -> Vec<MailroomServer> {
        MailroomServer::start_cluster(binary(), CLUSTER_ENGINE, nodes)
            .await
            .expect("the cluster starts")
    }

    /// Messages in the sent archive, counted page by page (the listing's own total is exact only up to
    /// 1,000).
    async fn sent_total(node: &MailroomServer) -> i64 {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/v1/sent?limit=500&cursor={cursor}"),
                None => "/v1/sent?limit=500".to_owned(),
            };
            let Ok((200, page)) = node.get(&path).await else {
                return count;
            };
            count += page["items"]
                .as_array()
                .map_or(0, |items| items.len() as i64);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return count,
            }
        }
    }

    #[tokio::test]
    async fn three_nodes_share_a_batch_and_a_node_killed_mid_batch_loses_nothing() {
        let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
        let sink = SmtpSink::start(&[]).unwrap();
        let mut nodes = cluster(3).await;
        // 150 per one-second window on each node: the batch takes several seconds to deliver.
        nodes[0]
            .add_default_smtp_account(
                "shared",
                sink.port,
                json!({"rate_limit_per_minute": 150, "concurrency_limit": 4}),
            )
            .await
            .unwrap();
        let listed = nodes[2].get("/v1/nodes").await.unwrap().1;
        assert_eq!(listed.as_array().unwrap().len(), 3, "{listed:#}");

        // 3,000 messages, spread over the three nodes, still arriving when a node is killed: what a
        // node answered 202 counts; a request the killed node never answered does not (its client
        // would send it again).
        let targets: Vec<(String, String)> = nodes
            .iter()
            .map(|node| (node.base_url.clone(), node.token.clone()))
            .collect();
        let sender = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted: Vec<(String, String)> = Vec::with_capacity(3000);
            let mut pending = Vec::new();
            for n in 0..3000 {
                let (base_url, token) = targets[n % 3].clone();
                let client = client.clone();
                pending.push(tokio::spawn(async move {
                let body = json!({"to": [format!("rcpt{n}@example.com")], "subject": format!("batch {n}"), "text": "t"});
                let response = client
                    .post(format!("{base_url}/v1/messages"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                if response.status() != 202 {
                    return None;
                }
                let value: serde_json::Value = response.json().await.ok()?;
                Some((id_of(&value), value["message_id"].as_str()?.to_owned()))
            }));
                if pending.len() == 48 {
                    for task in pending.drain(..) {
                        accepted.extend(task.await.unwrap());
                    }
                }
            }
            for task in pending.drain(..) {
                accepted.extend(task.await.unwrap());
            }
            accepted
        });

        wait_until(Duration::from_secs(60), "some messages sent", || async {
            Ok(sent_total(&nodes[0]).await >= 300)
        })
        .await
        .unwrap();
        let victim_id = std::fs::read_to_string(nodes[1].data_dir().join("node-id"))
            .unwrap()
            .trim()
            .to_owned();
        nodes[1].kill();
        let killed_at = Instant::now();
        let delivered_at_kill = sink.messages().unwrap().len();
        // The dead node is declared dead and what it held is queued again within the node timeout
        // (2 s) plus a heartbeat and a poll — not after the 60 s lease — while the other nodes are
        // still taking the rest of the batch.
        wait_until(
            Duration::from_secs(10),
            "the killed node declared dead",
            || async {
                let (_, listed) = nodes[0].get("/v1/nodes").await?;
                Ok(listed.as_array().unwrap().iter().any(|node| {
                    node["id"] == victim_id.as_str()
                        && node["state"] == "dead"
                        && node["messages_in_flight"] == 0
                }))
            },
        )
        .await
        .unwrap();
        let recovered_after = killed_at.elapsed();
        assert!(
            recovered_after < Duration::from_millis(2000 + 1000),
            "recovery took {recovered_after:?}"
        );

        let accepted = sender.await.unwrap();
        // The other two nodes took their share (2,000); the killed node its share until the kill.
        assert!(
            accepted.len() >= 2000 && accepted.len() < 3000,
            "{} messages were accepted: the kill was not in the middle of the batch",
            accepted.len()
        );

        // Every message answered 202 is sent — and so is any the killed node stored but could not
        // answer before it died: nothing is left waiting.
        let expected = accepted.len() as i64;
        if let Err(error) = wait_until(Duration::from_secs(60), "every message sent", || async {
            let (_, waiting) = nodes[0]
                .get("/v1/outbox?status=queued,sending,failed&limit=1")
                .await?;
            Ok(sent_total(&nodes[0]).await >= expected && waiting["total"] == 0)
        })
        .await
        {
            let (_, waiting) = nodes[0]
                .get("/v1/outbox?status=queued,sending,failed&limit=5")
                .await
                .unwrap();
            let (_, listed) = nodes[0].get("/v1/nodes").await.unwrap();
            panic!(
                "{error}: sent {} of {expected}; waiting: {waiting:#}; nodes: {listed:#}",
                sent_total(&nodes[0]).await
            );
        }

        let mut arrivals: HashMap<String, usize> = HashMap::new();
        for message in sink.messages().unwrap() {
            *arrivals.entry(message.message_id.unwrap()).or_default() += 1;
        }
        let mut duplicates = 0;
        for (id, message_id) in &accepted {
            let count = arrivals.get(message_id).copied().unwrap_or(0);
            assert!(count >= 1, "message {id} ({message_id}) never arrived");
            if count > 1 {
                duplicates += 1;
                let message = nodes[2].message(id).await.unwrap();
                assert!(
                    message["attempts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a["outcome"] == "interrupted"),
                    "message {id} arrived {count} times without an interrupted attempt: {message:#}"
                );
            }
        }
        assert_eq!(
            arrivals.len() as i64,
            sent_total(&nodes[0]).await,
            "the sink got Message-IDs the sent archive does not have"
        );
        // Only the killed node's transactions in flight can repeat: its concurrency (4) and the
        // outcomes it had not yet written.
        assert!(duplicates <= 4 * 8, "{duplicates} messages arrived twice");
        eprintln!(
            "accepted: {}; delivered before the kill: {delivered_at_kill}; recovered after {recovered_after:?}; delivered twice: {duplicates}",
            accepted.len()
        );
    }

    #[tokio::test]
    async fn a_token_revoked_or_an_account_edited_on_one_node_holds_on_the_others_within_a_second()
    {
        let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
        let sink = SmtpSink::start(&[]).unwrap();
        let other_sink = SmtpSink::start(&[]).unwrap();
        let nodes = cluster(2).await;
        let (a, b) = (&nodes[0], &nodes[1]);

        // A token created and used on both nodes (so that B has it cached), then revoked on A.
        let (_, users) = a.get("/v1/users").await.unwrap();
        let admin = id_of(&users.as_array().unwrap()[0]);
        let (status, created) = a
            .post(
                &format!("/v1/users/{admin}/tokens"),
                &json!({"name": "short-lived"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{created}");
        let token = created["token"].as_str().unwrap().to_owned();
        let client = reqwest::Client::new();
        let status_on = |node: &MailroomServer| {
            let request = client
                .get(format!("{}/v1/accounts", node.base_url))
                .bearer_auth(&token);
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status_on(b).await, 200);
        let (status, _) = a
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/users/{admin}/tokens/{}", id_of(&created)),
                None,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        let revoked_at = Instant::now();
        while status_on(b).await != 401 {
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "node B still accepts the revoked token"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // An account in use on B, moved to another server on A: B's next message goes there.
        let account = a
            .add_default_smtp_account("moving", sink.port, json!({}))
            .await
            .unwrap();
        let send = |node: &MailroomServer, subject: &str| {
            let body = json!({"to": ["x@example.com"], "subject": subject, "text": "t"});
            let node_url = format!("{}/v1/messages", node.base_url);
            let request = client.post(node_url).bearer_auth(&node.token).json(&body);
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 202);
                id_of(&response.json().await.unwrap())
            }
        };
        let first = send(b, "before the edit").await;
        b.wait_for_status(&first, "sent", Duration::from_secs(10))
            .await
            .unwrap();
        let (status, edited) = a
            .call(
                reqwest::Method::PATCH,
                &format!("/v1/accounts/{}", id_of(&account)),
                Some(&json!({"port": other_sink.port})),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{edited}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = send(b, "after the edit").await;
        b.wait_for_status(&second, "sent", Duration::from_secs(10))
            .await
            .unwrap();
        let subjects = |sink: &SmtpSink| -> Vec<String> {
            sink.messages()
                .unwrap()
                .into_iter()
                .filter_map(|m| {
                    mail_parser::MessageParser::default()
                        .parse(&m.raw)
                        .and_then(|parsed| parsed.subject().map(str::to_owned))
                })
                .collect()
        };
        assert_eq!(subjects(&other_sink), ["after the edit"]);
        assert_eq!(subjects(&sink), ["before the edit"]);
    }

    /// Milliseconds since the epoch of an RFC 3339 time the API gave.
    fn ms_of(value: &serde_json::Value) -> i64 {
        let text = value.as_str().expect("a time");
        (time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time")
            .unix_timestamp_nanos()
            / 1_000_000) as i64
    }

    #[tokio::test]
    async fn an_accounts_rate_limit_holds_for_three_nodes_together_and_is_reached() {
        let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
        const LIMIT: usize = 60;
        const WINDOW_MS: i64 = 1000;
        const MESSAGES: usize = 300;
        let sink = SmtpSink::start(&[]).unwrap();
        let nodes = cluster(3).await;
        nodes[0]
            .add_default_smtp_account(
                "limited",
                sink.port,
                json!({"rate_limit_per_minute": LIMIT, "concurrency_limit": 4}),
            )
            .await
            .unwrap();
        // All due at one moment, a few seconds ahead, so that the whole batch waits on the limit
        // from its first start (not on how fast the test can post it).
        let due = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
        let due = due
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let client = reqwest::Client::new();
        let mut ids = Vec::with_capacity(MESSAGES);
        for n in 0..MESSAGES {
            let node = &nodes[n % 3];
            let body = json!({"to": [format!("r{n}@example.com")], "subject": format!("m{n}"), "text": "t", "send_at": due});
            let response = client
                .post(format!("{}/v1/messages", node.base_url))
                .bearer_auth(&node.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            ids.push(id_of(&response.json().await.unwrap()));
        }
        wait_until(Duration::from_secs(30), "every message sent", || async {
            Ok(sent_total(&nodes[0]).await == MESSAGES as i64)
        })
        .await
        .unwrap();

        // Every attempt's start, from the attempts on record, and which node made it.
        let mut starts = Vec::with_capacity(MESSAGES);
        for id in &ids {
            let message = nodes[0].message(id).await.unwrap();
            for attempt in message["attempts"].as_array().unwrap() {
                starts.push(ms_of(&attempt["started_at"]));
            }
        }
        starts.sort_unstable();
        assert_eq!(starts.len(), MESSAGES, "one attempt per message");
        // No sliding window holds more than the limit: the window ending at each start.
        let mut busiest = 0;
        for (i, start) in starts.iter().enumerate() {
            let in_window = starts[..=i]
                .iter()
                .filter(|s| **s > start - WINDOW_MS)
                .count();
            busiest = busiest.max(in_window);
        }
        assert!(
            busiest <= LIMIT,
            "a window of {WINDOW_MS} ms held {busiest} attempt starts"
        );
        // And the limit is reached: once the window is full, each start follows the start the limit
        // before it by one window — not later.
        let mut gaps: Vec<i64> = (LIMIT..MESSAGES)
            .map(|i| starts[i] - starts[i - LIMIT])
            .collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        let span = starts[MESSAGES - 1] - starts[0];
        let ideal = (MESSAGES / LIMIT - 1) as i64 * WINDOW_MS;
        eprintln!(
            "busiest window: {busiest}; start to start {LIMIT} later: median {median} ms; {MESSAGES} starts in {span} ms (at the limit: {ideal} ms)"
        );
        // The median gap is the limiter's doing; the span also depends on how quickly a busy machine
        // hands it mail (claims, free connections), hence its wider margin.
        assert!(
            median <= WINDOW_MS + WINDOW_MS / 20,
            "a start followed the start {LIMIT} before it by {median} ms (median); at the limit: {WINDOW_MS} ms"
        );
        assert!(
            span <= ideal + ideal / 4,
            "{MESSAGES} starts took {span} ms; at the limit: {ideal} ms"
        );
    }

    #[tokio::test]
    async fn an_accounts_concurrency_limit_holds_for_three_nodes_together_at_the_server() {
        let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
        const LIMIT: usize = 4;
        const MESSAGES: usize = 600;
        let sink = SmtpSink::start(&[]).unwrap();
        let proxy = mailroom_testkit::CountingProxy::start(sink.port)
            .await
            .unwrap();
        let nodes = cluster(3).await;
        nodes[0]
            .add_default_smtp_account(
                "four-at-once",
                proxy.port,
                json!({"rate_limit_per_minute": 0, "concurrency_limit": LIMIT}),
            )
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let mut pending = Vec::new();
        for n in 0..MESSAGES {
            let node = &nodes[n % 3];
            let request = client
            .post(format!("{}/v1/messages", node.base_url))
            .bearer_auth(&node.token)
            .json(&json!({"to": [format!("r{n}@example.com")], "subject": format!("m{n}"), "text": "t"}));
            pending.push(tokio::spawn(async move {
                request.send().await.unwrap().status()
            }));
        }
        for task in pending {
            assert_eq!(task.await.unwrap(), 202);
        }
        wait_until(Duration::from_secs(60), "every message sent", || async {
            Ok(sent_total(&nodes[0]).await == MESSAGES as i64)
        })
        .await
        .unwrap();
        assert!(
            proxy.most_at_once() <= LIMIT,
            "the server saw {} connections from the account at once",
            proxy.most_at_once()
        );
        assert!(
            proxy.total() >= 3,
            "only {} connections in all",
            proxy.total()
        );
        eprintln!(
            "most at once: {}; connections in all: {}",
            proxy.most_at_once(),
            proxy.total()
        );
    }

    #[tokio::test]
    async fn a_large_file_uploaded_to_one_node_is_sent_by_another_from_the_database() {
        let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
        const MIB: usize = 100;
        let sink = SmtpSink::start(&[]).unwrap();
        let mut nodes = MailroomServer::start_cluster(
            binary(),
            &format!(
                "blob_store = \"database\"\nmax_attachment_bytes = {}\n{CLUSTER_ENGINE}",
                (MIB + 1) * 1024 * 1024
            ),
            2,
        )
        .await
        .unwrap();
        nodes[0]
            .add_default_smtp_account("files", sink.port, json!({}))
            .await
            .unwrap();
        // 100 MiB of varied bytes, uploaded to node A in 1 MiB pieces.
        let file: Vec<u8> = (0..MIB * 1024 * 1024)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
            .collect();
        let before_upload = nodes[0].peak_rss_mib().unwrap();
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            file.chunks(1024 * 1024).map(|c| Ok(c.to_vec())).collect();
        let response = reqwest::Client::new()
            .post(format!("{}/v1/attachments", nodes[0].base_url))
            .bearer_auth(&nodes[0].token)
            .header("content-type", "application/octet-stream")
            .header("content-disposition", "attachment; filename=\"large.bin\"")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                pieces,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let attachment: serde_json::Value = response.json().await.unwrap();
        let upload_growth = nodes[0].peak_rss_mib().unwrap() - before_upload;
        assert!(
            upload_growth < 40.0,
            "node A's memory grew by {upload_growth:.0} MiB taking a {MIB} MiB upload"
        );
        // Node A stops: only node B can send it, reading the file from the database.
        nodes[0].terminate().unwrap();
        let accepted = nodes[1]
            .send(
                &json!({"to": ["x@example.com"], "subject": "large", "text": "see attached",
            "attachments": [{"id": attachment["id"]}]}),
            )
            .await
            .unwrap();
        nodes[1]
            .wait_for_status(
                accepted["id"].as_str().unwrap(),
                "sent",
                Duration::from_secs(120),
            )
            .await
            .unwrap();
        let delivered = sink.messages().unwrap();
        assert_eq!(delivered.len(), 1);
        let parsed = mail_parser::MessageParser::default()
            .parse(&delivered[0].raw)
            .unwrap();
        let attached = parsed.attachments().next().expect("the attachment arrived");
        assert!(
            attached.contents() == file.as_slice(),
            "the file arrived changed"
        );
        // And it can be downloaded from node B.
        let downloaded = reqwest::Client::new()
            .get(format!(
                "{}/v1/attachments/{}",
                nodes[1].base_url,
                attachment["id"].as_str().unwrap()
            ))
            .bearer_auth(&nodes[1].token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            downloaded.as_ref() == file.as_slice(),
            "the download differs"
        );
    }
}
