#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAPI document: the committed `openapi.json` is what the code generates, the local
//! server serves it, and it describes what the service really sends — every field of every
//! answer, error body and stream event is in the document, and nothing the document requires is
//! missing.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use testkit::TestDb;
use testkit::call::{call, get};
use tower::ServiceExt;

fn doc() -> Value {
    serde_json::from_str(&local::openapi::document()).unwrap()
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = testkit::process::workspace_root().join("openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == local::openapi::document(),
        "{} differs from the code's OpenAPI document: run `make openapi` and commit it",
        path.display()
    );
}

#[test]
fn every_route_is_an_operation() {
    let doc = doc();
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/",
            "/export",
            "/health",
            "/history",
            "/history/{id}",
            "/playground/{file}",
            "/search",
            "/stream",
            "/stream/{id}",
            "/stream/{id}/cancel",
            "/threads",
            "/threads/{id}",
            "/usage",
            "/v1/chat/completions",
            "/v1/models",
            "/v1/models/{model}",
            "/v1/responses",
            "/v1/responses/{id}",
            "/v1/responses/{id}/cancel",
            "/v1/responses/{id}/input_items",
        ])
    );
    assert_eq!(
        doc["paths"]["/health"]["get"]["security"],
        serde_json::json!([{}])
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
}

/// The property names of a schema, through `$ref` and `allOf`; and the required ones.
fn fields(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return fields(doc, &doc["components"]["schemas"][name]);
    }
    let mut all = BTreeSet::new();
    let mut required = BTreeSet::new();
    if let Some(parts) = schema["allOf"].as_array() {
        for p in parts {
            let (a, r) = fields(doc, p);
            all.extend(a);
            required.extend(r);
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        all.extend(props.keys().cloned());
    }
    if let Some(req) = schema["required"].as_array() {
        required.extend(req.iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    (all, required)
}

/// Asserts that `value` has exactly the fields the schema names, and every required one.
fn conforms(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let (all, required) = fields(doc, schema);
    let keys: BTreeSet<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, all, "{what}: fields differ from the document");
    assert!(required.is_subset(&keys), "{what}: required {required:?}");
}

fn schema(doc: &Value, name: &str) -> Value {
    doc["components"]["schemas"][name].clone()
}

fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> Value {
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"];
    let (_, media) = content
        .as_object()
        .unwrap_or_else(|| panic!("no {status} for {method} {path}"))
        .iter()
        .next()
        .unwrap();
    media["schema"].clone()
}

async fn app(db: &TestDb) -> Router {
    let settings = db.settings_with(&[("AUTH", "off"), ("OFFLINE_CHUNK_DELAY_MS", "0")]);
    let store = common::store::from_settings(&settings).unwrap();
    local::app(&settings, Arc::clone(&store)).unwrap()
}

#[tokio::test]
async fn the_document_describes_what_the_service_sends() {
    let db = TestDb::new().await;
    let app = app(&db).await;
    let doc = doc();

    // Served as committed.
    let (status, served) = get(&app, "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, doc);

    // The stream: every event is one of the documented ones, its data exactly as documented.
    let request = Request::builder()
        .method("POST")
        .uri("/stream")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"prompt":"describe the zebra"}"#))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let variants = doc["components"]["schemas"]["StreamEvent"]["oneOf"]
        .as_array()
        .unwrap()
        .clone();
    let mut seen = Vec::new();
    for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
        let name = frame
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("no event name in {frame:?}"));
        let data: Value = serde_json::from_str(
            frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        let variant = variants
            .iter()
            .find(|v| v["properties"]["event"]["enum"][0] == name)
            .unwrap_or_else(|| panic!("event {name} is not in the document"));
        // SSE data is a string; the document says it holds JSON and which object.
        let data_schema = &variant["properties"]["data"];
        assert_eq!(data_schema["type"], "string", "{name}");
        assert_eq!(
            data_schema["contentMediaType"], "application/json",
            "{name}"
        );
        conforms(&doc, &data_schema["contentSchema"], &data, name);
        // The SSE fields the event has are the ones the document names.
        let mut sse_fields: BTreeSet<String> = frame
            .lines()
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
            .collect();
        sse_fields.retain(|k| !k.is_empty());
        let documented: BTreeSet<String> = variant["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(sse_fields, documented, "{name}: {frame:?}");
        if name == "delta" {
            let id = frame.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
            assert!(id.parse::<u64>().is_ok(), "{id}");
        }
        seen.push(name.to_owned());
    }
    assert_eq!(seen.first().map(String::as_str), Some("start"));
    assert_eq!(seen.last().map(String::as_str), Some("done"));

    // A re-attached stream sends the same events.
    let stream_id = {
        let (_, page) = get(&app, "/history?limit=1").await;
        page["items"][0]["id"].as_str().unwrap().to_owned()
    };
    let request = Request::builder()
        .uri(format!("/stream/{stream_id}?after=3"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let names: Vec<&str> = text
        .split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("event: ")))
        .collect();
    assert_eq!(names, ["start", "delta", "done"]);
    let (status, body) = call(&app, "POST", &format!("/stream/{stream_id}/cancel"), None).await;
    assert_eq!(status.as_u16(), 409);
    conforms(
        &doc,
        &response_schema(&doc, "/stream/{id}/cancel", "post", 409),
        &body,
        "cancel of an ended turn",
    );

    // The OpenAI-compatible API's errors take OpenAI's shape.
    let (status, body) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(r#"{"model":"m","messages":[]}"#),
    )
    .await;
    assert_eq!(status.as_u16(), 400);
    conforms(
        &doc,
        &response_schema(&doc, "/v1/chat/completions", "post", 400),
        &body,
        "an OpenAI error",
    );
    conforms(
        &doc,
        &schema(&doc, "OpenAiErrorDetail"),
        &body["error"],
        "its detail",
    );

    // Pages, one conversation, search hits.
    let (status, page) = get(&app, "/history?limit=5").await;
    assert_eq!(status, 200);
    conforms(
        &doc,
        &response_schema(&doc, "/history", "get", 200),
        &page,
        "history page",
    );
    let item = &page["items"][0];
    conforms(&doc, &schema(&doc, "Conversation"), item, "conversation");
    let id = item["id"].as_str().unwrap();
    let (_, one) = get(&app, &format!("/history/{id}")).await;
    conforms(
        &doc,
        &response_schema(&doc, "/history/{id}", "get", 200),
        &one,
        "get",
    );
    let (_, hits) = get(&app, "/search?query=zebra").await;
    conforms(
        &doc,
        &response_schema(&doc, "/search", "get", 200),
        &hits,
        "search page",
    );
    conforms(
        &doc,
        &schema(&doc, "SearchHit"),
        &hits["items"][0],
        "search hit",
    );
    // Threads: the page, one thread with its turns.
    let (status, threads) = get(&app, "/threads?limit=5").await;
    assert_eq!(status, 200);
    conforms(
        &doc,
        &response_schema(&doc, "/threads", "get", 200),
        &threads,
        "threads page",
    );
    conforms(
        &doc,
        &schema(&doc, "Thread"),
        &threads["items"][0],
        "thread",
    );
    let thread_id = threads["items"][0]["id"].as_str().unwrap();
    let (status, thread) = get(&app, &format!("/threads/{thread_id}")).await;
    assert_eq!(status, 200);
    conforms(
        &doc,
        &response_schema(&doc, "/threads/{id}", "get", 200),
        &thread,
        "thread with turns",
    );
    conforms(
        &doc,
        &schema(&doc, "Conversation"),
        &thread["items"][0],
        "turn",
    );

    let (_, health) = get(&app, "/health").await;
    conforms(
        &doc,
        &response_schema(&doc, "/health", "get", 200),
        &health,
        "health",
    );

    // Every documented error status, as the service answers it.
    let errors = [
        ("GET", "/history?limit=0", None, 422, "/history", "get"),
        ("GET", "/history/nope", None, 422, "/history/{id}", "get"),
        (
            "GET",
            "/history/0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d",
            None,
            404,
            "/history/{id}",
            "get",
        ),
        ("GET", "/search?query=%20", None, 422, "/search", "get"),
        ("POST", "/stream", Some("{not json"), 422, "/stream", "post"),
        (
            "POST",
            "/stream",
            Some(r#"{"prompt":"x","previous_id":"0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d"}"#),
            404,
            "/stream",
            "post",
        ),
        ("GET", "/threads?limit=0", None, 422, "/threads", "get"),
        (
            "GET",
            "/threads/0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d",
            None,
            404,
            "/threads/{id}",
            "get",
        ),
        (
            "DELETE",
            "/threads/nope",
            None,
            422,
            "/threads/{id}",
            "delete",
        ),
    ];
    for (method, uri, body, status, path, op) in errors {
        let (got, value) = call(&app, method, uri, body).await;
        assert_eq!(got.as_u16(), status, "{method} {uri}: {value}");
        conforms(
            &doc,
            &response_schema(&doc, path, op, status),
            &value,
            &format!("{method} {uri}"),
        );
        conforms(&doc, &schema(&doc, "ErrorDetail"), &value["error"], uri);
    }
}
