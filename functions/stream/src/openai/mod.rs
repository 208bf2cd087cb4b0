//! The OpenAI-compatible API: `POST /v1/chat/completions` (streamed or not) and
//! `GET /v1/models`, so that any OpenAI SDK works against the service unchanged. A call goes
//! through the same provider, guardrails, live turn and saving as `POST /stream`, and is kept as
//! a turn (its prompt the last user message, the earlier messages its `messages`). Every `/v1`
//! error takes OpenAI's shape (see `common::http::openai_errors`).

pub mod images;
pub mod request;
pub mod schema;
pub mod tools;
pub mod wire;

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::auth::Owner;
use common::error::OpenAiError;
use common::http::ValidPath;
use common::provider::{CompletionRequest, Role, Upstream};
use common::telemetry::RequestId;
use common::{ApiError, Conversation};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::engine::context;
use crate::engine::events::{Failure, StreamEvent};
use crate::engine::run::StatusRule;
use crate::engine::turn::{Item, LiveTurn, View};
use crate::engine::{RequestParts, StreamState, begin, blocked, place, spend};
use request::ChatRequest;
use wire::Call;

/// An error of a `/v1` route: its status and OpenAI's error object.
pub struct V1Error(pub(crate) StatusCode, pub(crate) OpenAiError);

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let code = self.1.error.code.clone().unwrap_or_default();
        let mut response = (self.0, Json(self.1)).into_response();
        response
            .extensions_mut()
            .insert(common::telemetry::ErrorCode(static_code(&code)));
        response
    }
}

/// The error code as the log line takes it (a fixed set).
fn static_code(code: &str) -> &'static str {
    match code {
        "model_not_found" => "model_not_found",
        "unsupported_value" => "unsupported_value",
        "unsupported_parameter" => "unsupported_parameter",
        "invalid_json" => "invalid_json",
        "context_length_exceeded" => "context_length_exceeded",
        "model_not_priced" => "model_not_priced",
        _ => "invalid_request",
    }
}

impl From<OpenAiError> for V1Error {
    fn from(e: OpenAiError) -> Self {
        V1Error(StatusCode::BAD_REQUEST, e)
    }
}

impl From<common::error::StoreError> for V1Error {
    fn from(e: common::error::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        if status.is_server_error() {
            tracing::error!(error = %common::error::error_chain(&e), code = e.code(), "request failed");
        }
        let kind = OpenAiError::kind_for(status.as_u16());
        V1Error(
            status,
            OpenAiError::new(kind, e.code(), e.to_string(), None),
        )
    }
}

/// Creates a model response for the given chat conversation, as OpenAI's API does: a
/// `chat.completion`, or with `"stream": true` server-sent `chat.completion.chunk`s ending
/// with `data: [DONE]`. The call is kept as a turn (`X-Conversation-Id`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = schema::ChatCompletionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A `chat.completion` object, or with `stream: true` \
            server-sent events: `data: {chat.completion.chunk}` lines (role, content, the \
            finish reason, with `stream_options.include_usage` a usage chunk with empty \
            `choices`), then `data: [DONE]`; a failure after the first chunk is a \
            `data: {\"error\": ...}` line, then the stream ends",
            content(
                (Object = "application/json"),
                (wire::ChunkEvent = "text/event-stream"),
            ),
            headers(("x-conversation-id" = uuid::Uuid, description = "The stored turn's id"))),
        (status = 400, description = "A bad or unsupported field, in OpenAI's error shape; or \
            the provider refused the request, with its own `code`, `param` and message \
            (`context_length_exceeded`, ...)", body = wire::OpenAiError),
        (status = 401, description = "Missing or invalid API key", body = wire::OpenAiError),
        (status = 404, description = "A model `LLM_MODELS` does not list, or the provider \
            does not serve (`model_not_found`), or an unknown `metadata.previous_id`",
            body = wire::OpenAiError),
        (status = 409, description = "`metadata.previous_id` names a turn still running or \
            without an answer", body = wire::OpenAiError),
        (status = 413, description = "The body is larger than MAX_BODY_BYTES",
            body = wire::OpenAiError),
        (status = 429, description = "The provider is rate limiting, or a limit of the key \
            refuses the request (`rate_limit_error`/`rate_limit_exceeded`; a spent budget: \
            `insufficient_quota`, type and code), with `Retry-After`; a refused request is not \
            stored", body = wire::OpenAiError, headers(("retry-after" = u32,
                description = "Seconds until the request may pass"))),
        (status = 502, description = "The provider failed, or refused this service's \
            credentials (`provider_auth`); streamed, only before its first byte",
            body = wire::OpenAiError),
        (status = 503, description = "The provider is unavailable, or the service is \
            stopping", body = wire::OpenAiError),
        (status = 504, description = "The provider did not answer in time",
            body = wire::OpenAiError),
    ))]
pub async fn chat(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    key: Option<Extension<common::auth::CallerKey>>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Result<Response, V1Error> {
    let request_id = request_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), |r| r.0.0);
    let started = Instant::now();
    let parts = RequestParts::of(&request);
    let body = crate::body::read_body(request, state.limits.max_body_bytes).await?;
    let mut req = ChatRequest::parse(&body, state.limits.max_prompt_chars)?;
    // The tools move into the provider's request (their schemas are not copied); the turn keeps
    // their names.
    let tools = std::mem::take(&mut req.tools);
    let tool_names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    if state.model(Some(&req.model)).is_err() {
        return Err(model_not_found(&req.model));
    }
    let mut completion = CompletionRequest {
        messages: req.messages.clone(),
        model: req.model.clone(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req.stop.clone(),
        extra: req.extra.clone(),
        tools,
        tool_choice: req.tool_choice.clone(),
        attempts: Default::default(),
    };
    if let Some(param) = state.provider.unsupported(&completion) {
        return Err(unsupported_by_provider(&param));
    }
    let own_system = req.system();
    let (ctx, messages) = continued(&state, &owner.0, &req).await?;
    completion.messages = messages;
    let prompt = req.prompt();
    let mut conversation =
        Conversation::start(&owner.0, prompt.clone(), state.provider.name(), &req.model);
    place(&mut conversation, &ctx);
    if own_system.is_some() {
        conversation.system = own_system;
    }
    let (prompt_parts, earlier) = req.stored();
    conversation.messages = Some(Value::Array(earlier));
    conversation.prompt_parts = prompt_parts.map(Value::Array);
    if !tool_names.is_empty() {
        conversation.tools = Some(tool_names);
    }
    if let Some(flag) = state.guard.check_prompt(&prompt) {
        return Err(blocked(&state, conversation, flag).await.into());
    }
    // A key's limits: refused in OpenAI's words (the error middleware writes them), with
    // `Retry-After`.
    let key = key.map(|k| k.0);
    let held = match spend::admit(&state, key.as_ref(), &mut conversation, &mut completion).await {
        Ok(held) => held,
        Err(e @ ApiError::Limited { .. }) => return Ok(e.into_response()),
        Err(e) => return Err(e.into()),
    };
    let call = Call::new(
        conversation.id,
        conversation.created_at,
        &req.model,
        req.include_usage,
    );
    let mut run = begin(
        &state,
        conversation,
        &parts,
        started,
        request_id,
        "/v1/chat/completions",
    );
    run.held = held;
    run.status_rule = if req.stream {
        StatusRule::Held(failure_status)
    } else {
        StatusRule::AtEnd(failure_status)
    };
    let items = run.turn.follow(
        run.client.clone(),
        View::Raw,
        0,
        state.limits.keepalive_interval,
    );
    let turn = run.turn.clone();
    let reader = run.client.clone();
    tokio::spawn(crate::engine::run::run(state, run, completion));
    let mut response = if req.stream {
        // The status waits for the provider's answer, so that its refusal keeps its own.
        turn.answered().await;
        match (turn.is_answered(), turn.final_failure()) {
            (false, Some(f)) => failed(&f, turn.refusal()),
            _ => streamed(call, items, reader),
        }
    } else {
        completed(call, items, &turn).await?
    };
    if let Ok(v) = HeaderValue::from_str(&turn.id.to_string()) {
        response.headers_mut().insert("x-conversation-id", v);
    }
    Ok(response)
}

/// What the call continues, with `metadata.previous_id`, and the messages the provider
/// receives: that chain's turns first, its instructions too unless the call brings its own,
/// then the call's messages.
async fn continued(
    state: &StreamState,
    owner: &str,
    req: &ChatRequest,
) -> Result<(context::Context, Vec<common::provider::Message>), ApiError> {
    let sent_chars: usize = req
        .messages
        .iter()
        .map(|m| m.content.text().chars().count())
        .sum();
    let ctx = context::load(
        state.store.as_ref(),
        owner,
        "",
        None,
        req.previous_id,
        state.limits.max_context_chars.saturating_sub(sent_chars),
    )
    .await?;
    let mut messages = ctx.messages.clone();
    messages.pop(); // the empty prompt `load` ends with: the call's messages follow
    if req.system().is_some() {
        messages.retain(|m| m.role != Role::System);
    }
    messages.extend(req.messages.iter().cloned());
    Ok((ctx, messages))
}

/// A 400 `unsupported_parameter`: the provider cannot honour `param`.
pub(crate) fn unsupported_by_provider(param: &str) -> V1Error {
    V1Error(
        StatusCode::BAD_REQUEST,
        OpenAiError::new(
            "invalid_request_error",
            "unsupported_parameter",
            format!("{param} is not supported by this service's model provider"),
            Some(param),
        ),
    )
}

pub(crate) fn model_not_found(model: &str) -> V1Error {
    V1Error(
        StatusCode::NOT_FOUND,
        OpenAiError::new(
            "invalid_request_error",
            "model_not_found",
            format!("The model `{model}` does not exist or you do not have access to it."),
            Some("model"),
        ),
    )
}

/// The error object a failed turn's final event becomes (inside a stream that has begun).
fn failure(event: &Failure) -> OpenAiError {
    let kind = if event.code.starts_with("guardrail_") {
        "invalid_request_error"
    } else {
        "server_error"
    };
    OpenAiError::new(kind, &event.code, event.message.clone(), None)
}

/// The HTTP status of a turn that failed with `code` before its response began: the
/// provider's refusal keeps its kind (a bad request 400, an unknown model 404, a rate limit
/// 429), its failures are 502, 503 (unavailable) or 504 (too slow), a guardrail's stop 400,
/// and a turn stopped by the service (shutdown, deadline, cancel) 503.
pub fn failure_status(code: &str) -> u16 {
    match code {
        "provider_bad_request" => 400,
        "provider_model_not_found" => 404,
        "provider_rate_limited" => 429,
        "provider_unavailable" => 503,
        "provider_timeout" => 504,
        c if c.starts_with("provider_") => 502,
        c if c.starts_with("guardrail_") => 400,
        _ => 503,
    }
}

/// The response of a turn that failed before its response began: the status of
/// [`failure_status`], and OpenAI's error object; for a provider's refusal its own `code`,
/// `param` and message, and its `Retry-After`.
pub(crate) fn failed(event: &Failure, refusal: Option<Upstream>) -> Response {
    let status =
        StatusCode::from_u16(failure_status(&event.code)).unwrap_or(StatusCode::BAD_GATEWAY);
    let refusal = refusal.unwrap_or_default();
    let error = match status.as_u16() {
        400 if event.code == "provider_bad_request" => OpenAiError::new(
            "invalid_request_error",
            refusal.code.as_deref().unwrap_or("invalid_request"),
            refusal.message.unwrap_or_else(|| event.message.clone()),
            refusal.param.as_deref(),
        ),
        404 => OpenAiError::new(
            "invalid_request_error",
            "model_not_found",
            refusal.message.unwrap_or_else(|| event.message.clone()),
            Some("model"),
        ),
        429 => OpenAiError::new(
            "rate_limit_error",
            "rate_limit_exceeded",
            event.message.clone(),
            None,
        ),
        _ => failure(event),
    };
    let mut response = V1Error(status, error).into_response();
    if let Some(after) = refusal.retry_after
        && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
        .extensions_mut()
        .insert(common::telemetry::LogsItself);
    response
}

/// A streamed call: chunks as the turn's items come.
fn streamed(
    call: Call,
    items: impl futures_util::Stream<Item = Result<Item, crate::engine::turn::Lagging>> + Send + 'static,
    reader: std::sync::Arc<crate::engine::turn::Reader>,
) -> Response {
    let frames = items.map(move |item| {
        item.map(|item| {
            let text = match &item {
                Item::Delta { text, .. } => text.len(),
                _ => 0,
            };
            let frame = match item {
                Item::Start(_) => wire::frame(&call.role()),
                Item::Delta { text, .. } => wire::frame(&call.content(&text)),
                Item::Tool(fragment) => wire::frame(&call.tool(&fragment.to_openai())),
                Item::Logprobs(items) => {
                    let logprobs = json!({"content": items, "refusal": null});
                    wire::frame(&call.logprobs(&logprobs))
                }
                Item::KeepAlive => ": keep-alive\n\n".to_owned(),
                Item::Final(StreamEvent::Done(done)) => {
                    let mut out = wire::frame(
                        &call.finish(wire::finish_reason(done.finish_reason.as_deref())),
                    );
                    if call.include_usage {
                        out.push_str(&wire::frame(&call.usage(done.usage)));
                    }
                    out.push_str(wire::DONE);
                    out
                }
                Item::Final(StreamEvent::Error(f)) => {
                    // As OpenAI ends a stream that failed: an error object, then nothing.
                    wire::frame(&failure(&f))
                }
                Item::Final(_) => String::new(),
            };
            reader.took(text, frame.len());
            Bytes::from(frame)
        })
    });
    crate::native::event_stream(Body::from_stream(frames))
}

/// A call without streaming: the whole answer once the turn has ended (and been saved), its
/// tool calls rebuilt from the same fragments a stream carries.
async fn completed(
    call: Call,
    items: impl futures_util::Stream<Item = Result<Item, crate::engine::turn::Lagging>> + Send + 'static,
    turn: &LiveTurn,
) -> Result<Response, V1Error> {
    let mut items = std::pin::pin!(items);
    let mut text = String::new();
    let mut fragments = Vec::new();
    let mut logprobs: Option<Vec<Value>> = None;
    while let Some(item) = items.next().await {
        match item {
            Ok(Item::Delta { text: t, .. }) => text.push_str(&t),
            Ok(Item::Tool(fragment)) => fragments.push(fragment),
            Ok(Item::Logprobs(l)) => logprobs.get_or_insert_with(Vec::new).extend(l),
            Ok(Item::Final(StreamEvent::Done(done))) => {
                let reason = wire::finish_reason(done.finish_reason.as_deref());
                let calls = common::provider::tools::rebuild(&fragments);
                let mut response =
                    Json(call.completion(&text, &calls, logprobs, reason, done.usage))
                        .into_response();
                response
                    .extensions_mut()
                    .insert(common::telemetry::LogsItself);
                return Ok(response);
            }
            Ok(Item::Final(StreamEvent::Error(f))) => return Ok(failed(&f, turn.refusal())),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Err(V1Error(
        StatusCode::INTERNAL_SERVER_ERROR,
        OpenAiError::new(
            "server_error",
            "internal_error",
            "the answer did not end",
            None,
        ),
    ))
}

/// One model as `/v1/models` lists it.
fn model(id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

/// Lists the models this service serves, as OpenAI's API does: `LLM_MODELS`, or the one
/// configured model (`LLM_MODEL`).
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses(
    (status = 200, description = "`{\"object\": \"list\", \"data\": [{\"id\", \"object\": \
        \"model\", \"created\", \"owned_by\"}]}`", body = Object),
    (status = 401, description = "Missing or invalid API key", body = wire::OpenAiError),
))]
pub async fn models(State(state): State<StreamState>) -> Json<Value> {
    let owner = state.provider.name();
    let data: Vec<Value> = served(&state).iter().map(|m| model(m, owner)).collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model, as `client.models.retrieve(id)` asks for it.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "The model's id")),
    responses(
        (status = 200, description = "`{\"id\", \"object\": \"model\", \"created\", \"owned_by\"}`",
            body = Object),
        (status = 401, description = "Missing or invalid API key", body = wire::OpenAiError),
        (status = 404, description = "Not a model `LLM_MODELS` lists (`model_not_found`); with \
            `LLM_MODELS` unset every model exists (it is passed upstream as named)",
            body = wire::OpenAiError),
    ))]
pub async fn one_model(
    State(state): State<StreamState>,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Value>, V1Error> {
    // What exists is what a completion accepts: with `LLM_MODELS` unset, any model.
    match state.model(Some(&id)) {
        Ok(_) => Ok(Json(model(&id, state.provider.name()))),
        Err(_) => Err(model_not_found(&id)),
    }
}

/// The models listed: `LLM_MODELS`, else the provider's default model.
fn served(state: &StreamState) -> Vec<String> {
    state
        .models
        .clone()
        .unwrap_or_else(|| vec![state.provider.default_model().to_owned()])
}
