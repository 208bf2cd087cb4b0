//! A local Lambda Runtime API (the interface a function binary polls for events): it hands
//! out the given events one by one and records what the function answers. Used to run a
//! function binary as Lambda runs it, and to time its cold start (process start to first poll).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::sync::mpsc;

/// What a function sent back for one invocation.
#[derive(Debug)]
pub enum Outcome {
    Response { request_id: String, body: Bytes },
    Error { request_id: String, body: Bytes },
    InitError(Bytes),
}

/// A running Runtime API; stops when dropped.
pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    first_poll: Arc<Mutex<Option<Instant>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Inner {
    events: Mutex<VecDeque<(String, String)>>,
    /// How long each invocation has (its deadline is set when it is handed out).
    timeout: std::time::Duration,
    outcomes: mpsc::UnboundedSender<Outcome>,
    first_poll: Arc<Mutex<Option<Instant>>>,
}

impl RuntimeApi {
    /// Serves `events` (JSON payloads) in order; once they are out, `next` waits forever.
    /// Each invocation has a minute.
    pub async fn start(events: Vec<String>) -> Self {
        Self::with_timeout(events, std::time::Duration::from_secs(60)).await
    }

    /// [`RuntimeApi::start`], each invocation's deadline `timeout` after it is handed out.
    pub async fn with_timeout(events: Vec<String>, timeout: std::time::Duration) -> Self {
        let (tx, outcomes) = mpsc::unbounded_channel();
        let first_poll = Arc::new(Mutex::new(None));
        let inner = Arc::new(Inner {
            events: Mutex::new(
                events
                    .into_iter()
                    .map(|e| (uuid::Uuid::now_v7().to_string(), e))
                    .collect(),
            ),
            outcomes: tx,
            first_poll: first_poll.clone(),
            timeout,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the Runtime API");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            outcomes,
            first_poll,
            server,
        }
    }

    /// When the function first asked for an event.
    pub fn first_poll(&self) -> Option<Instant> {
        *self.first_poll.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next thing the function sent back.
    pub async fn outcome(&mut self) -> Option<Outcome> {
        self.outcomes.recv().await
    }

    /// The environment Lambda gives a function, pointing at this Runtime API.
    pub fn env(&self, function: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.address.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", function),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/local"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// A function URL event (payload format 2.0) for `method path` with a JSON `body`.
pub fn url_event(method: &str, path: &str, body: &str) -> String {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "fn.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "fn",
            "domainName": "fn.lambda-url.us-east-1.on.aws",
            "domainPrefix": "fn",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

impl RuntimeApi {
    /// Starts the function binary `bin` against this Runtime API with `env` (and without the
    /// caller's `DATABASE_URL`).
    pub fn function(&self, bin: &str, name: &str, env: &[(&str, &str)]) -> crate::process::Proc {
        let mut cmd = std::process::Command::new(bin);
        cmd.env_remove("DATABASE_URL")
            .env_remove("AWS_ENDPOINT_URL");
        for (k, v) in self.env(name) {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        crate::process::Proc::spawn(cmd, name)
    }

    /// The next answer, within `limit`: how long it took and its body (a streamed body whole).
    pub async fn answer(
        &mut self,
        proc: &crate::process::Proc,
        limit: std::time::Duration,
    ) -> (std::time::Duration, String) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, self.outcome())
            .await
            .unwrap_or_else(|_| panic!("no answer within {limit:?}; output: {}", proc.output()))
            .expect("the Runtime API is running");
        match outcome {
            Outcome::Response { body, .. } => (
                started.elapsed(),
                String::from_utf8_lossy(&body).into_owned(),
            ),
            other => panic!("{other:?}; output: {}", proc.output()),
        }
    }
}

async fn next(State(s): State<Arc<Inner>>) -> Response {
    {
        let mut first = s.first_poll.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(Instant::now);
    }
    let event = s
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    let Some((id, body)) = event else {
        // No more events: a function waits here, as it would in a warm, idle environment.
        std::future::pending::<()>().await;
        return StatusCode::NO_CONTENT.into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d + s.timeout).as_millis())
        .unwrap_or_default();
    (
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:local".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        body,
    )
        .into_response()
}

async fn response(State(s): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let _ = s.outcomes.send(Outcome::Response {
        request_id: id,
        body,
    });
    StatusCode::ACCEPTED
}

async fn error(State(s): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let _ = s.outcomes.send(Outcome::Error {
        request_id: id,
        body,
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(s): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    let _ = s.outcomes.send(Outcome::InitError(body));
    StatusCode::ACCEPTED
}
