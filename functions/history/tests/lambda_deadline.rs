#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The history function as Lambda runs it (polling a local Runtime API that gives each
//! invocation a short deadline): with its database silent, it answers 503 before Lambda would
//! cut it off with a bare timeout.

use std::time::Duration;

use testkit::TestDb;
use testkit::proxy::{PgProxy, host_port};
use testkit::runtime_api::{RuntimeApi, url_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_database_went_silent_answers_503_before_the_lambda_deadline() {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let event = url_event("GET", "/history", "");
    let mut runtime = RuntimeApi::with_timeout(vec![event], Duration::from_secs(3)).await;
    proxy.silence().await;
    // A statement timeout longer than the invocation: only the deadline can answer in time.
    let proc = runtime.function(
        env!("CARGO_BIN_EXE_history"),
        "history",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "off"),
            ("DB_STATEMENT_TIMEOUT_MS", "30000"),
            ("DB_CONNECT_TIMEOUT_MS", "30000"),
        ],
    );
    let (took, body) = runtime.answer(&proc, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert!(body.contains(r#""statusCode":503"#), "{body}");
    assert!(body.contains("timeout"), "{body}");
}
