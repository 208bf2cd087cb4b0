#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults the other suites do not inject, against the local server as a process over real
//! sockets: a client that stops reading without closing, a database that goes silent (no reset,
//! no answer), SIGTERM with answers in flight, and what an operator or an attacker tries first.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Reply, answer, prose};
use testkit::process::{Proc, serve};
use testkit::proxy::{PgProxy, host_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client() -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `(status, error, response length)` of the turn with this prompt, if its row exists.
async fn row(db: &TestDb, prompt: &str) -> Option<(String, Option<String>, i32)> {
    db.client()
        .await
        .query_opt(
            "SELECT status, error, char_length(response) FROM conversations WHERE prompt = $1",
            &[&prompt],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Waits up to `limit` for the turn with this prompt to leave `streaming`.
async fn finished_row(db: &TestDb, prompt: &str, limit: Duration) -> (String, Option<String>, i32) {
    let until = Instant::now() + limit;
    loop {
        if let Some(r) = row(db, prompt).await
            && r.0 != "streaming"
        {
            return r;
        }
        assert!(
            Instant::now() < until,
            "the turn {prompt:?} did not finish within {limit:?}: {:?}",
            row(db, prompt).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_lines(proc: &Proc) -> Vec<Value> {
    proc.output()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_answer_is_still_saved_whole() {
    // An 8 MB answer, sent by the provider as fast as it can: more than the kernel buffers of
    // one connection take (4 MB at most here) plus the lag bound (1 MiB).
    let chunks = prose(8_000_000, 2000, 7);
    let words: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let fake = FakeOpenAi::start(vec![Reply::Stream(answer(&words, Duration::ZERO))]).await;
    let db = TestDb::new().await;
    let base_url = fake.base_url();
    let (proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-stalled-reader",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", base_url.as_str()),
            ("GUARDRAIL_MAX_RESPONSE_CHARS", "10000000"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;

    // A client with a small receive buffer reads 2 KB, then stops reading without closing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = base.trim_start_matches("http://").parse().unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let body = json!({"prompt": "a very long answer"}).to_string();
    let request = format!(
        "POST /stream HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 2048];
    conn.read_exact(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));

    // The generation goes on to the end and the record is saved whole, while the client sits.
    let (status, error, chars) =
        finished_row(&db, "a very long answer", Duration::from_secs(60)).await;
    assert_eq!((status.as_str(), error), ("complete", None));
    assert_eq!(chars as usize, chunks.concat().chars().count());
    let lagging: Vec<Value> = log_lines(&proc)
        .into_iter()
        .filter(|l| l["event"] == "client_lagging")
        .collect();
    assert_eq!(lagging.len(), 1, "{}", proc.output());
    let line = log_lines(&proc)
        .into_iter()
        .find(|l| l["message"] == "request" && l["route"] == "/stream")
        .expect("the stream's log line");
    assert_eq!(line["client_lagging"], true);

    // Its connection was closed: reading on gets what the socket buffers held, then the end.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut rest)).await;
    let received = first.len() + rest.len();
    assert!(read.is_ok(), "the connection was left open");
    assert!(
        received < 8_000_000,
        "the whole answer was delivered ({received} bytes): the client was never dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_gives_timely_errors_and_the_pool_recovers_on_its_own() {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let (proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-silent-db",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "off"),
            ("DB_STATEMENT_TIMEOUT_MS", "1000"),
            ("DB_CONNECT_TIMEOUT_MS", "1000"),
            ("DB_SAVE_BUDGET_MS", "3000"),
            ("HEALTH_CACHE_MS", "0"),
            ("OFFLINE_CHUNK_DELAY_MS", "5"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let http = client();
    let ok = http.get(format!("{base}/history")).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    proxy.silence().await;
    // Reads answer 503 within the statement timeout plus a margin, not never.
    for path in ["/history", "/search?query=anything", "/health"] {
        let started = Instant::now();
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status(), 503, "{path}");
        assert!(took < Duration::from_secs(10), "{path} took {took:?}");
        let body: Value = resp.json().await.unwrap();
        if path != "/health" {
            assert_eq!(body["error"]["code"], "database_unavailable", "{path}");
        }
    }
    // A stream is served, and its record goes to the log once the save budget is spent.
    let resp = http
        .post(format!("{base}/stream"))
        .json(&json!({"prompt": "said while the database is silent"}))
        .send()
        .await
        .unwrap();
    let events = testkit::sse::read(resp, None).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last.name.as_str(), &last.data["saved"]),
        ("done", &json!(false))
    );
    assert!(
        log_lines(&proc)
            .iter()
            .any(|l| l["event"] == "unsaved_record"),
        "{}",
        proc.output()
    );
    assert!(proxy.held() > 0, "the proxy held no silent connection");

    // The path comes back (the old connections stay dead): /health is 200 again within seconds.
    proxy.up();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = http.get(format!("{base}/health")).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < until, "/health did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = http.get(format!("{base}/history")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_answers_in_flight_and_saves_the_rest_as_shutdown() {
    let db = TestDb::new().await;
    let (mut proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-sigterm",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "40"),
            ("SHUTDOWN_GRACE_MS", "2500"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let http = client();
    // Two short answers (38 words, 40 ms apart: 1.5 s) finish within the grace period; three
    // long ones (100 words: 4 s) do not. Two clients leave at once.
    let long_prompt = "a long prompt ".repeat(20);
    let mut streams = Vec::new();
    for i in 0..5 {
        let prompt = if i < 2 {
            format!("short {i}")
        } else {
            format!("{long_prompt}{i}")
        };
        let (http, base, p) = (http.clone(), base.clone(), prompt.clone());
        streams.push((
            prompt,
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{base}/stream"))
                    .json(&json!({ "prompt": p }))
                    .send()
                    .await
                    .unwrap();
                let stop_after = (i == 1 || i == 4).then_some(1);
                testkit::sse::read(resp, stop_after).await
            }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-s", "TERM", &proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());

    // No new connection is taken once the signal arrived.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = http.get(format!("{base}/health")).send().await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );

    let status = proc.wait(Duration::from_secs(20));
    assert_eq!(status, Some(0), "{}", proc.output());
    assert!(started.elapsed() < Duration::from_secs(15));
    for (prompt, stream) in streams {
        let events = stream.await.unwrap();
        let (status, error, _) = row(&db, &prompt).await.expect("a row");
        if prompt.starts_with("short") {
            assert_eq!((status.as_str(), error), ("complete", None), "{prompt}");
        } else {
            assert_eq!(
                (status.as_str(), error.as_deref()),
                ("partial", Some("shutdown")),
                "{prompt}"
            );
            if events.iter().filter(|e| e.name == "delta").count() > 1 {
                let last = events.last().unwrap();
                assert_eq!(
                    (last.name.as_str(), last.data["code"].as_str()),
                    ("error", Some("shutdown"))
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_a_key_is_refused_without_asking_the_database() {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let (_proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-key-shape",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "required"),
            ("AUTH_TOKEN", "a-static-token-of-some-length"),
            ("DB_CONNECT_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let http = client();
    proxy.down().await;
    let status = |auth: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/history"))
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // With the database down, shapes that cannot be keys still get their 401 at once.
    for not_a_key in [
        "Bearer sk-abc",
        "Bearer lsk_short",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
    ] {
        assert_eq!(status(not_a_key).await, 401, "{not_a_key}");
    }
    // The static token is accepted without a lookup; the page itself needs the database.
    assert_eq!(status("Bearer a-static-token-of-some-length").await, 503);
    // A value shaped like a key must be looked up: the database is down, so 503.
    let shaped = "Bearer lsk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(status(shaped).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_the_database_at_most_once_per_interval() {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let (_proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-health-cache",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "off"),
            ("HEALTH_CACHE_MS", "60000"),
            ("DB_CONNECT_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let http = client();
    // `serve` waited for a 200 from /health: that answer is kept for a minute.
    proxy.down().await;
    for _ in 0..3 {
        let resp = http.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "/health asked the database again");
    }
    // A read still asks, and finds the database down.
    let resp = http.get(format!("{base}/history")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_listens_on_loopback_unless_host_says_otherwise() {
    let db = TestDb::new().await;
    for (host, expected) in [(None, "127.0.0.1"), (Some("0.0.0.0"), "0.0.0.0")] {
        let mut env = vec![("DATABASE_URL", db.url.as_str()), ("AUTH", "off")];
        if let Some(h) = host {
            env.push(("HOST", h));
        }
        let (mut proc, _base) = serve(env!("CARGO_BIN_EXE_local"), "local-host", &env).await;
        proc.stop();
        let line = log_lines(&proc)
            .into_iter()
            .find(|l| l["addr"].is_string())
            .expect("the serving line");
        assert!(
            line["addr"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{expected}:")),
            "{line}"
        );
    }
}

/// A shutdown while the database is silent (a checkpoint in flight that never answers): every
/// turn still running is saved or, when the database cannot take it before the process must
/// exit, logged whole as `unsaved_record`. The process never exits mid-retry with the record
/// neither saved nor logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_the_database_silent_logs_the_record_before_exit() {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let (mut proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-silent-shutdown",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "100"),
            ("CHECKPOINT_INTERVAL_MS", "200"),
            ("SHUTDOWN_GRACE_MS", "300"),
            ("DB_SAVE_BUDGET_MS", "2000"),
            ("DB_STATEMENT_TIMEOUT_MS", "1500"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let http = client();
    let resp = http
        .post(format!("{base}/stream"))
        .json(&json!({ "prompt": "a long prompt ".repeat(30) }))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let reader = tokio::spawn(testkit::sse::read(resp, None));
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.silence().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = std::process::Command::new("kill")
        .args(["-s", "TERM", &proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = proc.wait(Duration::from_secs(20));
    assert_eq!(status, Some(0), "{}", proc.output());
    let logged = log_lines(&proc).into_iter().any(|l| {
        l["event"] == "unsaved_record" && l["record"].as_str().is_some_and(|r| r.contains(&id))
    });
    proxy.up();
    let saved = row(&db, &"a long prompt ".repeat(30)).await;
    assert!(
        logged || saved.as_ref().is_some_and(|r| r.0 != "streaming"),
        "the record was neither saved ({saved:?}) nor logged:\n{}",
        proc.output()
    );
    let _ = reader.await;
}

/// Requests the HTTP server cannot parse, refused before any router sees them (a control byte
/// in the request line, a 100 KB URI, 500 KB of headers), still get the JSON error body every
/// other error has, with the server's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_server_cannot_parse_get_a_json_error_body() {
    let db = TestDb::new().await;
    let (_proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-unparsable",
        &[("DATABASE_URL", db.url.as_str()), ("AUTH", "off")],
    )
    .await;
    let addr = base.trim_start_matches("http://").to_owned();
    let long = "a".repeat(100_000);
    let cases: [(Vec<u8>, &str, &str); 3] = [
        (
            b"GET /hist\x01ory HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "400",
            "bad_request",
        ),
        (
            format!("GET /history?q={long} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            "414",
            "uri_too_long",
        ),
        (
            format!(
                "GET /history HTTP/1.1\r\nHost: x\r\nX-Big: {long}{long}{long}{long}{long}\r\n\r\n"
            )
            .into_bytes(),
            "431",
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(head.contains("content-type: application/json"), "{answer}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
        assert_eq!(v["error"]["code"], code, "{answer}");
    }
}
