#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The whole Chat Completions surface through the official Python SDK (`tests/sdk/tools_sdk.py`)
//! against the server process: tool calls (parallel, as every kind of upstream streams them),
//! a tool-result round trip, `parse()` with a pydantic model, the stream helper, and typed
//! upstream errors. The upstream is a local OpenAI-compatible server that answers by prompt and
//! keeps a journal of what it received; here: what reached it, what was stored and logged.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Fragment, Part, Reply, answer, tool_calls};
use testkit::process::{serve, workspace_root};

/// The upstream's answers, by the last message's content.
fn upstream(prompt: &str) -> Reply {
    let f = |index, id, name, arguments| Fragment {
        index,
        id,
        name,
        arguments,
    };
    let refuse = |status, retry_after, error: Value| Reply::Refuse {
        status,
        retry_after,
        error,
    };
    match prompt {
        // As OpenAI streams parallel calls: one after the other, each a header, then its
        // arguments in pieces.
        "weather in Oslo and Rome" => Reply::Stream(tool_calls(
            &[
                f(0, Some("call_oslo"), Some("get_weather"), ""),
                f(0, None, None, "{\"city\":"),
                f(0, None, None, "\"Oslo\"}"),
                f(1, Some("call_rome"), Some("get_weather"), ""),
                f(1, None, None, "{\"city\":"),
                f(1, None, None, "\"Rome\"}"),
            ],
            "tool_calls",
        )),
        // As Gemini's and Ollama's adapters do: every call at index 0, each with a new id, and
        // `stop` where the model asked for tools.
        "weather at one index" => Reply::Stream(tool_calls(
            &[
                f(0, Some("g1"), Some("get_weather"), "{\"city\":\"Oslo\"}"),
                f(0, Some("g2"), Some("get_weather"), "{\"city\":\"Rome\"}"),
            ],
            "stop",
        )),
        // A call in one piece, without an id.
        "weather in one piece" => Reply::Stream(tool_calls(
            &[f(0, None, Some("get_weather"), "{\"city\":\"Paris\"}")],
            "tool_calls",
        )),
        // The JavaScript SDKs send a result as JSON.stringify writes it.
        "{\"temp\":25}" => Reply::Stream(answer(
            &["Oslo has 21 degrees, ", "Rome 25."],
            Duration::ZERO,
        )),
        "{\"temp\": 21}" => {
            Reply::Stream(answer(&["It is 21 ", "degrees in Oslo."], Duration::ZERO))
        }
        "extract the event" => Reply::Stream(answer(
            &["{\"name\":", "\"Launch\",", "\"day\":\"Friday\"}"],
            Duration::ZERO,
        )),
        "too long" => refuse(
            400,
            None,
            json!({"message": "This model's maximum context length is 8 tokens.",
                   "type": "invalid_request_error", "param": "messages",
                   "code": "context_length_exceeded"}),
        ),
        "slow down" => refuse(
            429,
            Some(7),
            json!({"message": "Rate limit reached", "type": "requests", "param": null,
                   "code": "rate_limit_exceeded"}),
        ),
        "upstream key" => refuse(
            401,
            None,
            json!({"message": "Incorrect API key provided: sk-oper***", "type":
                   "invalid_request_error", "param": null, "code": "invalid_api_key"}),
        ),
        "no such upstream model" => refuse(
            404,
            None,
            json!({"message": "The model `test-model` does not exist", "type":
                   "invalid_request_error", "param": null, "code": "model_not_found"}),
        ),
        // With log probabilities, as OpenAI sends them: in the content's chunk.
        "every parameter" => {
            let mut parts = answer(&["ok"], Duration::ZERO);
            parts[1] = Part::Data(
                json!({"id": "chatcmpl-test", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": "test-model",
                    "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": null,
                        "logprobs": {"content": [{"token": "ok", "logprob": -0.01,
                            "bytes": [111, 107], "top_logprobs": [
                                {"token": "ok", "logprob": -0.01, "bytes": [111, 107]},
                                {"token": "OK", "logprob": -4.6, "bytes": [79, 75]}]}],
                            "refusal": null}}]})
                .to_string(),
            );
            Reply::Stream(parts)
        }
        _ => Reply::Stream(answer(&["ok"], Duration::ZERO)),
    }
}

/// The upstream, a database, a key and the server process in front of them.
struct Setup {
    fake: FakeOpenAi,
    _db: TestDb,
    key: String,
    server: testkit::process::Proc,
    base: String,
}

async fn setup(name: &str) -> Setup {
    let fake = FakeOpenAi::by_prompt(|prompt, _| upstream(prompt)).await;
    let db = TestDb::new().await;
    let key = db.key("tools", name).await;
    let base_url = fake.base_url();
    let (server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-chat-surface",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "required"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", base_url.as_str()),
            ("LLM_MAX_RETRIES", "0"),
        ],
    )
    .await;
    Setup {
        fake,
        _db: db,
        key,
        server,
        base,
    }
}

/// Runs an SDK's checks (`sdk BASE_URL KEY`) to success; the JSON lines it printed.
fn run_sdk(
    mut sdk: Command,
    base: &str,
    key: &str,
    fake: &FakeOpenAi,
    server: &testkit::process::Proc,
) -> Vec<Value> {
    let out = sdk.arg(base).arg(key).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK checks failed:\n{stdout}\n{}\nthe upstream received:\n{:#?}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        fake.requests(),
        server.output()
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_calls_tools_parses_output_and_gets_typed_errors() {
    let Setup {
        fake,
        _db,
        key,
        mut server,
        base,
    } = setup("python").await;
    let python = workspace_root().join(".venv/bin/python");
    assert!(python.exists(), "run `make test`: it installs the SDK");
    let mut sdk = Command::new(python);
    sdk.arg(workspace_root().join("functions/local/tests/sdk/tools_sdk.py"));
    let calls = run_sdk(sdk, &base, &key, &fake, &server);

    // The tools and the round trip reached the upstream as OpenAI's API defines them.
    let journal = fake.requests();
    let offered = &journal[0]["tools"][0];
    assert_eq!(offered["function"]["name"], "get_weather");
    assert_eq!(
        offered["function"]["parameters"]["required"],
        json!(["city"])
    );
    let round_trip = journal
        .iter()
        .find(|r| r["messages"].as_array().unwrap().len() == 4)
        .expect("the round trip reached the upstream");
    let sent = &round_trip["messages"];
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(
        sent[1]["tool_calls"][0],
        json!({"id": "call_oslo", "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}})
    );
    assert_eq!(
        (
            &sent[3]["role"],
            &sent[3]["tool_call_id"],
            &sent[3]["content"]
        ),
        (
            &json!("tool"),
            &json!("call_oslo"),
            &json!("{\"temp\": 21}")
        )
    );
    let parse = journal
        .iter()
        .find(|r| r["messages"][0]["content"] == "extract the event")
        .unwrap();
    assert_eq!(parse["response_format"]["type"], "json_schema");
    assert_eq!(parse["response_format"]["json_schema"]["name"], "Event");

    // Each call is a stored turn with its calls, finish reason and tools, found by search.
    let http = testkit::http_client();
    let get = |path: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let r = http.get(path).bearer_auth(key).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    for call in calls.iter().filter(|c| c["call"] == "tools") {
        for id in [&call["streamed"], &call["plain"]] {
            let turn = get(format!("{base}/history/{}", id.as_str().unwrap())).await;
            assert_eq!(turn["status"], "complete", "{turn}");
            assert_eq!(turn["finish_reason"], "tool_calls", "{turn}");
            assert_eq!(turn["tools"], json!(["get_weather"]));
            let stored: Vec<(&Value, &Value)> = turn["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (&c["name"], &c["arguments"]))
                .collect();
            let sent: Vec<(&Value, &Value)> = call["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (&c["name"], &c["arguments"]))
                .collect();
            assert_eq!(stored, sent, "{turn}");
        }
    }
    let one_index = calls
        .iter()
        .find(|c| c["prompt"] == "weather at one index")
        .unwrap();
    let found = get(format!("{base}/search?query=Rome")).await;
    let ids: Vec<&Value> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["id"])
        .collect();
    assert!(ids.contains(&&one_index["plain"]), "{found}");
    let by_name = get(format!("{base}/search?query=get_weather")).await;
    assert!(by_name["items"].as_array().unwrap().len() >= 6, "{by_name}");
    let round = calls.iter().find(|c| c["call"] == "round_trip").unwrap();
    let turn = get(format!("{base}/history/{}", round["id"].as_str().unwrap())).await;
    assert_eq!(turn["response"], "It is 21 degrees in Oslo.");
    // The earlier messages, as sent: the assistant's calls and both results.
    assert_eq!(turn["messages"][0]["tool_calls"][1]["id"], "call_rome");
    assert_eq!(turn["messages"][2]["tool_call_id"], "call_oslo");

    // Every parameter reached the upstream exactly as the SDK sent it, with the tools as
    // defined; the service's own: `stream` and `stream_options.include_usage`, also for the call
    // that did not stream.
    let parameters = calls.iter().find(|c| c["call"] == "parameters").unwrap();
    let received: Vec<&Value> = journal
        .iter()
        .filter(|r| r["messages"][0]["content"] == "every parameter")
        .collect();
    assert_eq!(received.len(), 2);
    for r in received {
        for (name, value) in parameters["sent"].as_object().unwrap() {
            assert_eq!(&r[name], value, "{name} reached the upstream changed: {r}");
        }
        assert_eq!(r["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(r["stream"], true);
        assert_eq!(r["stream_options"], json!({"include_usage": true}));
        assert!(
            r.get("max_tokens").is_none(),
            "max_completion_tokens was rewritten: {r}"
        );
    }

    // Images reach the upstream whole; the stored turn keeps 64 KB of image data at most, a
    // larger image named by its media type, size and SHA-256.
    let images = calls.iter().find(|c| c["call"] == "images").unwrap();
    let sent = journal
        .iter()
        .find(|r| r["messages"][0]["content"][0]["text"] == "compare these pictures")
        .unwrap();
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image_url", "image_url": {"url": images["small"], "detail": "low"}})
    );
    assert_eq!(
        sent["messages"][0]["content"][2]["image_url"]["url"],
        images["large"]
    );
    let turn = get(format!("{base}/history/{}", images["id"].as_str().unwrap())).await;
    assert_eq!(turn["prompt"], "compare these pictures");
    let parts = &turn["prompt_parts"];
    assert_eq!(parts[1]["image_url"]["url"], images["small"]);
    let large: Vec<u8> = (0..=255u8).cycle().take(256 * 400).collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, &large);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        parts[2],
        json!({"type": "image_omitted", "media_type": "image/jpeg", "bytes": 102_400,
               "sha256": hex})
    );

    // The log line carries the status each refused call got.
    server.stop();
    let statuses: Vec<u64> = server
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request" && l["route"] == "/v1/chat/completions")
        .filter_map(|l| l["status"].as_u64())
        .collect();
    for status in [400, 429, 502, 404] {
        assert_eq!(
            statuses.iter().filter(|s| **s == status).count(),
            2,
            "{status} streamed and not: {statuses:?}"
        );
    }
}

/// The Vercel AI SDK's `streamText` with a tool and `generateObject` with a schema, and the
/// OpenAI JavaScript SDK's `runTools`, against the server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vercel_ai_sdk_and_run_tools_loop_through_tools() {
    let Setup {
        fake,
        _db,
        key,
        mut server,
        base,
    } = setup("javascript").await;
    let modules = workspace_root().join(".local/node/node_modules");
    assert!(
        modules.join("ai").exists() && modules.join("@ai-sdk/openai").exists(),
        "run `make test`: infra/tools.sh installs the AI SDK under .local/node"
    );
    let mut sdk = Command::new("node");
    sdk.env("NODE_PATH", &modules)
        .arg(workspace_root().join("functions/local/tests/sdk/ai_sdk.cjs"));
    let done = run_sdk(sdk, &base, &key, &fake, &server);
    assert_eq!(done.len(), 3, "{done:?}");
    // Both loops sent the calls and their results back as OpenAI defines them.
    let journal = fake.requests();
    let loops: Vec<&Value> = journal
        .iter()
        .filter(|r| r["messages"].as_array().unwrap().len() == 4)
        .collect();
    assert_eq!(loops.len(), 2, "{journal:?}");
    for sent in loops {
        let m = &sent["messages"];
        assert_eq!(m[1]["tool_calls"][0]["id"], "call_oslo");
        assert_eq!(
            m[1]["tool_calls"][1]["function"]["arguments"],
            "{\"city\":\"Rome\"}"
        );
        assert_eq!(m[2]["tool_call_id"], "call_oslo");
        assert_eq!(m[3]["tool_call_id"], "call_rome");
    }
    let object = journal
        .iter()
        .find(|r| r["messages"][0]["content"] == "extract the event")
        .unwrap();
    assert_eq!(object["response_format"]["type"], "json_schema");
    server.stop();
}
