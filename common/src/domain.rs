//! Domain types: a conversation and its lifecycle.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a conversation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The provider is still answering (or the writer died; see [`Conversation::settle`]).
    Streaming,
    /// The whole answer arrived.
    Complete,
    /// Some text arrived, then the provider, the network or a limit stopped it.
    Partial,
    /// No text arrived.
    Failed,
    /// A guardrail refused the prompt; the provider was not called.
    Blocked,
    /// A client stopped it (`POST /stream/{id}/cancel`); the text so far is kept.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Streaming => "streaming",
            Status::Complete => "complete",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Blocked => "blocked",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the database spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "streaming" => Status::Streaming,
            "complete" => Status::Complete,
            "partial" => Status::Partial,
            "failed" => Status::Failed,
            "blocked" => Status::Blocked,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub total_tokens: Option<i32>,
    /// Prompt tokens the provider read from its cache (priced as cached input); not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<i32>,
}

/// One prompt, its answer and what happened on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversation {
    /// UUIDv7 (time-ordered).
    pub id: Uuid,
    /// Who made it: the owner of the API key used (`local` with `AUTH=off`).
    pub owner: String,
    pub prompt: String,
    pub response: String,
    pub status: Status,
    /// Error code when the conversation did not complete (`provider_error`, `interrupted`, ...).
    pub error: Option<String>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub total_tokens: Option<i32>,
    /// Guardrail verdicts on this conversation.
    #[serde(default)]
    pub flags: Vec<crate::guard::Flag>,
    /// Milliseconds from request to the first text.
    pub ttfb_ms: Option<i32>,
    /// Milliseconds from request to the end of the answer.
    pub duration_ms: Option<i32>,
    /// Why the provider stopped (`stop`, `length`, `content_filter`, ...), when it finished.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The thread: its first turn's id (a first turn's own).
    #[serde(default = "Uuid::nil")]
    pub thread_id: Uuid,
    /// The turn this one continues; null on a first turn.
    #[serde(default)]
    pub previous_id: Option<Uuid>,
    /// The instructions the turn ran under: its own, or the nearest ones up its chain.
    #[serde(default)]
    pub system: Option<String>,
    /// For a turn made through `/v1/chat/completions`: the earlier messages the model saw, as
    /// sent; null otherwise.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub messages: Option<serde_json::Value>,
    /// How many previous turns the provider received with this one.
    #[serde(default)]
    pub context_turns: Option<i32>,
    /// The calls the assistant made (`[{"id","name","arguments"}]`, the arguments the JSON
    /// text the model wrote); null when it made none.
    #[serde(default)]
    pub tool_calls: Option<Vec<crate::provider::ToolCall>>,
    /// For a `/v1` call whose prompt (its last user message) is not all text: its content
    /// parts as sent, images within 64 KB of data per turn (a larger one is
    /// `{"type": "image_omitted", "media_type", "bytes", "sha256"}`); null otherwise.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub prompt_parts: Option<serde_json::Value>,
    /// With routing (`LLM_CONFIG`): every target tried, in order; null without it.
    #[serde(default)]
    pub attempts: Option<Vec<Attempt>>,
    /// The names of the tools the request offered (`/v1` calls with `tools`); null otherwise.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// What the turn cost in USD, from the price table and the provider's usage (cached
    /// prompt tokens priced as cached); null when the model has no price or no usage came.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// The id of the API key the turn was made with (as `key create` printed it); null with
    /// `AUTH=off` or `AUTH_TOKEN`.
    #[serde(default)]
    pub key_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// True only in a copy whose `response` was cut to fit a page or a single read (5,000,000
    /// bytes, what a buffered Lambda response can hold): the whole answer is the text of
    /// `GET /stream/{id}` (streamed, of any length; `?after=` the cut copy's length in
    /// characters gives the rest). False otherwise.
    #[serde(default)]
    pub truncated: bool,
    /// When the process generating a `streaming` turn was last heard from (each checkpoint);
    /// not part of the API.
    #[serde(skip)]
    #[schema(ignore)]
    pub heartbeat_at: Option<OffsetDateTime>,
}

/// One target a routed turn tried: which, how it ended, how long it took and how much text it
/// gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The `[providers.NAME]` name.
    pub provider: String,
    /// The model it was called with.
    pub model: String,
    /// The upstream's HTTP status, when it answered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it did not give the answer (`provider_unreachable`, `provider_timeout`, ...);
    /// absent for the target that finished it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Milliseconds from its call to its end.
    pub ms: u64,
    /// The characters of text it gave.
    pub chars: u64,
}

/// A conversation that goes on: its first turn and every turn that continues it (branches
/// included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Thread {
    /// Its first turn's id.
    pub id: Uuid,
    /// Its first prompt, cut to 80 characters.
    pub title: String,
    /// How many turns it has.
    pub turns: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its latest turn started.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The error code given to a row whose writer went away mid-stream.
pub const INTERRUPTED: &str = "interrupted";

impl Conversation {
    /// A new conversation, as written when the stream starts.
    pub fn start(owner: &str, prompt: String, provider: &str, model: &str) -> Self {
        let now = now_micros();
        let id = Uuid::now_v7();
        Self {
            id,
            owner: owner.to_owned(),
            prompt,
            response: String::new(),
            status: Status::Streaming,
            error: None,
            provider: provider.to_owned(),
            model: model.to_owned(),
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            flags: Vec::new(),
            ttfb_ms: None,
            duration_ms: None,
            finish_reason: None,
            thread_id: id,
            previous_id: None,
            system: None,
            messages: None,
            context_turns: None,
            tool_calls: None,
            prompt_parts: None,
            attempts: None,
            tools: None,
            cost_usd: None,
            key_id: None,
            created_at: now,
            updated_at: now,
            truncated: false,
            heartbeat_at: None,
        }
    }

    /// A row still `streaming` that its writer abandoned (a crash, a kill, a Lambda timeout)
    /// reads as `partial` with error `interrupted`: one not heard from (its heartbeat, else its
    /// start) for longer than `quiet`, or started longer ago than a stream may run
    /// (`stale_after`).
    pub fn settle(
        mut self,
        stale_after: std::time::Duration,
        quiet: std::time::Duration,
        now: OffsetDateTime,
    ) -> Self {
        self.settle_in_place(stale_after, quiet, now);
        self
    }

    /// [`Conversation::settle`] in place.
    pub fn settle_in_place(
        &mut self,
        stale_after: std::time::Duration,
        quiet: std::time::Duration,
        now: OffsetDateTime,
    ) {
        let heard = self.heartbeat_at.unwrap_or(self.created_at);
        if self.status == Status::Streaming
            && (now - self.created_at > stale_after || now - heard > quiet)
        {
            self.status = Status::Partial;
            self.error = Some(INTERRUPTED.to_owned());
        }
    }

    /// A record read from an older log line names no thread: it is its own.
    pub fn with_thread_default(mut self) -> Self {
        if self.thread_id.is_nil() {
            self.thread_id = self.id;
        }
        self
    }

    /// This conversation as PostgreSQL can store it (see [`storable`]); borrowed when it
    /// already is.
    pub fn storable(&self) -> std::borrow::Cow<'_, Self> {
        let empty = String::new();
        let texts = [
            &self.prompt,
            &self.response,
            &self.model,
            &self.owner,
            &self.provider,
            self.system.as_ref().unwrap_or(&empty),
        ];
        let flags = self
            .flags
            .iter()
            .flat_map(|f| [&f.check, &f.verdict, &f.detail]);
        let error = self.error.iter();
        let calls = self
            .tool_calls
            .iter()
            .flatten()
            .flat_map(|c| [&c.id, &c.name, &c.arguments]);
        let tools = self.tools.iter().flatten();
        if !texts
            .into_iter()
            .chain(flags)
            .chain(error)
            .chain(calls)
            .chain(tools)
            .any(|t| t.contains('\0'))
            && !self.messages.as_ref().is_some_and(json_has_nul)
            && !self.prompt_parts.as_ref().is_some_and(json_has_nul)
        {
            return std::borrow::Cow::Borrowed(self);
        }
        let fix = |t: &String| storable(t).into_owned();
        let mut c = self.clone();
        c.prompt = fix(&c.prompt);
        c.response = fix(&c.response);
        c.model = fix(&c.model);
        c.owner = fix(&c.owner);
        c.provider = fix(&c.provider);
        c.error = c.error.as_ref().map(fix);
        c.system = c.system.as_ref().map(fix);
        c.messages = c.messages.as_ref().map(storable_json);
        c.prompt_parts = c.prompt_parts.as_ref().map(storable_json);
        for call in c.tool_calls.iter_mut().flatten() {
            call.id = fix(&call.id);
            call.name = fix(&call.name);
            call.arguments = fix(&call.arguments);
        }
        for name in c.tools.iter_mut().flatten() {
            *name = fix(name);
        }
        for f in &mut c.flags {
            f.check = fix(&f.check);
            f.verdict = fix(&f.verdict);
            f.detail = fix(&f.detail);
        }
        std::borrow::Cow::Owned(c)
    }

    /// Cuts `response` so that this turn's JSON takes at most `max_bytes` (never below an empty
    /// answer) and marks it `truncated`; nothing when it already fits. The prompt, instructions
    /// and earlier messages are bounded by the request size, so only an answer can grow past a
    /// page.
    pub fn shorten(&mut self, max_bytes: usize) {
        let size = serde_json::to_vec(self).map_or(0, |j| j.len());
        if size <= max_bytes {
            return;
        }
        // `true` is a byte shorter than `false`: nothing else joins the object.
        let mut over = size - max_bytes;
        let mut cut = self.response.len();
        for (at, ch) in self.response.char_indices().rev() {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(json_len(ch));
            cut = at;
        }
        self.response.truncate(cut);
        self.truncated = true;
    }

    /// The JSON columns the final record writes beside `messages` and `prompt_parts`:
    /// `tool_calls`, `tools` and `attempts` (each null when absent), for both store backends.
    pub fn json_columns(&self) -> [Option<serde_json::Value>; 3] {
        fn json<T: Serialize>(v: Option<&T>) -> Option<serde_json::Value> {
            v.and_then(|v| serde_json::to_value(v).ok())
        }
        [
            json(self.tool_calls.as_ref()),
            json(self.tools.as_ref()),
            json(self.attempts.as_ref()),
        ]
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cached_tokens: None,
        }
    }

    pub fn set_usage(&mut self, usage: Usage) {
        self.prompt_tokens = usage.prompt_tokens;
        self.completion_tokens = usage.completion_tokens;
        self.total_tokens = usage.total_tokens;
    }
}

/// `text` as PostgreSQL can store it: a `text` value cannot hold NUL characters, so each one
/// becomes U+FFFD. Applied by both store backends to every text they write, so that a provider
/// sending NUL cannot make a record unsaveable.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Whether a JSON value holds a NUL character, in a string or a key (PostgreSQL's `jsonb`
/// refuses `\u0000`).
fn json_has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// A JSON value as PostgreSQL can store it: [`storable`] applied to every string and key.
fn storable_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(storable(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(storable_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (storable(k).into_owned(), storable_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The bytes `ch` takes inside a JSON string as serde_json writes it.
fn json_len(ch: char) -> usize {
    match ch {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The current time at PostgreSQL's precision (microseconds), so values round-trip exactly.
pub fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1000 * 1000;
    now.replace_nanosecond(micros).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stale_streaming_row_reads_as_interrupted() {
        let c = Conversation::start("local", "p".into(), "offline", "m");
        let later = c.created_at + Duration::from_secs(600);
        let quiet = Duration::from_secs(10);
        let mut beating = c.clone();
        beating.heartbeat_at = Some(later - Duration::from_secs(1));
        let settled = beating
            .clone()
            .settle(Duration::from_secs(300), quiet, later);
        assert_eq!(settled.status, Status::Partial);
        assert_eq!(settled.error.as_deref(), Some(INTERRUPTED));
        let fresh = c
            .clone()
            .settle(Duration::from_secs(300), quiet, c.created_at);
        assert_eq!(fresh.status, Status::Streaming);
        // Not heard from for longer than `quiet`: its process died.
        let t = c.created_at + Duration::from_secs(30);
        beating.heartbeat_at = Some(t - Duration::from_secs(11));
        assert_eq!(
            beating
                .clone()
                .settle(Duration::from_secs(300), quiet, t)
                .status,
            Status::Partial
        );
        beating.heartbeat_at = Some(t - Duration::from_secs(9));
        assert_eq!(
            beating.settle(Duration::from_secs(300), quiet, t).status,
            Status::Streaming
        );
    }

    #[test]
    fn status_round_trips_through_its_spelling() {
        for s in [
            Status::Streaming,
            Status::Complete,
            Status::Partial,
            Status::Failed,
            Status::Blocked,
            Status::Cancelled,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("nope"), None);
    }

    #[test]
    fn nul_characters_become_replacement_characters_when_stored() {
        let mut c = Conversation::start("local", "a\0b".into(), "offline", "m");
        c.response = "\0".into();
        c.error = Some("x\0".into());
        let s = c.storable();
        assert_eq!(
            (s.prompt.as_str(), s.response.as_str()),
            ("a\u{FFFD}b", "\u{FFFD}")
        );
        assert_eq!(s.error.as_deref(), Some("x\u{FFFD}"));
        let clean = Conversation::start("local", "fine".into(), "offline", "m");
        assert!(matches!(clean.storable(), std::borrow::Cow::Borrowed(_)));
        let mut m = clean.clone();
        m.messages = Some(serde_json::json!([{"content": ["x\0"], "k\0": {"n": "\0"}}]));
        assert_eq!(
            m.storable().messages,
            Some(serde_json::json!([{"content": ["x\u{FFFD}"], "k\u{FFFD}": {"n": "\u{FFFD}"}}]))
        );
    }

    #[test]
    fn a_turn_too_large_for_a_page_is_cut_to_fit_and_marked() {
        let mut c = Conversation::start("o", "p".into(), "offline", "m");
        c.response = "a\"\u{1}é".repeat(100_000);
        let whole = c.clone();
        c.shorten(usize::MAX);
        assert_eq!(c, whole);
        c.shorten(100_000);
        let json = serde_json::to_vec(&c).unwrap();
        assert!(
            json.len() <= 100_000 && json.len() > 99_000,
            "{}",
            json.len()
        );
        assert!(c.truncated && whole.response.starts_with(&c.response));
        assert!(
            String::from_utf8(json)
                .unwrap()
                .contains("\"truncated\":true")
        );
    }

    #[test]
    fn ids_are_uuid_v7() {
        let c = Conversation::start("local", "p".into(), "offline", "m");
        assert_eq!(c.id.get_version_num(), 7);
    }
}
