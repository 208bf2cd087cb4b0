#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Responses API with the official Python SDK (`tests/sdk/responses_sdk.py`) against two
//! server processes on one database: created plain, streamed, in the background; re-attached,
//! polled, cancelled and continued from the other process; listed, deleted. Here: the servers,
//! and what was stored.

use std::process::Command;

use testkit::TestDb;
use testkit::process::{serve, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_uses_responses_across_two_processes() {
    let db = TestDb::new().await;
    let key = db.key("sdk", "responses").await;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("AUTH", "required"),
        ("OFFLINE_CHUNK_DELAY_MS", "30"),
        ("CHECKPOINT_INTERVAL_MS", "100"),
        ("RESUME_POLL_MS", "50"),
    ];
    let (mut a, base_a) = serve(env!("CARGO_BIN_EXE_local"), "responses-a", &env).await;
    let (mut b, base_b) = serve(env!("CARGO_BIN_EXE_local"), "responses-b", &env).await;
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run `make test`: it installs the OpenAI SDK into .venv"
    );
    let out = Command::new(python)
        .arg(workspace_root().join("functions/local/tests/sdk/responses_sdk.py"))
        .args([&base_a, &base_b, &key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- A ---\n{}\n--- B ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.output(),
        b.output()
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id_of = |check: &str| {
        let line = lines.iter().find(|l| l["check"] == check).unwrap();
        let hex = line["id"].as_str().unwrap().strip_prefix("resp_").unwrap();
        uuid::Uuid::parse_str(hex).unwrap()
    };
    let client = db.client().await;
    // The first response is a turn with its instructions; the continued one was deleted, the
    // store: false one is gone, the cancelled one is kept cancelled.
    let row = client
        .query_one(
            "SELECT prompt, system, status FROM conversations WHERE id = $1",
            &[&id_of("plain")],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "hello responses");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("Be brief.")
    );
    assert_eq!(row.get::<_, String>(2), "complete");
    for gone in ["deleted", "not_stored"] {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM conversations WHERE id = $1",
                &[&id_of(gone)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{gone}");
    }
    let status: String = client
        .query_one(
            "SELECT status FROM conversations WHERE id = $1",
            &[&id_of("cancelled")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "cancelled");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_sdk_runs_a_turn_with_a_function_tool() {
    let db = TestDb::new().await;
    let key = db.key("sdk", "agents").await;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("AUTH", "required"),
        ("OFFLINE_CHUNK_DELAY_MS", "1"),
    ];
    let (mut server, base) = serve(env!("CARGO_BIN_EXE_local"), "responses-agents", &env).await;
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run `make test`: it installs openai-agents into .venv"
    );
    let out = Command::new(python)
        .arg(workspace_root().join("functions/local/tests/sdk/agents_sdk.py"))
        .args([&base, &key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- server ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.output()
    );
    // Two responses: the one that called the tool, and the one that read its result.
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT tool_calls, tools, finish_reason FROM conversations ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let calls: Option<serde_json::Value> = rows[0].get(0);
    assert_eq!(calls.unwrap()[0]["name"], "get_weather");
    let tools: Option<serde_json::Value> = rows[0].get(1);
    assert_eq!(tools.unwrap(), serde_json::json!(["get_weather"]));
    assert_eq!(
        rows[0].get::<_, Option<String>>(2).as_deref(),
        Some("tool_calls")
    );
    server.stop();
}
