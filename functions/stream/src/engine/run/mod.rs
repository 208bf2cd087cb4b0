//! One turn from start to saved record, in five steps: start (the saver beside the provider
//! call), generate (each piece appended to the live turn as it comes), settle (what the outcome
//! means for the record), save (the final record within a bounded budget, else logged) and
//! report (the log line, the metrics, then the final event). The record is finished whatever
//! happens: provider error, timeout, a client gone or lagging, a cancel, a shutdown, the Lambda
//! deadline. The final event comes last, after the save: a reader's response ends only then
//! (in Lambda nothing runs once the response is complete).

mod generate;
mod grounding;
mod saver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::domain::now_micros;
use common::error::error_chain;
use common::guard::StoredText;
use common::provider::CompletionRequest;
use common::{Conversation, Status};
use tokio::sync::watch;

use crate::engine::StreamState;
use crate::engine::events::StreamEvent;
use crate::engine::turn::{Halt, LiveTurn, Reader};
use generate::{Outcome, Stop};

/// How long before the Lambda invocation's deadline generation stops, to leave time to save.
pub const LAMBDA_RESERVE: Duration = Duration::from_secs(5);

/// When a turn must stop generating, and whether that bound is the Lambda deadline's.
pub struct Budget {
    pub stop_by: tokio::time::Instant,
    /// The invocation's deadline, in Lambda.
    pub lambda_deadline: Option<tokio::time::Instant>,
    /// `stop_by` is the Lambda deadline less [`LAMBDA_RESERVE`] (not `LLM_TOTAL_TIMEOUT_MS`).
    pub lambda_bound: bool,
}

impl Budget {
    /// The budget of a turn started at `started`, within `lambda_deadline` if any.
    pub fn new(
        total: Duration,
        started: Instant,
        lambda_deadline: Option<std::time::SystemTime>,
    ) -> Self {
        let total_by = tokio::time::Instant::from_std(started) + total;
        let lambda_deadline = lambda_deadline.map(|d| {
            let left = d
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let lambda_stop = lambda_deadline.map(|d| d.checked_sub(LAMBDA_RESERVE).unwrap_or(d));
        match lambda_stop {
            Some(l) if l < total_by => Self {
                stop_by: l,
                lambda_deadline,
                lambda_bound: true,
            },
            _ => Self {
                stop_by: total_by,
                lambda_deadline,
                lambda_bound: false,
            },
        }
    }

    /// Until when the end may be saved: `DB_SAVE_BUDGET_MS` from now, and in Lambda a second
    /// before the deadline.
    fn save_by(&self, save_budget: Duration) -> tokio::time::Instant {
        let by = tokio::time::Instant::now() + save_budget;
        match self.lambda_deadline {
            Some(d) => by.min(d.checked_sub(Duration::from_secs(1)).unwrap_or(d)),
            None => by,
        }
    }

    /// Whether `needed` fits before the Lambda deadline (always outside Lambda).
    fn leaves(&self, needed: Duration) -> bool {
        self.lambda_deadline
            .is_none_or(|d| tokio::time::Instant::now() + needed + LAMBDA_RESERVE < d)
    }
}

/// When a response's HTTP status goes out, which decides the status of a failed turn (for its
/// log line).
#[derive(Clone, Copy)]
pub enum StatusRule {
    /// With the first event, before the provider answers (`POST /stream`): always 200.
    Immediate,
    /// Once the provider has answered or the turn has failed (a streamed `/v1` call): a failure
    /// before the provider answered has its own status (`fn` maps its code).
    Held(fn(&str) -> u16),
    /// Once the turn has ended (a `/v1` call without streaming): a failure has its own status.
    AtEnd(fn(&str) -> u16),
}

impl StatusRule {
    /// The status sent for a turn that ended with `failure` (its code), the provider having
    /// `answered` or not.
    pub fn status(self, failure: Option<&str>, answered: bool) -> u16 {
        match (self, failure) {
            (StatusRule::Held(map), Some(code)) if !answered => map(code),
            (StatusRule::AtEnd(map), Some(code)) => map(code),
            _ => 200,
        }
    }
}

/// What a turn is, besides its provider request.
pub struct TurnRun {
    /// What a limited key's reservation holds for it (set by the route after `begin`).
    pub held: Option<crate::engine::spend::Held>,
    /// How its response's status is decided (set by the route; `Immediate` from `begin`).
    pub status_rule: StatusRule,
    pub turn: Arc<LiveTurn>,
    pub conversation: Conversation,
    /// The reader of the client that asked (for the log line).
    pub client: Arc<Reader>,
    pub budget: Budget,
    pub started: Instant,
    pub request_id: String,
    pub route: &'static str,
}

pub async fn run(state: StreamState, run: TurnRun, request: CompletionRequest) {
    let TurnRun {
        held,
        status_rule,
        turn,
        mut conversation,
        client,
        budget,
        started,
        request_id,
        route,
    } = run;
    let judge_request = state.limits.grounding_check.then(|| request.clone());
    let attempts = request.attempts.clone();

    // Start: the row is written beside the provider call, once the first text is out.
    let mut start = conversation.clone();
    if let Some(r) = &state.redactor {
        r.redact_request(&mut start);
    }
    let (saver_done, done_rx) = watch::channel(false);
    let saver = tokio::spawn(saver::saver(
        state.store.clone(),
        start,
        turn.clone(),
        state.limits.checkpoint_interval,
        done_rx,
    ));

    // Generate.
    let mut stored = StoredText::new(state.redactor.clone());
    let outcome = generate::generate(&state, &turn, request, &mut stored, &budget, started).await;
    let tail = stored.finish();
    if !tail.is_empty() {
        turn.push_delta(String::new(), &tail, stored.chars());
    }
    let _ = saver_done.send(true);
    if let Err(e) = saver.await {
        tracing::error!(error = %e, "checkpoint task failed");
    }

    // Settle, then save. The answer is the stored text (with `PII_REDACTION=true`, redacted
    // piece by piece; the client saw it as generated).
    conversation.response = turn.stored_text();
    settle(&mut conversation, &outcome, started);
    routed(&mut conversation, attempts.all());
    if let Ok((_, Some(usage))) = &outcome.result {
        conversation.cost_usd = state.prices.cost(&conversation.model, usage);
    }
    let calls = outcome.calls.finish();
    if !calls.is_empty() {
        // A model that called tools stopped to have them run, whatever word its upstream used
        // (some say `stop`).
        if matches!(conversation.finish_reason.as_deref(), None | Some("stop"))
            && conversation.error.is_none()
        {
            conversation.finish_reason = Some("tool_calls".into());
        }
        conversation.tool_calls = Some(calls);
    }
    let failure = outcome.result.as_ref().err();
    if let (Some(req), None) = (judge_request, failure)
        && budget.leaves(state.limits.first_chunk_timeout)
    {
        conversation
            .flags
            .push(grounding::grounding(&state, req, &conversation.response).await);
    }
    redact_record(&state, &mut conversation, &stored);
    // A turn whose thread was deleted is not kept, nor logged for replay; its reservation
    // settles apart (a saved record settles its own).
    let deleted = matches!(failure, Some(Stop::Halted(Halt::ThreadDeleted)));
    if let (true, Some(held)) = (deleted, held) {
        crate::engine::spend::settle_unsaved(&state, held, &conversation).await;
    }
    let saved = !deleted
        && saver::save(
            state.store.as_ref(),
            &conversation,
            budget.save_by(state.limits.save_budget),
            state.turns.shutdown_deadline(),
        )
        .await;

    // Report: the log line and metrics, then the final event, which ends every reader.
    // The last event is rebuilt from the record: a client re-attaching later gets the same.
    let event = StreamEvent::last_of(&conversation, saved);
    let status = status_rule.status(conversation.error.as_deref(), turn.is_answered());
    report(
        &state,
        &conversation,
        &client,
        &outcome,
        started,
        &request_id,
        (route, status),
        saved,
    );
    turn.push_final(event);
    state.turns.end(conversation.id);
}

/// With routing: every target tried, and the one that gave the final text (else the last
/// tried) as the turn's provider and model.
fn routed(conversation: &mut Conversation, attempts: Vec<common::domain::Attempt>) {
    let answered = attempts
        .iter()
        .rev()
        .find(|a| a.error_code.is_none())
        .or(attempts.last());
    if let Some(a) = answered {
        conversation.provider = a.provider.clone();
        conversation.model = a.model.clone();
    }
    if !attempts.is_empty() {
        conversation.attempts = Some(attempts);
    }
}

/// Puts the outcome into the record: times, status, usage or error, the guardrail's flag.
fn settle(conversation: &mut Conversation, outcome: &Outcome, started: Instant) {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    conversation.ttfb_ms = outcome.ttfb.map(ms);
    conversation.duration_ms = Some(ms(started.elapsed()));
    conversation.updated_at = now_micros();
    match &outcome.result {
        Ok((reason, usage)) => {
            conversation.status = Status::Complete;
            conversation.set_usage(usage.unwrap_or_default());
            conversation.finish_reason = reason.clone();
        }
        Err(e) => {
            conversation.status = match e {
                Stop::Halted(Halt::Cancel | Halt::ThreadDeleted) => Status::Cancelled,
                _ if conversation.response.is_empty() => Status::Failed,
                _ => Status::Partial,
            };
            conversation.error = Some(e.code().to_owned());
            match e {
                Stop::Provider(p) => tracing::warn!(id = %conversation.id, code = e.code(),
                    error = %error_chain(p), detail = ?p, "generation failed"),
                Stop::Guard(flag) => {
                    tracing::warn!(id = %conversation.id, check = %flag.check, "answer stopped by a guardrail");
                    conversation.flags.push(flag.clone());
                }
                Stop::Halted(why) => {
                    tracing::info!(id = %conversation.id, code = why.code(), "generation stopped");
                }
            }
        }
    }
}

/// The record as stored (and logged): with `PII_REDACTION=true` what it keeps of its request
/// redacted too (its answer already is), and the redaction's flag added (the final event
/// reports it as well).
fn redact_record(state: &StreamState, conversation: &mut Conversation, stored: &StoredText) {
    if let Some(r) = &state.redactor {
        let mut n = r.redact_request(conversation);
        n.add(stored.redacted());
        conversation.flags.extend(n.flag());
    }
}

/// The request's one log line (written when the turn ends, not when headers go out) and the
/// turn's metrics line.
#[allow(clippy::too_many_arguments)]
fn report(
    state: &StreamState,
    conversation: &Conversation,
    client: &Reader,
    outcome: &Outcome,
    started: Instant,
    request_id: &str,
    (route, status): (&'static str, u16),
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
        route,
        status,
        latency_ms = common::telemetry::millis(started.elapsed()),
        ttfb_ms = conversation.ttfb_ms,
        response_bytes = client.sent.load(std::sync::atomic::Ordering::SeqCst),
        chunks = outcome.chunks,
        conversation_id = %conversation.id,
        conversation_status = conversation.status.as_str(),
        provider = %conversation.provider,
        model = %conversation.model,
        prompt_tokens = conversation.prompt_tokens,
        completion_tokens = conversation.completion_tokens,
        total_tokens = conversation.total_tokens,
        finish_reason = conversation.finish_reason.as_deref(),
        provider_stop_reason = outcome.raw_reason.as_deref(),
        error_code = conversation.error.as_deref(),
        attempts = conversation.attempts.as_ref().map(Vec::len),
        fallbacks = conversation.attempts.as_ref().map(|a| a.len().saturating_sub(1)),
        client_connected = client.connected(),
        client_lagging = client.lagging(),
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
            (
                "Fallbacks",
                conversation
                    .attempts
                    .as_ref()
                    .map_or(0.0, |a| a.len().saturating_sub(1) as f64),
                "Count",
            ),
        ],
    );
}
