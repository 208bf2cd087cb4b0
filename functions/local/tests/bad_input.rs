#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bad input, generated (proptest): every endpoint of the whole router gets wrong types, huge and
//! empty values, invalid UTF-8 and JSON, odd headers, methods and paths. For every request:
//! no 5xx; every error carries the JSON error body; a 200 stream ends with `done` or `error`.
//! Afterwards: every seeded row is exactly as it was, and the only new rows are one per
//! accepted stream (or refused prompt, recorded as `blocked`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use testkit::TestDb;
use tower::ServiceExt;

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<Vec<u8>>,
    authorization: Option<Vec<u8>>,
    last_event_id: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Text values that go wrong in typical ways: empty, blank, huge, negative, out of range,
/// non-ASCII, control characters, operators.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".into()),
        Just("0".into()),
        Just("-1".into()),
        Just("101".into()),
        Just("1e3".into()),
        Just("9223372036854775808".into()),
        Just("-9223372036854775809".into()),
        Just("NaN".into()),
        Just("null".into()),
        Just("true".into()),
        Just("\"".into()),
        Just("'; DROP TABLE conversations; --".into()),
        Just("\u{0}".into()),
        Just("2025-02-30".into()),
        Just("2025-01-01T00:00:00+25:00".into()),
        // Dates no store can take: before year 1, after 9999.
        Just("-5000-01-01".into()),
        Just("0000-01-01".into()),
        Just("+10000-01-01T00:00:00Z".into()),
        Just("9999-12-31T23:59:59-23:59".into()),
        Just("-\"\" or or -".into()),
        Just("<mark>".into()),
        Just("x".repeat(10_000)),
        Just("🙂".repeat(600)),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "\\PC{0,40}",
        "[ -~]{0,40}",
    ]
}

/// Percent-encodes every byte outside unreserved ASCII (so invalid UTF-8 can reach the server).
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (*b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A cursor as `/history` makes them (base64url of `micros.id`), with any number of
/// microseconds: most of them far outside the years a store can take.
fn cursor_token() -> impl Strategy<Value = String> {
    use base64::Engine;
    let micros = prop_oneof![
        any::<i64>(),
        Just(-300_000_000_000_000_000),
        Just(-62_135_596_800_000_001),
        Just(253_402_300_800_000_000),
        Just(i64::MIN),
        Just(i64::MAX),
    ];
    micros.prop_map(|m| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{m}.0193a4c27f1e7c3a9b2d5e8f1a2b3c4d"))
    })
}

/// Dates and times no store can take (before year 1, after 9999), percent-encoded.
fn out_of_range_time() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-5000-01-01"),
        Just("0000-01-01"),
        Just("0000-12-31T23:59:59Z"),
        Just("+10000-01-01T00:00:00Z"),
        Just("-300000-01-01"),
    ]
    .prop_map(|s| encode(s.as_bytes()))
}

/// A read with its own well-formed parameters and one bad one: a cursor or a date out of any
/// store's range, or any other value.
fn read_case() -> impl Strategy<Value = Case> {
    let bad = prop_oneof![
        2 => cursor_token().prop_map(|v| ("cursor".to_owned(), v)),
        2 => (prop_oneof![Just("from"), Just("to")], out_of_range_time())
            .prop_map(|(n, v)| (n.to_owned(), v)),
        1 => (prop_oneof![Just("limit"), Just("offset"), Just("cursor")], query_value())
            .prop_map(|(n, v)| (n.to_owned(), v)),
    ];
    (
        any_case().boxed(),
        prop_oneof![Just("/history"), Just("/threads"), Just("/search")],
        bad.boxed(),
    )
        .prop_map(|(mut c, path, bad)| {
            c.method = Method::GET;
            c.path = path.into();
            c.query = vec![("query".into(), "rivers".into()), bad];
            c
        })
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => nasty_text().prop_map(|s| encode(s.as_bytes())),
        1 => cursor_token(),
        1 => prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| encode(&b)),
        1 => Just("%".into()),
        1 => Just("%ZZ".into()),
        1 => Just("%FF%FE".into()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("/stream".to_owned()),
        3 => Just("/history".to_owned()),
        3 => query_value().prop_map(|id| format!("/history/{id}")),
        3 => Just("/search".to_owned()),
        2 => Just("/threads".to_owned()),
        2 => Just("/v1/chat/completions".to_owned()),
        1 => Just("/v1/models".to_owned()),
        1 => query_value().prop_map(|m| format!("/v1/models/{m}")),
        2 => query_value().prop_map(|id| format!("/stream/{id}")),
        2 => query_value().prop_map(|id| format!("/stream/{id}/cancel")),
        1 => Just("/stream/0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d".to_owned()),
        2 => query_value().prop_map(|id| format!("/threads/{id}")),
        1 => Just("/threads/0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d".to_owned()),
        1 => Just("/health".to_owned()),
        1 => Just("/openapi.json".to_owned()),
        1 => Just("/".to_owned()),
        1 => Just("/playground/app.js".to_owned()),
        1 => query_value().prop_map(|f| format!("/playground/{f}")),
        1 => Just("//history".to_owned()),
        1 => Just("/history/".to_owned()),
        1 => Just("/history/a/b".to_owned()),
        1 => Just("/stream/../history".to_owned()),
        1 => Just(format!("/{}", "a".repeat(8_000))),
        1 => prop::collection::vec(any::<u8>(), 1..12).prop_map(|b| format!("/{}", encode(&b))),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        4 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::PATCH),
        1 => Just(Method::HEAD),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::from_bytes(b"BREW").unwrap()),
    ]
}

/// JSON values of every type, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        nasty_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("prompt"),
        Just("model"),
        Just("max_tokens"),
        Just("temperature"),
        Just("previous_id"),
        Just("system"),
        Just("extra"),
    ];
    prop_oneof![
        // Objects with the stream's fields, of any type.
        4 => prop::collection::vec((field, json_value()), 0..5).prop_map(|fields| {
            let map: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            serde_json::to_vec(&Value::Object(map)).unwrap()
        }),
        // A valid prompt with odd extras.
        2 => (nasty_text(), json_value()).prop_map(|(p, extra)| {
            serde_json::to_vec(&serde_json::json!({"prompt": format!("q {p}"), "extra": extra}))
                .unwrap()
        }),
        // A valid prompt continuing an id that is not the caller's turn, or with odd system
        // instructions.
        1 => (nasty_text(), prop_oneof![
            Just(Value::String("0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d".into())),
            nasty_text().prop_map(Value::String),
            json_value(),
        ], json_value()).prop_map(|(p, previous, system)| {
            serde_json::to_vec(&serde_json::json!({
                "prompt": format!("q {p}"), "previous_id": previous, "system": system
            }))
            .unwrap()
        }),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => Just(Vec::new()),
        1 => Just(b"{\"prompt\":".to_vec()),
        1 => Just(b"{\"prompt\":\"\xff\xfe\"}".to_vec()),
        1 => Just(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes()),
        1 => Just(format!("{{\"prompt\":\"{}\"}}", "y".repeat(300_000)).into_bytes()),
        1 => Just(format!("{{\"prompt\":\"{}\"}}", "y".repeat(40_000)).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Chat Completions bodies: messages of every role and shape, and the fields around them.
fn chat_body() -> impl Strategy<Value = Vec<u8>> {
    let role = prop_oneof![
        Just(Value::from("user")),
        Just(Value::from("system")),
        Just(Value::from("developer")),
        Just(Value::from("assistant")),
        Just(Value::from("tool")),
        json_value(),
    ];
    let content = prop_oneof![
        nasty_text().prop_map(|t| Value::from(format!("q {t}"))),
        nasty_text().prop_map(|t| serde_json::json!([{"type": "text", "text": t}])),
        Just(serde_json::json!([{"type": "image_url", "image_url": {"url": "x"}}])),
        json_value(),
    ];
    let message = (role, content).prop_map(|(r, c)| serde_json::json!({"role": r, "content": c}));
    let field = prop_oneof![
        Just("stream"),
        Just("stream_options"),
        Just("max_tokens"),
        Just("max_completion_tokens"),
        Just("temperature"),
        Just("top_p"),
        Just("stop"),
        Just("n"),
        Just("tools"),
        Just("response_format"),
        Just("metadata"),
        Just("user"),
        Just("logprobs"),
    ];
    (
        prop_oneof![Just(Value::from("offline-echo")), json_value()],
        prop::collection::vec(message, 0..4),
        prop::collection::vec((field, json_value()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(model, mut messages, fields, stream)| {
            // Often a valid last user message, so that calls get through.
            if stream || messages.is_empty() {
                messages.push(serde_json::json!({"role": "user", "content": "hello there"}));
            }
            let mut body = serde_json::json!({"model": model, "messages": messages});
            if stream {
                body["stream"] = Value::Bool(true);
            }
            for (k, v) in fields {
                body[k] = v;
            }
            serde_json::to_vec(&body).unwrap()
        })
}

fn header_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(b"application/json".to_vec())),
        1 => Just(Some(b"text/plain".to_vec())),
        1 => Just(Some(b"application/json; charset=latin1".to_vec())),
        1 => Just(Some(b"Bearer ".to_vec())),
        1 => Just(Some(b"Bearer lsk_not_a_real_key".to_vec())),
        1 => Just(Some(b"Basic dXNlcjpwYXNz".to_vec())),
        1 => Just(Some(vec![b'B'; 10_000])),
        1 => Just(Some(b"Bearer \xff\xfe".to_vec())),
        1 => "[ -~]{0,30}".prop_map(|s| Some(s.into_bytes())),
    ]
}

fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(Some(b"Bearer lsk_not_a_real_key".to_vec())),
        3 => header_bytes(),
    ]
}

/// Most cases are anything; some are reads with one bad parameter, and some `POST /stream` and
/// `POST /v1/chat/completions` with a generated body of their own shape.
fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        6 => any_case().boxed(),
        1 => read_case().boxed(),
        2 => (any_case(), authorization(), body()).prop_map(|(mut c, authorization, body)| {
            c.method = Method::POST;
            c.path = "/stream".into();
            c.authorization = authorization;
            c.body = body;
            c
        }),
        2 => (any_case(), authorization(), chat_body()).prop_map(|(mut c, authorization, body)| {
            c.method = Method::POST;
            c.path = "/v1/chat/completions".into();
            c.authorization = authorization;
            c.body = body;
            c
        }),
    ]
}

fn any_case() -> impl Strategy<Value = Case> {
    (
        method(),
        path(),
        prop::collection::vec(
            (
                prop_oneof![
                    Just("limit".to_owned()),
                    Just("offset".to_owned()),
                    Just("cursor".to_owned()),
                    Just("query".to_owned()),
                    Just("from".to_owned()),
                    Just("to".to_owned()),
                    Just("after".to_owned()),
                    "[a-z]{1,8}",
                ],
                query_value(),
            ),
            0..4,
        ),
        header_bytes(),
        authorization(),
        prop_oneof![
            3 => Just(None),
            1 => query_value().prop_map(|v| Some(v.into_bytes())),
            1 => header_bytes(),
        ],
        body(),
    )
        .prop_map(
            |(method, path, query, content_type, authorization, last_event_id, body)| Case {
                method,
                path,
                query,
                content_type,
                authorization,
                last_event_id,
                body,
            },
        )
}

/// What the requests did that may add rows.
#[derive(Default)]
struct Tally {
    /// Accepted `/v1/chat/completions` calls.
    chats: AtomicUsize,
    streams: AtomicUsize,
    blocked: AtomicUsize,
    ok: AtomicUsize,
    refused: AtomicUsize,
}

async fn check(app: &Router, c: &Case, tally: &Tally) -> Result<(), String> {
    let mut uri = c.path.clone();
    if !c.query.is_empty() {
        let q: Vec<String> = c.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        uri = format!("{uri}?{}", q.join("&"));
    }
    let mut request = Request::builder().method(c.method.clone()).uri(&uri);
    if let Some(ct) = c
        .content_type
        .as_ref()
        .and_then(|b| HeaderValue::from_bytes(b).ok())
    {
        request = request.header("content-type", ct);
    }
    if let Some(a) = c
        .authorization
        .as_ref()
        .and_then(|b| HeaderValue::from_bytes(b).ok())
    {
        request = request.header("authorization", a);
    }
    if let Some(id) = c
        .last_event_id
        .as_ref()
        .and_then(|b| HeaderValue::from_bytes(b).ok())
    {
        request = request.header("last-event-id", id);
    }
    let Ok(request) = request.body(Body::from(c.body.clone())) else {
        return Ok(()); // not a request HTTP can carry (the generator made an invalid URI)
    };
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    if status.is_server_error() {
        return Err(format!("{status} for {} {uri}: {text}", c.method));
    }
    if status.is_success() {
        tally.ok.fetch_add(1, Ordering::SeqCst);
        if c.path == "/v1/chat/completions" {
            tally.chats.fetch_add(1, Ordering::SeqCst);
        }
    } else {
        tally.refused.fetch_add(1, Ordering::SeqCst);
    }
    if c.method == Method::HEAD {
        return Ok(());
    }
    if status.is_client_error() {
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| {
            format!(
                "{status} without a JSON body for {} {uri}: {text}",
                c.method
            )
        })?;
        let code = body["error"]["code"].as_str();
        if code.is_none() || !body["error"]["message"].is_string() {
            return Err(format!("{status} without the error body: {body}"));
        }
        // Under /v1, OpenAI's shape, and never a 422.
        if c.path.starts_with("/v1/") {
            if !body["error"]["type"].is_string() || body["error"].get("param").is_none() {
                return Err(format!(
                    "{status} under /v1 without OpenAI's error shape: {body}"
                ));
            }
            if status.as_u16() == 422 {
                return Err(format!("a 422 under /v1: {body}"));
            }
        }
        if !content_type.starts_with("application/json") {
            return Err(format!("{status} with content type {content_type:?}"));
        }
        if code == Some("guardrail_blocked") {
            tally.blocked.fetch_add(1, Ordering::SeqCst);
        }
        return Ok(());
    }
    if content_type.starts_with("text/event-stream") {
        tally.streams.fetch_add(1, Ordering::SeqCst);
        let frames: Vec<&str> = text
            .split("\n\n")
            .filter(|f| !f.trim().is_empty() && !f.starts_with(':'))
            .collect();
        let last = frames.last().copied().unwrap_or_default();
        let ended = if c.path.starts_with("/v1/") {
            last == "data: [DONE]" || last.starts_with("data: {\"error\"")
        } else {
            last.starts_with("event: done") || last.starts_with("event: error")
        };
        if !ended {
            return Err(format!("a stream did not end as it should: {text}"));
        }
    } else if c.path == "/" || c.path.starts_with("/playground/") {
        // The playground's page and files: never JSON, always under their policy.
        let page = ["text/html", "text/javascript", "text/css"];
        if !page.iter().any(|t| content_type.starts_with(t)) {
            return Err(format!("{} answered {content_type:?}", c.path));
        }
    } else {
        let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(format!("{status} with a body that is not JSON: {text}"));
        };
        if body["object"] == "chat.completion" {
            tally.streams.fetch_add(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

/// Every seeded row as text, in id order.
async fn snapshot(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT c::text FROM conversations c WHERE provider = 'offline' AND model = 'seed' \
             ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn run_cases(db: &TestDb, extra: &[(&str, &str)], cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut env = vec![("OFFLINE_CHUNK_DELAY_MS", "0")];
    env.extend_from_slice(extra);
    let settings = db.settings_with(&env);
    let app = {
        let _guard = rt.enter();
        let store = common::store::from_settings(&settings).unwrap();
        local::app(&settings, Arc::clone(&store)).unwrap()
    };
    let before = rt.block_on(snapshot(db));
    let rows_before = rt.block_on(db.count());
    assert_eq!(before.len(), 25);
    let tally = Tally::default();
    // A fixed seed: the same cases on every run, so a failure reproduces (BAD_INPUT_SEED, any
    // number, explores other cases).
    let seed: u64 = std::env::var("BAD_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let result = runner.run(&case(), |c| {
        rt.block_on(check(&app, &c, &tally))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generators reach both sides: accepted requests and streams, and refused ones.
    let (ok, refused, streams) = (
        tally.ok.load(Ordering::SeqCst),
        tally.refused.load(Ordering::SeqCst),
        tally.streams.load(Ordering::SeqCst),
    );
    assert!(
        ok > 10 && refused > 100 && streams > 2,
        "ok {ok}, refused {refused}, streams {streams}"
    );
    let chats = tally.chats.load(Ordering::SeqCst);
    assert!(chats > 0, "no generated chat completion was accepted");
    let after = rt.block_on(snapshot(db));
    assert_eq!(before, after, "a seeded row changed or went away");
    let added = rt.block_on(db.count()) - rows_before;
    let expected = tally.streams.load(Ordering::SeqCst) + tally.blocked.load(Ordering::SeqCst);
    assert_eq!(
        added, expected as i64,
        "one new row per accepted stream or refused prompt"
    );
}

fn seeded() -> TestDb {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        testkit::seed(&db, 25, 3).await;
        db
    })
}

#[test]
fn generated_bad_input_never_gets_a_5xx_or_touches_existing_rows() {
    let db = seeded();
    run_cases(&db, &[("AUTH", "off")], 600);
}

#[test]
fn generated_bad_input_with_auth_required_gets_401s_not_5xx() {
    let db = seeded();
    run_cases(
        &db,
        &[
            ("AUTH", "required"),
            ("AUTH_TOKEN", "lsk_not_a_real_key"),
            ("GUARDRAIL_DENY_PATTERNS", r#"["forbidden", "\\bDROP\\b"]"#),
        ],
        500,
    );
}
