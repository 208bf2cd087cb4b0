//! Spend control: the price table, the limits a key may carry, the worst case a request is
//! reserved at, and what a turn cost. The counting itself is in the database (migration V12:
//! `llm_reserve` admits, the final record's trigger settles), so that it holds across every
//! process with no second store.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Usage;
use crate::provider::{CompletionRequest, Content, Part};

/// A model's prices, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input tokens (prompt caching); `input` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// The most the model writes when a request names no cap: a limited key's request is
    /// reserved at it, and sent with it. [`DEFAULT_OUTPUT_CAP`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u32>,
}

/// The output cap of a model the table has none for.
pub const DEFAULT_OUTPUT_CAP: u32 = 4096;

/// Tokens an image is reserved at (no provider's largest image costs more today: OpenAI's
/// high-detail tiles and Claude's `width × height / 750` both stay under it).
pub const IMAGE_TOKENS: u64 = 2_500;

/// Tokens each message is reserved at beyond its text (roles, separators: OpenAI counts 3-4).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 8;

/// When the shipped prices were taken from the providers' pages.
pub const PRICES_AS_OF: &str = "2025-08-01";

/// The shipped prices: OpenAI's and Amazon Bedrock's (on-demand, us-east-1) common models, as
/// of [`PRICES_AS_OF`]; the offline provider is free. `LLM_PRICES` overrides and extends them.
const DEFAULT_PRICES: &[(&str, f64, f64, Option<f64>, u32)] = &[
    ("offline-echo", 0.0, 0.0, None, DEFAULT_OUTPUT_CAP),
    ("gpt-4o-mini", 0.15, 0.60, Some(0.075), 16_384),
    ("gpt-4o", 2.50, 10.00, Some(1.25), 16_384),
    ("gpt-4.1", 2.00, 8.00, Some(0.50), 32_768),
    ("gpt-4.1-mini", 0.40, 1.60, Some(0.10), 32_768),
    ("gpt-4.1-nano", 0.10, 0.40, Some(0.025), 32_768),
    ("gpt-5", 1.25, 10.00, Some(0.125), 128_000),
    ("gpt-5-mini", 0.25, 2.00, Some(0.025), 128_000),
    ("gpt-5-nano", 0.05, 0.40, Some(0.005), 128_000),
    ("o3", 2.00, 8.00, Some(0.50), 100_000),
    ("o3-mini", 1.10, 4.40, Some(0.55), 100_000),
    ("o4-mini", 1.10, 4.40, Some(0.275), 100_000),
    ("amazon.nova-micro-v1:0", 0.035, 0.14, Some(0.00875), 10_000),
    ("amazon.nova-lite-v1:0", 0.06, 0.24, Some(0.015), 10_000),
    ("amazon.nova-pro-v1:0", 0.80, 3.20, Some(0.20), 10_000),
    (
        "anthropic.claude-3-haiku-20240307-v1:0",
        0.25,
        1.25,
        None,
        4_096,
    ),
    (
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        0.80,
        4.00,
        Some(0.08),
        8_192,
    ),
    (
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        3.00,
        15.00,
        Some(0.30),
        8_192,
    ),
    (
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        3.00,
        15.00,
        Some(0.30),
        64_000,
    ),
    (
        "anthropic.claude-sonnet-4-20250514-v1:0",
        3.00,
        15.00,
        Some(0.30),
        64_000,
    ),
    ("meta.llama3-1-8b-instruct-v1:0", 0.22, 0.22, None, 2_048),
    ("meta.llama3-1-70b-instruct-v1:0", 0.72, 0.72, None, 2_048),
];

/// Prices by the model name the provider is called with.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices(HashMap<String, Price>);

impl Default for Prices {
    fn default() -> Self {
        Self(
            DEFAULT_PRICES
                .iter()
                .map(|&(model, input, output, cached_input, cap)| {
                    let price = Price {
                        input,
                        output,
                        cached_input,
                        max_output: Some(cap),
                    };
                    (model.to_owned(), price)
                })
                .collect(),
        )
    }
}

impl Prices {
    /// The shipped prices with `LLM_PRICES` (JSON, or a path to a file of it) over them.
    pub fn with_overrides(raw: Option<&str>) -> Result<Self, String> {
        let mut prices = Self::default();
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(prices);
        };
        let text = if raw.starts_with('{') {
            raw.to_owned()
        } else {
            std::fs::read_to_string(raw).map_err(|e| format!("cannot read the file {raw}: {e}"))?
        };
        let table: HashMap<String, Price> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "expected {{\"model\": {{\"input\": 0.15, \"output\": 0.6, \
                 \"cached_input\"?: 0.075}}}} in USD per million tokens: {e}"
            )
        })?;
        for (model, price) in table {
            let numbers = [Some(price.input), Some(price.output), price.cached_input];
            if numbers.iter().flatten().any(|n| !n.is_finite() || *n < 0.0) {
                return Err(format!(
                    "the prices of {model} must be numbers of at least 0"
                ));
            }
            if price.max_output == Some(0) {
                return Err(format!("the max_output of {model} must be at least 1"));
            }
            prices.0.insert(model, price);
        }
        Ok(prices)
    }

    /// The price of `model`: its own entry, else the entry of its name without a Bedrock
    /// inference profile's region (`us.`, `eu.`, `apac.`, `global.`) or without a dated
    /// snapshot suffix (`-2024-07-18`).
    pub fn get(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.0.get(model) {
            return Some(p);
        }
        let unregioned = ["us.", "eu.", "apac.", "global.", "us-gov."]
            .iter()
            .find_map(|r| model.strip_prefix(r));
        if let Some(p) = unregioned.and_then(|m| self.0.get(m)) {
            return Some(p);
        }
        undated(model).and_then(|m| self.0.get(m))
    }

    /// What `usage` of `model` cost in USD; `None` when the model has no price or the usage
    /// is unknown. Cached prompt tokens are priced as cached.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let price = self.get(model)?;
        let prompt = f64::from(usage.prompt_tokens?.max(0));
        let completion = f64::from(usage.completion_tokens.unwrap_or(0).max(0));
        let cached = f64::from(usage.cached_tokens.unwrap_or(0).clamp(0, i32::MAX)).min(prompt);
        let usd = (prompt - cached) * price.input
            + cached * price.cached_input.unwrap_or(price.input)
            + completion * price.output;
        Some(usd / 1_000_000.0)
    }

    /// The output cap a request naming none is reserved at, and sent with.
    pub fn output_cap(&self, model: &str) -> u32 {
        self.get(model)
            .and_then(|p| p.max_output)
            .unwrap_or(DEFAULT_OUTPUT_CAP)
    }
}

/// `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`.
fn undated(model: &str) -> Option<&str> {
    let (base, date) = model.split_at_checked(model.len().checked_sub(11)?)?;
    let digits = date.as_bytes();
    let dated = digits[0] == b'-'
        && [1, 2, 3, 4, 6, 7, 9, 10]
            .iter()
            .all(|&i| digits[i].is_ascii_digit())
        && digits[5] == b'-'
        && digits[8] == b'-';
    dated.then_some(base)
}

/// Over which time a budget holds: a UTC day, a UTC month, or the key's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    #[default]
    Month,
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }
}

/// The limits a key carries; each is optional, and a key with none is never counted.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyLimits {
    /// Requests a minute (a sliding minute).
    pub rpm: Option<i32>,
    /// Tokens a minute, prompt and answer (a sliding minute).
    pub tpm: Option<i64>,
    /// Answers running at once.
    pub concurrency: Option<i32>,
    /// USD a period.
    pub budget_usd: Option<f64>,
    /// Tokens a period.
    pub budget_tokens: Option<i64>,
    pub period: Period,
}

impl KeyLimits {
    /// Whether any limit is set (else the key is never counted).
    pub fn any(&self) -> bool {
        self.rpm.is_some()
            || self.tpm.is_some()
            || self.concurrency.is_some()
            || self.budget_usd.is_some()
            || self.budget_tokens.is_some()
    }

    /// Whether a request's tokens are bounded by the limits (a budget or `tpm`): then a request
    /// naming no cap is sent with the one it was reserved at.
    pub fn counts_tokens(&self) -> bool {
        self.tpm.is_some() || self.budget_usd.is_some() || self.budget_tokens.is_some()
    }
}

/// The key a request was authenticated with (none with `AUTH=off` or `AUTH_TOKEN`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallerKey {
    pub id: Uuid,
    pub limits: KeyLimits,
}

/// An upper bound on the tokens of `request`'s prompt without a tokenizer: a token is at least
/// one byte of text in every tokenizer the providers use, so the bytes of every text the
/// provider receives (messages, tool calls and results, tool definitions) bound them, plus
/// [`MESSAGE_OVERHEAD_TOKENS`] a message and [`IMAGE_TOKENS`] an image.
pub fn prompt_bound(request: &CompletionRequest) -> u64 {
    let mut bytes = 0u64;
    let mut images = 0u64;
    for m in &request.messages {
        match &m.content {
            Content::Text(t) => bytes += t.len() as u64,
            Content::Parts(parts) => {
                for p in parts {
                    match p {
                        Part::Text { text } => bytes += text.len() as u64,
                        Part::ImageUrl { .. } => images += 1,
                    }
                }
            }
            Content::None => {}
        }
        for c in &m.tool_calls {
            bytes += (c.id.len() + c.name.len() + c.arguments.len()) as u64;
        }
        bytes += m.tool_call_id.as_ref().map_or(0, |i| i.len() as u64);
        bytes += m.name.as_ref().map_or(0, |n| n.len() as u64);
    }
    for t in &request.tools {
        bytes += t.name.len() as u64;
        bytes += t.description.as_ref().map_or(0, |d| d.len() as u64);
        bytes += t.parameters.as_ref().map_or(0, |p| p.get().len() as u64);
    }
    let messages = request.messages.len() as u64 + 1;
    bytes + images * IMAGE_TOKENS + messages * MESSAGE_OVERHEAD_TOKENS
}

/// The cap a request names: `max_tokens`, or `max_completion_tokens` passed as sent.
pub fn named_cap(request: &CompletionRequest) -> Option<u64> {
    request.max_tokens.map(u64::from).or_else(|| {
        request
            .extra
            .get("max_completion_tokens")
            .and_then(serde_json::Value::as_u64)
    })
}

/// One request's worst case, as `llm_reserve` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub key_id: Uuid,
    pub turn_id: Uuid,
    pub owner: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub output_tokens: i64,
    /// USD per million tokens; `None`: the model has no price.
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
    /// A reservation older than this whose turn shows no heartbeat is settled as dead.
    pub stale: std::time::Duration,
    /// A reservation older than this is settled as dead whatever its turn shows.
    pub lease: std::time::Duration,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `rate_limited`, `budget_exceeded` or `model_not_priced`.
    pub code: String,
    pub message: String,
    /// Seconds until it may pass (none for `model_not_priced`).
    pub retry_after: Option<u32>,
}

/// How `GET /usage` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    #[default]
    Day,
    Model,
    Key,
}

/// A usage report's window (whole UTC days, both ends included; none: all time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub from: Option<time::Date>,
    pub to: Option<time::Date>,
    pub group_by: GroupBy,
}

/// One line of a usage report (its group's name set, the others absent), or its total.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageLine {
    /// With `group_by=day`: the UTC day (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// With `group_by=model`: the model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// With `group_by=key`: the key's id (as `key create` printed it); null for turns made
    /// without a stored key (`AUTH=off`, `AUTH_TOKEN`).
    #[serde(default, skip_serializing_if = "is_unset")]
    pub key_id: Option<Option<Uuid>>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// USD (turns of models without a price count 0).
    pub cost_usd: f64,
}

fn is_unset(v: &Option<Option<Uuid>>) -> bool {
    v.is_none()
}

/// What a limited key has spent in its current period.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeySpend {
    pub spent_usd: f64,
    pub spent_tokens: i64,
    /// Worst cases of its answers running now.
    pub reserved_usd: f64,
    pub reserved_tokens: i64,
    /// Answers running now.
    pub running: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Message, Role};

    #[test]
    fn prices_find_snapshots_and_profiles_and_cost_cached_tokens_as_cached() {
        let p = Prices::default();
        assert_eq!(p.get("gpt-4o-mini-2024-07-18"), p.get("gpt-4o-mini"));
        assert_eq!(
            p.get("us.amazon.nova-lite-v1:0"),
            p.get("amazon.nova-lite-v1:0")
        );
        assert!(p.get("gpt-4o-mini").is_some() && p.get("no-such-model").is_none());
        let usage = Usage {
            prompt_tokens: Some(1_000_000),
            completion_tokens: Some(1_000_000),
            total_tokens: None,
            cached_tokens: Some(500_000),
        };
        // 0.5M at 0.15 + 0.5M at 0.075 + 1M at 0.6.
        let usd = p.cost("gpt-4o-mini", &usage).unwrap();
        assert!((usd - (0.075 + 0.0375 + 0.6)).abs() < 1e-9, "{usd}");
        assert_eq!(p.cost("no-such-model", &usage), None);
    }

    #[test]
    fn overrides_extend_and_bad_tables_are_named() {
        let p = Prices::with_overrides(Some(r#"{"m": {"input": 1, "output": 2}}"#)).unwrap();
        assert_eq!(p.get("m").unwrap().cached_input, None);
        assert!(p.get("gpt-4o").is_some());
        for bad in [
            r#"{"m": {"input": -1, "output": 2}}"#,
            r#"{"m": {"input": 1}}"#,
            r#"{"m": {"input": 1, "output": 2, "typo": 3}}"#,
            "/no/such/file",
        ] {
            assert!(Prices::with_overrides(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_prompt_bound_is_never_below_the_bytes_sent() {
        let mut r = CompletionRequest::prompt("héllo wörld", "m");
        r.messages.insert(0, Message::new(Role::System, "be brief"));
        let bound = prompt_bound(&r);
        assert!(bound >= ("héllo wörld".len() + "be brief".len()) as u64);
        assert_eq!(named_cap(&r), None);
        r.extra
            .insert("max_completion_tokens".into(), serde_json::json!(7));
        assert_eq!(named_cap(&r), Some(7));
    }
}
