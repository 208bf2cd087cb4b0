//! The events of `POST /stream`. One type for what is sent and what the OpenAPI document says:
//! each variant is one server-sent event, `event:` its name and `data:` its object as one line
//! of JSON (in the document: a string whose content is that JSON object).

use common::Status;
use common::domain::Usage;
use common::guard::Flag;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use uuid::Uuid;

/// One server-sent event: `event: <event>` and `data: <data as one line of JSON>`. Comment
/// lines (`: keep-alive`) may come between events while the provider is silent.
#[derive(Debug, Clone, Serialize)]
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

/// The sentence sent with an `error` event of code `code`.
pub fn message_for(code: &str) -> &'static str {
    if let Some(m) = common::provider::ProviderError::message_for(code) {
        return m;
    }
    match code {
        c if c.starts_with("guardrail_") => "a guardrail stopped the answer",
        // The codes of a turn stopped from outside (`turn::Halt`).
        "cancelled" => "the answer was stopped on request; the text so far is saved",
        "shutdown" => "the service is shutting down; the text so far is saved",
        "deadline" => "the answer ran out of time; the text so far is saved",
        "thread_deleted" => "the answer's thread was deleted; nothing of it is kept",
        "interrupted" => "the answer was interrupted; the text saved so far is kept",
        _ => "the answer stopped early",
    }
}

impl StreamEvent {
    /// The final event of a turn that has ended, as its stream sent it: `done` for a complete
    /// turn, else `error` with its code.
    pub fn last_of(c: &common::Conversation, saved: bool) -> Self {
        if c.status == Status::Complete {
            return StreamEvent::Done(Done {
                id: c.id,
                status: c.status,
                usage: c.usage(),
                finish_reason: c.finish_reason.clone(),
                flags: c.flags.clone(),
                ttfb_ms: c.ttfb_ms,
                duration_ms: c.duration_ms,
                saved,
                thread_id: c.thread_id,
                context_turns: c.context_turns.unwrap_or(0),
            });
        }
        let code = c.error.clone().unwrap_or_else(|| "interrupted".to_owned());
        StreamEvent::Error(Failure {
            id: c.id,
            status: c.status,
            message: message_for(&code).to_owned(),
            code,
            flags: c.flags.clone(),
            saved,
            thread_id: c.thread_id,
            context_turns: c.context_turns.unwrap_or(0),
        })
    }
}

/// The OpenAPI schema of one event as a client's SSE parser sees it: `event` (its name), `data`
/// (a string holding the JSON object of that event), and for `delta` the SSE `id` (the resume
/// position after it).
impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let variants: [(&str, &str, &str, bool); 4] = [
            (
                "start",
                "Start",
                "Sent at once, before the provider answers.",
                false,
            ),
            (
                "delta",
                "Delta",
                "One per provider chunk, flushed as it arrives. Its SSE `id` is the resume \
                 position after it: echo it as `Last-Event-ID` or `?after=` to re-attach.",
                true,
            ),
            (
                "done",
                "Done",
                "The answer is complete (and saved, unless `saved` is false).",
                false,
            ),
            (
                "error",
                "Failure",
                "The answer stopped early; the stream ends after this event.",
                false,
            ),
        ];
        let mut one_of = OneOfBuilder::new().description(Some(
            "One server-sent event: its `event:` field, its `data:` field (one line of JSON, \
             the object `contentSchema` describes) and, on `delta`, its `id:` field. Comment \
             lines (`: keep-alive`) may come between events while the provider is silent.",
        ));
        for (event, data, description, with_id) in variants {
            let mut data_schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("application/json")
                .build();
            data_schema.extensions = Some(
                [(
                    "contentSchema",
                    serde_json::json!({ "$ref": format!("#/components/schemas/{data}") }),
                )]
                .into_iter()
                .collect(),
            );
            let mut variant = ObjectBuilder::new()
                .description(Some(description))
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([event])),
                )
                .required("event")
                .property("data", data_schema)
                .required("data");
            if with_id {
                variant = variant
                    .property(
                        "id",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .description(Some("The resume position after this delta")),
                    )
                    .required("id");
            }
            one_of = one_of.item(variant);
        }
        RefOr::T(Schema::OneOf(one_of.build()))
    }
}

impl ToSchema for StreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in [
            ("Start", <Start as utoipa::PartialSchema>::schema()),
            ("Delta", <Delta as utoipa::PartialSchema>::schema()),
            ("Done", <Done as utoipa::PartialSchema>::schema()),
            ("Failure", <Failure as utoipa::PartialSchema>::schema()),
        ] {
            schemas.push((name.to_owned(), schema));
        }
        <Done as ToSchema>::schemas(schemas);
        <Failure as ToSchema>::schemas(schemas);
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
    /// The turn's thread (its first turn's id).
    pub thread_id: Uuid,
    /// How many previous turns the provider received.
    pub context_turns: i32,
}

/// `error`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    pub id: Uuid,
    /// `partial` (some text arrived), `failed` (none did) or `cancelled`.
    pub status: Status,
    /// `provider_error`, `provider_timeout`, `guardrail_blocked`, `cancelled`, `shutdown`,
    /// `thread_deleted` (its thread was deleted while it ran: nothing is kept), `interrupted`
    /// (the process generating it died), ...
    pub code: String,
    /// A sentence for people; never internal detail.
    pub message: String,
    pub flags: Vec<Flag>,
    pub saved: bool,
    /// The turn's thread (its first turn's id).
    pub thread_id: Uuid,
    /// How many previous turns the provider received.
    pub context_turns: i32,
}
