#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The stream function as Lambda runs it (polling a local Runtime API that gives each invocation
//! a short deadline): a stream stops early enough to save, with status `partial` and error
//! `deadline`, instead of being cut off by Lambda with nothing saved.

use std::time::Duration;

use testkit::TestDb;
use testkit::runtime_api::{RuntimeApi, url_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_near_its_lambda_deadline_stops_in_time_to_save() {
    let db = TestDb::new().await;
    // 8 s per invocation; the offline answer takes about 40 × 400 ms = 16 s.
    let event = url_event("POST", "/stream", r#"{"prompt":"take your time"}"#);
    let mut runtime = RuntimeApi::with_timeout(vec![event], Duration::from_secs(8)).await;
    let proc = runtime.function(
        env!("CARGO_BIN_EXE_stream"),
        "stream",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "400"),
        ],
    );
    let (took, body) = runtime.answer(&proc, Duration::from_secs(20)).await;
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains(r#""code":"deadline""#), "{body}");
    assert!(body.contains(r#""saved":true"#), "{body}");
    let row = db
        .client()
        .await
        .query_one("SELECT status, error, response FROM conversations", &[])
        .await
        .unwrap();
    let (status, error, response): (String, Option<String>, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("partial", Some("deadline"))
    );
    assert!(response.starts_with("You asked"), "{response}");
}
