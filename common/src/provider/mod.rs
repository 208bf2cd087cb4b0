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

pub use offline::OfflineProvider;
pub use openai::{OpenAiProvider, parse_chunk};

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
}

/// A message's content: text, or the text parts a client sent (kept as sent).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<TextPart>),
}

/// `{"type": "text", "text": ...}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TextPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

impl Content {
    /// The text of the content (parts joined).
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts.iter().map(|p| p.text.as_str()).collect(),
        }
    }
}

/// One message of what a provider receives.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    /// A participant's name, as OpenAI's API takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Content::Text(text.into()),
            name: None,
        }
    }
}

/// What to generate: the messages in order (the system message first when there is one, the
/// turns of the conversation, the new user message last).
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub messages: Vec<Message>,
    pub model: String,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Option<Vec<String>>,
    /// Parameters a client named that the service passes on as sent, in OpenAI's names
    /// (`seed`, `logit_bias`, the penalties, `user`, `reasoning_effort`, `max_completion_tokens`,
    /// ...); a provider that cannot honour one refuses the request by its name (see
    /// [`Provider::unsupported`]).
    pub extra: serde_json::Map<String, serde_json::Value>,
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

/// One item of a generation: text, then exactly one `Finish` at the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Text(String),
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
            "provider_malformed" => "the model provider sent an unreadable chunk",
            "provider_disconnected" => "the model provider stopped before the answer was complete",
            "provider_timeout" => "the model provider took too long",
            _ => return None,
        })
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

/// A stream of chunks, ending after `Chunk::Finish` or an error.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// An LLM that streams text.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The name stored on each conversation (`offline`, `openai`, `bedrock`).
    fn name(&self) -> &'static str;

    /// The model used when a request names none.
    fn default_model(&self) -> &str;

    /// The first of `extra`'s parameters this provider cannot honour (the request is then
    /// refused, naming it); `None` when it honours them all.
    fn unsupported<'a>(
        &self,
        extra: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a str> {
        let _ = extra;
        None
    }

    /// Starts a generation. Resolves once the provider has accepted the request (retrying
    /// connect errors, 429 and 5xx), then yields text chunks and one final `Finish`.
    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError>;
}

/// Builds the provider chosen by `LLM_PROVIDER`.
pub fn from_settings(settings: &ProviderSettings) -> Result<Arc<dyn Provider>, ProviderError> {
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
