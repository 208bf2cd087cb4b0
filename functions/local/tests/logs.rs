#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What an operator sees: the local server as a process writes one JSON log line per request
//! (the stream's when its body ends) and a CloudWatch metrics line per stream; no prompt or
//! response text unless `LOG_CONTENT=true`.

use std::time::Duration;

use serde_json::Value;
use testkit::TestDb;
use testkit::process::Proc;
use testkit::sse;

async fn server(db: &TestDb, log_content: bool) -> (Proc, String) {
    let log_content = log_content.to_string();
    testkit::process::serve(
        env!("CARGO_BIN_EXE_local"),
        "local-logs",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "1"),
            ("RUST_LOG", "info"),
            ("LOG_CONTENT", log_content.as_str()),
        ],
    )
    .await
}

/// The JSON lines written so far.
fn lines(proc: &Proc) -> Vec<Value> {
    proc.output()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn request_line<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["request_id"] == request_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one line for request {request_id}: {lines:?}"
    );
    found[0]
}

#[tokio::test]
async fn each_request_writes_one_json_line_and_each_stream_a_metrics_line() {
    let db = TestDb::new().await;
    let (mut proc, base) = server(&db, false).await;
    let http = testkit::http_client();

    let ok = http
        .get(format!("{base}/history?limit=5"))
        .send()
        .await
        .unwrap();
    let ok_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    let bad = http
        .get(format!("{base}/history/not-a-uuid"))
        .send()
        .await
        .unwrap();
    let bad_id = bad.headers()["x-request-id"].to_str().unwrap().to_owned();
    let resp = http
        .post(format!("{base}/stream"))
        .body(r#"{"prompt":"confidential zebra words"}"#)
        .send()
        .await
        .unwrap();
    let stream_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = sse::read(resp, None).await;
    assert_eq!(events.last().unwrap().name, "done");
    // Re-attaching to the turn that has ended writes its own line too.
    let turn = events[0].data["id"].as_str().unwrap().to_owned();
    let again = http
        .get(format!("{base}/stream/{turn}?after=3"))
        .send()
        .await
        .unwrap();
    let again_id = again.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(sse::read(again, None).await.last().unwrap().name, "done");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proc.stop();
    let lines = lines(&proc);

    let l = request_line(&lines, &again_id);
    assert_eq!(
        (
            l["route"].as_str(),
            l["status"].as_u64(),
            l["method"].as_str()
        ),
        (Some("/stream/{id}"), Some(200), Some("GET"))
    );
    assert_eq!(l["conversation_id"], turn.as_str());
    assert_eq!(l["resumed_from"], 3);
    assert!(l["response_bytes"].as_u64().unwrap() > 0);

    let l = request_line(&lines, &ok_id);
    assert_eq!(
        (
            l["route"].as_str(),
            l["status"].as_u64(),
            l["method"].as_str()
        ),
        (Some("/history"), Some(200), Some("GET"))
    );
    assert!(l["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(l["response_bytes"].as_u64().unwrap() > 0);

    let l = request_line(&lines, &bad_id);
    assert_eq!(
        (l["route"].as_str(), l["status"].as_u64()),
        (Some("/history/{id}"), Some(422))
    );
    assert_eq!(l["error_code"], "invalid_request");

    let l = request_line(&lines, &stream_id);
    assert_eq!(
        (l["route"].as_str(), l["status"].as_u64()),
        (Some("/stream"), Some(200))
    );
    assert_eq!(l["provider"], "offline");
    assert_eq!(l["conversation_status"], "complete");
    assert!(l["ttfb_ms"].is_number() && l["chunks"].as_u64().unwrap() > 5);
    assert!(l["total_tokens"].as_u64().unwrap() > 0);
    assert!(l["response_bytes"].as_u64().unwrap() > 100);
    assert_eq!(l["saved"], true);

    let metrics: Vec<&Value> = lines.iter().filter(|l| l["_aws"].is_object()).collect();
    assert_eq!(metrics.len(), 1);
    let m = metrics[0];
    assert_eq!(m["Function"], "stream");
    assert_eq!(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], "LlmStream");
    for name in [
        "TimeToFirstByte",
        "Duration",
        "Tokens",
        "Errors",
        "UnsavedRecords",
    ] {
        assert!(m[name].is_number(), "{name} missing in {m}");
    }
    assert_eq!(m["Errors"], 0.0);

    assert!(
        !proc.output().contains("zebra"),
        "prompt text reached the log"
    );
}

#[tokio::test]
async fn log_content_true_puts_the_text_in_the_stream_line() {
    let db = TestDb::new().await;
    let (mut proc, base) = server(&db, true).await;
    let resp = testkit::http_client()
        .post(format!("{base}/stream"))
        .body(r#"{"prompt":"visible zebra words"}"#)
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    sse::read(resp, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proc.stop();
    let lines = lines(&proc);
    let l = request_line(&lines, &id);
    assert_eq!(l["prompt"], "visible zebra words");
    assert!(l["response"].as_str().unwrap().contains("zebra"));
}

#[tokio::test]
async fn a_bedrock_stream_logs_bedrocks_own_stop_reason_beside_the_finish_reason() {
    use testkit::fake_bedrock::{Event, FakeBedrock, Reply};
    let fake = FakeBedrock::start(vec![Reply::Stream(vec![
        Event::Start,
        Event::Text("long enough".into()),
        Event::Stop("max_tokens"),
        Event::Usage {
            input: 4,
            output: 2,
        },
    ])])
    .await;
    let db = TestDb::new().await;
    let bedrock = fake.env();
    let mut env: Vec<(&str, &str)> = bedrock.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("DATABASE_URL", db.url.as_str()),
        ("AUTH", "off"),
        ("RUST_LOG", "info"),
    ]);
    let (mut proc, base) =
        testkit::process::serve(env!("CARGO_BIN_EXE_local"), "local-bedrock", &env).await;
    let resp = testkit::http_client()
        .post(format!("{base}/stream"))
        .body(r#"{"prompt":"go"}"#)
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = sse::read(resp, None).await;
    assert_eq!(events.last().unwrap().data["finish_reason"], "length");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proc.stop();
    let lines = lines(&proc);
    let line = request_line(&lines, &request_id);
    assert_eq!(line["provider"], "bedrock");
    assert_eq!(line["finish_reason"], "length");
    assert_eq!(line["provider_stop_reason"], "max_tokens");
    assert_eq!(line["total_tokens"], 6);
}

/// `make dev`'s log (`LOG_FORMAT=pretty`) is for a person at a terminal: no raw metrics JSON
/// lines between the request lines, and latencies to the hundredth of a millisecond.
#[tokio::test]
async fn the_pretty_log_has_no_metrics_lines_and_rounded_latencies() {
    let db = TestDb::new().await;
    let (mut proc, base) = testkit::process::serve(
        env!("CARGO_BIN_EXE_local"),
        "local-pretty",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("OFFLINE_CHUNK_DELAY_MS", "1"),
            ("LOG_FORMAT", "pretty"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let http = testkit::http_client();
    let resp = http
        .post(format!("{base}/stream"))
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sse::read(resp, None).await.last().unwrap().name, "done");
    let _ = http.get(format!("{base}/history")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proc.stop();
    // Without the terminal colours the pretty format adds.
    let out = proc
        .output()
        .split('\u{1b}')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once('m').map_or("", |(_, rest)| rest)
            }
        })
        .collect::<String>();
    assert!(!out.contains("CloudWatchMetrics"), "{out}");
    let latencies: Vec<&str> = out
        .split("latency_ms=")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(latencies.len() >= 2, "{out}");
    for l in latencies {
        let decimals = l.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 2, "{l} in {out}");
    }
}
