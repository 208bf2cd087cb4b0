#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The local server as a process: it serves every route, and a record it could not save (the
//! database gone for good) is logged whole and put back by `local replay`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::TestDb;
use testkit::process::{Proc, free_port, wait_ok};
use testkit::proxy::{PgProxy, host_port};
use testkit::sse;

#[tokio::test]
async fn an_unsaved_record_is_logged_whole_and_replayed_into_the_table() {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_local"));
    cmd.arg("serve")
        .env("DATABASE_URL", proxy.url_for(&db.url))
        .env("PORT", port.to_string())
        .env("DB_CONNECT_TIMEOUT_MS", "300")
        .env("OFFLINE_CHUNK_DELAY_MS", "0")
        .env("RUST_LOG", "info")
        .env("AUTH", "off")
        .env_remove("LOG_FORMAT");
    let mut server = Proc::spawn(cmd, "local-serve");
    let http = testkit::http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(
        &http,
        &format!("{base}/health"),
        Duration::from_secs(30),
        || server.output(),
    )
    .await;
    let (status, _) = (
        http.get(format!("{base}/history"))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 200);

    proxy.down().await;
    let resp = http
        .post(format!("{base}/stream"))
        .body(r#"{"prompt":"keep me"}"#)
        .send()
        .await
        .unwrap();
    let events = sse::read(resp, None).await;
    let done = &events.last().unwrap().data;
    assert_eq!(done["saved"], false, "{events:?}");
    let id = done["id"].as_str().unwrap().to_owned();
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    server.stop();

    let log = server.output();
    let line = log
        .lines()
        .find(|l| l.contains("unsaved_record"))
        .unwrap_or_else(|| panic!("no unsaved_record line in:\n{log}"));
    let parsed: Value = serde_json::from_str(line).unwrap();
    assert_eq!(parsed["id"], id);

    let replay = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(["replay", server.log.to_str().unwrap()])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(out.contains("replayed: 1"), "{out}");

    let row = db
        .client()
        .await
        .query_one(
            "SELECT status, response FROM conversations WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "complete");
    assert_eq!(row.get::<_, String>(1), sse::text(&events));
}
