#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults, against the local server process, each bounded in time, each ending with a look at
//! the table: one row per request, with the right status.
//!
//! - PostgreSQL (a cluster of the test's own) is stopped and started again while streams and
//!   reads run: no request hangs, reads answer 200 or a JSON 503 and recover, every stream's
//!   record is saved, or logged and then put back by `local replay`.
//! - Many concurrent streams meet every provider failure (429 then success, 500s, no first
//!   chunk, a stall, a cut, garbage) at once.
//! - Clients disconnect in bursts after the first chunk; every answer is still saved whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer, content_chunk};
use testkit::pg_cluster::PgCluster;
use testkit::process::serve;
use testkit::sse::{self, Received};

fn client() -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn stream(http: &reqwest::Client, base: &str, prompt: &str) -> Vec<Received> {
    let resp = http
        .post(format!("{base}/stream"))
        .json(&serde_json::json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /stream for {prompt:?}: {e}"));
    assert_eq!(resp.status(), 200);
    sse::read(resp, None).await
}

fn last(events: &[Received]) -> &Received {
    events.last().expect("a stream with no events")
}

/// `(status, error, response)` of every row, by prompt.
async fn rows(url: &str) -> HashMap<String, (String, Option<String>, String)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query(
            "SELECT prompt, status, error, response FROM conversations",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_streams_and_reads_loses_nothing() {
    let pg = PgCluster::start();
    pg.create_database("faults");
    let url = pg.url("faults");
    let (mut server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-pg-restart",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "60"),
            ("CHECKPOINT_INTERVAL_MS", "200"),
            ("DB_CONNECT_TIMEOUT_MS", "1000"),
            ("DB_POOL_SIZE", "4"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let http = client();

    // Readers: every answer is a 200 or a JSON 503, none hangs (the client gives up at 30 s).
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for path in ["/history?limit=5", "/search?query=restart", "/health"] {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let resp = http.get(format!("{base}{path}")).send().await.unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                assert!(
                    status == 200 || (status == 503 && body.is_object()),
                    "{path}: {status} {body}"
                );
                seen.push((started, status));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        }));
    }

    let prompts: Vec<String> = (0..16)
        .map(|i| format!("restart stream {i} keeps going word by word while the database restarts"))
        .collect();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (http, base, p) = (http.clone(), base.clone(), p.clone());
            tokio::spawn(async move { stream(&http, &base, &p).await })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    pg.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.start_again();
    let restarted_at = Instant::now();

    let mut unsaved = 0;
    for s in streams {
        let events = tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("a stream hung")
            .unwrap();
        let end = last(&events);
        assert_eq!(end.name, "done", "{events:?}");
        if end.data["saved"] != true {
            unsaved += 1;
        }
    }
    // Reads recover once PostgreSQL is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let seen = r.await.unwrap();
        assert!(
            seen.iter().any(|(t, s)| *t < stopped_at && *s == 200),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|(t, s)| *t > restarted_at + Duration::from_secs(1) && *s == 200),
            "no read succeeded after the restart: {seen:?}"
        );
    }
    server.stop();

    // The outage hit the streams while they ran (their checkpoints failed).
    assert!(
        server.output().contains("checkpoint failed"),
        "{}",
        server.output()
    );
    // Records the server could not save are in its log; `local replay` puts them back.
    if unsaved > 0 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_local"))
            .args(["replay", server.log.to_str().unwrap()])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let rows = rows(&url).await;
    assert_eq!(
        rows.len(),
        prompts.len(),
        "one row per stream ({unsaved} replayed)"
    );
    for p in &prompts {
        let (status, error, response) = &rows[p];
        assert_eq!((status.as_str(), error), ("complete", &None), "{p}");
        assert_eq!(
            response.trim(),
            common::provider::OfflineProvider::answer(p).trim()
        );
    }
}

/// What the fake provider does with each kind of prompt; the prompt's first word is the kind.
fn misbehave(prompt: &str, attempt: usize) -> Reply {
    let words = ["fine ", "answer ", "here"];
    let kind = prompt.split_whitespace().next().unwrap_or_default();
    match (kind, attempt) {
        ("ok", _) => Reply::Stream(answer(&words, Duration::from_millis(20))),
        ("busy", 0) => Reply::Status {
            status: 429,
            retry_after: Some(0),
        },
        ("busy", _) => Reply::Stream(answer(&words, Duration::ZERO)),
        ("broken", _) => Reply::Status {
            status: 500,
            retry_after: None,
        },
        ("silent", _) => Reply::Stream(vec![Part::Sleep(Duration::from_secs(20))]),
        ("stall", _) => Reply::Stream(vec![
            content_chunk("Hi"),
            Part::Sleep(Duration::from_secs(20)),
        ]),
        ("cut", _) => Reply::Stream(vec![
            content_chunk("Hel"),
            content_chunk("lo"),
            Part::Sleep(Duration::from_millis(50)),
            Part::Cut,
        ]),
        ("garbage", _) => Reply::Stream(vec![
            content_chunk("Hi"),
            Part::Raw("data: {\"choices\": [oops\n\n".into()),
        ]),
        _ => Reply::Status {
            status: 400,
            retry_after: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_failure_at_once_leaves_one_right_row_per_stream() {
    let db = testkit::TestDb::new().await;
    let fake = FakeOpenAi::by_prompt(misbehave).await;
    let base_url = fake.base_url();
    let (mut server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-provider-faults",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", base_url.as_str()),
            ("LLM_MAX_RETRIES", "2"),
            ("LLM_FIRST_CHUNK_TIMEOUT_MS", "1500"),
            ("LLM_IDLE_TIMEOUT_MS", "800"),
        ],
    )
    .await;
    let http = client();
    // kind -> (status, error code, saved text)
    let expected: HashMap<&str, (&str, Option<&str>, &str)> = HashMap::from([
        ("ok", ("complete", None, "fine answer here")),
        ("busy", ("complete", None, "fine answer here")),
        ("broken", ("failed", Some("provider_error"), "")),
        ("silent", ("failed", Some("provider_timeout"), "")),
        ("stall", ("partial", Some("provider_timeout"), "Hi")),
        ("cut", ("partial", Some("provider_disconnected"), "Hello")),
        ("garbage", ("partial", Some("provider_malformed"), "Hi")),
    ]);
    let prompts: Vec<String> = expected
        .keys()
        .flat_map(|k| (0..6).map(move |i| format!("{k} request {i}")))
        .collect();
    let started = Instant::now();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (http, base, p) = (http.clone(), base.clone(), p.clone());
            tokio::spawn(async move { (p.clone(), stream(&http, &base, &p).await) })
        })
        .collect();
    for s in streams {
        let (prompt, events) = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("a stream hung")
            .unwrap();
        let kind = prompt.split_whitespace().next().unwrap();
        let end = last(&events);
        let want = expected[kind];
        assert_eq!(end.data["status"], want.0, "{prompt}: {events:?}");
        assert_eq!(end.data["saved"], true, "{prompt}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    server.stop();

    let rows = rows(&db.url).await;
    assert_eq!(rows.len(), prompts.len(), "one row per stream");
    for p in &prompts {
        let kind = p.split_whitespace().next().unwrap();
        let (status, error, text) = expected[kind];
        let got = &rows[p];
        assert_eq!(
            (got.0.as_str(), got.1.as_deref(), got.2.as_str()),
            (status, error, text),
            "{p}"
        );
    }
    // 429s were retried once each; 500s up to the retry limit; nothing else was retried.
    let requests = fake.requests();
    let count = |kind: &str| {
        requests
            .iter()
            .filter(|r| {
                r["messages"][0]["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("{kind} ")))
            })
            .count()
    };
    assert_eq!(count("busy"), 12);
    assert_eq!(count("broken"), 18);
    assert_eq!(count("cut"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_in_bursts_do_not_cut_what_is_saved() {
    let db = testkit::TestDb::new().await;
    let (mut server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-disconnects",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "30"),
        ],
    )
    .await;
    let http = client();
    let mut prompts = Vec::new();
    for burst in 0..3 {
        let batch: Vec<String> = (0..20)
            .map(|i| format!("burst {burst} client {i} leaves after the first words of the answer"))
            .collect();
        let leaving: Vec<_> = batch
            .iter()
            .map(|p| {
                let (http, base, p) = (http.clone(), base.clone(), p.clone());
                tokio::spawn(async move {
                    let resp = http
                        .post(format!("{base}/stream"))
                        .json(&serde_json::json!({ "prompt": p }))
                        .send()
                        .await
                        .unwrap();
                    // Read the start and one delta, then drop the connection.
                    let events = sse::read(resp, Some(2)).await;
                    assert!(events.len() >= 2, "{events:?}");
                })
            })
            .collect();
        for l in leaving {
            l.await.unwrap();
        }
        prompts.extend(batch);
    }
    // The answers run on without their clients; each is saved whole.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = rows(&db.url).await;
        let done = rows.values().filter(|r| r.0 == "complete").count();
        if done == prompts.len() {
            assert_eq!(rows.len(), prompts.len());
            for p in &prompts {
                assert_eq!(
                    rows[p].2.trim(),
                    common::provider::OfflineProvider::answer(p).trim()
                );
            }
            break;
        }
        assert!(
            Instant::now() < until,
            "{done} of {} complete",
            prompts.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();
}
