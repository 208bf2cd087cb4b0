//! One stream from start to saved record. The provider's chunks go to the client as they come;
//! a saver task beside it writes the row and checkpoints, so the database never delays a chunk.
//! The record is finished whatever happens: provider error, timeout or a client gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use common::domain::{Usage, now_micros};
use common::error::error_chain;
use common::guard::{Flag, Redactor};
use common::provider::{Chunk, CompletionRequest, ProviderError};
use common::{Conversation, Status};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout_at};

use crate::events::{Delta, Done, Failure, Start, StreamEvent};
use crate::sse::Events;
use crate::{Limits, StreamState, StreamStore};

/// Why a generation stopped early.
enum Stop {
    Provider(ProviderError),
    Guard(Flag),
}

impl Stop {
    fn code(&self) -> &'static str {
        match self {
            Stop::Provider(e) => e.code(),
            Stop::Guard(f) => match f.check.as_str() {
                "repetition" => "guardrail_repetition",
                "response_too_long" => "guardrail_response_too_long",
                _ => "guardrail_blocked",
            },
        }
    }

    fn public_message(&self) -> &'static str {
        match self {
            Stop::Provider(e) => e.public_message(),
            Stop::Guard(_) => "a guardrail stopped the answer",
        }
    }
}

impl From<ProviderError> for Stop {
    fn from(e: ProviderError) -> Self {
        Stop::Provider(e)
    }
}

/// How a generation ended.
struct Outcome {
    result: Result<(Option<String>, Option<Usage>), Stop>,
    ttfb: Option<Duration>,
    chunks: usize,
}

pub async fn run(
    state: StreamState,
    mut conversation: Conversation,
    request: CompletionRequest,
    tx: mpsc::Sender<Bytes>,
    started: Instant,
    request_id: String,
) {
    let mut events = Events::new(tx);
    events
        .send(&StreamEvent::Start(Start {
            id: conversation.id,
            created_at: rfc3339(&conversation),
        }))
        .await;

    let (text_tx, text_rx) = watch::channel(String::new());
    let saver = tokio::spawn(saver(
        state.store.clone(),
        conversation.clone(),
        text_rx,
        state.limits.checkpoint_interval,
        state.redactor.clone(),
    ));
    let judge_request = state.limits.grounding_check.then(|| request.clone());
    let outcome = generate(&state, request, &mut events, &text_tx, started).await;
    conversation.response = text_tx.borrow().clone();
    drop(text_tx);
    // The saver ends once the text channel closes; its last checkpoint lands before the finish.
    if let Err(e) = saver.await {
        tracing::error!(error = %e, "checkpoint task failed");
    }

    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    conversation.ttfb_ms = outcome.ttfb.map(ms);
    conversation.duration_ms = Some(ms(started.elapsed()));
    conversation.updated_at = now_micros();
    let mut finish_reason = None;
    let failure = match outcome.result {
        Ok((reason, usage)) => {
            conversation.status = Status::Complete;
            conversation.set_usage(usage.unwrap_or_default());
            finish_reason = reason;
            None
        }
        Err(e) => {
            conversation.status = if conversation.response.is_empty() {
                Status::Failed
            } else {
                Status::Partial
            };
            conversation.error = Some(e.code().to_owned());
            match &e {
                Stop::Provider(p) => tracing::warn!(id = %conversation.id, code = e.code(),
                    error = %error_chain(p), detail = ?p, "generation failed"),
                Stop::Guard(flag) => {
                    tracing::warn!(id = %conversation.id, check = %flag.check, "answer stopped by a guardrail");
                    conversation.flags.push(flag.clone());
                }
            }
            Some(e)
        }
    };

    if let (Some(req), None) = (judge_request, &failure) {
        conversation
            .flags
            .push(grounding(&state, req, &conversation.response).await);
    }
    // What the client saw stays as it was; what is stored is redacted.
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
    let saved = save(state.store.as_ref(), &stored).await;
    match failure {
        None => {
            events
                .send(&StreamEvent::Done(Done {
                    id: conversation.id,
                    status: conversation.status,
                    usage: conversation.usage(),
                    finish_reason,
                    flags: conversation.flags.clone(),
                    ttfb_ms: conversation.ttfb_ms,
                    duration_ms: conversation.duration_ms,
                    saved,
                }))
                .await;
        }
        Some(e) => {
            events
                .send(&StreamEvent::Error(Failure {
                    id: conversation.id,
                    status: conversation.status,
                    code: e.code().to_owned(),
                    message: e.public_message().to_owned(),
                    flags: conversation.flags.clone(),
                    saved,
                }))
                .await;
        }
    }
    let ms_f = |d: Option<i32>| d.map(f64::from);
    let (prompt, response) = if state.limits.log_content {
        (
            Some(conversation.prompt.as_str()),
            Some(conversation.response.as_str()),
        )
    } else {
        (None, None)
    };
    // The request's one log line: written here, when the body ends, not when headers go out.
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
    common::telemetry::emit_metrics(
        "stream",
        &[
            (
                "TimeToFirstByte",
                ms_f(conversation.ttfb_ms).unwrap_or(0.0),
                "Milliseconds",
            ),
            (
                "Duration",
                ms_f(conversation.duration_ms).unwrap_or(0.0),
                "Milliseconds",
            ),
            (
                "Tokens",
                conversation.total_tokens.map_or(0.0, f64::from),
                "Count",
            ),
            (
                "Errors",
                if conversation.error.is_some() {
                    1.0
                } else {
                    0.0
                },
                "Count",
            ),
            ("UnsavedRecords", if saved { 0.0 } else { 1.0 }, "Count"),
        ],
    );
}

fn rfc3339(c: &Conversation) -> String {
    c.created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Asks the provider whether `answer` is supported by the prompt: a `grounding` flag with
/// verdict `supported`, `unsupported` or `unknown` (no clear answer, or the judge failed).
async fn grounding(state: &StreamState, mut request: CompletionRequest, answer: &str) -> Flag {
    request.prompt = format!(
        "You check answers for grounding. Reply with one word, yes or no: is every claim in \
         the ANSWER supported by the PROMPT or common knowledge?\n\nPROMPT:\n{}\n\nANSWER:\n{}",
        request.prompt, answer
    );
    request.max_tokens = Some(5);
    request.temperature = Some(0.0);
    let judged = async {
        let mut stream = state.provider.stream(request).await?;
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item? {
                Chunk::Text(t) => text.push_str(&t),
                Chunk::Finish { .. } => break,
            }
        }
        Ok::<_, ProviderError>(text)
    };
    let verdict = match tokio::time::timeout(state.limits.first_chunk_timeout, judged).await {
        Ok(Ok(text)) => {
            let word = text.trim().to_ascii_lowercase();
            if word.starts_with("yes") {
                "supported"
            } else if word.starts_with("no") {
                "unsupported"
            } else {
                "unknown"
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "grounding check failed");
            "unknown"
        }
        Err(_) => "unknown",
    };
    Flag {
        check: "grounding".into(),
        verdict: verdict.into(),
        detail: "judged by the provider".into(),
    }
}

/// Drives the provider under the limits, forwarding text as it arrives.
async fn generate(
    state: &StreamState,
    request: CompletionRequest,
    events: &mut Events,
    text: &watch::Sender<String>,
    started: Instant,
) -> Outcome {
    let limits: &Limits = &state.limits;
    let started_t = tokio::time::Instant::from_std(started);
    let deadline = started_t + limits.total_timeout;
    let first_deadline = (started_t + limits.first_chunk_timeout).min(deadline);
    let mut outcome = Outcome {
        result: Err(ProviderError::Timeout("first chunk").into()),
        ttfb: None,
        chunks: 0,
    };
    let mut stream = match timeout_at(first_deadline, state.provider.stream(request)).await {
        Err(_) => return outcome,
        Ok(Err(e)) => {
            outcome.result = Err(e.into());
            return outcome;
        }
        Ok(Ok(s)) => s,
    };
    let mut guard = state.guard.output();
    // The producer's own copy of the answer, for the guardrails (the saver has the other).
    let mut full = String::new();
    let mut last_activity = tokio::time::Instant::now();
    let mut last_chunk = last_activity;
    loop {
        let (limit, what) = if outcome.ttfb.is_none() {
            (first_deadline, "first chunk")
        } else if last_chunk + limits.idle_timeout < deadline {
            (last_chunk + limits.idle_timeout, "idle")
        } else {
            (deadline, "total")
        };
        let keepalive = last_activity + limits.keepalive_interval;
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(Chunk::Text(t))) => {
                    full.push_str(&t);
                    if let Some(flag) = guard.check(&full, t.len()) {
                        // The chunk that tripped it is neither sent nor saved.
                        outcome.result = Err(Stop::Guard(flag));
                        return outcome;
                    }
                    if outcome.ttfb.is_none() {
                        outcome.ttfb = Some(started.elapsed());
                    }
                    outcome.chunks += 1;
                    events
                        .send(&StreamEvent::Delta(Delta { text: t.clone() }))
                        .await;
                    text.send_modify(|s| s.push_str(&t));
                    last_chunk = tokio::time::Instant::now();
                    last_activity = last_chunk;
                }
                Some(Ok(Chunk::Finish { reason, usage })) => {
                    outcome.result = Ok((reason, usage));
                    return outcome;
                }
                Some(Err(e)) => {
                    outcome.result = Err(e.into());
                    return outcome;
                }
                None => {
                    outcome.result = Err(ProviderError::Incomplete.into());
                    return outcome;
                }
            },
            () = sleep_until(limit) => {
                outcome.result = Err(ProviderError::Timeout(what).into());
                return outcome;
            }
            () = sleep_until(keepalive) => {
                events.comment("keep-alive").await;
                last_activity = tokio::time::Instant::now();
            }
        }
    }
}

/// Writes the row at the start, then the text so far at most once per `interval` while it
/// changes. Ends when the text channel closes.
async fn saver(
    store: Arc<dyn StreamStore>,
    mut conversation: Conversation,
    mut text: watch::Receiver<String>,
    interval: Duration,
    redactor: Option<Arc<Redactor>>,
) {
    let clean = |s: &str| match &redactor {
        Some(r) => r.redact(s).0,
        None => s.to_owned(),
    };
    conversation.prompt = clean(&conversation.prompt);
    if let Err(e) = store.create(&conversation).await {
        tracing::warn!(id = %conversation.id, error = %error_chain(&e),
            "could not write the conversation's first row; the end will be retried");
        return;
    }
    let mut last = tokio::time::Instant::now();
    loop {
        if text.changed().await.is_err() {
            return;
        }
        let due = sleep_until(last + interval);
        tokio::pin!(due);
        loop {
            tokio::select! {
                () = &mut due => break,
                changed = text.changed() => if changed.is_err() { return },
            }
        }
        let snapshot = clean(&text.borrow_and_update());
        if let Err(e) = store.checkpoint(conversation.id, &snapshot).await {
            tracing::warn!(id = %conversation.id, error = %error_chain(&e), "checkpoint failed");
        }
        last = tokio::time::Instant::now();
    }
}

/// Writes the final record, retrying with backoff. When every try fails, the whole record goes
/// to the log as one `unsaved_record` line that `local replay` puts back into the table.
async fn save(store: &dyn StreamStore, conversation: &Conversation) -> bool {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(4)
        .with_jitter();
    let result = (|| store.finish(conversation))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|e, delay| {
            tracing::warn!(id = %conversation.id, error = %error_chain(e), ?delay,
                "saving the conversation failed; retrying");
        })
        .await;
    match result {
        Ok(()) => true,
        Err(e) => {
            let record = serde_json::to_string(conversation).unwrap_or_default();
            tracing::error!(
                event = "unsaved_record",
                id = %conversation.id,
                error = %error_chain(&e),
                record = %record,
                "conversation could not be saved; replay this line with `make replay`"
            );
            false
        }
    }
}
