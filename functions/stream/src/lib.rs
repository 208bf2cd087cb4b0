//! `POST /stream`: validates the prompt, then streams the provider's answer as server-sent
//! events while the conversation is saved beside it (see [`run`]).

pub mod events;
mod request;
mod run;
mod sse;
pub mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use common::auth::{Auth, Owner};
use common::error::ErrorBody;
use common::guard::{Guardrails, Redactor};
use common::http::{health_router, protect, with_fallbacks};
use common::provider::Provider;
use common::store::HealthCheck;
use common::telemetry::{LogsItself, RequestId};
use common::{ApiError, Conversation, Settings};
use events::{Start, StreamEvent};
use turn::{Turns, View};

pub use request::StreamRequest;

/// What the stream needs of a store: write the start, checkpoints and the end.
pub use common::store::ConversationWrite as StreamStore;

/// The limits one stream runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_prompt_chars: usize,
    pub max_body_bytes: usize,
    pub checkpoint_interval: Duration,
    pub keepalive_interval: Duration,
    pub first_chunk_timeout: Duration,
    pub idle_timeout: Duration,
    pub total_timeout: Duration,
    pub log_content: bool,
    pub grounding_check: bool,
    pub max_client_lag_bytes: usize,
    pub save_budget: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            max_prompt_chars: s.stream.max_prompt_chars,
            max_body_bytes: s.stream.max_body_bytes,
            checkpoint_interval: s.stream.checkpoint_interval,
            keepalive_interval: s.stream.keepalive_interval,
            first_chunk_timeout: s.provider.first_chunk_timeout,
            idle_timeout: s.provider.idle_timeout,
            total_timeout: s.provider.total_timeout,
            log_content: s.stream.log_content,
            grounding_check: s.stream.grounding_check,
            max_client_lag_bytes: s.stream.max_client_lag_bytes,
            save_budget: s.db.save_budget,
            shutdown_grace: s.stream.shutdown_grace,
        }
    }
}

/// Shared state of the stream function.
#[derive(Clone)]
pub struct StreamState {
    pub store: Arc<dyn StreamStore>,
    pub provider: Arc<dyn Provider>,
    pub limits: Limits,
    pub guard: Arc<Guardrails>,
    /// Set when `PII_REDACTION=true`.
    pub redactor: Option<Arc<Redactor>>,
    /// The turns this process is generating.
    pub turns: Arc<Turns>,
}

impl StreamState {
    /// The provider, limits and guardrails the settings name, over `store`.
    pub fn from_settings(
        settings: &Settings,
        store: Arc<dyn StreamStore>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            store,
            provider: common::provider::from_settings(&settings.provider)?,
            limits: Limits::from_settings(settings),
            guard: Arc::new(Guardrails::new(
                &settings.stream.deny_patterns,
                settings.stream.max_response_chars,
            )?),
            redactor: settings
                .stream
                .pii_redaction
                .then(|| Arc::new(Redactor::new())),
            turns: Arc::new(Turns::default()),
        })
    }

    /// On shutdown: lets running turns finish within `SHUTDOWN_GRACE_MS`, then stops the rest
    /// and waits for them to be saved (error `shutdown`). Returns how many were stopped.
    pub async fn drain(&self) -> usize {
        self.turns
            .drain(self.limits.shutdown_grace, self.limits.save_budget)
            .await
    }
}

/// Records a refused prompt (status `blocked`, with its flag) and answers 422
/// `guardrail_blocked`. The provider is never called.
async fn blocked(
    state: &StreamState,
    owner: &Owner,
    prompt: &str,
    flag: common::guard::Flag,
) -> ApiError {
    let mut c = Conversation::start(&owner.0, prompt.to_owned(), state.provider.name(), "");
    if let Some(r) = &state.redactor {
        let (clean, n) = r.redact(&c.prompt);
        c.prompt = clean;
        c.flags.extend(n.flag());
    }
    c.status = common::Status::Blocked;
    c.error = Some("guardrail_blocked".into());
    c.flags.push(flag);
    if let Err(e) = state.store.finish(&c).await {
        tracing::error!(id = %c.id, error = %common::error::error_chain(&e),
            "could not record a blocked prompt");
    }
    tracing::warn!(id = %c.id, "prompt blocked by a guardrail");
    ApiError::Validation {
        code: "guardrail_blocked",
        message: "the prompt was refused by a guardrail".into(),
    }
}

/// The `/stream` route alone, for merging into the local server.
pub fn routes(state: StreamState) -> Router {
    Router::new()
        .route("/stream", post(stream))
        .with_state(state)
}

/// The function's whole router: `/stream` behind the key check, and `/health`.
pub fn router(state: StreamState, health: Arc<dyn HealthCheck>, auth: Auth) -> Router {
    with_fallbacks(protect(routes(state), auth).merge(health_router(health)))
}

/// Streams the answer to a prompt as server-sent events and saves the conversation, also when
/// the provider fails midway or the client goes away.
#[utoipa::path(post, path = "/stream", tag = "stream",
    request_body(content = StreamRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Server-sent events: `start`, then `delta`s, then `done` or \
            `error`. Each event's `event:` field is the `event` below and its `data:` field the \
            `data` object as one line of JSON.",
            content_type = "text/event-stream", body = StreamEvent,
            headers(("x-conversation-id" = uuid::Uuid, description = "The conversation's id"))),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "The body is larger than MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Invalid JSON (`invalid_json`), a bad field \
            (`invalid_request`, `prompt_too_long`), or a prompt refused by a guardrail \
            (`guardrail_blocked`, recorded as `blocked`)", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Result<Response, ApiError> {
    let request_id = request_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), |r| r.0.0);
    let started = Instant::now();
    let request_parts = RequestParts::of(&request);
    let body = request::read_body(request, state.limits.max_body_bytes).await?;
    let req = StreamRequest::parse(&body, state.limits.max_prompt_chars)?;
    if let Some(flag) = state.guard.check_prompt(&req.prompt) {
        return Err(blocked(&state, &owner, &req.prompt, flag).await);
    }
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| state.provider.default_model().to_owned());
    let conversation =
        Conversation::start(&owner.0, req.prompt.clone(), state.provider.name(), &model);
    let run = begin(
        &state,
        conversation,
        &request_parts,
        started,
        request_id,
        "/stream",
    );
    let response = sse_response(&state, &run, View::Raw);
    tokio::spawn(run::run(state, run, req.into_completion(model)));
    Ok(response)
}

/// What a handler keeps of its request once the body is read: the connection (to close it when
/// the client lags) and the Lambda invocation's deadline.
pub struct RequestParts {
    conn: Option<common::http::ConnHandle>,
    lambda_deadline: Option<std::time::SystemTime>,
}

impl RequestParts {
    pub fn of(request: &Request) -> Self {
        Self {
            conn: request
                .extensions()
                .get::<axum::extract::ConnectInfo<common::http::ConnHandle>>()
                .map(|c| c.0.clone()),
            lambda_deadline: common::http::lambda_deadline(request.extensions()),
        }
    }
}

/// Registers the live turn of `conversation` (its `start` event first) and the reader of the
/// client that asked.
fn begin(
    state: &StreamState,
    conversation: Conversation,
    parts: &RequestParts,
    started: Instant,
    request_id: String,
    route: &'static str,
) -> run::TurnRun {
    let start = Start {
        id: conversation.id,
        created_at: conversation
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    let turn = state.turns.begin(
        conversation.id,
        &conversation.owner,
        start,
        state.limits.max_client_lag_bytes,
    );
    let client = turn.reader(View::Raw, parts.conn.clone());
    run::TurnRun {
        turn,
        client,
        budget: run::Budget::new(state.limits.total_timeout, started, parts.lambda_deadline),
        conversation,
        started,
        request_id,
        route,
    }
}

/// The `text/event-stream` response of a reader of `run`'s turn.
fn sse_response(state: &StreamState, run: &run::TurnRun, view: View) -> Response {
    let body = sse::body(
        &run.turn,
        run.client.clone(),
        view,
        state.limits.keepalive_interval,
    );
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&run.turn.id.to_string()) {
        headers.insert("x-conversation-id", v);
    }
    response.extensions_mut().insert(LogsItself);
    response
}
