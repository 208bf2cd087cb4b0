//! The LLM provider trait and its providers: `offline` (built in), `openai` (any
//! OpenAI-compatible Chat Completions server) and `bedrock` (Amazon Bedrock's ConverseStream).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;

use crate::domain::Usage;
use crate::settings::{ProviderKind, ProviderSettings};

#[cfg(feature = "bedrock")]
mod bedrock;
mod offline;
mod openai;
pub mod router;
pub mod tools;

pub use offline::OfflineProvider;
pub use openai::{OpenAiProvider, parse_chunk};
pub use tools::{RawJson, Tool, ToolCall, ToolCallDelta, ToolChoice};

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    /// A tool's result (`tool_call_id` names the call).
    Tool,
}

/// A message's content: text, the parts a client sent (kept as sent), or none (an assistant
/// message that only calls tools).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
    None,
}

/// A part of a message's content, as OpenAI's API takes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// `{"type": "text", "text"}`.
    Text { text: String },
    /// `{"type": "image_url", "image_url": {"url", "detail"?}}`: an https URL or a `data:` URI.
    ImageUrl { image_url: ImageUrl },
}

/// An image a message shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text { text: text.into() }
    }
}

/// A `data:` URI's media type and decoded bytes (`None`: not a base64 `data:` URI).
pub fn decode_data_uri(url: &str) -> Option<(&str, Vec<u8>)> {
    use base64::Engine;
    use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
    // Standard base64 with its padding; bits after the last byte are ignored, as browsers and
    // OpenAI do.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let rest = url.strip_prefix("data:")?;
    let (media_type, data) = rest.split_once(";base64,")?;
    let bytes = LENIENT.decode(data.trim()).ok()?;
    Some((media_type, bytes))
}

impl Content {
    /// The text of the content (text parts joined).
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::ImageUrl { .. } => None,
                })
                .collect(),
            Content::None => String::new(),
        }
    }
}

/// One message of what a provider receives, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    /// A participant's name, as OpenAI's API takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's calls (written in OpenAI's shape; read in it or as stored).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "openai_calls",
        deserialize_with = "either_calls"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// A tool message's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

fn openai_calls<S: serde::Serializer>(calls: &[ToolCall], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(calls.iter().map(ToolCall::to_openai))
}

/// Calls in OpenAI's shape (`{"id", "type", "function": {"name", "arguments"}}`, as
/// [`openai_calls`] writes them) or as stored (`{"id", "name", "arguments"}`).
fn either_calls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ToolCall>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Function {
        name: String,
        arguments: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        OpenAi { id: String, function: Function },
        Stored(ToolCall),
    }
    let calls: Vec<Either> = serde::Deserialize::deserialize(d)?;
    Ok(calls
        .into_iter()
        .map(|c| match c {
            Either::OpenAi { id, function } => ToolCall {
                id,
                name: function.name,
                arguments: function.arguments,
            },
            Either::Stored(call) => call,
        })
        .collect())
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Content::Text(text.into()),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// What to generate: the messages in order (the system message first when there is one, the
/// turns of the conversation, the new user message last). As JSON it is what a background
/// response's generation is queued with (see `responses::background` in the stream function).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompletionRequest {
    pub messages: Vec<Message>,
    pub model: String,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Vec<String>>,
    /// Parameters a client named that the service passes on as sent, in OpenAI's names
    /// (`seed`, `logit_bias`, the penalties, `user`, `reasoning_effort`, `max_completion_tokens`,
    /// ...); a provider that cannot honour one refuses the request by its name (see
    /// [`Provider::unsupported`]).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The functions the model may call (none: a plain completion).
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// Where a routed provider notes every target it tries (see [`router`]).
    #[serde(skip)]
    pub attempts: Attempts,
}

/// The targets a request tried, noted as it goes (shared by the request's clones).
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<std::sync::Mutex<Vec<crate::domain::Attempt>>>);

impl PartialEq for Attempts {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Attempts {
    pub fn push(&self, attempt: crate::domain::Attempt) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(attempt);
    }

    /// Every attempt so far.
    pub fn all(&self) -> Vec<crate::domain::Attempt> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CompletionRequest {
    /// A request of one user message.
    pub fn prompt(prompt: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            messages: vec![Message::new(Role::User, prompt)],
            model: model.into(),
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: None,
            extra: serde_json::Map::new(),
            tools: Vec::new(),
            tool_choice: None,
            attempts: Attempts::default(),
        }
    }

    /// The text of the last user message (what a guardrail checks, what the offline provider
    /// answers).
    pub fn last_user_text(&self) -> String {
        last_user_text(&self.messages)
    }
}

/// The text of the last user message among `messages` (empty without one).
pub fn last_user_text(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.text())
        .unwrap_or_default()
}

/// One item of a generation: text and tool call fragments, then exactly one `Finish` at the
/// end.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Text(String),
    /// A fragment of a tool call, at the provider's own index (see [`tools::Calls`]).
    ToolCall(ToolCallDelta),
    /// The log probabilities of the text just before it (OpenAI's `logprobs.content` items),
    /// when the request asked for them.
    Logprobs(Vec<serde_json::Value>),
    Finish {
        /// In OpenAI's words (`stop`, `length`, `content_filter`, ...).
        reason: Option<String>,
        usage: Option<Usage>,
        /// The provider's own word when it has another (Bedrock's `stopReason`), for the log.
        raw_reason: Option<String>,
    },
}

/// Why a generation failed. `code()` is what clients and the table see.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not reach the provider")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("provider answered HTTP {status}")]
    Status {
        status: u16,
        /// The start of the answer's body, for the log.
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("provider reported an error: {message}")]
    Api { message: String },
    /// An error the provider named (an AWS exception, before the stream or inside it).
    #[error("provider reported {kind}: {message}")]
    Reported {
        /// The provider's name for it (`ThrottlingException`).
        kind: String,
        message: String,
        /// Ours (`provider_rate_limited`).
        code: &'static str,
        /// Whether a retry before the first chunk may help.
        retryable: bool,
    },
    #[error("provider sent a malformed chunk: {reason}")]
    Malformed { reason: String },
    #[error("provider connection broke mid-stream")]
    Disconnected(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("provider stream ended before [DONE]")]
    Incomplete,
    #[error("provider timed out ({0})")]
    Timeout(&'static str),
}

impl ProviderError {
    /// The stable code stored on the conversation and sent in the `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "provider_unreachable",
            ProviderError::Status { status: 429, .. } => "provider_rate_limited",
            ProviderError::Status {
                status: 401 | 403, ..
            } => "provider_auth",
            ProviderError::Status { status: 404, .. } => "provider_model_not_found",
            ProviderError::Status { status: 503, .. } => "provider_unavailable",
            ProviderError::Status { status, .. } if (400..500).contains(status) => {
                "provider_bad_request"
            }
            ProviderError::Status { .. } | ProviderError::Api { .. } => "provider_error",
            ProviderError::Reported { code, .. } => code,
            ProviderError::Malformed { .. } => "provider_malformed",
            ProviderError::Disconnected(_) | ProviderError::Incomplete => "provider_disconnected",
            ProviderError::Timeout(_) => "provider_timeout",
        }
    }

    /// A sentence safe to show a client (no bodies, hosts or keys).
    pub fn public_message(&self) -> &'static str {
        Self::message_for(self.code()).unwrap_or("the model provider returned an error")
    }

    /// The sentence for a provider error code (`None` for other codes).
    pub fn message_for(code: &str) -> Option<&'static str> {
        Some(match code {
            "provider_unreachable" => "the model provider could not be reached",
            "provider_rate_limited" => "the model provider is rate limiting",
            "provider_error" => "the model provider returned an error",
            "provider_unavailable" => "the model provider is unavailable",
            "provider_bad_request" => "the model provider refused the request",
            "provider_model_not_found" => "the model provider does not serve this model",
            "provider_auth" => "the model provider refused this service's credentials",
            "provider_malformed" => "the model provider sent an unreadable chunk",
            "provider_disconnected" => "the model provider stopped before the answer was complete",
            "provider_timeout" => "the model provider took too long",
            _ => return None,
        })
    }

    /// What the provider said about a refused request, for a client to act on: its HTTP status,
    /// its own error `code`, `param` and message (OpenAI's error object), and `Retry-After`.
    /// Only for a 4xx that is about the request (not the operator's credentials).
    pub fn upstream(&self) -> Option<Upstream> {
        match self {
            ProviderError::Status {
                status,
                body,
                retry_after,
            } => {
                let error = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("error").cloned());
                let text = |k: &str| {
                    error
                        .as_ref()
                        .and_then(|e| e.get(k))
                        .and_then(|v| v.as_str())
                        .map(|s| s.chars().take(1000).collect::<String>())
                };
                let about_request = (400..500).contains(status) && !matches!(status, 401 | 403);
                Some(Upstream {
                    status: *status,
                    code: text("code").filter(|_| about_request),
                    param: text("param").filter(|_| about_request),
                    message: text("message").filter(|_| about_request),
                    retry_after: *retry_after,
                })
            }
            ProviderError::Reported { message, code, .. } if *code == "provider_bad_request" => {
                Some(Upstream {
                    status: 400,
                    code: None,
                    param: None,
                    message: Some(message.chars().take(1000).collect()),
                    retry_after: None,
                })
            }
            _ => None,
        }
    }

    /// Whether a retry may help: connect errors, 429 and 5xx, throttling and transient
    /// service errors (only before the first chunk).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect(_) => true,
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            ProviderError::Reported { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// A provider's refusal of a request, as far as a client may see it (see
/// [`ProviderError::upstream`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Upstream {
    pub status: u16,
    pub code: Option<String>,
    pub param: Option<String>,
    pub message: Option<String>,
    pub retry_after: Option<Duration>,
}

/// A stream of chunks, ending after `Chunk::Finish` or an error.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// An LLM that streams text.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The name stored on each conversation (`offline`, `openai`, `bedrock`).
    fn name(&self) -> &'static str;

    /// The model used when a request names none.
    fn default_model(&self) -> &str;

    /// The only model names requests may use (a router's routes); `None`: any.
    fn models(&self) -> Option<Vec<String>> {
        None
    }

    /// The models the provider may call for a request naming `model` (a route's targets; else
    /// `model` itself): what prices a request.
    fn targets(&self, model: &str) -> Vec<String> {
        vec![model.to_owned()]
    }

    /// The first part of `request` this provider cannot honour, named as the client's request
    /// names it (`seed`, `messages[1].content[0].image_url`): the request is then refused.
    /// `None` when it honours it all.
    fn unsupported(&self, request: &CompletionRequest) -> Option<String> {
        let _ = request;
        None
    }

    /// Starts a generation. Resolves once the provider has accepted the request (retrying
    /// connect errors, 429 and 5xx), then yields text chunks and one final `Finish`.
    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError>;
}

/// Builds the provider chosen by `LLM_PROVIDER`, or with `LLM_CONFIG` the router over its
/// routes.
pub fn from_settings(settings: &ProviderSettings) -> Result<Arc<dyn Provider>, ProviderError> {
    if let Some(routes) = &settings.routes {
        return Ok(Arc::new(router::Router::new(routes, settings.max_retries)?));
    }
    one(settings)
}

/// The one provider `settings` describe (its `routes` aside).
pub(crate) fn one(settings: &ProviderSettings) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match settings.kind {
        ProviderKind::Offline => Arc::new(OfflineProvider::new(
            settings.model.clone(),
            settings.offline_chunk_delay,
        )),
        ProviderKind::OpenAi => Arc::new(OpenAiProvider::new(settings)?),
        #[cfg(feature = "bedrock")]
        ProviderKind::Bedrock => Arc::new(bedrock::BedrockProvider::new(settings)?),
        #[cfg(not(feature = "bedrock"))]
        ProviderKind::Bedrock => {
            return Err(ProviderError::Api {
                message: "this build has no Bedrock support (built without the `bedrock` feature)"
                    .into(),
            });
        }
    })
}
