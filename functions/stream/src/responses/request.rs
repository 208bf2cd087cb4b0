//! A `POST /v1/responses` body: checked field by field (anything this service does not take is
//! a 400 naming it), then written as the Chat Completions request it amounts to, which the
//! chat surface's own checks (images, caps, parameters) then read.

use serde_json::{Map, Value, json};

use super::wire::{Echo, turn_of};
use crate::openai::request::ChatRequest;
use common::error::OpenAiError;

/// A create call, read.
pub struct CreateRequest {
    pub chat: ChatRequest,
    /// `instructions`: the system message, never inherited from the previous response.
    pub instructions: Option<String>,
    pub previous: Option<uuid::Uuid>,
    pub stream: bool,
    pub background: bool,
    pub store: bool,
    pub echo: Echo,
}

const TAKEN: [&str; 18] = [
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "stream",
    "background",
    "store",
    "max_output_tokens",
    "temperature",
    "top_p",
    "metadata",
    "user",
    "text",
    "parallel_tool_calls",
    "tools",
    "tool_choice",
    // Taken when they ask for nothing this service would not do anyway.
    "include",
    "truncation",
];

fn bad(param: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError::new(
        "invalid_request_error",
        "invalid_request",
        message,
        Some(param),
    )
}

fn unsupported(param: &str) -> OpenAiError {
    OpenAiError::new(
        "invalid_request_error",
        "unsupported_parameter",
        format!("{param} is not supported by this service's Responses API"),
        Some(param),
    )
}

fn flag(map: &Map<String, Value>, name: &str, default: bool) -> Result<bool, OpenAiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(name, format!("{name} must be a boolean"))),
    }
}

impl CreateRequest {
    pub fn parse(body: &[u8], max_chars: usize) -> Result<Self, OpenAiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            OpenAiError::new(
                "invalid_request_error",
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
                None,
            )
        })?;
        let Value::Object(map) = value else {
            return Err(bad("body", "the body must be a JSON object"));
        };
        if let Some(other) = map.keys().find(|k| !TAKEN.contains(&k.as_str())) {
            return Err(unsupported(other));
        }
        let model = match map.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            _ => return Err(bad("model", "model is required: a model name")),
        };
        let instructions = match map.get("instructions") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("instructions", "instructions must be a string")),
        };
        let previous = match map.get("previous_response_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(turn_of(s).ok_or_else(|| {
                bad(
                    "previous_response_id",
                    "previous_response_id must be a response id (resp_...)",
                )
            })?),
            Some(_) => {
                return Err(bad(
                    "previous_response_id",
                    "previous_response_id must be a string",
                ));
            }
        };
        let metadata = match map.get("metadata") {
            None | Some(Value::Null) => json!({}),
            Some(Value::Object(m)) if m.values().all(Value::is_string) && m.len() <= 16 => {
                Value::Object(m.clone())
            }
            Some(_) => {
                return Err(bad(
                    "metadata",
                    "metadata must be an object of at most 16 string values",
                ));
            }
        };
        let mut messages = Vec::new();
        if let Some(text) = &instructions {
            messages.push(json!({"role": "system", "content": text}));
        }
        messages.extend(input(map.get("input"))?);
        match map.get("include") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(_) => return Err(unsupported("include")),
        }
        match map.get("truncation") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "disabled" => {}
            Some(_) => return Err(unsupported("truncation")),
        }
        let mut chat = Map::new();
        chat.insert("model".into(), model.into());
        if let Some(tools) = map.get("tools").filter(|t| !t.is_null()) {
            chat.insert("tools".into(), tools_of(tools)?);
        }
        if let Some(choice) = map.get("tool_choice").filter(|t| !t.is_null()) {
            chat.insert("tool_choice".into(), choice_of(choice)?);
        }
        chat.insert("messages".into(), messages.into());
        for (ours, theirs) in [
            ("max_output_tokens", "max_completion_tokens"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("user", "user"),
            ("parallel_tool_calls", "parallel_tool_calls"),
        ] {
            if let Some(v) = map.get(ours).filter(|v| !v.is_null()) {
                chat.insert(theirs.into(), v.clone());
            }
        }
        let text_format = text_format(map.get("text"))?;
        if let Some(format) = &text_format
            && let Some(rf) = response_format(format)?
        {
            chat.insert("response_format".into(), rf);
        }
        let body = serde_json::to_vec(&Value::Object(chat)).unwrap_or_default();
        let chat = ChatRequest::parse(&body, max_chars).map_err(|mut e| {
            // Our names for the fields the chat surface checked.
            if let Some(p) = e.error.param.as_mut() {
                *p = p
                    .replace("max_completion_tokens", "max_output_tokens")
                    .replace("response_format", "text.format");
                if let Some(rest) = p.strip_prefix("messages") {
                    *p = format!("input{rest}");
                }
                if let Some(rest) = p.strip_prefix("tools[").and_then(|r| r.split_once(']')) {
                    *p = format!("tools[{}]{}", rest.0, rest.1.replace(".function", ""));
                }
            }
            e
        })?;
        let echo = Echo {
            metadata,
            temperature: chat.temperature,
            top_p: chat.top_p,
            max_output_tokens: map
                .get("max_output_tokens")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            text_format,
            store: flag(&map, "store", true)?,
            background: flag(&map, "background", false)?,
        };
        Ok(Self {
            instructions,
            previous,
            stream: flag(&map, "stream", false)?,
            background: echo.background,
            store: echo.store,
            echo,
            chat,
        })
    }
}

/// `input`: a string (one user message), or message items whose content is a string or
/// `input_text`, `input_image` and (an assistant's) `output_text` parts; as chat messages.
fn input(value: Option<&Value>) -> Result<Vec<Value>, OpenAiError> {
    match value {
        Some(Value::String(s)) => Ok(vec![json!({"role": "user", "content": s})]),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out: Vec<Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        let call = function_call(i, item)?;
                        // Calls that follow each other are one assistant turn's calls.
                        // Calls join the assistant message before them (its text, if any).
                        match out.last_mut() {
                            Some(last) if last["role"] == "assistant" => {
                                match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                                    Some(calls) => calls.push(call),
                                    None => last["tool_calls"] = json!([call]),
                                }
                            }
                            _ => out.push(json!({"role": "assistant", "content": null,
                                                 "tool_calls": [call]})),
                        }
                    }
                    Some("function_call_output") => out.push(call_output(i, item)?),
                    _ => out.push(message(i, item)?),
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            "input",
            "input is required: a string, or a list of message items",
        )),
    }
}

fn message(i: usize, item: &Value) -> Result<Value, OpenAiError> {
    let at = |field: &str| format!("input[{i}].{field}");
    let Value::Object(item) = item else {
        return Err(bad(
            &format!("input[{i}]"),
            "each input item must be an object",
        ));
    };
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => {}
        Some(_) => return Err(unsupported(&at("type"))),
    }
    if let Some(other) = item
        .keys()
        .find(|k| !["type", "role", "content", "id", "status"].contains(&k.as_str()))
    {
        return Err(unsupported(&at(other)));
    }
    let role = match item.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant" | "system" | "developer")) => r,
        _ => {
            return Err(bad(
                &at("role"),
                "role must be user, assistant, system or developer",
            ));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let here = at(&format!("content[{j}]"));
                let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
                match kind {
                    "input_text" | "output_text" => match p.get("text") {
                        Some(Value::String(t)) => out.push(json!({"type": "text", "text": t})),
                        _ => return Err(bad(&format!("{here}.text"), "text must be a string")),
                    },
                    "input_image" if role == "user" => {
                        let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                            return Err(unsupported(&format!("{here}.image_url")));
                        };
                        let mut image = json!({"url": url});
                        if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                            image["detail"] = d.clone();
                        }
                        out.push(json!({"type": "image_url", "image_url": image}));
                    }
                    _ => return Err(unsupported(&format!("{here}.type"))),
                }
            }
            Value::Array(out)
        }
        _ => {
            return Err(bad(
                &at("content"),
                "content must be a string or a list of parts",
            ));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// A `function_call` input item (a call the model made earlier) as a chat tool call.
fn function_call(i: usize, item: &Value) -> Result<Value, OpenAiError> {
    let at = |field: &str| format!("input[{i}].{field}");
    let allowed = ["type", "call_id", "name", "arguments", "id", "status"];
    if let Some(other) = item
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(unsupported(&at(other)));
    }
    let text = |field: &str| match item.get(field) {
        Some(Value::String(s)) if !s.is_empty() || field == "arguments" => Ok(s.clone()),
        _ => Err(bad(&at(field), format!("{field} must be a string"))),
    };
    Ok(json!({"id": text("call_id")?, "type": "function",
              "function": {"name": text("name")?, "arguments": text("arguments")?}}))
}

/// A `function_call_output` input item (a call's result) as a chat tool message.
fn call_output(i: usize, item: &Value) -> Result<Value, OpenAiError> {
    let at = |field: &str| format!("input[{i}].{field}");
    let allowed = ["type", "call_id", "output", "id", "status"];
    if let Some(other) = item
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(unsupported(&at(other)));
    }
    let call_id = match item.get("call_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad(&at("call_id"), "call_id must be a string")),
    };
    let output = match item.get("output") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(bad(&at("output"), "output must be a string")),
    };
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": output}))
}

/// `tools` (type `function`, flat: `name`, `description`, `parameters`, `strict`) as chat
/// tools.
fn tools_of(tools: &Value) -> Result<Value, OpenAiError> {
    let Value::Array(tools) = tools else {
        return Err(bad("tools", "tools must be a list"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(unsupported(&format!("tools[{i}].type")));
            }
            let mut function = Map::new();
            for (k, v) in t.as_object().into_iter().flatten() {
                match k.as_str() {
                    "type" => {}
                    "name" | "description" | "parameters" | "strict" => {
                        if !v.is_null() {
                            function.insert(k.clone(), v.clone());
                        }
                    }
                    other => return Err(unsupported(&format!("tools[{i}].{other}"))),
                }
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type": "function", "name"}`.
fn choice_of(choice: &Value) -> Result<Value, OpenAiError> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name") {
                Some(Value::String(name)) => {
                    Ok(json!({"type": "function", "function": {"name": name}}))
                }
                _ => Err(bad("tool_choice.name", "tool_choice.name must be a string")),
            }
        }
        _ => Err(unsupported("tool_choice")),
    }
}

/// `text`: `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
fn text_format(value: Option<&Value>) -> Result<Option<Value>, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(t)) => {
            if let Some(other) = t.keys().find(|k| k.as_str() != "format") {
                return Err(unsupported(&format!("text.{other}")));
            }
            Ok(t.get("format").filter(|f| !f.is_null()).cloned())
        }
        Some(_) => Err(bad("text", "text must be an object")),
    }
}

/// The chat `response_format` a `text.format` is (none for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, OpenAiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(bad(
            "text.format.type",
            "text.format.type must be text, json_object or json_schema",
        )),
    }
}
