#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Routing (`LLM_CONFIG`) as a deployment meets it: the server process with a route whose first
//! target refuses connections, used by the official OpenAI Python SDK (streamed and not, the
//! route's name as its model); and a mistaken config that stops the process at start, naming
//! its line.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Reply, answer};
use testkit::process::{serve, workspace_root};

const SDK: &str = r#"
import json, sys
import openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
assert [m.id for m in client.models.list().data] == ["chat"]
raw = client.chat.completions.with_raw_response.create(
    model="chat", messages=[{"role": "user", "content": "hi"}])
done = raw.parse()
assert done.choices[0].message.content == "Answered by the backup.", done
chunks = client.chat.completions.create(
    model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Answered by the backup.", text
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("a model that is no route was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
print(json.dumps({"id": raw.headers["x-conversation-id"]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_gets_one_answer_when_the_first_target_is_down() {
    let backup = FakeOpenAi::start(vec![Reply::Stream(answer(
        &["Answered ", "by the backup."],
        Duration::ZERO,
    ))])
    .await;
    let down = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let config = format!(
        "default_model = \"chat\"\n\
         [providers.primary]\nkind = \"openai\"\nbase_url = \"http://{down}/v1\"\n\
         [providers.backup]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [models.chat]\nroute = [{{provider = \"primary\", model = \"gpt-4o-mini\"}}, \
         {{provider = \"backup\", model = \"llama\"}}]\n",
        backup.base_url()
    );
    let db = TestDb::new().await;
    let (mut server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-routing",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("LLM_CONFIG", config.as_str()),
        ],
    )
    .await;
    let out = Command::new(workspace_root().join(".venv/bin/python"))
        .args(["-c", SDK, &base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.output()
    );
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let turn: Value = testkit::http_client()
        .get(format!("{base}/history/{}", id["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&turn["provider"], &turn["model"]),
        (&"backup".into(), &"llama".into())
    );
    assert_eq!(turn["attempts"][0]["error_code"], "provider_unreachable");
    assert_eq!(turn["attempts"][1]["chars"], 23);
    server.stop();
    let log: Vec<Value> = server
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["message"] == "request" && l["route"] == "/v1/chat/completions")
        .filter(|l| l.get("conversation_id").is_some())
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|l| l["fallbacks"] == 1), "{log:?}");
}

#[test]
fn a_mistaken_config_stops_the_process_at_start_naming_its_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_local"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env(
            "LLM_CONFIG",
            "[providers.a]\nkind = \"openai\"\n\n[models.chat]\n\
             route = [{ provider = \"b\", model = \"m\" }]\n",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("LLM_CONFIG: line 5"), "{said}");
    assert!(
        said.contains("\\\"b\\\"") || said.contains("\"b\""),
        "{said}"
    );
}
