//! The `POST /stream` body: read within the size limit, then checked field by field.

use common::ApiError;

use crate::body::Classify;
use serde_json::Value;

/// A validated stream request.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct StreamRequest {
    /// Not blank; at most `MAX_PROMPT_CHARS` characters (default 32,000).
    #[schema(min_length = 1)]
    pub prompt: String,
    /// The provider's model (default `LLM_MODEL`); at most 200 bytes.
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Continue after this turn (one of the caller's): the provider receives the turns along
    /// its chain, oldest first, then this prompt. Two turns with one `previous_id` are branches.
    pub previous_id: Option<uuid::Uuid>,
    /// Instructions, sent as the system message. Without them a continued turn runs under the
    /// nearest ones up its chain; an empty string runs it (and what continues it) without any.
    /// At most `MAX_PROMPT_CHARS` characters.
    pub system: Option<String>,
}

impl StreamRequest {
    /// Parses and validates a JSON body: `prompt` a non-blank string of at most `max_chars`
    /// characters; `model` a short string; `max_tokens` 1..=1,000,000; `temperature` 0..=2.
    pub fn parse(body: &[u8], max_chars: usize) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::Validation {
            code: "invalid_json",
            message: format!("the body is not valid JSON ({})", e.classify_message()),
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError::invalid("the body must be a JSON object"));
        };
        refuse_unknown(&map)?;
        let field = |name| map.get(name).filter(|v| !v.is_null());
        Ok(Self {
            prompt: prompt(field("prompt"), max_chars)?,
            model: field("model").map(model).transpose()?,
            max_tokens: field("max_tokens").map(max_tokens).transpose()?,
            temperature: field("temperature").map(temperature).transpose()?,
            previous_id: field("previous_id").map(previous_id).transpose()?,
            system: field("system").map(|v| system(v, max_chars)).transpose()?,
        })
    }
}

/// `prompt`: required, a string, not blank, no NUL, at most `max_chars` characters.
fn prompt(v: Option<&Value>, max_chars: usize) -> Result<String, ApiError> {
    let prompt = match v {
        None => return Err(ApiError::invalid("prompt is required")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(ApiError::invalid("prompt must not be empty"));
        }
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(ApiError::invalid("prompt must not contain NUL characters"));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("prompt must be a string")),
    };
    if prompt.chars().count() > max_chars {
        return Err(ApiError::Validation {
            code: "prompt_too_long",
            message: format!("prompt must be at most {max_chars} characters"),
        });
    }
    Ok(prompt)
}

/// `model`: a non-blank string of at most 200 bytes, no NUL.
fn model(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if !s.trim().is_empty() && s.len() <= 200 && !s.contains('\0') => {
            Ok(s.clone())
        }
        _ => Err(ApiError::invalid(
            "model must be a non-empty string of at most 200 bytes, without NUL characters",
        )),
    }
}

/// `max_tokens`: a whole number from 1 to 1,000,000.
fn max_tokens(v: &Value) -> Result<u32, ApiError> {
    match crate::body::whole(v) {
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n as u32),
        _ => Err(ApiError::invalid(
            "max_tokens must be a whole number from 1 to 1000000",
        )),
    }
}

/// `temperature`: a number from 0 to 2.
fn temperature(v: &Value) -> Result<f64, ApiError> {
    match v.as_f64() {
        Some(t) if (0.0..=2.0).contains(&t) => Ok(t),
        _ => Err(ApiError::invalid(
            "temperature must be a number from 0 to 2",
        )),
    }
}

/// `previous_id`: a UUID.
fn previous_id(v: &Value) -> Result<uuid::Uuid, ApiError> {
    v.as_str()
        .and_then(|s| uuid::Uuid::try_parse(s).ok())
        .ok_or_else(|| {
            ApiError::invalid("previous_id must be the id (a UUID) of one of your turns")
        })
}

/// `system`: a string without NUL, at most `max_chars` characters (empty: no instructions).
fn system(v: &Value, max_chars: usize) -> Result<String, ApiError> {
    match v {
        Value::String(s) if s.contains('\0') => {
            Err(ApiError::invalid("system must not contain NUL characters"))
        }
        Value::String(s) if s.chars().count() > max_chars => Err(ApiError::Validation {
            code: "prompt_too_long",
            message: format!("system must be at most {max_chars} characters"),
        }),
        Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::invalid("system must be a string")),
    }
}

/// The fields `POST /stream` takes.
const FIELDS: [&str; 6] = [
    "prompt",
    "model",
    "max_tokens",
    "temperature",
    "previous_id",
    "system",
];

/// A field this endpoint does not take is refused, never silently ignored (a misspelled
/// `max_token` would otherwise change nothing without a word).
fn refuse_unknown(map: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    let Some(field) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) else {
        return Ok(());
    };
    let shown: String = field.chars().take(64).collect();
    Err(ApiError::invalid(match field.as_str() {
        "tools" | "tool_choice" | "functions" | "messages" | "response_format" => format!(
            "{shown} is not taken by /stream, which answers a text prompt: use \
             /v1/chat/completions"
        ),
        _ => format!(
            "unknown field {shown:?}: /stream takes {}",
            FIELDS.join(", ")
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> String {
        StreamRequest::parse(body.as_bytes(), 10)
            .unwrap_err()
            .code()
            .to_owned()
    }

    #[test]
    fn a_plain_prompt_parses() {
        let r = StreamRequest::parse(br#"{"prompt":"hi","max_tokens":5,"temperature":0.5}"#, 10)
            .unwrap();
        assert_eq!(r.prompt, "hi");
        assert_eq!(r.max_tokens, Some(5));
        // A whole number written as a float is one, as JSON Schema's `integer` says.
        let r = StreamRequest::parse(br#"{"prompt":"hi","max_tokens":5.0}"#, 10).unwrap();
        assert_eq!(r.max_tokens, Some(5));
        for bad in ["5.5", "-1.0", "0.0", "1e300"] {
            let body = format!(r#"{{"prompt":"hi","max_tokens":{bad}}}"#);
            assert!(StreamRequest::parse(body.as_bytes(), 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_bodies_are_named() {
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_request");
        assert_eq!(code("{}"), "invalid_request");
        assert_eq!(code(r#"{"prompt":"  "}"#), "invalid_request");
        assert_eq!(code(r#"{"prompt":7}"#), "invalid_request");
        assert_eq!(code(r#"{"prompt":"01234567890"}"#), "prompt_too_long");
        assert_eq!(code(r#"{"prompt":"x","max_tokens":0}"#), "invalid_request");
        assert_eq!(
            code(r#"{"prompt":"x","max_tokens":"5"}"#),
            "invalid_request"
        );
        assert_eq!(code(r#"{"prompt":"x","temperature":3}"#), "invalid_request");
        assert_eq!(code(r#"{"prompt":"x","model":""}"#), "invalid_request");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = StreamRequest::parse(br#"{"prompt":"x","max_token":5}"#, 10).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err.to_string().contains("max_token"), "{err}");
        let err = StreamRequest::parse(br#"{"prompt":"x","tools":[]}"#, 10).unwrap_err();
        assert!(err.to_string().starts_with("tools"), "{err}");
    }

    #[test]
    fn previous_id_and_system_are_checked() {
        let r = StreamRequest::parse(
            br#"{"prompt":"hi","previous_id":"0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d","system":"be brief"}"#,
            10,
        )
        .unwrap();
        assert!(r.previous_id.is_some());
        assert_eq!(r.system.as_deref(), Some("be brief"));
        assert_eq!(
            code(r#"{"prompt":"x","previous_id":"nope"}"#),
            "invalid_request"
        );
        assert_eq!(code(r#"{"prompt":"x","previous_id":7}"#), "invalid_request");
        assert_eq!(code(r#"{"prompt":"x","system":["a"]}"#), "invalid_request");
        assert_eq!(
            code(r#"{"prompt":"x","system":"01234567890"}"#),
            "prompt_too_long"
        );
    }

    #[test]
    fn the_prompt_limit_counts_characters_not_bytes() {
        assert!(StreamRequest::parse("{\"prompt\":\"éééééééééé\"}".as_bytes(), 10).is_ok());
    }
}
