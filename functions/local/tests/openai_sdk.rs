#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAI-compatible API with the official OpenAI SDKs, Python (`openai` from PyPI, in the
//! project's `.venv`) and JavaScript (`openai` from npm, under `.local/node`), both installed by
//! `make test`, against the server process, the upstream a local OpenAI-compatible server that
//! records what it receives. The SDKs' own checks are in `tests/sdk/openai_sdk.py` and
//! `tests/sdk/openai_sdk.cjs` (the same checks); here: what reached the provider, and what was
//! stored.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer};
use testkit::process::{serve, workspace_root};

fn python() -> Command {
    let path = workspace_root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} not found: run `make test` (infra/tools.sh installs the OpenAI SDK into .venv)",
        path.display()
    );
    let mut command = Command::new(path);
    command.arg(workspace_root().join("functions/local/tests/sdk/openai_sdk.py"));
    command
}

fn node() -> Command {
    let modules = workspace_root().join(".local/node/node_modules");
    assert!(
        modules.join("openai").exists(),
        "{} has no openai: run `make test` (infra/tools.sh installs the OpenAI SDK there)",
        modules.display()
    );
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", modules)
        .arg(workspace_root().join("functions/local/tests/sdk/openai_sdk.cjs"));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_unchanged_and_every_call_is_kept() {
    an_sdk_works_unchanged_and_every_call_is_kept(python()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_javascript_sdk_works_unchanged_and_every_call_is_kept() {
    an_sdk_works_unchanged_and_every_call_is_kept(node()).await;
}

/// Runs an SDK's checks (`sdk BASE_URL KEY`, one JSON line per call on stdout), then checks what
/// reached the provider and what was stored.
async fn an_sdk_works_unchanged_and_every_call_is_kept(mut sdk: Command) {
    let fake = FakeOpenAi::by_prompt(|prompt, _| {
        if prompt == "fail midway" {
            let mut parts = answer(&["Half "], Duration::ZERO);
            parts.truncate(2);
            // Let the first chunk reach the service before the cut.
            parts.push(Part::Sleep(Duration::from_millis(100)));
            parts.push(Part::Cut);
            Reply::Stream(parts)
        } else {
            Reply::Stream(answer(&["Rottnest", " ", "Island."], Duration::ZERO))
        }
    })
    .await;
    let db = TestDb::new().await;
    let key = db.key("sdk", "python").await;
    let base_url = fake.base_url();
    let (mut server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-openai-sdk",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "required"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", base_url.as_str()),
            ("LLM_MODELS", "test-model,other-model"),
            ("LLM_MAX_RETRIES", "0"),
        ],
    )
    .await;

    let out = sdk.arg(&base).arg(&key).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK checks failed:\n{stdout}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.output()
    );
    let calls: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let plain = calls.iter().find(|c| c["call"] == "plain").unwrap();

    // The messages reached the provider exactly as the SDK sent them.
    let first = &fake.requests()[0];
    assert_eq!(first["model"], "test-model");
    assert_eq!(
        first["messages"],
        json!([
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name a quokka fact."},
            {"role": "assistant", "content": "They smile."},
            {"role": "user", "content": [{"type": "text", "text": "And where do quokkas live?"}]},
        ])
    );
    // Refused calls never reached it: plain, two streams, the failing one.
    assert_eq!(fake.requests().len(), 4);

    // Each call is a stored turn of the key's owner, found by history and search.
    let http = testkit::http_client();
    let get = |path: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            http.get(path)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let id = plain["id"].as_str().unwrap();
    let turn = get(format!("{base}/history/{id}")).await;
    assert_eq!(turn["prompt"], "And where do quokkas live?");
    assert_eq!(turn["response"], "Rottnest Island.");
    assert_eq!(turn["status"], "complete");
    assert_eq!(turn["model"], "test-model");
    assert_eq!(turn["system"], "Answer briefly.");
    assert_eq!(turn["messages"].as_array().unwrap().len(), 3);
    assert_eq!(
        plain["completion_id"],
        format!("chatcmpl-{}", id.replace('-', ""))
    );
    let history = get(format!("{base}/history?limit=10")).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 4);
    let found = get(format!("{base}/search?query=quokkas")).await;
    let ids: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id), "{found}");
    let midway = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["prompt"] == "fail midway")
        .unwrap();
    assert_eq!(
        (midway["status"].as_str(), midway["response"].as_str()),
        (Some("partial"), Some("Half "))
    );
    server.stop();
    let log: Vec<Value> = server
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["message"] == "request" && l["route"] == "/v1/chat/completions")
        .collect();
    assert!(log.len() >= 4, "{}", server.output());
}
