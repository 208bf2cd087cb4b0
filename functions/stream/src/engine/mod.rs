//! The protocol-free engine every wire protocol shares: a turn's request becomes a live turn
//! (its log of events, which any number of readers follow), generated and saved by [`run`]
//! whatever happens, continued along its thread ([`context`]), re-attached to from any process
//! ([`turn`] in this one, the database in another). A protocol module turns its request into a
//! [`context::Context`] and a provider request, calls [`begin`], and writes the turn's events in
//! its own wire format.

pub mod context;
pub mod events;
pub mod run;
pub mod spend;
pub mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use common::guard::{Guardrails, Redactor};
use common::provider::Provider;
use common::{ApiError, Conversation, Settings};
use events::Start;
use turn::{Turns, View};

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
    /// The price table (`LLM_PRICES` over the shipped prices).
    pub prices: Arc<common::spend::Prices>,
    /// When a limited key's reservation counts as its process's death.
    pub spend: SpendTimes,
    /// In Lambda: how a background response's generation is handed to another invocation
    /// of this function (see [`crate::responses::background`]).
    pub self_invoke: Option<Arc<crate::responses::background::Invoker>>,
}

/// When a reservation is settled as dead: after `stale` without a heartbeat of its turn (five
/// checkpoint intervals), and after `lease` whatever its turn shows (the longest a turn may
/// run, and then be saved).
#[derive(Debug, Clone, Copy)]
pub struct SpendTimes {
    pub stale: Duration,
    pub lease: Duration,
}

impl StreamState {
    /// The provider, limits and guardrails the settings name, over `store`.
    pub fn from_settings(
        settings: &Settings,
        store: Arc<dyn StreamStore>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let provider = common::provider::from_settings(&settings.provider)?;
        // With routes, their names are the models; else `LLM_MODELS`, when set.
        let models = provider
            .models()
            .or_else(|| settings.provider.models.clone());
        Ok(Self {
            store,
            provider,
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
            models,
            prices: Arc::new(settings.provider.prices.clone()),
            spend: SpendTimes {
                stale: common::store::heartbeat_stale(settings),
                lease: common::store::stale_after(settings),
            },
            self_invoke: settings
                .stream
                .self_invoke
                .as_ref()
                .map(|s| Arc::new(crate::responses::background::Invoker::new(s))),
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

/// What a handler keeps of its request once the body is read: the connection (to close it when
/// the client lags), whether it came through the Lambda runtime, and the Lambda invocation's
/// deadline.
pub struct RequestParts {
    pub conn: Option<common::http::ConnHandle>,
    pub in_lambda: bool,
    pub lambda_deadline: Option<std::time::SystemTime>,
}

impl RequestParts {
    pub fn of(request: &Request) -> Self {
        Self {
            conn: request
                .extensions()
                .get::<axum::extract::ConnectInfo<common::http::ConnHandle>>()
                .map(|c| c.0.clone()),
            in_lambda: common::http::in_lambda(request.extensions()),
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
        held: None,
        status_rule: run::StatusRule::Immediate,
        turn,
        client,
        budget: run::Budget::new(state.limits.total_timeout, started, parts.lambda_deadline),
        conversation,
        started,
        request_id,
        route,
    }
}

/// Puts a new turn in its thread: after its previous turn, under its instructions.
pub fn place(conversation: &mut Conversation, context: &context::Context) {
    if let Some(thread_id) = context.thread_id {
        conversation.thread_id = thread_id;
    }
    conversation.previous_id = context.previous_id;
    conversation.system = context.system.clone();
    conversation.context_turns = i32::try_from(context.turns).ok();
}

/// Records a refused prompt (status `blocked`, with its flag, in its thread) and answers 422
/// `guardrail_blocked`. The provider is never called.
pub async fn blocked(
    state: &StreamState,
    mut c: Conversation,
    flag: common::guard::Flag,
) -> ApiError {
    c.model = String::new();
    if let Some(r) = &state.redactor {
        let n = r.redact_request(&mut c);
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
