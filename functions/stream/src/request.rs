//! The `POST /stream` body: read within the size limit, then checked field by field.

use axum::extract::Request;
use common::ApiError;
use common::provider::CompletionRequest;
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
    pub temperature: Option<f32>,
}

/// Reads the whole body; more than `limit` bytes is a 413.
pub async fn read_body(request: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })
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
        let prompt = match map.get("prompt") {
            None | Some(Value::Null) => return Err(ApiError::invalid("prompt is required")),
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
        let model = match map.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if !s.trim().is_empty() && s.len() <= 200 && !s.contains('\0') =>
            {
                Some(s.clone())
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "model must be a non-empty string of at most 200 bytes, without NUL characters",
                ));
            }
        };
        let max_tokens = match map.get("max_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => Some(n as u32),
                _ => {
                    return Err(ApiError::invalid(
                        "max_tokens must be a whole number from 1 to 1000000",
                    ));
                }
            },
        };
        let temperature = match map.get("temperature") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(t) if (0.0..=2.0).contains(&t) => Some(t as f32),
                _ => {
                    return Err(ApiError::invalid(
                        "temperature must be a number from 0 to 2",
                    ));
                }
            },
        };
        Ok(Self {
            prompt,
            model,
            max_tokens,
            temperature,
        })
    }

    pub fn into_completion(self, model: String) -> CompletionRequest {
        CompletionRequest {
            prompt: self.prompt,
            model,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
        }
    }
}

trait Classify {
    fn classify_message(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong data",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
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
    fn the_prompt_limit_counts_characters_not_bytes() {
        assert!(StreamRequest::parse("{\"prompt\":\"éééééééééé\"}".as_bytes(), 10).is_ok());
    }
}
