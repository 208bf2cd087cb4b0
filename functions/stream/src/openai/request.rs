//! The body of `POST /v1/chat/completions`, checked field by field as OpenAI's API does: a bad
//! value is a 400 naming its `param`; a feature this service does not offer (several choices,
//! audio, files) is a 400 too, never silently ignored. Tools and structured
//! output are checked in `tools`, images in `images`. The sampling and account parameters (`seed`, `logit_bias`, the penalties,
//! `user`, `reasoning_effort`, `service_tier`, `prediction`, `store`, `modalities`, the token
//! caps as named) reach the provider exactly as sent ([`PASSED_ON`]); a provider that cannot
//! honour one refuses the call by its name.

use common::provider::{Content, Message, Part, Role, Tool, ToolChoice};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::wire::OpenAiError;
use crate::body::whole;

/// A validated Chat Completions request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    /// As sent: the provider receives them so.
    pub messages: Vec<Message>,
    /// The same messages as the JSON the client sent (stored with the turn).
    pub raw_messages: Vec<Value>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Vec<String>>,
    /// `metadata.previous_id`: continue that turn's thread.
    pub previous_id: Option<Uuid>,
    /// The parameters passed on to the provider as sent (see [`PASSED_ON`]).
    pub extra: Map<String, Value>,
    /// The functions the model may call.
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
}

/// The parameters the provider receives exactly as the client sent them (after a check of
/// their type), in OpenAI's names. The token caps go too, as named: `max_completion_tokens` is
/// never rewritten into `max_tokens`.
pub const PASSED_ON: [&str; 17] = [
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "reasoning_effort",
    "service_tier",
    "prediction",
    "store",
    "modalities",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "metadata",
];

pub(super) type Refusal = OpenAiError;

pub(super) fn bad(param: &str, message: impl Into<String>) -> Refusal {
    OpenAiError::new(
        "invalid_request_error",
        "invalid_value",
        message,
        Some(param),
    )
}

pub(super) fn unsupported(param: &str, message: impl Into<String>) -> Refusal {
    OpenAiError::new(
        "invalid_request_error",
        "unsupported_value",
        message,
        Some(param),
    )
}

/// A request body's fields as values, but `tools` as its parts, each schema as the text it
/// was sent as (see [`super::tools::ToolsField`]): one pass over the body.
struct Fields {
    map: Map<String, Value>,
    tools: Option<super::tools::ToolsField>,
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Fields, A::Error> {
                let mut fields = Fields {
                    map: Map::new(),
                    tools: None,
                };
                while let Some(key) = a.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "tools" {
                        fields.tools = Some(a.next_value()?);
                    } else {
                        let value = a.next_value()?;
                        fields.map.insert(key.into_owned(), value);
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl ChatRequest {
    /// Parses a JSON body; `max_chars` bounds each message's text (`MAX_PROMPT_CHARS`).
    pub fn parse(body: &[u8], max_chars: usize) -> Result<Self, Refusal> {
        // The body's UTF-8 checked once, in one pass, rather than each string's on its own.
        let text = std::str::from_utf8(body).map_err(|e| {
            OpenAiError::new(
                "invalid_request_error",
                "invalid_json",
                format!("the body is not valid JSON: it is not UTF-8 ({e})"),
                None,
            )
        })?;
        let Fields { map, tools } =
            serde_json::from_str(text).map_err(|_| match serde_json::from_str::<Value>(text) {
                Err(e) => OpenAiError::new(
                    "invalid_request_error",
                    "invalid_json",
                    format!("the body is not valid JSON: {e}"),
                    None,
                ),
                Ok(_) => bad("body", "the body must be a JSON object"),
            })?;
        refuse_unsupported(&map)?;
        let model = model(&map)?;
        let (raw_messages, messages) = messages(&map, max_chars)?;
        let stream = flag(&map, "stream")?;
        let include_usage = include_usage(&map)?;
        // Both are checked; the newer name wins when both are given.
        let max_tokens = count(&map, "max_tokens")?;
        let max_tokens = count(&map, "max_completion_tokens")?.or(max_tokens);
        let temperature = number(&map, "temperature", 0.0, 2.0)?;
        let top_p = number(&map, "top_p", 0.0, 1.0)?;
        let stop = stop(&map)?;
        match map.get("user") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => return Err(bad("user", "user must be a string")),
        }
        let previous_id = previous_id(&map)?;
        let tools = super::tools::tools(tools)?;
        let tool_choice = super::tools::tool_choice(&map)?;
        super::tools::checked_as_sent(&map)?;
        let extra = passed_on(&map)?;
        Ok(Self {
            model,
            messages,
            raw_messages,
            stream,
            include_usage,
            max_tokens,
            temperature,
            top_p,
            stop,
            previous_id,
            extra,
            tools,
            tool_choice,
        })
    }

    /// The prompt: the last user message's text.
    pub fn prompt(&self) -> String {
        common::provider::last_user_text(&self.messages)
    }

    /// What is stored of the messages: the prompt's parts as sent when they are not all text
    /// (`None` otherwise), and the messages before the prompt as sent; images within
    /// [`super::images::STORED_IMAGE_BYTES`], the prompt's first.
    pub fn stored(&self) -> (Option<Vec<Value>>, Vec<Value>) {
        let last_user = self
            .messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .unwrap_or(0);
        let mut earlier = self.raw_messages.clone();
        let mut prompt = earlier.remove(last_user);
        let mut budget = super::images::STORED_IMAGE_BYTES;
        let parts = match &self.messages[last_user].content {
            Content::Parts(parts) if parts.iter().any(|p| !matches!(p, Part::Text { .. })) => {
                super::images::cap_stored(std::slice::from_mut(&mut prompt), &mut budget);
                prompt
                    .get_mut("content")
                    .map(Value::take)
                    .and_then(|c| match c {
                        Value::Array(parts) => Some(parts),
                        _ => None,
                    })
            }
            _ => None,
        };
        super::images::cap_stored(&mut earlier, &mut budget);
        (parts, earlier)
    }

    /// The instructions: the first system or developer message's text.
    pub fn system(&self) -> Option<String> {
        self.messages
            .iter()
            .find(|m| matches!(m.role, Role::System | Role::Developer))
            .map(|m| m.content.text())
    }
}

/// The parameters of [`PASSED_ON`] the client sent (null: not sent), each of its type.
fn passed_on(map: &Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    let mut out = Map::new();
    for name in PASSED_ON {
        let Some(v) = map.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let ok = match name {
            // An int64, as the document says (written 5 or 5.0).
            "seed" => {
                v.is_i64()
                    || v.as_f64().is_some_and(|f| {
                        f.fract() == 0.0 && f > i64::MIN as f64 && f < i64::MAX as f64
                    })
            }
            "logit_bias" => v
                .as_object()
                .is_some_and(|o| o.values().all(Value::is_number)),
            "presence_penalty" | "frequency_penalty" => {
                v.as_f64().is_some_and(|p| (-2.0..=2.0).contains(&p))
            }
            "user" | "reasoning_effort" | "service_tier" => v.is_string(),
            "prediction" => v.is_object(),
            "store" | "logprobs" => v.is_boolean(),
            "top_logprobs" => whole(v).is_some_and(|n| n <= 20),
            // Checked with its `previous_id` (`previous_id`).
            "metadata" => v.is_object(),
            "modalities" => v.is_array(),
            // The caps were checked with the others (`count`), the tool and format fields in
            // `tools`.
            _ => true,
        };
        if !ok {
            return Err(bad(
                name,
                format!("{name} has a value of the wrong type or range"),
            ));
        }
        out.insert(name.to_owned(), v.clone());
    }
    Ok(out)
}

/// `model`: required, a non-blank string of at most 200 bytes.
fn model(map: &Map<String, Value>) -> Result<String, Refusal> {
    match map.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() && m.len() <= 200 && !m.contains('\0') => {
            Ok(m.clone())
        }
        None | Some(Value::Null) => Err(bad("model", "model is required")),
        Some(_) => Err(bad(
            "model",
            "model must be a non-empty string of at most 200 bytes",
        )),
    }
}

/// `messages`: as sent, and as the provider receives them; at least one, one of them `user`.
fn messages(
    map: &Map<String, Value>,
    max_chars: usize,
) -> Result<(Vec<Value>, Vec<Message>), Refusal> {
    let raw = match map.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m.clone(),
        Some(Value::Array(_)) => return Err(bad("messages", "messages must not be empty")),
        None | Some(Value::Null) => return Err(bad("messages", "messages is required")),
        Some(_) => return Err(bad("messages", "messages must be an array")),
    };
    let messages = raw
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m, max_chars))
        .collect::<Result<Vec<_>, _>>()?;
    if !messages.iter().any(|m| m.role == Role::User) {
        return Err(bad("messages", "messages must include a user message"));
    }
    Ok((raw, messages))
}

/// `stream_options.include_usage`.
fn include_usage(map: &Map<String, Value>) -> Result<bool, Refusal> {
    match map.get("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(o)) => flag(o, "include_usage").map_err(|_| {
            bad(
                "stream_options.include_usage",
                "include_usage must be a boolean",
            )
        }),
        Some(_) => Err(bad("stream_options", "stream_options must be an object")),
    }
}

/// `stop`: a string or up to 4 strings.
fn stop(map: &Map<String, Value>) -> Result<Option<Vec<String>>, Refusal> {
    match map.get("stop") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => Ok(Some(
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        )),
        Some(_) => Err(bad(
            "stop",
            "stop must be a string or an array of up to 4 strings",
        )),
    }
}

/// `metadata` (at most 16 string values), and its `previous_id`: continue that turn's thread.
fn previous_id(map: &Map<String, Value>) -> Result<Option<Uuid>, Refusal> {
    match map.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if m.len() > 16 || m.values().any(|v| !v.is_string()) {
                return Err(bad(
                    "metadata",
                    "metadata must be an object of at most 16 string values",
                ));
            }
            m.get("previous_id")
                .and_then(Value::as_str)
                .map(|id| {
                    Uuid::try_parse(id).map_err(|_| {
                        bad(
                            "metadata.previous_id",
                            "metadata.previous_id must be the id (a UUID) of one of your turns",
                        )
                    })
                })
                .transpose()
        }
        Some(_) => Err(bad("metadata", "metadata must be an object")),
    }
}

/// Features this service does not offer: a 400 naming the field, never a silent ignore.
fn refuse_unsupported(map: &Map<String, Value>) -> Result<(), Refusal> {
    match map.get("n") {
        None | Some(Value::Null) => {}
        Some(v) if whole(v) == Some(1) => {}
        Some(v) if whole(v).is_some_and(|n| n > 1) => {
            return Err(unsupported(
                "n",
                "only n=1 is supported: one choice per request",
            ));
        }
        Some(_) => return Err(bad("n", "n must be a whole number of at least 1")),
    }
    for field in ["functions", "function_call"] {
        if map.get(field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                field,
                "the deprecated functions API is not supported: use tools and tool_choice",
            ));
        }
    }
    if map.get("audio").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("audio", "audio output is not supported"));
    }
    if let Some(m) = map.get("modalities").and_then(Value::as_array)
        && m.iter().any(|v| v.as_str() != Some("text"))
    {
        return Err(unsupported("modalities", "only text output is supported"));
    }
    Ok(())
}

/// One message: a role this service speaks, its content, and its tool fields.
fn message(i: usize, m: &Value, max_chars: usize) -> Result<Message, Refusal> {
    let param = format!("messages[{i}]");
    let Value::Object(m) = m else {
        return Err(bad(&param, format!("{param} must be an object")));
    };
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some("function") => {
            return Err(unsupported(
                &format!("{param}.role"),
                "function messages (the deprecated functions API) are not supported: use tool",
            ));
        }
        _ => {
            return Err(bad(
                &format!("{param}.role"),
                "role must be system, developer, user, assistant or tool",
            ));
        }
    };
    for field in ["function_call", "audio"] {
        if m.get(field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                &format!("{param}.{field}"),
                "function calling (use tool_calls) and audio are not supported",
            ));
        }
    }
    let tool_calls = match role {
        Role::Assistant => super::tools::message_calls(&param, m)?,
        _ if m.get("tool_calls").is_some_and(|v| !v.is_null()) => {
            return Err(bad(
                &format!("{param}.tool_calls"),
                "only assistant messages carry tool_calls",
            ));
        }
        _ => Vec::new(),
    };
    let tool_call_id = match role {
        Role::Tool => Some(super::tools::call_id(&param, m)?),
        _ => None,
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => Content::Text(s.clone()),
        Some(Value::Array(parts)) => Content::Parts(
            parts
                .iter()
                .enumerate()
                .map(|(j, p)| part(&format!("{param}.content[{j}]"), p, role))
                .collect::<Result<_, _>>()?,
        ),
        // An assistant message may have no content (it only calls tools).
        None | Some(Value::Null) if role == Role::Assistant => Content::None,
        _ => {
            return Err(bad(
                &format!("{param}.content"),
                "content must be a string or an array of text parts",
            ));
        }
    };
    let text = content.text();
    if text.contains('\0') {
        return Err(bad(
            &format!("{param}.content"),
            "content must not contain NUL characters",
        ));
    }
    if text.chars().count() > max_chars {
        return Err(OpenAiError::new(
            "invalid_request_error",
            "context_length_exceeded",
            format!("{param} is longer than {max_chars} characters"),
            Some(&format!("{param}.content")),
        ));
    }
    let name = match m.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if !n.contains('\0') => Some(n.clone()),
        Some(_) => return Err(bad(&format!("{param}.name"), "name must be a string")),
    };
    Ok(Message {
        role,
        content,
        name,
        tool_calls,
        tool_call_id,
    })
}

/// A text part, or in a user message an image; audio and files are refused.
fn part(param: &str, p: &Value, role: Role) -> Result<Part, Refusal> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => match p.get("text") {
            Some(Value::String(t)) => Ok(Part::text(t.clone())),
            _ => Err(bad(&format!("{param}.text"), "a text part needs its text")),
        },
        Some("image_url") if role == Role::User => super::images::image_part(param, p),
        Some("image_url") => Err(bad(param, "only user messages may show images")),
        Some("input_audio" | "file" | "refusal") => Err(unsupported(
            param,
            "audio and file content is not supported (text and images are)",
        )),
        _ => Err(bad(param, "a content part needs a type")),
    }
}

fn flag(map: &Map<String, Value>, name: &str) -> Result<bool, Refusal> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(name, format!("{name} must be a boolean"))),
    }
}

fn count(map: &Map<String, Value>, name: &str) -> Result<Option<u32>, Refusal> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match whole(v) {
            Some(n) if (1..=1_000_000).contains(&n) => Ok(Some(n as u32)),
            _ => Err(bad(
                name,
                format!("{name} must be a whole number from 1 to 1000000"),
            )),
        },
    }
}

fn number(
    map: &Map<String, Value>,
    name: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, Refusal> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(bad(
                name,
                format!("{name} must be a number from {min} to {max}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, OpenAiError> {
        ChatRequest::parse(body.as_bytes(), 100)
    }

    fn refused(body: &str) -> (String, Option<String>) {
        let e = parse(body).unwrap_err().error;
        (e.code.unwrap_or_default(), e.param)
    }

    #[test]
    fn a_typical_request_parses() {
        let r = parse(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
                "messages":[{"role":"developer","content":"be brief"},
                            {"role":"user","content":[{"type":"text","text":"hi"}]},
                            {"role":"assistant","content":"hello"},
                            {"role":"user","content":"again"}],
                "max_completion_tokens":5,"temperature":0.2,"top_p":0.9,"stop":"END",
                "user":"u1","metadata":{"previous_id":"0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d"},
                "seed":7,"presence_penalty":0}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.stop, Some(vec!["END".to_owned()]));
        assert_eq!(r.prompt(), "again");
        assert_eq!(r.system().as_deref(), Some("be brief"));
        assert_eq!(r.stored().1.len(), 3);
        assert!(r.previous_id.is_some());
    }

    #[test]
    fn unsupported_features_are_refused_by_name() {
        let user = r#""messages":[{"role":"user","content":"hi"}]"#;
        for (extra, param) in [
            (r#""n":2"#, "n"),
            (r#""functions":[]"#, "functions"),
            (r#""function_call":"auto""#, "function_call"),
            (
                r#""tools":[{"type":"custom","custom":{"name":"x"}}]"#,
                "tools[0].type",
            ),
            (r#""audio":{"voice":"alloy"}"#, "audio"),
            (r#""modalities":["text","audio"]"#, "modalities"),
        ] {
            let (code, got) = refused(&format!(r#"{{"model":"m",{user},{extra}}}"#));
            assert_eq!(
                (code.as_str(), got.as_deref()),
                ("unsupported_value", Some(param))
            );
        }
        let audio = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#;
        assert_eq!(refused(audio).0, "unsupported_value");
        let function = r#"{"model":"m","messages":[{"role":"function","content":"x","name":"f"}]}"#;
        assert_eq!(refused(function).0, "unsupported_value");
        // n=1 and a text response format are fine.
        assert!(
            parse(&format!(
                r#"{{"model":"m",{user},"n":1,"response_format":{{"type":"text"}}}}"#
            ))
            .is_ok()
        );
    }

    /// A tool's schema goes to the provider as the text it was sent as; the other fields are
    /// read as ever (a string with escapes too), and a `null` list or schema is none.
    #[test]
    fn tool_schemas_are_kept_as_sent() {
        let r = parse(
            r#"{"tools":[{"type":"func\u0074ion","extra":1,"function":{"name":"a","parameters":
                {"type": "object",  "properties": {"q": {"type": "string", "x": 1.50}}}}},
                {"type":"function","function":{"name":"b","parameters":null,"strict":null}}],
                "model":"m","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.tools[0].parameters.as_ref().unwrap().get(),
            r#"{"type": "object",  "properties": {"q": {"type": "string", "x": 1.50}}}"#
        );
        assert_eq!(
            (r.tools[1].parameters.as_ref(), r.tools[1].strict),
            (None, None)
        );
        assert!(r.extra.get("tools").is_none());
        let none =
            parse(r#"{"model":"m","tools":null,"messages":[{"role":"user","content":"x"}]}"#);
        assert!(none.unwrap().tools.is_empty());
        // Not an object, not JSON: as before.
        assert_eq!(refused("[1]").1.as_deref(), Some("body"));
        assert_eq!(refused("{").0, "invalid_json");
        let not_utf8 = ChatRequest::parse(b"{\"model\":\"\xff\"}", 100).unwrap_err();
        assert_eq!(not_utf8.error.code.as_deref(), Some("invalid_json"));
    }

    #[test]
    fn tools_tool_messages_and_formats_parse_as_openai_defines_them() {
        let r = parse(
            r#"{"model":"m","tools":[{"type":"function","function":{"name":"get_weather",
                  "description":"d","parameters":{"type":"object"},"strict":true}}],
                "tool_choice":{"type":"function","function":{"name":"get_weather"}},
                "parallel_tool_calls":false,
                "response_format":{"type":"json_schema","json_schema":{"name":"E","schema":{}}},
                "messages":[{"role":"user","content":"weather?"},
                  {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
                    "function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},
                  {"role":"tool","tool_call_id":"c1","content":"sunny"}]}"#,
        )
        .unwrap();
        assert_eq!(r.tools[0].name, "get_weather");
        assert_eq!(r.tools[0].strict, Some(true));
        assert_eq!(
            r.tool_choice,
            Some(ToolChoice::Function("get_weather".into()))
        );
        assert_eq!(r.extra["parallel_tool_calls"], false);
        assert_eq!(r.extra["response_format"]["json_schema"]["name"], "E");
        assert_eq!(r.messages[1].tool_calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(r.messages[1].content, Content::None);
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.prompt(), "weather?");
        assert_eq!(r.stored().1.len(), 2);
        for (body, param) in [
            (
                r#""tools":[{"type":"function","function":{"name":"has space"}}]"#,
                "tools[0].function.name",
            ),
            (r#""tools":{}"#, "tools"),
            (r#""tools":[{"function":{"name":"f"}}]"#, "tools[0].type"),
            (
                r#""tools":[{"type":1,"function":{"name":"f"}}]"#,
                "tools[0].type",
            ),
            (
                r#""tools":[{"type":["function"],"function":{"name":"f"}}]"#,
                "tools[0].type",
            ),
            (r#""tools":"all""#, "tools"),
            (r#""tools":[1]"#, "tools[0]"),
            (
                r#""tools":[{"type":"function","function":{}}]"#,
                "tools[0].function.name",
            ),
            (
                r#""tools":[{"type":"function","function":"f"}]"#,
                "tools[0].function",
            ),
            (r#""tools":[{"type":"function"}]"#, "tools[0].function"),
            (
                r#""tools":[{"type":"function","function":{"name":"f","parameters":[]}}]"#,
                "tools[0].function.parameters",
            ),
            (
                r#""tools":[{"type":"function","function":{"name":"f","description":1}}]"#,
                "tools[0].function.description",
            ),
            (
                r#""tools":[{"type":"function","function":{"name":"f","strict":"yes"}}]"#,
                "tools[0].function.strict",
            ),
            (r#""tool_choice":"sometimes""#, "tool_choice"),
            (r#""parallel_tool_calls":"yes""#, "parallel_tool_calls"),
            (
                r#""response_format":{"type":"xml"}"#,
                "response_format.type",
            ),
            (
                r#""response_format":{"type":"json_schema","json_schema":{}}"#,
                "response_format.json_schema",
            ),
        ] {
            let full =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{body}}}"#);
            assert_eq!(refused(&full).1.as_deref(), Some(param), "{full}");
        }
        for (message, param) in [
            (
                r#"{"role":"tool","content":"x"}"#,
                "messages[1].tool_call_id",
            ),
            (
                r#"{"role":"assistant","tool_calls":[{"id":"c"}]}"#,
                "messages[1].tool_calls[0]",
            ),
            (
                r#"{"role":"user","content":"x","tool_calls":[]}"#,
                "messages[1].tool_calls",
            ),
            (r#"{"role":"user"}"#, "messages[1].content"),
        ] {
            let full = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}},{message}]}}"#
            );
            assert_eq!(refused(&full).1.as_deref(), Some(param), "{full}");
        }
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (body, param) in [
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0,
                    "max_completion_tokens":5}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"previous_id":"x"}}"#,
                "metadata.previous_id",
            ),
        ] {
            assert_eq!(refused(body).1.as_deref(), Some(param), "{body}");
        }
        assert_eq!(refused("{nope").0, "invalid_json");
        let long = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(101)
        );
        assert_eq!(refused(&long).0, "context_length_exceeded");
    }
}
