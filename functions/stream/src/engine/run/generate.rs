//! Driving the provider under the limits (first chunk, idle, total, the Lambda deadline), with
//! the output guardrails, appending each piece to the live turn as it arrives. Nothing here
//! waits on a client: readers follow the turn's log at their own pace.

use std::time::{Duration, Instant};

use common::domain::Usage;
use common::guard::{Flag, StoredText};
use common::provider::tools::Calls;
use common::provider::{Chunk, CompletionRequest, ProviderError};
use futures_util::StreamExt;
use tokio::time::{sleep_until, timeout_at};

use super::Budget;
use crate::engine::StreamState;
use crate::engine::turn::{Halt, LiveTurn};

/// Why a generation stopped early.
pub(super) enum Stop {
    Provider(ProviderError),
    Guard(Flag),
    Halted(Halt),
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
            Stop::Halted(h) => h.code(),
        }
    }
}

impl From<ProviderError> for Stop {
    fn from(e: ProviderError) -> Self {
        Stop::Provider(e)
    }
}

/// How a generation ended (its text is in the live turn).
pub(super) struct Outcome {
    pub(super) result: Result<(Option<String>, Option<Usage>), Stop>,
    pub(super) ttfb: Option<Duration>,
    pub(super) chunks: usize,
    /// The provider's own word for why it stopped, when it has another (for the log line).
    pub(super) raw_reason: Option<String>,
    /// The tool calls made, normalised (see `common::provider::tools::Calls`).
    pub(super) calls: Calls,
}

/// Drives the provider, appending every piece to `turn` (raw, and as `stored` stores it).
pub(super) async fn generate(
    state: &StreamState,
    turn: &LiveTurn,
    request: CompletionRequest,
    stored: &mut StoredText,
    budget: &Budget,
    started: Instant,
) -> Outcome {
    let mut outcome = Outcome {
        result: Err(ProviderError::Timeout("first chunk").into()),
        ttfb: None,
        chunks: 0,
        raw_reason: None,
        calls: Calls::default(),
    };
    // A stop from outside ends the generation wherever it is; dropping the provider's stream
    // closes its connection, so no more tokens are paid for.
    let halted = tokio::select! {
        why = turn.halted() => Some(why),
        () = drive(state, turn, request, stored, budget, started, &mut outcome) => None,
    };
    if let Some(why) = halted {
        outcome.result = Err(Stop::Halted(why));
    }
    outcome
}

async fn drive(
    state: &StreamState,
    turn: &LiveTurn,
    request: CompletionRequest,
    stored: &mut StoredText,
    budget: &Budget,
    started: Instant,
    outcome: &mut Outcome,
) {
    let limits = &state.limits;
    let started_t = tokio::time::Instant::from_std(started);
    let first_deadline = (started_t + limits.first_chunk_timeout).min(budget.stop_by);
    let ran_out = |what| match budget.lambda_bound {
        true if tokio::time::Instant::now() >= budget.stop_by => Stop::Halted(Halt::Deadline),
        _ => Stop::Provider(ProviderError::Timeout(what)),
    };
    let mut stream = match timeout_at(first_deadline, state.provider.stream(request)).await {
        Err(_) => {
            outcome.result = Err(ran_out("first chunk"));
            return;
        }
        Ok(Err(e)) => {
            if let Some(refusal) = e.upstream() {
                turn.set_refusal(refusal);
            }
            outcome.result = Err(e.into());
            return;
        }
        Ok(Ok(s)) => s,
    };
    turn.mark_answered();
    let mut guard = state.guard.output();
    let mut last_chunk = tokio::time::Instant::now();
    loop {
        let (limit, what) = if outcome.ttfb.is_none() {
            (first_deadline, "first chunk")
        } else if last_chunk + limits.idle_timeout < budget.stop_by {
            (last_chunk + limits.idle_timeout, "idle")
        } else {
            (budget.stop_by, "total")
        };
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(Chunk::Text(t))) => {
                    if let Some(flag) = guard.check(&t) {
                        // The chunk that tripped it is neither sent nor saved.
                        outcome.result = Err(Stop::Guard(flag));
                        return;
                    }
                    if outcome.ttfb.is_none() {
                        outcome.ttfb = Some(started.elapsed());
                    }
                    outcome.chunks += 1;
                    let piece = stored.push(&t);
                    turn.push_delta(t, &piece, stored.chars());
                    last_chunk = tokio::time::Instant::now();
                }
                Some(Ok(Chunk::ToolCall(delta))) => {
                    if outcome.ttfb.is_none() {
                        outcome.ttfb = Some(started.elapsed());
                    }
                    outcome.chunks += 1;
                    if let Some(fragment) = outcome.calls.push(delta) {
                        turn.push_tool(fragment);
                    }
                    last_chunk = tokio::time::Instant::now();
                }
                Some(Ok(Chunk::Logprobs(items))) => turn.push_logprobs(items),
                Some(Ok(Chunk::Finish { reason, usage, raw_reason })) => {
                    outcome.result = Ok((reason, usage));
                    outcome.raw_reason = raw_reason;
                    return;
                }
                Some(Err(e)) => {
                    outcome.result = Err(e.into());
                    return;
                }
                None => {
                    outcome.result = Err(ProviderError::Incomplete.into());
                    return;
                }
            },
            () = sleep_until(limit) => {
                outcome.result = Err(ran_out(what));
                return;
            }
        }
    }
}
