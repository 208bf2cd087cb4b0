//! OpenAI's Chat Completions wire format as this service writes it: the `chat.completion`
//! object, the `chat.completion.chunk`s of a stream (role first, then content, then the
//! `finish_reason`, then with `include_usage` a usage chunk with empty `choices`, then
//! `data: [DONE]`), and the error object.

use common::domain::Usage;
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

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        chunk
    }

    /// The first chunk: the role.
    pub fn role(&self) -> Value {
        self.chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}]),
            None,
        )
    }

    /// A chunk of content.
    pub fn content(&self, text: &str) -> Value {
        self.chunk(
            json!([{"index": 0, "delta": {"content": text}, "logprobs": null,
                    "finish_reason": null}]),
            None,
        )
    }

    /// The chunk that ends the choice.
    pub fn finish(&self, reason: &str) -> Value {
        self.chunk(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]),
            None,
        )
    }

    /// The usage chunk (sent only with `stream_options.include_usage`): no choices.
    pub fn usage(&self, usage: Usage) -> Value {
        self.chunk(json!([]), Some(usage_json(usage)))
    }

    /// The whole answer as one `chat.completion`.
    pub fn completion(&self, text: &str, reason: &str, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": reason,
            }],
            "usage": usage_json(usage),
        })
    }
}

/// `usage` with every count present (the SDKs require the three; unknown counts are 0).
fn usage_json(u: Usage) -> Value {
    let n = |v: Option<i32>| v.unwrap_or(0);
    json!({
        "prompt_tokens": n(u.prompt_tokens),
        "completion_tokens": n(u.completion_tokens),
        "total_tokens": n(u.total_tokens),
    })
}

/// The finish reason clients get: the provider's, `stop` when it gave none.
pub fn finish_reason(reason: Option<&str>) -> &str {
    reason.unwrap_or("stop")
}

/// One SSE frame of a chunk.
pub fn frame(chunk: &Value) -> String {
    format!("data: {chunk}\n\n")
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
        ];
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
            total_tokens: Some(5),
        });
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert_eq!(usage["id"], chunks[0]["id"]);
        assert_eq!(frame(&usage), format!("data: {usage}\n\n"));
        assert_eq!(DONE, "data: [DONE]\n\n");
    }

    #[test]
    fn without_include_usage_no_chunk_names_usage() {
        let c = call(false);
        assert!(c.content("x").get("usage").is_none());
    }

    #[test]
    fn a_completion_has_the_message_the_finish_reason_and_every_usage_count() {
        let done = call(false).completion("Hello", "length", Usage::default());
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
