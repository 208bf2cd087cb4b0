//! Logging and metrics: JSON lines on stdout (what CloudWatch wants), level from `RUST_LOG`; one
//! log line per request; CloudWatch Embedded Metric Format lines for streams.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;

/// The id of one request: the Lambda request id, or a new UUIDv7 locally. Sent back as
/// `X-Request-Id` and written on the request's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// On a response whose log line the handler writes itself when its body ends (a stream: its
/// line carries time to first byte, chunks and tokens).
#[derive(Debug, Clone, Copy)]
pub struct LogsItself;

/// The error code of an error response, for the log line.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Middleware: gives the request an id and writes one JSON line per request (`"message":
/// "request"`) with its route, status, latency, response bytes and error code.
pub async fn request_log(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .extensions()
        .get::<lambda_http::Context>()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if response.extensions().get::<LogsItself>().is_none() {
        let bytes = axum::body::HttpBody::size_hint(response.body()).exact();
        let error_code = response.extensions().get::<ErrorCode>().map(|c| c.0);
        tracing::info!(
            target: "request",
            request_id = %id,
            method = %method,
            route = %route,
            status = response.status().as_u16(),
            latency_ms = millis(started.elapsed()),
            response_bytes = bytes,
            error_code,
            "request"
        );
    }
    response
}

/// A duration in milliseconds for a log line, to the hundredth (10 µs: what a log reader can use).
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// One CloudWatch Embedded Metric Format line on stdout: CloudWatch turns it into metrics in
/// `METRICS_NAMESPACE` (default `LlmStream`) with the dimension `Function`. `METRICS=off`
/// writes none (benchmarks print tables on stdout), and so does `LOG_FORMAT=pretty` (a person
/// reading the log at a terminal) unless `METRICS=on`.
pub fn emit_metrics(function: &str, metrics: &[(&str, f64, &str)]) {
    // Read once per process, not per stream.
    static NAMESPACE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let namespace = NAMESPACE.get_or_init(|| {
        let metrics = std::env::var("METRICS").unwrap_or_default();
        let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "pretty");
        if metrics == "off" || (pretty && metrics != "on") {
            return None;
        }
        Some(std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "LlmStream".to_owned()))
    });
    let Some(namespace) = namespace else { return };
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Function"]],
                "Metrics": definitions,
            }],
        },
        "Function": function,
    });
    for (name, value, _) in metrics {
        line[*name] = serde_json::json!(value);
    }
    println!("{line}");
}

/// Installs the global subscriber once. JSON by default; `LOG_FORMAT=pretty` for humans.
pub fn init() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `cargo lambda watch` sets AWS_LAMBDA_MAX_CONCURRENCY=1, and the runtime warns at every
    // start that it runs sequentially, which is what 1 means.
    if std::env::var("AWS_LAMBDA_MAX_CONCURRENCY").is_ok_and(|v| v.trim() == "1")
        && let Ok(quiet) = "lambda_runtime::runtime=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}
