//! A limited key's request is admitted before the provider is called: its worst case (the
//! prompt's tokens bounded from above, the output cap, at the most expensive model it may
//! reach) is reserved against the key's limits in one statement, or the request is refused
//! with a 429 and nothing else happens (no provider call, no stored turn). The turn's final
//! record settles the reservation (see migration V12); [`settle_unsaved`] does it for a turn
//! whose record is not written.

use common::auth::CallerKey;
use common::provider::CompletionRequest;
use common::spend::{Reservation, named_cap, prompt_bound};
use common::{ApiError, Conversation};

use super::StreamState;

/// What a turn was reserved at.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub prompt_bound: i64,
    pub output_cap: i64,
}

/// Marks `conversation` as made with `key`; with limits, reserves `request`'s worst case or
/// refuses it. A request whose tokens the limits bound (`tpm`, a budget) and that names no cap
/// is given the cap it was reserved at.
pub async fn admit(
    state: &StreamState,
    key: Option<&CallerKey>,
    conversation: &mut Conversation,
    request: &mut CompletionRequest,
) -> Result<Option<Held>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    conversation.key_id = Some(key.id);
    if !key.limits.any() {
        return Ok(None);
    }
    let targets = state.provider.targets(&request.model);
    let prompt = i64::try_from(prompt_bound(request)).unwrap_or(i64::MAX);
    // The cap every target honours; a named one is the client's.
    let cap = match named_cap(request) {
        Some(named) => named,
        None => {
            let cap = targets
                .iter()
                .map(|m| state.prices.output_cap(m))
                .min()
                .unwrap_or(common::spend::DEFAULT_OUTPUT_CAP);
            if key.limits.counts_tokens() {
                request.max_tokens = Some(cap);
            }
            u64::from(cap)
        }
    };
    let output = i64::try_from(cap).unwrap_or(i64::MAX);
    // At the most expensive target; a target without a price makes the request unpriced.
    let mut priced: Option<(String, f64, f64)> = None;
    let mut unpriced = None;
    for m in &targets {
        match state.prices.get(m) {
            None => unpriced = unpriced.or(Some(m.clone())),
            Some(p) => {
                let worst = prompt as f64 * p.input + output as f64 * p.output;
                if priced
                    .as_ref()
                    .is_none_or(|(_, i, o)| worst > prompt as f64 * i + output as f64 * o)
                {
                    priced = Some((m.clone(), p.input, p.output));
                }
            }
        }
    }
    let (model, input_price, output_price) = match (unpriced, priced) {
        (Some(m), _) => (m, None, None),
        (None, Some((m, i, o))) => (m, Some(i), Some(o)),
        (None, None) => (request.model.clone(), None, None),
    };
    let reservation = Reservation {
        key_id: key.id,
        turn_id: conversation.id,
        owner: conversation.owner.clone(),
        model,
        prompt_tokens: prompt,
        output_tokens: output,
        input_price,
        output_price,
        stale: state.spend.stale,
        lease: state.spend.lease,
    };
    match state.store.reserve(&reservation).await? {
        None => Ok(Some(Held {
            prompt_bound: prompt,
            output_cap: output,
        })),
        Some(refusal) => Err(match refusal.code.as_str() {
            "model_not_priced" => ApiError::Validation {
                code: "model_not_priced",
                message: refusal.message,
            },
            "budget_exceeded" => ApiError::Limited {
                code: "budget_exceeded",
                message: refusal.message,
                retry_after: refusal.retry_after.unwrap_or(60),
            },
            _ => ApiError::Limited {
                code: "rate_limited",
                message: refusal.message,
                retry_after: refusal.retry_after.unwrap_or(1),
            },
        }),
    }
}

/// Settles the reservation of a turn whose final record was not written (its thread was
/// deleted while it ran), at its usage, or without one at its prompt's bound and its text.
pub async fn settle_unsaved(state: &StreamState, held: Held, c: &Conversation) {
    let prompt = c.prompt_tokens.map_or(held.prompt_bound, i64::from);
    let completion = c.completion_tokens.map_or_else(
        || held.output_cap.min(c.response.chars().count() as i64),
        i64::from,
    );
    let usd = c.cost_usd.unwrap_or_else(|| {
        state.prices.get(&c.model).map_or(0.0, |p| {
            (prompt as f64 * p.input + completion as f64 * p.output) / 1_000_000.0
        })
    });
    if let Err(e) = state
        .store
        .settle(c.id, &c.model, prompt, completion, usd)
        .await
    {
        tracing::warn!(id = %c.id, error = %common::error::error_chain(&e),
            "could not settle the reservation; its lease settles it");
    }
}
