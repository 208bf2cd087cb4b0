//! The offline provider: deterministic answers in word-sized chunks, no network, no key.
//! A product feature for demos, development and load tests. It also calls tools and answers
//! in JSON, deterministically (see [`tool_calls`], [`tool_results`] and [`structured`]), so an
//! app's tool loop and structured output run against `make dev` too.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream;

use serde_json::{Value, json};

use super::{
    Chunk, ChunkStream, CompletionRequest, Message, Provider, ProviderError, Role, Tool,
    ToolCallDelta, ToolChoice,
};
use crate::domain::Usage;

/// Answers every prompt by restating it, a word per chunk, `delay` apart.
pub struct OfflineProvider {
    model: String,
    delay: Duration,
}

impl OfflineProvider {
    pub fn new(model: String, delay: Duration) -> Self {
        Self { model, delay }
    }

    /// The full answer to `prompt`.
    pub fn answer(prompt: &str) -> String {
        let words: Vec<&str> = prompt.split_whitespace().take(64).collect();
        format!(
            "You asked: \"{}\". This answer comes from the built-in offline provider, which \
             needs no network and no key, and streams one word at a time. Set \
             LLM_PROVIDER=openai and OPENAI_BASE_URL to talk to a real model.",
            words.join(" ")
        )
    }

    /// The answer split into word-sized chunks, each keeping its trailing space.
    pub fn chunks(prompt: &str) -> Vec<String> {
        Self::answer(prompt)
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect()
    }
}

#[async_trait]
impl Provider for OfflineProvider {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError> {
        let prompt = request.last_user_text();
        let calls = tool_calls(&request, &prompt);
        let (mut items, mut reason): (Vec<Chunk>, &str) = if !calls.is_empty() {
            (calls, "tool_calls")
        } else {
            let text = match (
                tool_results(&request.messages),
                structured(&request, &prompt),
            ) {
                (_, Some(json)) => json,
                (Some(results), None) => results,
                (None, None) => Self::answer(&prompt),
            };
            let chunks = text
                .split_inclusive(' ')
                .map(|w| Chunk::Text(w.to_owned()))
                .collect();
            (chunks, "stop")
        };
        if let Some(max) = request.max_tokens.map(|m| m as usize)
            && items.len() > max
        {
            items.truncate(max);
            reason = "length";
        }
        let usage = Usage {
            prompt_tokens: i32::try_from(
                request
                    .messages
                    .iter()
                    .map(|m| m.content.text().split_whitespace().count())
                    .sum::<usize>(),
            )
            .ok(),
            completion_tokens: i32::try_from(items.len()).ok(),
            total_tokens: None,
            cached_tokens: None,
        };
        let usage = Usage {
            total_tokens: usage
                .prompt_tokens
                .zip(usage.completion_tokens)
                .map(|(a, b)| a.saturating_add(b)),
            ..usage
        };
        if request.extra.get("logprobs") == Some(&Value::Bool(true)) {
            let top = request
                .extra
                .get("top_logprobs")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            items = items
                .into_iter()
                .flat_map(|c| with_logprobs(c, top))
                .collect();
        }
        let delay = self.delay;
        let items = items.into_iter().chain(std::iter::once(Chunk::Finish {
            reason: Some(reason.to_owned()),
            usage: Some(usage),
            raw_reason: None,
        }));
        let s = stream::unfold((items, true), move |(mut items, first)| async move {
            let item = items.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(item), (items, false)))
        });
        Ok(Box::pin(s))
    }
}

/// A text chunk and its log probabilities: the offline model is deterministic, so each chunk
/// (its one token) has probability 1 (log probability 0), and it is its only top alternative.
fn with_logprobs(chunk: Chunk, top: u64) -> Vec<Chunk> {
    let Chunk::Text(text) = &chunk else {
        return vec![chunk];
    };
    let token = json!({"token": text, "logprob": 0.0, "bytes": text.as_bytes()});
    let mut item = token.clone();
    item["top_logprobs"] = Value::Array(if top > 0 { vec![token] } else { Vec::new() });
    vec![chunk, Chunk::Logprobs(vec![item])]
}

/// The calls the offline model makes: with tools offered (and `tool_choice` not `none`), after
/// a user message (not after tool results), it calls the function `tool_choice` names, else
/// every offered tool whose name the last user message mentions (only the first with
/// `parallel_tool_calls: false`), else with `tool_choice: required` the first tool. Each call
/// has no id (the service gives it one) and arguments that fill the tool's schema (strings
/// with the user's message); it streams as a header, then its arguments in two pieces.
fn tool_calls(request: &CompletionRequest, prompt: &str) -> Vec<Chunk> {
    let after_user = request
        .messages
        .last()
        .is_some_and(|m| m.role == Role::User);
    if request.tools.is_empty() || !after_user {
        return Vec::new();
    }
    let lower = prompt.to_lowercase();
    let mentioned = request
        .tools
        .iter()
        .filter(|t| lower.contains(&t.name.to_lowercase()));
    let mut chosen: Vec<&Tool> = match &request.tool_choice {
        Some(ToolChoice::None) => return Vec::new(),
        Some(ToolChoice::Function(name)) => request
            .tools
            .iter()
            .filter(|t| &t.name == name)
            .take(1)
            .collect(),
        _ => mentioned.collect(),
    };
    if chosen.is_empty() && request.tool_choice == Some(ToolChoice::Required) {
        chosen.extend(request.tools.first());
    }
    if request.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        chosen.truncate(1);
    }
    let mut out = Vec::new();
    for (i, tool) in chosen.into_iter().enumerate() {
        let index = i as u32;
        let schema = tool
            .parameters
            .as_ref()
            .map_or(Value::Null, super::RawJson::value);
        let args = example(&schema, &schema, prompt, 0).to_string();
        let cut = args
            .char_indices()
            .nth(args.chars().count() / 2)
            .map_or(0, |(at, _)| at);
        out.push(Chunk::ToolCall(ToolCallDelta {
            index,
            id: None,
            name: Some(tool.name.clone()),
            arguments: String::new(),
        }));
        for piece in [&args[..cut], &args[cut..]] {
            out.push(Chunk::ToolCall(ToolCallDelta {
                index,
                id: None,
                name: None,
                arguments: piece.to_owned(),
            }));
        }
    }
    out
}

/// After tool results (the last messages are `tool` messages): an answer that restates them.
fn tool_results(messages: &[Message]) -> Option<String> {
    let first = messages.iter().rposition(|m| m.role != Role::Tool)? + 1;
    let results = &messages[first..];
    if results.is_empty() {
        return None;
    }
    let name_of = |id: &str| {
        messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id == id)
            .map_or("the tool", |c| c.name.as_str())
    };
    let said: Vec<String> = results
        .iter()
        .map(|m| {
            let name = name_of(m.tool_call_id.as_deref().unwrap_or_default());
            format!("{name} returned {}", m.content.text())
        })
        .collect();
    Some(format!(
        "The offline provider read the tool results: {}.",
        said.join("; ")
    ))
}

/// With `response_format` `json_schema`: an instance of the schema (strings hold the user's
/// message); with `json_object`: `{"answer": ...}`.
fn structured(request: &CompletionRequest, prompt: &str) -> Option<String> {
    let format = request.extra.get("response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let schema = format
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or(Value::Null);
            Some(example(&schema, &schema, prompt, 0).to_string())
        }
        "json_object" => Some(json!({"answer": OfflineProvider::answer(prompt)}).to_string()),
        _ => None,
    }
}

/// A value that fits `schema` (refs resolved against `root`): strings are `text` (or the first
/// of an `enum`), numbers 1, booleans true, arrays one item, objects every property.
fn example(schema: &Value, root: &Value, text: &str, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix('#').and_then(|p| root.pointer(p));
        return target.map_or(Value::Null, |t| example(t, root, text, depth + 1));
    }
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return example(first, root, text, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    match kind {
        "string" => Value::String(text.to_owned()),
        "integer" | "number" => json!(1),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            json!([example(items, root, text, depth + 1)])
        }
        _ => Value::Object(
            schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), example(v, root, text, depth + 1)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn request(prompt: &str, max_tokens: Option<u32>) -> CompletionRequest {
        CompletionRequest {
            max_tokens,
            ..CompletionRequest::prompt(prompt, "m")
        }
    }

    #[tokio::test]
    async fn offline_answers_are_deterministic_and_end_with_finish() {
        let p = OfflineProvider::new("m".into(), Duration::ZERO);
        let items: Vec<_> = p
            .stream(request("hello there", None))
            .await
            .unwrap()
            .collect()
            .await;
        let text: String = items
            .iter()
            .filter_map(|i| match i {
                Ok(Chunk::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, OfflineProvider::answer("hello there"));
        assert!(items.len() > 5);
        assert!(matches!(items.last(), Some(Ok(Chunk::Finish { .. }))));
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_answer_with_reason_length() {
        let p = OfflineProvider::new("m".into(), Duration::ZERO);
        let items: Vec<_> = p
            .stream(request("hi", Some(3)))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(items.len(), 4);
        assert!(matches!(
            items.last(),
            Some(Ok(Chunk::Finish { reason: Some(r), .. })) if r == "length"
        ));
    }
}

#[cfg(test)]
mod tool_tests {
    use super::*;
    use futures_util::StreamExt;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: None,
            parameters: Some(crate::provider::RawJson::from_value(
                &json!({"type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]}),
            )),
            strict: None,
        }
    }

    async fn run(request: CompletionRequest) -> Vec<Chunk> {
        let p = OfflineProvider::new("m".into(), Duration::ZERO);
        p.stream(request)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_mentioned_tool_is_called_with_arguments_that_fit_its_schema() {
        let mut req = CompletionRequest::prompt("use get_weather please", "m");
        req.tools = vec![weather()];
        let items = run(req).await;
        let mut calls = crate::provider::tools::Calls::default();
        for item in &items {
            if let Chunk::ToolCall(d) = item {
                calls.push(d.clone());
            }
        }
        let made = calls.finish();
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].name, "get_weather");
        let args: Value = serde_json::from_str(&made[0].arguments).unwrap();
        assert_eq!(args, json!({"city": "use get_weather please", "days": 1}));
        assert!(
            matches!(items.last(), Some(Chunk::Finish { reason: Some(r), .. }) if r == "tool_calls")
        );
    }

    #[tokio::test]
    async fn without_a_mention_it_answers_and_after_results_it_reads_them() {
        let mut req = CompletionRequest::prompt("hello", "m");
        req.tools = vec![weather()];
        assert!(
            !run(req.clone())
                .await
                .iter()
                .any(|c| matches!(c, Chunk::ToolCall(_)))
        );
        req.tool_choice = Some(ToolChoice::Required);
        assert!(
            run(req.clone())
                .await
                .iter()
                .any(|c| matches!(c, Chunk::ToolCall(_)))
        );
        let mut call = Message::new(Role::Assistant, "");
        call.tool_calls = vec![crate::provider::ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: "{}".into(),
        }];
        let mut result = Message::new(Role::Tool, "sunny");
        result.tool_call_id = Some("c1".into());
        req.messages.extend([call, result]);
        let text: String = run(req)
            .await
            .iter()
            .filter_map(|c| match c {
                Chunk::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert!(text.contains("get_weather returned sunny"), "{text}");
    }
}
