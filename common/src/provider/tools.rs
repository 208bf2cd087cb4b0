//! Tool calling, as OpenAI's Chat Completions defines it: the functions a request offers
//! ([`Tool`], [`ToolChoice`]), the calls an assistant makes ([`ToolCall`]), and [`Calls`], which
//! turns what any upstream streams ([`ToolCallDelta`]s, each at the upstream's own index) into
//! calls in OpenAI's exact streamed shape. Upstreams differ: some send parallel calls at one
//! index (each with a new id), some send a call's arguments in one piece or only with its last
//! fragment, some send no id at all. `Calls` normalises them all the same way, streamed or not.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A function the model may call (`{"type": "function", "function": {...}}` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of its arguments, as sent.
    pub parameters: Option<RawJson>,
    pub strict: Option<bool>,
}

/// A JSON value kept as the text it came as (a tool's schema): passed on to an upstream byte for
/// byte, and parsed only where a provider needs its structure (Bedrock's tool specs, the
/// offline provider's example arguments). Building and dropping a tree of values for every
/// schema of every request cost more than the rest of a tool's handling.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// Keeps `raw` (valid JSON: it came out of a parser).
    pub fn new(raw: Box<serde_json::value::RawValue>) -> Self {
        Self(raw)
    }

    /// `value` written out.
    pub fn from_value(value: &Value) -> Self {
        Self(
            serde_json::value::to_raw_value(value)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// As a tree of values.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    pub fn raw(&self) -> &serde_json::value::RawValue {
        &self.0
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// From any JSON (a queued background run is read back as a tree of values).
impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_value(&Value::deserialize(d)?))
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    /// This function.
    Function(String),
}

impl ToolChoice {
    /// As OpenAI's API takes it.
    pub fn to_openai(&self) -> Value {
        match self {
            ToolChoice::None => "none".into(),
            ToolChoice::Auto => "auto".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        }
    }
}

/// A call the assistant made: as stored with the turn (`{"id","name","arguments"}`), the
/// arguments the JSON text the model wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    /// As an assistant message carries it on OpenAI's wire.
    pub fn to_openai(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// A fragment of a call as an upstream streams it: at the upstream's index, maybe with an id
/// and a name (a call's first fragment should have both), and a piece of the arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// A fragment of a call in OpenAI's streamed shape: `index` numbers calls 0, 1, 2 in order;
/// the first fragment of each carries `id` and `name` (`header`), later ones only arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFragment {
    pub index: u32,
    /// `(id, name)`, on a call's first fragment only.
    pub header: Option<(String, String)>,
    pub arguments: String,
}

impl CallFragment {
    /// The `tool_calls` entry of a `chat.completion.chunk` delta.
    pub fn to_openai(&self) -> Value {
        let mut call = serde_json::json!({
            "index": self.index,
            "function": {"arguments": self.arguments},
        });
        if let Some((id, name)) = &self.header {
            call["id"] = id.clone().into();
            call["type"] = "function".into();
            call["function"]["name"] = name.clone().into();
        }
        call
    }
}

struct Open {
    /// The upstream's index it arrived at.
    upstream: u32,
    id: String,
    name: Option<String>,
    arguments: String,
    /// Its header was sent.
    announced: bool,
}

/// Assembles an upstream's call fragments into calls, and says what to stream for each.
#[derive(Default)]
pub struct Calls {
    calls: Vec<Open>,
}

/// A fresh call id, for an upstream that sends none: `call_` and 24 random characters.
pub fn new_call_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &hex[..24])
}

impl Calls {
    /// Takes one upstream fragment; returns what to stream for it (nothing while a call's name
    /// is still unknown: its arguments wait for it).
    pub fn push(&mut self, delta: ToolCallDelta) -> Option<CallFragment> {
        let fresh_id = delta.id.as_deref().filter(|id| !id.is_empty());
        // The call this fragment continues: the latest opened at its upstream index, unless it
        // brings an id of its own that differs (a new call at an index already in use).
        let current = self.calls.iter().rposition(|c| c.upstream == delta.index);
        let at = match (current, fresh_id) {
            (Some(i), None) => i,
            (Some(i), Some(id)) if self.calls[i].id == id => i,
            _ => {
                self.calls.push(Open {
                    upstream: delta.index,
                    id: fresh_id.map_or_else(new_call_id, str::to_owned),
                    name: None,
                    arguments: String::new(),
                    announced: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        if call.name.is_none() {
            call.name = delta.name.filter(|n| !n.is_empty());
        }
        call.arguments.push_str(&delta.arguments);
        let name = call.name.clone()?;
        let index = at as u32;
        if call.announced {
            if delta.arguments.is_empty() {
                return None;
            }
            return Some(CallFragment {
                index,
                header: None,
                arguments: delta.arguments,
            });
        }
        call.announced = true;
        // The header, with every argument piece that waited for it.
        Some(CallFragment {
            index,
            header: Some((call.id.clone(), name)),
            arguments: call.arguments.clone(),
        })
    }

    /// Whether any call was made.
    pub fn any(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The calls made, in order (a call that never got a name is dropped: no client could run
    /// it).
    pub fn finish(&self) -> Vec<ToolCall> {
        self.calls
            .iter()
            .filter_map(|c| {
                Some(ToolCall {
                    id: c.id.clone(),
                    name: c.name.clone()?,
                    arguments: c.arguments.clone(),
                })
            })
            .collect()
    }
}

/// What a client rebuilds from streamed fragments (as the OpenAI SDKs do): the calls, by index.
pub fn rebuild(fragments: &[CallFragment]) -> Vec<ToolCall> {
    let mut calls: Vec<ToolCall> = Vec::new();
    for f in fragments {
        let i = f.index as usize;
        if let Some((id, name)) = &f.header {
            calls.resize_with(calls.len().max(i + 1), || ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
            calls[i].id = id.clone();
            calls[i].name = name.clone();
        }
        if let Some(c) = calls.get_mut(i) {
            c.arguments.push_str(&f.arguments);
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: args.to_owned(),
        }
    }

    /// Streams `deltas` through `Calls`: the fragments sent, and the calls kept.
    fn replay(deltas: Vec<ToolCallDelta>) -> (Vec<CallFragment>, Vec<ToolCall>) {
        let mut calls = Calls::default();
        let sent = deltas.into_iter().filter_map(|d| calls.push(d)).collect();
        (sent, calls.finish())
    }

    #[test]
    fn openai_parallel_calls_pass_as_they_came() {
        let (sent, kept) = replay(vec![
            delta(0, Some("call_a"), Some("weather"), ""),
            delta(0, None, None, "{\"city\":"),
            delta(1, Some("call_b"), Some("time"), ""),
            delta(0, None, None, "\"Oslo\"}"),
            delta(1, None, None, "{}"),
        ]);
        assert_eq!(sent.len(), 5);
        assert_eq!(sent[0].header, Some(("call_a".into(), "weather".into())));
        assert_eq!(rebuild(&sent), kept);
        assert_eq!(kept[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(kept[1].name, "time");
    }

    #[test]
    fn a_new_id_at_an_index_in_use_opens_a_new_call() {
        // Gemini's and Ollama's adapters send every parallel call at index 0.
        let (sent, kept) = replay(vec![
            delta(0, Some("a"), Some("weather"), "{\"city\":\"Oslo\"}"),
            delta(0, Some("b"), Some("weather"), "{\"city\":\"Rome\"}"),
        ]);
        assert_eq!(kept.len(), 2);
        assert_eq!((sent[0].index, sent[1].index), (0, 1));
        assert_eq!(kept[1].arguments, "{\"city\":\"Rome\"}");
        assert_eq!(rebuild(&sent), kept);
    }

    #[test]
    fn arguments_before_the_name_wait_and_a_missing_id_is_made() {
        let (sent, kept) = replay(vec![
            delta(3, None, None, "{\"q\":"),
            delta(3, None, Some("search"), "1}"),
        ]);
        assert_eq!(sent.len(), 1);
        let (id, name) = sent[0].header.clone().unwrap();
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
        assert_eq!(name, "search");
        assert_eq!(sent[0].index, 0);
        assert_eq!(kept[0].arguments, "{\"q\":1}");
        assert_eq!(rebuild(&sent), kept);
    }

    #[test]
    fn the_streamed_shape_is_openais() {
        let f = CallFragment {
            index: 1,
            header: Some(("call_x".into(), "f".into())),
            arguments: String::new(),
        };
        assert_eq!(
            f.to_openai(),
            serde_json::json!({"index":1,"id":"call_x","type":"function",
                "function":{"name":"f","arguments":""}})
        );
    }
}
