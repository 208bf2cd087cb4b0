//! OpenAI's Chat Completions wire format as this service writes it: the `chat.completion`
//! object, the `chat.completion.chunk`s of a stream (role first, then content, then the
//! `finish_reason`, then with `include_usage` a usage chunk with empty `choices`, then
//! `data: [DONE]`), and the error object.

use common::domain::Usage;
use common::provider::ToolCall;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// What every chunk and completion of one call shares.
#[derive(Debug, Clone)]
pub struct Call {
    /// `chatcmpl-` and the turn's id: one id for every chunk.
    pub id: String,
    pub created: i64,
    pub model: String,
    pub include_usage: bool,
}

impl Call {
    pub fn new(
        turn: Uuid,
        created: time::OffsetDateTime,
        model: &str,
        include_usage: bool,
    ) -> Self {
        Self {
            id: format!("chatcmpl-{}", turn.simple()),
            created: created.unix_timestamp(),
            model: model.to_owned(),
            include_usage,
        }
    }

    fn chunk<'a>(&'a self, choice: Option<Choice<'a>>, usage: Option<Usage>) -> Chunk<'a> {
        Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices: choice,
            usage: self.include_usage.then(|| usage.map(UsageCounts::from)),
        }
    }

    /// The first chunk: the role.
    pub fn role(&self) -> Chunk<'_> {
        self.chunk(
            Some(Choice::delta(Delta {
                role: Some("assistant"),
                content: Some(""),
                tool_calls: None,
            })),
            None,
        )
    }

    /// A chunk of content.
    pub fn content<'a>(&'a self, text: &'a str) -> Chunk<'a> {
        self.chunk(
            Some(Choice::delta(Delta {
                role: None,
                content: Some(text),
                tool_calls: None,
            })),
            None,
        )
    }

    /// The log probabilities of the content just sent: `{"content": items, "refusal": null}`
    /// with an empty delta (the SDKs gather a choice's `logprobs.content` across chunks).
    pub fn logprobs<'a>(&'a self, logprobs: &'a Value) -> Chunk<'a> {
        let mut choice = Choice::delta(Delta::default());
        choice.logprobs = Some(logprobs);
        self.chunk(Some(choice), None)
    }

    /// A chunk of a tool call: `[fragment]` as `delta.tool_calls`.
    pub fn tool<'a>(&'a self, fragment: &'a Value) -> Chunk<'a> {
        self.chunk(
            Some(Choice::delta(Delta {
                role: None,
                content: None,
                tool_calls: Some(std::slice::from_ref(fragment)),
            })),
            None,
        )
    }

    /// The chunk that ends the choice.
    pub fn finish<'a>(&'a self, reason: &'a str) -> Chunk<'a> {
        let mut choice = Choice::delta(Delta::default());
        choice.finish_reason = Some(reason);
        self.chunk(Some(choice), None)
    }

    /// The usage chunk (sent only with `stream_options.include_usage`): no choices.
    pub fn usage(&self, usage: Usage) -> Chunk<'_> {
        self.chunk(None, Some(usage))
    }

    /// The whole answer as one `chat.completion`: its text (null when it only calls tools)
    /// and its tool calls.
    pub fn completion(
        &self,
        text: &str,
        calls: &[ToolCall],
        logprobs: Option<Vec<Value>>,
        reason: &str,
        usage: Usage,
    ) -> Value {
        let content = if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text.to_owned())
        };
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = calls.iter().map(ToolCall::to_openai).collect();
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": logprobs.map(|content| json!({"content": content, "refusal": null})),
                "finish_reason": reason,
            }],
            "usage": usage_json(usage),
        })
    }
}

/// One `chat.completion.chunk`, written straight from borrowed parts (one is written for every
/// piece of every answer).
#[derive(Debug, Serialize)]
pub struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    system_fingerprint: Option<&'a str>,
    /// One choice, or none (the usage chunk).
    #[serde(serialize_with = "as_list")]
    choices: Option<Choice<'a>>,
    /// Present (null until the usage chunk) only with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageCounts>>,
}

/// An optional item as a list of zero or one.
fn as_list<S: serde::Serializer>(item: &Option<Choice<'_>>, s: S) -> Result<S::Ok, S::Error> {
    item.as_slice().serialize(s)
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<&'a Value>,
    finish_reason: Option<&'a str>,
}

impl<'a> Choice<'a> {
    fn delta(delta: Delta<'a>) -> Self {
        Self {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [Value]>,
}

/// `usage` with every count present (the SDKs require the three; unknown counts are 0).
#[derive(Debug, Clone, Copy, Serialize)]
struct UsageCounts {
    prompt_tokens: i32,
    completion_tokens: i32,
    total_tokens: i32,
}

impl From<Usage> for UsageCounts {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens.unwrap_or(0),
            completion_tokens: u.completion_tokens.unwrap_or(0),
            total_tokens: u.total_tokens.unwrap_or(0),
        }
    }
}

fn usage_json(u: Usage) -> Value {
    serde_json::to_value(UsageCounts::from(u)).unwrap_or_default()
}

/// The finish reason clients get: the provider's, `stop` when it gave none.
pub fn finish_reason(reason: Option<&str>) -> &str {
    reason.unwrap_or("stop")
}

/// One SSE frame of a chunk (or of an error object).
pub fn frame(chunk: &impl Serialize) -> String {
    let mut out = b"data: ".to_vec();
    // Writing these types into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, chunk);
    out.extend_from_slice(b"\n\n");
    String::from_utf8(out).unwrap_or_default()
}

/// The last frame of a stream that succeeded.
pub const DONE: &str = "data: [DONE]\n\n";

pub use common::error::{OpenAiError, OpenAiErrorDetail};

/// One server-sent event of a streamed completion, as an SSE parser sees it (the events have
/// no name): its `data` is a `chat.completion.chunk` as JSON, or after a failure an
/// `{"error": ...}` object, and the last one is `[DONE]`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChunkEvent {
    /// A `chat.completion.chunk` or `{"error": ...}` as JSON text; `[DONE]` last.
    data: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(chunk: &Chunk<'_>) -> Value {
        serde_json::to_value(chunk).unwrap()
    }

    fn call(include_usage: bool) -> Call {
        Call::new(
            Uuid::nil(),
            time::macros::datetime!(2026-01-01 0:00 UTC),
            "m",
            include_usage,
        )
    }

    #[test]
    fn chunks_share_one_id_and_come_role_content_finish_usage() {
        let c = call(true);
        let chunks = [
            c.role(),
            c.content("Hel"),
            c.content("lo"),
            c.finish("stop"),
        ]
        .map(|chunk| value(&chunk));
        for chunk in &chunks {
            assert_eq!(chunk["id"], "chatcmpl-00000000000000000000000000000000");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], 1_767_225_600);
            assert!(
                chunk["usage"].is_null(),
                "usage before the last chunk: {chunk}"
            );
            assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
        assert!(chunks[1]["choices"][0]["finish_reason"].is_null());
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
        let usage = c.usage(Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(2),
            total_tokens: None,
            cached_tokens: None,
        });
        let framed = frame(&usage);
        let usage = value(&usage);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 0})
        );
        assert_eq!(usage["id"], chunks[0]["id"]);
        // One line of JSON between `data: ` and the blank line.
        let json = framed
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert!(!json.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(json).unwrap(), usage);
        assert_eq!(DONE, "data: [DONE]\n\n");
    }

    #[test]
    fn without_include_usage_no_chunk_names_usage() {
        let c = call(false);
        assert!(value(&c.content("x")).get("usage").is_none());
    }

    #[test]
    fn a_completion_has_the_message_the_finish_reason_and_every_usage_count() {
        let done = call(false).completion("Hello", &[], None, "length", Usage::default());
        assert_eq!(done["object"], "chat.completion");
        assert_eq!(done["choices"][0]["message"]["content"], "Hello");
        assert_eq!(done["choices"][0]["message"]["role"], "assistant");
        assert_eq!(done["choices"][0]["finish_reason"], "length");
        assert_eq!(
            done["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
    }

    #[test]
    fn errors_take_openai_types() {
        assert_eq!(OpenAiError::kind_for(400), "invalid_request_error");
        assert_eq!(OpenAiError::kind_for(401), "invalid_request_error");
        assert_eq!(OpenAiError::kind_for(404), "invalid_request_error");
        assert_eq!(OpenAiError::kind_for(503), "server_error");
        let e = OpenAiError::new("invalid_request_error", "unsupported_value", "n", Some("n"));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "n");
    }
}
