//! Driving the provider under the limits (first chunk, idle, total), with the output
//! guardrails, forwarding text to the client and to the saver as it arrives.

use std::time::{Duration, Instant};

use common::domain::Usage;
use common::guard::Flag;
use common::provider::{Chunk, CompletionRequest, ProviderError};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at};

use crate::events::{Delta, StreamEvent};
use crate::sse::Events;
use crate::{Limits, StreamState};

/// Why a generation stopped early.
pub(super) enum Stop {
    Provider(ProviderError),
    Guard(Flag),
}

impl Stop {
    pub(super) fn code(&self) -> &'static str {
        match self {
            Stop::Provider(e) => e.code(),
            Stop::Guard(f) => match f.check.as_str() {
                "repetition" => "guardrail_repetition",
                "response_too_long" => "guardrail_response_too_long",
                _ => "guardrail_blocked",
            },
        }
    }

    pub(super) fn public_message(&self) -> &'static str {
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
pub(super) struct Outcome {
    pub(super) result: Result<(Option<String>, Option<Usage>), Stop>,
    pub(super) ttfb: Option<Duration>,
    pub(super) chunks: usize,
}

/// Drives the provider under the limits, forwarding text as it arrives.
pub(super) async fn generate(
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
