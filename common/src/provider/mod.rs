//! The LLM provider trait and its two providers: `offline` (built in) and `openai` (any
//! OpenAI-compatible Chat Completions server).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;

use crate::domain::Usage;
use crate::settings::{ProviderKind, ProviderSettings};

mod offline;
mod openai;

pub use offline::OfflineProvider;
pub use openai::{OpenAiProvider, parse_chunk};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub prompt: String,
    pub model: String,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// One item of a generation: text, then exactly one `Finish` at the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Text(String),
    Finish {
        reason: Option<String>,
        usage: Option<Usage>,
    },
}

/// Why a generation failed. `code()` is what clients and the table see.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not reach the provider")]
    Connect(#[source] reqwest::Error),
    #[error("provider answered HTTP {status}")]
    Status {
        status: u16,
        /// The start of the answer's body, for the log.
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("provider reported an error: {message}")]
    Api { message: String },
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
            ProviderError::Malformed { .. } => "provider_malformed",
            ProviderError::Disconnected(_) | ProviderError::Incomplete => "provider_disconnected",
            ProviderError::Timeout(_) => "provider_timeout",
        }
    }

    /// A sentence safe to show a client (no bodies, hosts or keys).
    pub fn public_message(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "the model provider could not be reached",
            ProviderError::Status { status: 429, .. } => "the model provider is rate limiting",
            ProviderError::Status { .. } | ProviderError::Api { .. } => {
                "the model provider returned an error"
            }
            ProviderError::Malformed { .. } => "the model provider sent an unreadable chunk",
            ProviderError::Disconnected(_) | ProviderError::Incomplete => {
                "the model provider stopped before the answer was complete"
            }
            ProviderError::Timeout(_) => "the model provider took too long",
        }
    }

    /// Whether a retry may help: connect errors, 429 and 5xx (only before the first chunk).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect(_) => true,
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A stream of chunks, ending after `Chunk::Finish` or an error.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// An LLM that streams text.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The name stored on each conversation (`offline`, `openai`).
    fn name(&self) -> &'static str;

    /// The model used when a request names none.
    fn default_model(&self) -> &str;

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
    })
}
