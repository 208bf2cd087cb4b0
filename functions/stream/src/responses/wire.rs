//! OpenAI's Responses API as this service writes it: the `response` object of a turn, and the
//! typed events of a stream, each with a `sequence_number` that any process gives the same
//! event: the four opening events are 0 to 3, a text delta is 3 plus the stored text's length
//! in characters after it (so numbers have gaps, and a re-attached reader's deltas, cut from
//! the turn's log where the asking client's came from the provider, carry the numbers of the
//! same positions), and the closing events follow the text's end.

use common::{Conversation, Status};
use serde_json::{Value, json};
use uuid::Uuid;

/// The sequence number of the last opening event.
pub const OPENED: u64 = 3;

/// A response's id: `resp_` and the turn's id in hex (the turn id comes back without a lookup).
pub fn response_id(turn: Uuid) -> String {
    format!("resp_{}", turn.simple())
}

/// The output message's id.
pub fn message_id(turn: Uuid) -> String {
    format!("msg_{}", turn.simple())
}

/// The turn id of a response id (`resp_` and 32 hex digits); a plain turn id is taken too.
pub fn turn_of(id: &str) -> Option<Uuid> {
    let hex = id.strip_prefix("resp_").unwrap_or(id);
    Uuid::try_parse(hex).ok()
}

/// What a response object says beyond its turn: the request's own settings (echoed by the
/// call that made it; a later read has only what the turn keeps).
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub metadata: Value,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub text_format: Option<Value>,
    pub store: bool,
    pub background: bool,
}

impl Echo {
    /// What a read of a stored response can tell.
    pub fn stored() -> Self {
        Self {
            metadata: json!({}),
            store: true,
            ..Self::default()
        }
    }
}

/// The status a turn reads as, with its error or its reason for being incomplete.
fn status(c: &Conversation) -> (&'static str, Value, Value) {
    let error = |c: &Conversation| {
        let code = c.error.clone().unwrap_or_else(|| "server_error".into());
        json!({"code": code, "message": message(&code)})
    };
    match c.status {
        Status::Streaming => ("in_progress", Value::Null, Value::Null),
        Status::Complete if c.finish_reason.as_deref() == Some("length") => (
            "incomplete",
            Value::Null,
            json!({"reason": "max_output_tokens"}),
        ),
        Status::Complete => ("completed", Value::Null, Value::Null),
        Status::Cancelled => ("cancelled", Value::Null, Value::Null),
        Status::Partial | Status::Failed
            if c.error
                .as_deref()
                .is_some_and(|e| e.starts_with("guardrail_")) =>
        {
            (
                "incomplete",
                Value::Null,
                json!({"reason": "content_filter"}),
            )
        }
        Status::Partial | Status::Failed | Status::Blocked => ("failed", error(c), Value::Null),
    }
}

/// A sentence for a stored error code.
fn message(code: &str) -> String {
    match code {
        "interrupted" => "the process generating the response stopped before it ended".into(),
        "shutdown" => "the service was stopping".into(),
        "deadline" => "the response ran out of time".into(),
        _ => format!("the response failed ({code})"),
    }
}

/// The response object of turn `c`: its text as `text` (the stored answer when `None`).
pub fn response(c: &Conversation, echo: &Echo, text: Option<&str>) -> Value {
    let (status, error, incomplete) = status(c);
    let text = text.unwrap_or(&c.response);
    // The message first (a stream announces it before anything else), then the calls.
    let mut output = Vec::new();
    if !(c.status == Status::Streaming && text.is_empty()) {
        output.push(message_item(c.id, item_status(status), text));
    }
    for (i, call) in c.tool_calls.iter().flatten().enumerate() {
        output.push(json!({
            "type": "function_call",
            "id": format!("fc_{}_{i}", c.id.simple()),
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }));
    }
    let usage = match (c.prompt_tokens, c.completion_tokens) {
        (Some(input), Some(output)) => json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output,
        }),
        _ => Value::Null,
    };
    json!({
        "id": response_id(c.id),
        "object": "response",
        "created_at": c.created_at.unix_timestamp(),
        "status": status,
        "background": echo.background,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": c.system,
        "max_output_tokens": echo.max_output_tokens,
        "metadata": echo.metadata,
        "model": c.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": c.previous_id.map(response_id),
        "store": echo.store,
        "temperature": echo.temperature,
        "text": {"format": echo.text_format.clone().unwrap_or_else(|| json!({"type": "text"}))},
        "tool_choice": "auto",
        "tools": c.tools.iter().flatten().map(|name| json!({"type": "function", "name": name})).collect::<Vec<_>>(),
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
    })
}

fn item_status(response: &str) -> &'static str {
    match response {
        "in_progress" => "in_progress",
        "completed" => "completed",
        _ => "incomplete",
    }
}

/// The assistant's output message.
fn message_item(turn: Uuid, status: &str, text: &str) -> Value {
    json!({
        "type": "message",
        "id": message_id(turn),
        "status": status,
        "role": "assistant",
        "content": [part(text)],
    })
}

fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// One event: its SSE frame.
fn frame(kind: &str, seq: u64, mut data: Value) -> String {
    data["type"] = kind.into();
    data["sequence_number"] = seq.into();
    format!("event: {kind}\ndata: {data}\n\n")
}

/// The events of one response as a reader gets them, after `after` (a sequence number the
/// reader has seen; none: from the first).
pub struct Sequencer {
    pub turn: Uuid,
    pub after: Option<u64>,
}

impl Sequencer {
    fn wanted(&self, seq: u64) -> bool {
        self.after.is_none_or(|a| seq > a)
    }

    /// The opening events (created, in_progress, the output item and its text part added),
    /// with `head`, the response as it starts.
    pub fn opening(&self, head: &Value) -> String {
        let item = json!({"type": "message", "id": message_id(self.turn), "status": "in_progress",
                          "role": "assistant", "content": []});
        let events = [
            ("response.created", json!({"response": head})),
            ("response.in_progress", json!({"response": head})),
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": item}),
            ),
            (
                "response.content_part.added",
                json!({"item_id": message_id(self.turn), "output_index": 0, "content_index": 0,
                       "part": part("")}),
            ),
        ];
        events
            .into_iter()
            .zip(0u64..)
            .filter(|(_, seq)| self.wanted(*seq))
            .map(|((kind, data), seq)| frame(kind, seq, data))
            .collect()
    }

    /// A text delta ending at character `pos` of the stored text.
    pub fn delta(&self, text: &str, pos: usize) -> String {
        let seq = OPENED + pos as u64;
        if !self.wanted(seq) || text.is_empty() {
            return String::new();
        }
        frame(
            "response.output_text.delta",
            seq,
            json!({"item_id": message_id(self.turn), "output_index": 0, "content_index": 0,
                   "delta": text, "logprobs": []}),
        )
    }

    /// The closing events of `response` (the final object), whose text is `text`.
    pub fn closing(&self, response: &Value, text: &str) -> String {
        let base = OPENED + text.chars().count() as u64;
        let status = response["status"].as_str().unwrap_or("failed");
        let terminal = match status {
            "completed" => "response.completed",
            "incomplete" => "response.incomplete",
            "cancelled" => "response.cancelled",
            _ => "response.failed",
        };
        let item = message_item(self.turn, item_status(status), text);
        let mut events = vec![
            (
                "response.output_text.done",
                json!({"item_id": message_id(self.turn), "output_index": 0, "content_index": 0,
                       "text": text, "logprobs": []}),
            ),
            (
                "response.content_part.done",
                json!({"item_id": message_id(self.turn), "output_index": 0, "content_index": 0,
                       "part": part(text)}),
            ),
            (
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            ),
        ];
        // The calls, each whole (the turn's log keeps text, so every process tells them alike).
        let calls = response["output"].as_array().into_iter().flatten();
        for (index, call) in calls.filter(|o| o["type"] == "function_call").enumerate() {
            let output_index = index + 1;
            let mut opened = call.clone();
            opened["arguments"] = "".into();
            opened["status"] = "in_progress".into();
            let item_id = call["id"].clone();
            events.extend([
                (
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": opened}),
                ),
                (
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": output_index,
                           "delta": call["arguments"]}),
                ),
                (
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index,
                           "arguments": call["arguments"]}),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": call}),
                ),
            ]);
        }
        events.push((terminal, json!({"response": response})));
        events
            .into_iter()
            .zip(base + 1..)
            .filter(|(_, seq)| self.wanted(*seq))
            .map(|((kind, data), seq)| frame(kind, seq, data))
            .collect()
    }
}

/// One server-sent event of a Responses stream, as the document describes it.
pub struct ResponseEvent;

/// Every event type a Responses stream sends.
pub const EVENT_TYPES: [&str; 14] = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "response.cancelled",
];

impl utoipa::PartialSchema for ResponseEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .description(Some(
                "One server-sent event: `event:` its type, `data:` one line of JSON (OpenAI's \
                 event object, with `type` and `sequence_number`). Comment lines \
                 (`: keep-alive`) may come between events.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(EVENT_TYPES)),
            )
            .required("event")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json"),
            )
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for ResponseEvent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_numbers_follow_positions() {
        let c = Conversation::start("o", "p".into(), "offline", "m");
        assert_eq!(turn_of(&response_id(c.id)), Some(c.id));
        assert_eq!(turn_of(&c.id.to_string()), Some(c.id));
        assert_eq!(turn_of("resp_nope"), None);
        let all = Sequencer {
            turn: c.id,
            after: None,
        };
        let head = response(&c, &Echo::stored(), None);
        assert_eq!(all.opening(&head).matches("event: ").count(), 4);
        assert!(all.delta("abc", 3).contains("\"sequence_number\":6"));
        let later = Sequencer {
            turn: c.id,
            after: Some(6),
        };
        assert_eq!(later.opening(&head), "");
        assert_eq!(later.delta("abc", 3), "");
        let closing = later.closing(&head, "abc");
        assert!(closing.starts_with("event: response.output_text.done"));
        assert!(closing.contains("\"sequence_number\":10"));
    }
}
