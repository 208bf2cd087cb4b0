//! The tool calling and structured output fields of a Chat Completions request, checked as
//! OpenAI's API checks them: `tools` (functions only), `tool_choice`, `parallel_tool_calls`,
//! `response_format`, an assistant message's `tool_calls` and a tool message's
//! `tool_call_id`. A bad value is a 400 naming its `param`.

use common::provider::{RawJson, Tool, ToolCall, ToolChoice};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::request::{Refusal, bad, unsupported};

/// The most tools one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// A function name as OpenAI allows it: 1 to 64 of `a-z`, `A-Z`, `0-9`, `_` and `-`.
pub const NAME_PATTERN: &str = "^[a-zA-Z0-9_-]{1,64}$";

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A request's `tools` as read in one pass over the body: each tool's parts, its schema kept as
/// the text it came as (no tree of values is built for it: see [`RawJson`]), anything else
/// kept only as far as [`tools`] needs to name what is wrong.
pub enum ToolsField {
    Null,
    List(Vec<ToolItem>),
    NotList,
}

/// One element of `tools`.
pub enum ToolItem {
    Tool {
        kind: Kind,
        function: Option<FunctionItem>,
    },
    NotObject,
}

/// A tool's `function`.
pub enum FunctionItem {
    Function {
        name: Option<Value>,
        description: Option<Value>,
        parameters: Option<Box<RawValue>>,
        strict: Option<Value>,
    },
    NotObject,
}

/// A tool's `type`: `function`, another string, or none (absent, or not a string).
pub enum Kind {
    Missing,
    Function,
    Other,
}

/// Reads an object to its end, keeping nothing.
fn skip_map<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map
        .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
        .is_some()
    {}
    Ok(())
}

/// Reads a list to its end, keeping nothing.
fn skip_seq<'de, A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements `Deserialize` for a type read from any JSON value: `$map` reads an object, `$seq`
/// a list (by default skipped), `$str` a string (by default `$other`), any other value gives
/// `$other`.
macro_rules! any_json {
    ($ty:ty, $other:expr, |$access:ident| $map:block) => {
        any_json!($ty, $other, |$access| $map, |seq| {
            skip_seq(seq)?;
            Ok($other)
        });
    };
    ($ty:ty, $other:expr, |$access:ident| $map:block, |$items:ident| $seq:block) => {
        any_json!($ty, $other, |$access| $map, |$items| $seq, |_s| {
            Ok($other)
        });
    };
    ($ty:ty, $other:expr, |$access:ident| $map:block, |$items:ident| $seq:block, |$s:ident| $str:block) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("any JSON value")
                    }
                    // An arm may only hand its reader to `skip_map` or `skip_seq`.
                    #[allow(unused_mut)]
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut $access: A,
                    ) -> Result<$ty, A::Error> {
                        $map
                    }
                    #[allow(unused_mut)]
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut $items: A,
                    ) -> Result<$ty, A::Error> {
                        $seq
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<$ty, E> {
                        Ok($other)
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<$ty, E> {
                        Ok($other)
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<$ty, E> {
                        Ok($other)
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<$ty, E> {
                        Ok($other)
                    }
                    fn visit_str<E>(self, $s: &str) -> Result<$ty, E> {
                        $str
                    }
                    fn visit_unit<E>(self) -> Result<$ty, E> {
                        Ok($other)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

/// The field's value: null, a list of tools, or anything else.
impl<'de> Deserialize<'de> for ToolsField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<ListOrNot>::deserialize(d)? {
            None => Ok(ToolsField::Null),
            Some(ListOrNot(Some(list))) => Ok(ToolsField::List(list)),
            Some(ListOrNot(None)) => Ok(ToolsField::NotList),
        }
    }
}

/// A list of tools, or (`None`) any other value.
struct ListOrNot(Option<Vec<ToolItem>>);

any_json!(
    ListOrNot,
    ListOrNot(None),
    |map| {
        skip_map(map)?;
        Ok(ListOrNot(None))
    },
    |items| {
        let mut list = Vec::new();
        while let Some(item) = items.next_element()? {
            list.push(item);
        }
        Ok(ListOrNot(Some(list)))
    }
);

any_json!(
    Kind,
    Kind::Missing,
    |map| {
        skip_map(map)?;
        Ok(Kind::Missing)
    },
    |seq| {
        skip_seq(seq)?;
        Ok(Kind::Missing)
    },
    |s| {
        Ok(if s == "function" {
            Kind::Function
        } else {
            Kind::Other
        })
    }
);

any_json!(ToolItem, ToolItem::NotObject, |map| {
    let (mut kind, mut function) = (Kind::Missing, None);
    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
        match key.as_ref() {
            "type" => kind = map.next_value()?,
            "function" => function = Some(map.next_value()?),
            _ => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    Ok(ToolItem::Tool { kind, function })
});

any_json!(FunctionItem, FunctionItem::NotObject, |map| {
    let (mut name, mut description, mut parameters, mut strict) = (None, None, None, None);
    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
        match key.as_ref() {
            "name" => name = Some(map.next_value()?),
            "description" => description = Some(map.next_value()?),
            "parameters" => parameters = Some(map.next_value()?),
            "strict" => strict = Some(map.next_value()?),
            _ => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    Ok(FunctionItem::Function {
        name,
        description,
        parameters,
        strict,
    })
});

/// `tools`: function definitions (none: an empty list), checked as OpenAI checks them; the
/// refusal names the first field that is wrong.
pub fn tools(field: Option<ToolsField>) -> Result<Vec<Tool>, Refusal> {
    let list = match field {
        None | Some(ToolsField::Null) => return Ok(Vec::new()),
        Some(ToolsField::List(list)) if list.len() <= MAX_TOOLS => list,
        Some(_) => {
            return Err(bad(
                "tools",
                format!("tools must be an array of at most {MAX_TOOLS} tools"),
            ));
        }
    };
    let mut out: Vec<Tool> = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        // The field a refusal names (made only when there is one).
        let at = |field: &str| format!("tools[{i}]{field}");
        let ToolItem::Tool { kind, function } = t else {
            return Err(bad(&at(""), "a tool must be an object"));
        };
        match kind {
            Kind::Function => {}
            Kind::Other => {
                return Err(unsupported(
                    &at(".type"),
                    "only function tools are supported",
                ));
            }
            Kind::Missing => return Err(bad(&at(".type"), "a tool needs its type")),
        }
        let Some(FunctionItem::Function {
            name,
            description,
            parameters,
            strict,
        }) = function
        else {
            return Err(bad(
                &at(".function"),
                "a function tool needs its function object",
            ));
        };
        let name = match name {
            Some(Value::String(n)) if valid_name(&n) => n,
            _ => {
                return Err(bad(
                    &at(".function.name"),
                    "a function's name is 1 to 64 letters, digits, underscores or dashes",
                ));
            }
        };
        let description = match description {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d),
            Some(_) => {
                return Err(bad(
                    &at(".function.description"),
                    "description must be a string",
                ));
            }
        };
        let parameters = match parameters {
            None => None,
            Some(p) if p.get() == "null" => None,
            Some(p) if p.get().starts_with('{') => Some(RawJson::new(p)),
            Some(_) => {
                return Err(bad(
                    &at(".function.parameters"),
                    "parameters must be a JSON schema object",
                ));
            }
        };
        let strict = match strict {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                return Err(bad(&at(".function.strict"), "strict must be a boolean"));
            }
        };
        out.push(Tool {
            name,
            description,
            parameters,
            strict,
        });
    }
    Ok(out)
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
/// Whether it fits the tools (a named function among them, any tools at all) is the
/// provider's to say, as it is with OpenAI: a refusal comes back as its 400.
pub fn tool_choice(map: &Map<String, Value>) -> Result<Option<ToolChoice>, Refusal> {
    let choice = match map.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => {
                return Err(bad(
                    "tool_choice",
                    "tool_choice must be none, auto, required or a named function",
                ));
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => ToolChoice::Function(name.to_owned()),
                _ => {
                    return Err(bad(
                        "tool_choice",
                        "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\"}}",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "tool_choice",
                "tool_choice must be a string or an object",
            ));
        }
    };
    Ok(Some(choice))
}

/// `parallel_tool_calls` (a boolean) and `response_format` (`text`, `json_object`, or
/// `json_schema` with its `name` and `schema`), checked; both reach the provider as sent.
pub fn checked_as_sent(map: &Map<String, Value>) -> Result<(), Refusal> {
    match map.get("parallel_tool_calls") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => {
            return Err(bad(
                "parallel_tool_calls",
                "parallel_tool_calls must be a boolean",
            ));
        }
    }
    match map.get("response_format") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(f)) => match f.get("type").and_then(Value::as_str) {
            Some("text" | "json_object") => Ok(()),
            Some("json_schema") => {
                let spec = f.get("json_schema").and_then(Value::as_object);
                let named = spec
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    .is_some_and(valid_name);
                let schema_ok = spec
                    .and_then(|s| s.get("schema"))
                    .is_none_or(|s| s.is_object() || s.is_null());
                let strict_ok = spec
                    .and_then(|s| s.get("strict"))
                    .is_none_or(|s| s.is_boolean() || s.is_null());
                let described_ok = spec
                    .and_then(|s| s.get("description"))
                    .is_none_or(|s| s.is_string() || s.is_null());
                if named && schema_ok && strict_ok && described_ok {
                    Ok(())
                } else {
                    Err(bad(
                        "response_format.json_schema",
                        "json_schema needs a name (1 to 64 letters, digits, _ or -); its \
                         schema must be an object, strict a boolean, description a string",
                    ))
                }
            }
            _ => Err(bad(
                "response_format.type",
                "response_format's type must be text, json_object or json_schema",
            )),
        },
        Some(_) => Err(bad("response_format", "response_format must be an object")),
    }
}

/// An assistant message's `tool_calls`: function calls with an id, a name and the arguments
/// the model wrote (any string: a model may write JSON that does not parse).
pub fn message_calls(param: &str, m: &Map<String, Value>) -> Result<Vec<ToolCall>, Refusal> {
    let list = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(bad(
                &format!("{param}.tool_calls"),
                "tool_calls must be an array",
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("{param}.tool_calls[{j}]");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            let function = c.get("function");
            let kind_ok = c
                .get("type")
                .filter(|t| !t.is_null())
                .is_none_or(|t| t == "function");
            match (
                text(c.get("id")),
                text(function.and_then(|f| f.get("name"))),
                text(function.and_then(|f| f.get("arguments"))),
            ) {
                (Some(id), Some(name), Some(arguments)) if kind_ok && !id.is_empty() => {
                    Ok(ToolCall {
                        id,
                        name,
                        arguments,
                    })
                }
                _ => Err(bad(
                    &at,
                    "a tool call is {\"id\", \"type\": \"function\", \"function\": {\"name\", \
                     \"arguments\"}}",
                )),
            }
        })
        .collect()
}

/// A tool message's `tool_call_id`.
pub fn call_id(param: &str, m: &Map<String, Value>) -> Result<String, Refusal> {
    match m.get("tool_call_id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(bad(
            &format!("{param}.tool_call_id"),
            "a tool message needs the tool_call_id of the call it answers",
        )),
    }
}
