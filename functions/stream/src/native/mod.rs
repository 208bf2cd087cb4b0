//! The native API: `POST /stream` validates the prompt, loads what it continues (with
//! `previous_id`), then streams the provider's answer as server-sent events while the turn is
//! saved beside it; `GET /stream/{id}` and `POST /stream/{id}/cancel` ([`resume`]) re-attach to
//! a turn and stop one from any process.

use std::time::Instant;

use axum::extract::{Extension, Request, State};
use axum::response::Response;
use common::auth::{CallerKey, Owner};
use common::error::ErrorBody;
use common::provider::CompletionRequest;
use common::telemetry::RequestId;
use common::{ApiError, Conversation};

pub mod request;
pub mod resume;
mod sse;

use crate::engine::events::StreamEvent;
use crate::engine::turn::View;
use crate::engine::{RequestParts, StreamState, begin, blocked, context, place, run, spend};
use request::StreamRequest;

/// Streams the answer to a prompt as server-sent events and saves the turn, also when the
/// provider fails midway or the client goes away.
#[utoipa::path(post, path = "/stream", tag = "stream",
    request_body(content = StreamRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Server-sent events: `start`, then `delta`s, then `done` or \
            `error`. Each event's `event:` field is the `event` below, its `data:` field the \
            `data` object as one line of JSON, and a delta's `id:` field its resume position.",
            content_type = "text/event-stream", body = StreamEvent,
            headers(("x-conversation-id" = uuid::Uuid, description = "The turn's id"))),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "`previous_id` names no turn of the caller's (`not_found`), \
            or `model` is not one `LLM_MODELS` lists (`model_not_found`)", body = ErrorBody),
        (status = 409, description = "The previous turn is still running, or ended without an \
            answer (`previous_not_usable`)", body = ErrorBody),
        (status = 413, description = "The body is larger than MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Invalid JSON (`invalid_json`), a bad field \
            (`invalid_request`, `prompt_too_long`), a prompt refused by a guardrail \
            (`guardrail_blocked`, recorded as `blocked`), or a model without a price for a key \
            with a budget in USD (`model_not_priced`)", body = ErrorBody),
        (status = 429, description = "A limit of the key refuses the request: `rate_limited` \
            (rpm, tpm, concurrency) or `budget_exceeded`; nothing is stored",
            body = ErrorBody, headers(("retry-after" = u32,
                description = "Seconds until the request may pass"))),
        (status = 503, description = "The database is unavailable (loading the previous turn)",
            body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    key: Option<Extension<CallerKey>>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Result<Response, ApiError> {
    let request_id = request_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), |r| r.0.0);
    let started = Instant::now();
    let parts = RequestParts::of(&request);
    let body = crate::body::read_body(request, state.limits.max_body_bytes).await?;
    let req = StreamRequest::parse(&body, state.limits.max_prompt_chars)?;
    let model = state.model(req.model.as_deref())?;
    let context = context::load(
        state.store.as_ref(),
        &owner.0,
        &req.prompt,
        req.system.as_deref(),
        req.previous_id,
        state.limits.max_context_chars,
    )
    .await?;
    let mut conversation =
        Conversation::start(&owner.0, req.prompt.clone(), state.provider.name(), &model);
    place(&mut conversation, &context);
    // Guardrails see the new prompt only.
    if let Some(flag) = state.guard.check_prompt(&req.prompt) {
        return Err(blocked(&state, conversation, flag).await);
    }
    let mut completion = CompletionRequest {
        tools: Vec::new(),
        tool_choice: None,
        attempts: Default::default(),
        messages: context.messages,
        model,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: None,
        stop: None,
        extra: serde_json::Map::new(),
    };
    let key = key.map(|k| k.0);
    let held = spend::admit(&state, key.as_ref(), &mut conversation, &mut completion).await?;
    let mut run = begin(&state, conversation, &parts, started, request_id, "/stream");
    run.held = held;
    let response = sse_response(&state, &run, View::Raw);
    tokio::spawn(run::run(state, run, completion));
    Ok(response)
}

/// The `text/event-stream` response of a reader of `run`'s turn.
fn sse_response(state: &StreamState, run: &run::TurnRun, view: View) -> Response {
    let body = sse::body(
        &run.turn,
        run.client.clone(),
        view,
        state.limits.keepalive_interval,
    );
    sse::response(run.turn.id, body)
}

pub(crate) use sse::event_stream;
