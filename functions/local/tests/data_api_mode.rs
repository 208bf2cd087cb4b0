#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The service in Data API mode, end to end: the server process gets `DB_CLUSTER_ARN`,
//! `DB_SECRET_ARN` and `DB_NAME` (no `DATABASE_URL`), applies the migrations through the Data
//! API on an empty database, streams, and reads back through history, get and search.

use std::process::Command;

use testkit::TestDb;
use testkit::data_api::DataApi;
use testkit::sse;

fn local(db: &TestDb, api: &DataApi) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_local"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AUTH", "off")
        .env("OFFLINE_CHUNK_DELAY_MS", "1");
    for (k, v) in db.data_api_env(&api.endpoint, &[]) {
        cmd.env(k, v);
    }
    cmd
}

// Multi-threaded: the endpoint keeps answering while the test waits on `local migrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_migrates_streams_and_reads_through_the_data_api() {
    let db = TestDb::blank().await;
    let api = DataApi::start(&testkit::admin_url()).await;
    let env = db.data_api_env(
        &api.endpoint,
        &[("AUTH", "off"), ("OFFLINE_CHUNK_DELAY_MS", "1")],
    );
    let env: Vec<(&str, &str)> = env.into_iter().collect();
    let (mut proc, base) =
        testkit::process::serve(env!("CARGO_BIN_EXE_local"), "local-data-api", &env).await;
    let http = testkit::http_client();

    let resp = http
        .post(format!("{base}/stream"))
        .body(r#"{"prompt":"tell me about data api zebras"}"#)
        .send()
        .await
        .unwrap();
    let events = sse::read(resp, None).await;
    assert_eq!(events.last().unwrap().name, "done", "{events:?}");
    let answer = sse::text(&events);
    assert!(!answer.is_empty());

    let get_json = |path: &str| {
        let request = http.get(format!("{base}{path}")).send();
        async move {
            request
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let history = get_json("/history").await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{history}");
    assert_eq!(items[0]["response"], answer.as_str());
    assert_eq!(items[0]["status"], "complete");
    let id = items[0]["id"].as_str().unwrap();

    let one = http
        .get(format!("{base}/history/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let found = get_json("/search?query=zebras").await;
    assert_eq!(found["items"][0]["id"], id, "{found}");
    proc.stop();

    // The row is in PostgreSQL, and `local migrate` finds nothing left to apply.
    assert_eq!(db.count().await, 1);
    let out = local(&db, &api).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrations applied: 0"
    );
    assert!(api.calls() > 10);
}
