//! The events of `POST /stream`. One type for what is sent and what the OpenAPI document says:
//! each variant is one server-sent event, `event:` its name and `data:` its object as JSON.

use common::Status;
use common::domain::Usage;
use common::guard::Flag;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// One server-sent event: `event: <event>` and `data: <data as one line of JSON>`. Comment
/// lines (`: keep-alive`) may come between events while the provider is silent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Sent at once, before the provider answers.
    Start(Start),
    /// One per provider chunk, flushed as it arrives.
    Delta(Delta),
    /// The answer is complete (and saved, unless `saved` is false).
    Done(Done),
    /// The answer stopped early; the stream ends after this event.
    Error(Failure),
}

impl StreamEvent {
    /// The `event:` field.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Start(_) => "start",
            StreamEvent::Delta(_) => "delta",
            StreamEvent::Done(_) => "done",
            StreamEvent::Error(_) => "error",
        }
    }

    /// The `data:` field: the variant's object as one line of JSON.
    pub fn data(&self) -> String {
        let json = match self {
            StreamEvent::Start(d) => serde_json::to_string(d),
            StreamEvent::Delta(d) => serde_json::to_string(d),
            StreamEvent::Done(d) => serde_json::to_string(d),
            StreamEvent::Error(d) => serde_json::to_string(d),
        };
        json.unwrap_or_else(|_| "{}".into())
    }
}

/// `start`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Start {
    /// The conversation's id (UUIDv7); `GET /history/{id}` reads it.
    pub id: Uuid,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `delta`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delta {
    /// The next piece of the answer.
    pub text: String,
}

/// `done`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Done {
    pub id: Uuid,
    /// Always `complete`.
    pub status: Status,
    pub usage: Usage,
    /// As the provider reported it (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
    /// Guardrail verdicts.
    pub flags: Vec<Flag>,
    pub ttfb_ms: Option<i32>,
    pub duration_ms: Option<i32>,
    /// Whether the record is in the database (false: it was logged for `make replay`).
    pub saved: bool,
}

/// `error`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    pub id: Uuid,
    /// `partial` (some text arrived) or `failed` (none did).
    pub status: Status,
    /// `provider_error`, `provider_timeout`, `rate_limited`, `guardrail_stopped`, ...
    pub code: String,
    /// A sentence for people; never internal detail.
    pub message: String,
    pub flags: Vec<Flag>,
    pub saved: bool,
}
