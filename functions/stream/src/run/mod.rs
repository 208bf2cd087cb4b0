//! One stream from start to saved record, in five steps: start (the `start` event and the saver
//! beside the provider call), generate (chunks to the client as they come), settle (what the
//! outcome means for the record), save (the final record, retried, else logged) and report (the
//! final event, the request's log line and its metrics). The record is finished whatever
//! happens: provider error, timeout or a client gone.

mod generate;
mod grounding;
mod saver;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::domain::now_micros;
use common::error::error_chain;
use common::{Conversation, Status};
use tokio::sync::{mpsc, watch};

use crate::StreamState;
use crate::events::{Done, Failure, Start, StreamEvent};
use crate::sse::Events;
use generate::{Outcome, Stop};

pub async fn run(
    state: StreamState,
    conversation: Conversation,
    request: common::provider::CompletionRequest,
    tx: mpsc::Sender<Bytes>,
    started: Instant,
    request_id: String,
) {
    let mut events = Events::new(tx);
    let judge_request = state.limits.grounding_check.then(|| request.clone());

    // Start: the client learns the id at once; the row is written beside the provider call.
    start(&mut events, &conversation).await;
    let (text_tx, text_rx) = watch::channel(String::new());
    let saver = tokio::spawn(saver::saver(
        state.store.clone(),
        conversation.clone(),
        text_rx,
        state.limits.checkpoint_interval,
        state.redactor.clone(),
    ));

    // Generate.
    let outcome = generate::generate(&state, request, &mut events, &text_tx, started).await;
    let mut conversation = conversation;
    conversation.response = text_tx.borrow().clone();
    drop(text_tx);
    // The saver ends once the text channel closes; its last checkpoint lands before the finish.
    if let Err(e) = saver.await {
        tracing::error!(error = %e, "checkpoint task failed");
    }

    // Settle, then save.
    let finish_reason = settle(&mut conversation, &outcome, started);
    let failure = outcome.result.as_ref().err();
    if let (Some(req), None) = (judge_request, &failure) {
        conversation
            .flags
            .push(grounding::grounding(&state, req, &conversation.response).await);
    }
    let stored = redacted(&state, &mut conversation);
    let saved = saver::save(state.store.as_ref(), &stored).await;

    // Report.
    final_event(&mut events, &conversation, failure, finish_reason, saved).await;
    report(
        &state,
        &conversation,
        &events,
        &outcome,
        started,
        &request_id,
        saved,
    );
}

/// The `start` event: the id and the creation time, before the provider answers.
async fn start(events: &mut Events, conversation: &Conversation) {
    events
        .send(&StreamEvent::Start(Start {
            id: conversation.id,
            created_at: rfc3339(conversation),
        }))
        .await;
}

/// Puts the outcome into the record: times, status, usage or error, the guardrail's flag.
/// Returns the provider's finish reason.
fn settle(conversation: &mut Conversation, outcome: &Outcome, started: Instant) -> Option<String> {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    conversation.ttfb_ms = outcome.ttfb.map(ms);
    conversation.duration_ms = Some(ms(started.elapsed()));
    conversation.updated_at = now_micros();
    match &outcome.result {
        Ok((reason, usage)) => {
            conversation.status = Status::Complete;
            conversation.set_usage(usage.unwrap_or_default());
            reason.clone()
        }
        Err(e) => {
            conversation.status = if conversation.response.is_empty() {
                Status::Failed
            } else {
                Status::Partial
            };
            conversation.error = Some(e.code().to_owned());
            match e {
                Stop::Provider(p) => tracing::warn!(id = %conversation.id, code = e.code(),
                    error = %error_chain(p), detail = ?p, "generation failed"),
                Stop::Guard(flag) => {
                    tracing::warn!(id = %conversation.id, check = %flag.check, "answer stopped by a guardrail");
                    conversation.flags.push(flag.clone());
                }
            }
            None
        }
    }
}

/// The record as stored: with `PII_REDACTION=true`, prompt and answer redacted and the
/// redaction's flag added (the client's copy gets the flag too; its text stays as it was seen).
fn redacted(state: &StreamState, conversation: &mut Conversation) -> Conversation {
    let mut stored = conversation.clone();
    if let Some(r) = &state.redactor {
        let (prompt, mut n) = r.redact(&stored.prompt);
        let (response, m) = r.redact(&stored.response);
        n.add(m);
        stored.prompt = prompt;
        stored.response = response;
        stored.flags.extend(n.flag());
        conversation.flags = stored.flags.clone();
    }
    stored
}

/// `done` or `error`, the stream's last event.
async fn final_event(
    events: &mut Events,
    conversation: &Conversation,
    failure: Option<&Stop>,
    finish_reason: Option<String>,
    saved: bool,
) {
    let event = match failure {
        None => StreamEvent::Done(Done {
            id: conversation.id,
            status: conversation.status,
            usage: conversation.usage(),
            finish_reason,
            flags: conversation.flags.clone(),
            ttfb_ms: conversation.ttfb_ms,
            duration_ms: conversation.duration_ms,
            saved,
        }),
        Some(e) => StreamEvent::Error(Failure {
            id: conversation.id,
            status: conversation.status,
            code: e.code().to_owned(),
            message: e.public_message().to_owned(),
            flags: conversation.flags.clone(),
            saved,
        }),
    };
    events.send(&event).await;
}

/// The request's one log line (written here, when the body ends, not when headers go out) and
/// the stream's metrics line.
fn report(
    state: &StreamState,
    conversation: &Conversation,
    events: &Events,
    outcome: &Outcome,
    started: Instant,
    request_id: &str,
    saved: bool,
) {
    let (prompt, response) = if state.limits.log_content {
        (
            Some(conversation.prompt.as_str()),
            Some(conversation.response.as_str()),
        )
    } else {
        (None, None)
    };
    tracing::info!(
        target: "request",
        request_id = %request_id,
        method = "POST",
        route = "/stream",
        status = 200u16,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        ttfb_ms = conversation.ttfb_ms,
        response_bytes = events.bytes,
        chunks = outcome.chunks,
        conversation_id = %conversation.id,
        conversation_status = conversation.status.as_str(),
        provider = %conversation.provider,
        model = %conversation.model,
        prompt_tokens = conversation.prompt_tokens,
        completion_tokens = conversation.completion_tokens,
        total_tokens = conversation.total_tokens,
        error_code = conversation.error.as_deref(),
        client_connected = events.client_connected(),
        saved,
        prompt,
        response,
        "request"
    );
    let ms = |d: Option<i32>| d.map_or(0.0, f64::from);
    let count = |yes: bool| if yes { 1.0 } else { 0.0 };
    common::telemetry::emit_metrics(
        "stream",
        &[
            ("TimeToFirstByte", ms(conversation.ttfb_ms), "Milliseconds"),
            ("Duration", ms(conversation.duration_ms), "Milliseconds"),
            ("Tokens", ms(conversation.total_tokens), "Count"),
            ("Errors", count(conversation.error.is_some()), "Count"),
            ("UnsavedRecords", count(!saved), "Count"),
        ],
    );
}

fn rfc3339(c: &Conversation) -> String {
    c.created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
