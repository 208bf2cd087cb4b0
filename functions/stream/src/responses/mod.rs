//! OpenAI's Responses API on the turn log: `POST /v1/responses` (plain, streamed or in the
//! background), `GET /v1/responses/{id}` (as it stands, or with `stream=true` its events after
//! `starting_after`, then the live answer: from any process, for every stored response),
//! `POST /v1/responses/{id}/cancel`, `DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items`. A response is a turn like any other: stored,
//! searchable, in its thread (`previous_response_id` continues the chain `previous_id` does),
//! under the same guardrails, budgets and routing.

pub mod background;
pub mod request;
pub mod schema;
pub mod wire;

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::auth::{CallerKey, Owner};
use common::error::OpenAiError;
use common::http::{ValidPath, ValidQuery};
use common::provider::{CompletionRequest, Role};
use common::store::TurnDeleted;
use common::telemetry::RequestId;
use common::young::awaiting_row;
use common::{ApiError, Conversation, Status};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::engine::events::StreamEvent;
use crate::engine::run::StatusRule;
use crate::engine::turn::{Item, View};
use crate::engine::{RequestParts, StreamState, begin, blocked, context, place, spend};
use crate::native::resume::{Items, follow_turn};
use crate::openai::{V1Error, failed, failure_status};
use request::CreateRequest;
use wire::{Echo, Sequencer};

fn not_found() -> V1Error {
    V1Error(
        StatusCode::NOT_FOUND,
        OpenAiError::new(
            "invalid_request_error",
            "not_found",
            "No response with this id was found.",
            None,
        ),
    )
}

/// The turn a path's response id names (a 404 for anything else, as OpenAI answers).
fn path_turn(raw: &str) -> Result<Uuid, V1Error> {
    wire::turn_of(raw).ok_or_else(not_found)
}

/// Creates a model response: a stored turn, answered at once (`stream: false`), as typed
/// events (`stream: true`), or in the background (`background: true`: the response comes back
/// `in_progress` and the answer goes on).
#[utoipa::path(post, path = "/v1/responses", tag = "openai",
    request_body(content = schema::ResponseCreateRequest, content_type = "application/json",
        description = "OpenAI's response create body, the fields this service takes; anything \
        else is a 400 naming it"),
    responses(
        (status = 200, description = "A `response` object, or with `stream: true` its events \
            (`response.created` ... `response.completed`, each with a `sequence_number`)",
            content((Object = "application/json"), (wire::ResponseEvent = "text/event-stream"))),
        (status = 400, description = "A bad or unsupported field, in OpenAI's error shape",
            body = common::error::OpenAiError),
        (status = 401, description = "Missing or invalid API key",
            body = common::error::OpenAiError),
        (status = 404, description = "An unknown model or `previous_response_id`",
            body = common::error::OpenAiError),
        (status = 429, description = "A limit of the key, or the provider's",
            body = common::error::OpenAiError),
        (status = 502, description = "The provider failed before answering",
            body = common::error::OpenAiError),
    ))]
pub async fn create(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    key: Option<Extension<CallerKey>>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Result<Response, V1Error> {
    let request_id = request_id.map_or_else(|| Uuid::now_v7().to_string(), |r| r.0.0);
    let started = Instant::now();
    let parts = RequestParts::of(&request);
    let body = crate::body::read_body(request, state.limits.max_body_bytes).await?;
    let mut req = CreateRequest::parse(&body, state.limits.max_prompt_chars)?;
    // In Lambda, another invocation generates a background response (see `background`).
    let invoker = match (req.background, parts.in_lambda, &state.self_invoke) {
        (true, true, None) => return Err(background::unavailable()),
        (true, true, Some(invoker)) => Some(invoker.clone()),
        _ => None,
    };
    let (mut conversation, mut completion) = prepare(&state, &owner.0, &mut req).await?;
    let key = key.map(|k| k.0);
    let held = match spend::admit(&state, key.as_ref(), &mut conversation, &mut completion).await {
        Ok(held) => held,
        Err(e @ ApiError::Limited { .. }) => return Ok(e.into_response()),
        Err(e) => return Err(e.into()),
    };
    let head = wire::response(&conversation, &req.echo, None);
    let id = conversation.id;
    if let Some(invoker) = invoker {
        let c = conversation;
        background::queue(&state, &invoker, c, completion, held, req.store, request_id).await?;
        return Ok(with_turn_id(Json(head).into_response(), id));
    }
    let base = conversation.clone();
    let mut run = begin(
        &state,
        conversation,
        &parts,
        started,
        request_id,
        "/v1/responses",
    );
    run.held = held;
    run.status_rule = if req.stream || req.background {
        StatusRule::Held(failure_status)
    } else {
        StatusRule::AtEnd(failure_status)
    };
    if req.background {
        run.client.detach();
    }
    let items: Items = Box::pin(run.turn.follow(
        run.client.clone(),
        View::Raw,
        0,
        state.limits.keepalive_interval,
    ));
    let turn = run.turn.clone();
    background::detach(state.clone(), run, completion, req.store);
    let mut response = if req.background {
        Json(head).into_response()
    } else if req.stream {
        turn.answered().await;
        match (turn.is_answered(), turn.final_failure()) {
            (false, Some(f)) => failed(&f, turn.refusal()),
            _ => events(
                state,
                owner.0,
                base,
                Sequencer {
                    turn: id,
                    after: None,
                },
                head,
                req.echo,
                items,
            ),
        }
    } else {
        whole(&state, &owner.0, &base, &req.echo, &turn, items).await
    };
    response
        .extensions_mut()
        .insert(common::telemetry::LogsItself);
    Ok(with_turn_id(response, id))
}

/// A create call's turn as it starts and its provider request: the model checked, the chain it
/// continues loaded (without its instructions: a response has only its own), the prompt past
/// the guardrails (a refused one is recorded as `blocked`).
async fn prepare(
    state: &StreamState,
    owner: &str,
    req: &mut CreateRequest,
) -> Result<(Conversation, CompletionRequest), V1Error> {
    // The tools move into the provider's request; the turn keeps their names.
    let tools = std::mem::take(&mut req.chat.tools);
    let tool_names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let chat = &req.chat;
    if state.model(Some(&chat.model)).is_err() {
        return Err(crate::openai::model_not_found(&chat.model));
    }
    let mut completion = CompletionRequest {
        messages: chat.messages.clone(),
        model: chat.model.clone(),
        max_tokens: chat.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        stop: chat.stop.clone(),
        extra: chat.extra.clone(),
        tools,
        tool_choice: chat.tool_choice.clone(),
        attempts: Default::default(),
    };
    if let Some(param) = state.provider.unsupported(&completion) {
        return Err(crate::openai::unsupported_by_provider(&param));
    }
    // The chain it continues, without its instructions (a response has only its own).
    let ctx = context::load(
        state.store.as_ref(),
        owner,
        "",
        None,
        req.previous,
        state.limits.max_context_chars,
    )
    .await
    .map_err(|e| match e {
        ApiError::NotFound(_) => V1Error(
            StatusCode::NOT_FOUND,
            OpenAiError::new(
                "invalid_request_error",
                "previous_response_not_found",
                "previous_response_id names no response of yours",
                Some("previous_response_id"),
            ),
        ),
        e => e.into(),
    })?;
    let mut messages = ctx.messages.clone();
    messages.pop();
    messages.retain(|m| m.role != Role::System);
    messages.extend(chat.messages.iter().cloned());
    completion.messages = messages;
    let prompt = chat.prompt();
    let mut conversation =
        Conversation::start(owner, prompt.clone(), state.provider.name(), &chat.model);
    place(&mut conversation, &ctx);
    conversation.system = req.instructions.clone();
    let (prompt_parts, earlier) = chat.stored();
    conversation.messages = Some(Value::Array(earlier));
    conversation.prompt_parts = prompt_parts.map(Value::Array);
    if !tool_names.is_empty() {
        conversation.tools = Some(tool_names);
    }
    if let Some(flag) = state.guard.check_prompt(&prompt) {
        return Err(blocked(state, conversation, flag).await.into());
    }
    Ok((conversation, completion))
}

/// The response of a create call without streaming: once the turn has ended, as it ended, or
/// the error of a turn that failed before any text.
async fn whole(
    state: &StreamState,
    owner: &str,
    base: &Conversation,
    echo: &Echo,
    turn: &crate::engine::turn::LiveTurn,
    mut items: Items,
) -> Response {
    let mut text = String::new();
    let mut end = None;
    while let Some(Ok(item)) = items.next().await {
        match item {
            Item::Delta { text: t, .. } => text.push_str(&t),
            Item::Final(e) => {
                end = Some(e);
                break;
            }
            _ => {}
        }
    }
    match end {
        Some(StreamEvent::Error(f)) if text.is_empty() => failed(&f, turn.refusal()),
        _ => {
            let c = ended(state, owner, base, end.as_ref(), &text).await;
            Json(wire::response(&c, echo, None)).into_response()
        }
    }
}

/// `response` with the turn's id in `x-conversation-id`.
fn with_turn_id(mut response: Response, id: Uuid) -> Response {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-conversation-id", v);
    }
    response
}

/// The turn as it ended: its stored record (the final event comes after the save), or, when
/// it cannot be read back (`store: false` deleted it, the save failed), `base` (the turn as it
/// started) with the final event's outcome and the text the reader got.
async fn ended(
    state: &StreamState,
    owner: &str,
    base: &Conversation,
    event: Option<&StreamEvent>,
    text: &str,
) -> Conversation {
    if let Ok(Some(c)) = state.store.get(owner, base.id).await
        && c.status != Status::Streaming
    {
        return c;
    }
    let mut c = base.clone();
    c.response = text.to_owned();
    match event {
        Some(StreamEvent::Done(d)) => {
            c.status = d.status;
            c.set_usage(d.usage);
            c.finish_reason = d.finish_reason.clone();
        }
        Some(StreamEvent::Error(f)) => {
            c.status = f.status;
            c.error = Some(f.code.clone());
        }
        _ => {
            c.status = Status::Failed;
            c.error = Some("interrupted".into());
        }
    }
    c
}

/// The typed events of the response of turn `base` from `items` (which start with its
/// `start`): the opening events with `head`, the text deltas, then the closing events with the
/// response as it ended (see [`ended`]).
#[allow(clippy::too_many_arguments)]
fn events(
    state: StreamState,
    owner: String,
    base: Conversation,
    seq: Sequencer,
    head: Value,
    echo: Echo,
    items: Items,
) -> Response {
    struct St {
        state: StreamState,
        owner: String,
        base: Conversation,
        seq: Sequencer,
        head: Value,
        echo: Echo,
        items: Items,
        text: String,
        done: bool,
    }
    let st = St {
        state,
        owner,
        base,
        seq,
        head,
        echo,
        items,
        text: String::new(),
        done: false,
    };
    let frames = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let item = match st.items.next().await {
                Some(Ok(item)) => item,
                _ => return None,
            };
            let frame = match item {
                Item::Start(_) => st.seq.opening(&st.head),
                Item::Delta { text, pos } => {
                    st.text.push_str(&text);
                    st.seq.delta(&text, pos)
                }
                Item::KeepAlive => ": keep-alive\n\n".to_owned(),
                Item::Final(event) => {
                    st.done = true;
                    let c = ended(&st.state, &st.owner, &st.base, Some(&event), &st.text).await;
                    st.seq
                        .closing(&wire::response(&c, &st.echo, None), &c.response)
                }
                Item::Tool(_) | Item::Logprobs(_) => String::new(),
            };
            if !frame.is_empty() {
                return Some((Ok::<_, std::io::Error>(Bytes::from(frame)), st));
            }
            if st.done {
                return None;
            }
        }
    });
    crate::native::event_stream(Body::from_stream(frames))
}

/// The query string of `GET /v1/responses/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetrieveParams {
    /// `true`: the response's events (after `starting_after`), then the live answer's.
    #[param(value_type = Option<bool>)]
    pub stream: Option<String>,
    /// The sequence number of the last event received.
    #[param(value_type = Option<u64>, minimum = 0)]
    pub starting_after: Option<String>,
}

/// Retrieves a response as it stands, from any process; with `stream=true`, its events after
/// `starting_after`, then the live answer's to its end.
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_...`)"), RetrieveParams),
    responses(
        (status = 200, description = "The `response` object, or its events",
            content((Object = "application/json"), (wire::ResponseEvent = "text/event-stream"))),
        (status = 400, description = "A bad `stream` or `starting_after`",
            body = common::error::OpenAiError),
        (status = 401, description = "Missing or invalid API key",
            body = common::error::OpenAiError),
        (status = 404, description = "No response of the caller has this id",
            body = common::error::OpenAiError),
    ))]
pub async fn retrieve(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(params): ValidQuery<RetrieveParams>,
    request: Request,
) -> Result<Response, V1Error> {
    let id = path_turn(&raw)?;
    let stream = match params.stream.as_deref().map(str::trim) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("stream", "stream must be true or false")),
    };
    let after = match params.starting_after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) => Some(
            n.parse::<u64>()
                .map_err(|_| bad("starting_after", "starting_after must be a sequence number"))?,
        ),
    };
    let found = awaiting_row(id, || async { state.store.get(&owner.0, id).await })
        .await?
        .ok_or_else(not_found)?;
    if !stream {
        // A running turn's text so far comes from its log.
        let text = if found.status == Status::Streaming {
            state
                .store
                .read_log(&owner.0, id, 0, common::store::PIECE_CHARS)
                .await?
                .map(|r| r.text)
        } else {
            None
        };
        return Ok(Json(wire::response(&found, &Echo::stored(), text.as_deref())).into_response());
    }
    let from = after
        .map(|a| usize::try_from(a.saturating_sub(wire::OPENED)).unwrap_or(usize::MAX))
        .unwrap_or(0)
        .min(i32::MAX as usize - 1);
    let parts = RequestParts::of(&request);
    let (items, _reader) = follow_turn(&state, &owner.0, id, from, &parts).await?;
    let head = wire::response(&found, &Echo::stored(), Some(""));
    Ok(events(
        state,
        owner.0,
        found,
        Sequencer { turn: id, after },
        head,
        Echo::stored(),
        items,
    ))
}

fn bad(param: &str, message: &str) -> V1Error {
    V1Error(
        StatusCode::BAD_REQUEST,
        OpenAiError::new(
            "invalid_request_error",
            "invalid_request",
            message,
            Some(param),
        ),
    )
}

/// Cancels a response from any process: it stops at once here, or at its next checkpoint in
/// the process generating it. Cancelling one that has ended returns it as it is.
#[utoipa::path(post, path = "/v1/responses/{id}/cancel", tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_...`)")),
    responses(
        (status = 200, description = "The `response` object (`cancelled` once it stopped)",
            body = Object),
        (status = 401, description = "Missing or invalid API key",
            body = common::error::OpenAiError),
        (status = 404, description = "No response of the caller has this id",
            body = common::error::OpenAiError),
    ))]
pub async fn cancel(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Response, V1Error> {
    let id = path_turn(&raw)?;
    if let Some(turn) = state.turns.get(&owner.0, id) {
        turn.halt(crate::engine::turn::Halt::Cancel);
        state
            .turns
            .wait_ended(id, std::time::Duration::from_secs(5))
            .await;
    } else {
        let outcome = awaiting_row(id, || async {
            Ok::<_, common::error::StoreError>(
                match state.store.request_cancel(&owner.0, id).await? {
                    common::store::CancelOutcome::NotFound => None,
                    found => Some(found),
                },
            )
        })
        .await?;
        match outcome {
            None => return Err(not_found()),
            Some(common::store::CancelOutcome::Requested) => {
                // Its process stops it at its next checkpoint: wait for that, within bounds.
                let until = Instant::now() + std::time::Duration::from_secs(5);
                while Instant::now() < until {
                    match state.store.get(&owner.0, id).await? {
                        Some(c) if c.status != Status::Streaming => break,
                        _ => tokio::time::sleep(state.limits.resume_poll).await,
                    }
                }
            }
            Some(_) => {}
        }
    }
    let c = state.store.get(&owner.0, id).await?.ok_or_else(not_found)?;
    Ok(Json(wire::response(&c, &Echo::stored(), None)).into_response())
}

/// Deletes a response (a stored turn), unless it is still running or a later turn continues
/// it (409).
#[utoipa::path(delete, path = "/v1/responses/{id}", tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_...`)")),
    responses(
        (status = 200, description = "`{\"id\", \"object\": \"response.deleted\", \"deleted\": true}`",
            body = Object),
        (status = 401, description = "Missing or invalid API key",
            body = common::error::OpenAiError),
        (status = 404, description = "No response of the caller has this id",
            body = common::error::OpenAiError),
        (status = 409, description = "It is still running, or a later turn continues it",
            body = common::error::OpenAiError),
    ))]
pub async fn delete(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Response, V1Error> {
    let id = path_turn(&raw)?;
    let conflict = |code: &str, message: &str| {
        V1Error(
            StatusCode::CONFLICT,
            OpenAiError::new("invalid_request_error", code, message, None),
        )
    };
    match state.store.delete_turn(&owner.0, id).await? {
        TurnDeleted::Deleted => Ok(Json(json!({
            "id": wire::response_id(id), "object": "response.deleted", "deleted": true
        }))
        .into_response()),
        TurnDeleted::NotFound => Err(not_found()),
        TurnDeleted::Running => Err(conflict(
            "response_running",
            "the response is still running: cancel it first",
        )),
        TurnDeleted::Continued => Err(conflict(
            "response_continued",
            "a later response continues this one: delete that first",
        )),
    }
}

/// The items a response was given as input: its messages, as OpenAI lists them.
#[utoipa::path(get, path = "/v1/responses/{id}/input_items", tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_...`)")),
    responses(
        (status = 200, description = "`{\"object\": \"list\", \"data\": [message items], \
            \"first_id\", \"last_id\", \"has_more\": false}`", body = Object),
        (status = 401, description = "Missing or invalid API key",
            body = common::error::OpenAiError),
        (status = 404, description = "No response of the caller has this id",
            body = common::error::OpenAiError),
    ))]
pub async fn input_items(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Response, V1Error> {
    let id = path_turn(&raw)?;
    let c = awaiting_row(id, || async { state.store.get(&owner.0, id).await })
        .await?
        .ok_or_else(not_found)?;
    let mut data = Vec::new();
    let earlier = c
        .messages
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let prompt = match &c.prompt_parts {
        Some(parts) => json!({"role": "user", "content": parts}),
        None => json!({"role": "user", "content": c.prompt}),
    };
    for (i, m) in earlier.iter().chain(std::iter::once(&prompt)).enumerate() {
        let role = m["role"].as_str().unwrap_or("user");
        if role == "system" || role == "developer" {
            continue;
        }
        if role == "tool" {
            data.push(
                json!({"type": "function_call_output", "id": format!("fco_{}_{i}", c.id.simple()),
                "call_id": m["tool_call_id"], "output": m["content"]}),
            );
            continue;
        }
        for (j, call) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
            data.push(
                json!({"type": "function_call", "id": format!("fc_{}_{i}_{j}", c.id.simple()),
                "call_id": call["id"], "name": call["function"]["name"],
                "arguments": call["function"]["arguments"], "status": "completed"}),
            );
        }
        if m["content"].is_null() {
            continue;
        }
        let kind = if role == "assistant" {
            "output_text"
        } else {
            "input_text"
        };
        let content: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({"type": kind, "text": s})],
            Value::Array(parts) => parts
                .iter()
                .map(|p| match p["type"].as_str() {
                    Some("image_url") => json!({"type": "input_image",
                        "image_url": p["image_url"]["url"], "detail": p["image_url"]["detail"]}),
                    Some("text") => json!({"type": kind, "text": p["text"]}),
                    _ => p.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        data.push(json!({
            "type": "message",
            "id": format!("msg_{}_{i}", c.id.simple()),
            "role": role,
            "status": "completed",
            "content": content,
        }));
    }
    // Newest first, as OpenAI lists them by default.
    data.reverse();
    Ok(Json(json!({
        "object": "list",
        "first_id": data.first().map(|d| d["id"].clone()),
        "last_id": data.last().map(|d| d["id"].clone()),
        "has_more": false,
        "data": data,
    }))
    .into_response())
}
