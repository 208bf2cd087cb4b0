//! `POST /stream`: validates the prompt, then streams the provider's answer as server-sent
//! events while the conversation is saved beside it (see [`run`]).

mod context;
pub mod events;
pub mod openai;
pub mod post_stream;
mod request;
pub mod resume;
mod run;
mod sse;
pub mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{get, post};
use common::auth::Auth;
use common::guard::{Guardrails, Redactor};
use common::http::{health_router, protect, with_fallbacks};
use common::provider::Provider;
use common::store::HealthCheck;
use common::{ApiError, Conversation, Settings};
use events::Start;
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
    pub max_context_chars: usize,
    pub resume_poll: Duration,
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
            max_context_chars: s.stream.max_context_chars,
            resume_poll: s.stream.resume_poll,
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
    /// `LLM_MODELS`: the models `/stream` and `/v1/chat/completions` take (any, when unset).
    pub models: Option<Vec<String>>,
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
            models: settings.provider.models.clone(),
        })
    }

    /// The model a request gets: the one it names, which `LLM_MODELS` must list when set (any
    /// model passes through when it is unset), or the provider's default model.
    pub fn model(&self, requested: Option<&str>) -> Result<String, ApiError> {
        let Some(requested) = requested else {
            return Ok(self.provider.default_model().to_owned());
        };
        match &self.models {
            Some(models) if !models.iter().any(|m| m == requested) => {
                Err(ApiError::ModelNotFound(requested.to_owned()))
            }
            _ => Ok(requested.to_owned()),
        }
    }

    /// On shutdown: lets running turns finish within `SHUTDOWN_GRACE_MS`, then stops the rest
    /// and waits for them to be saved (error `shutdown`). Returns how many were stopped.
    pub async fn drain(&self) -> usize {
        self.turns
            .drain(self.limits.shutdown_grace, self.limits.save_budget)
            .await
    }
}

pub use post_stream::stream;

/// The stream function's routes alone, for merging into the local server.
pub fn routes(state: StreamState) -> Router {
    Router::new()
        .route("/stream", post(stream))
        .route("/stream/{id}", get(resume::resume))
        .route("/stream/{id}/cancel", post(resume::cancel))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{model}", get(openai::one_model))
        .with_state(state)
}

/// The function's whole router: `/stream` behind the key check, and `/health`.
pub fn router(state: StreamState, health: Arc<dyn HealthCheck>, auth: Auth) -> Router {
    with_fallbacks(protect(routes(state), auth).merge(health_router(health)))
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
pub(crate) fn begin(
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
pub(crate) fn sse_response(state: &StreamState, run: &run::TurnRun, view: View) -> Response {
    let body = sse::body(
        &run.turn,
        run.client.clone(),
        view,
        state.limits.keepalive_interval,
    );
    sse::response(run.turn.id, body)
}
