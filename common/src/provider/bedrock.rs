//! Amazon Bedrock through ConverseStream (`LLM_PROVIDER=bedrock`), on the SDK with the same
//! HTTPS client (hyper 1, rustls with ring) as the Data API backend. The client is built only
//! when this provider is chosen, so the other functions and providers pay nothing at start.
//!
//! Mapping: system and developer messages become `system` blocks; the rest become alternating
//! user and assistant messages (consecutive messages of one role are merged) of text blocks,
//! an assistant's tool calls `toolUse` blocks and `tool` messages `toolResult` blocks (in a user
//! message); `tools` and `tool_choice` become `toolConfig`; `max_tokens`, `temperature`, `top_p`
//! and `stop` go into `inferenceConfig`. Text deltas are chunks, `toolUse` block starts and
//! input deltas tool call fragments (at the block's index); `messageStop`'s `stopReason` becomes
//! a `finish_reason` (`tool_use`: `tool_calls`) and `metadata`'s usage the usage. Throttling and transient service errors are retried until the first text arrives,
//! whether they come as an HTTP error or as the stream's first event.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::SdkError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, AutoToolChoice, ContentBlock, ContentBlockDelta, ContentBlockStart,
    ConversationRole, ConverseStreamOutput, ImageBlock, ImageFormat, ImageSource,
    InferenceConfiguration, Message as BedrockMessage, SpecificToolChoice, StopReason,
    SystemContentBlock, Tool as BedrockTool, ToolChoice as BedrockChoice, ToolConfiguration,
    ToolInputSchema, ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_sdk_bedrockruntime::{Client, Config};
use aws_smithy_types::{Document, Number};
use backon::{ExponentialBuilder, Retryable};

use super::{
    Chunk, ChunkStream, CompletionRequest, Content, Part, Provider, ProviderError, Role,
    ToolCallDelta, ToolChoice,
};
use crate::domain::Usage;
use crate::settings::ProviderSettings;

type Events = EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>;

pub struct BedrockProvider {
    client: Client,
    model: String,
    max_retries: usize,
}

impl BedrockProvider {
    pub fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let Some(target) = &settings.bedrock else {
            return Err(ProviderError::Api {
                message: "LLM_PROVIDER=bedrock without its settings".into(),
            });
        };
        let c = &target.credentials;
        let credentials = Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose(),
            c.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "environment",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(target.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .timeout_config(
                aws_sdk_bedrockruntime::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .build(),
            )
            // Retries are ours (below), counted like every provider's, and they also cover a
            // throttling exception that arrives as the stream's first event.
            .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
            // The stream's first-chunk, idle and total timeouts are the service's own, the same
            // for every provider; the SDK's stall detector would fire first with another error.
            .stalled_stream_protection(
                aws_sdk_bedrockruntime::config::StalledStreamProtectionConfig::disabled(),
            );
        if let Some(url) = &target.endpoint_url {
            config = config.endpoint_url(url);
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            model: settings.model.clone(),
            max_retries: settings.max_retries,
        })
    }

    /// Sends the request and reads up to the first text (or the end), so that a failed start is
    /// an error here, where it may be retried.
    async fn open(&self, input: &Input) -> Result<Reader, ProviderError> {
        let out = self
            .client
            .converse_stream()
            .model_id(&input.model)
            .set_messages(Some(input.messages.clone()))
            .set_system((!input.system.is_empty()).then(|| input.system.clone()))
            .set_inference_config(input.inference.clone())
            .set_tool_config(input.tools.clone())
            .set_request_metadata(input.metadata.clone())
            .send()
            .await
            .map_err(start_error)?;
        let mut reader = Reader {
            events: out.stream,
            stop: None,
            usage: None,
            ended: false,
            first: None,
            answer_tool: input.answer_tool.clone(),
            answer_block: None,
        };
        match reader.next().await {
            Some(Err(e)) => Err(e),
            first => {
                reader.first = first;
                Ok(reader)
            }
        }
    }
}

#[async_trait]
impl Provider for BedrockProvider {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    /// Converse takes the token cap (`inferenceConfig.maxTokens`), text output and metadata
    /// (`requestMetadata`), and calls tools in parallel as it sees fit; it has no seed, logit
    /// bias, penalties, end-user id, reasoning effort, service tier, prediction or log
    /// probabilities, and no way to forbid parallel calls.
    fn unsupported(&self, request: &CompletionRequest) -> Option<String> {
        let refused = request.extra.iter().find(|(k, v)| match k.as_str() {
            "max_tokens" | "max_completion_tokens" | "modalities" | "metadata" => false,
            "parallel_tool_calls" | "logprobs" => v.as_bool() == Some(false),
            // JSON is served by a forced tool, which leaves no room for the request's own.
            "response_format" => !request.tools.is_empty() && answer_tool(request).is_some(),
            _ => true,
        });
        if let Some((k, _)) = refused {
            return Some(k.clone());
        }
        // Converse takes image bytes: a URL would have to be fetched, which the service never
        // does.
        request
            .messages
            .iter()
            .enumerate()
            .find_map(|(i, m)| match &m.content {
                Content::Parts(parts) => parts.iter().enumerate().find_map(|(j, p)| match p {
                    Part::ImageUrl { image_url } if image(&image_url.url).is_none() => {
                        Some(format!("messages[{i}].content[{j}].image_url"))
                    }
                    _ => None,
                }),
                _ => None,
            })
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError> {
        let input = Input::from(request);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.max_retries)
            .with_jitter();
        let reader = (|| self.open(&input))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ProviderError::is_retryable)
            .notify(|err, delay| {
                tracing::warn!(error = %err, ?delay, "provider call failed; retrying");
            })
            .await?;
        Ok(Box::pin(futures_util::stream::unfold(
            reader,
            |mut r| async move { r.next().await.map(|item| (item, r)) },
        )))
    }
}

/// A request in Converse's terms.
struct Input {
    model: String,
    messages: Vec<BedrockMessage>,
    system: Vec<SystemContentBlock>,
    inference: Option<InferenceConfiguration>,
    tools: Option<ToolConfiguration>,
    /// The forced tool whose input is the answer (structured output), if any.
    answer_tool: Option<String>,
    /// `metadata`, as Converse's `requestMetadata` (kept in Bedrock's invocation logs).
    metadata: Option<std::collections::HashMap<String, String>>,
}

impl From<CompletionRequest> for Input {
    fn from(request: CompletionRequest) -> Self {
        let answer = answer_tool(&request);
        let metadata = request
            .extra
            .get("metadata")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            });
        let mut system = Vec::new();
        // (role, blocks) with consecutive messages of one role merged: Converse wants user and
        // assistant to alternate (a tool's result is a user message's block).
        let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
        for m in request.messages {
            let text = m.content.text();
            let (role, blocks) = match m.role {
                Role::System | Role::Developer => {
                    if !text.is_empty() {
                        system.push(SystemContentBlock::Text(text));
                    }
                    continue;
                }
                Role::User => (ConversationRole::User, user_blocks(&m.content)),
                Role::Assistant => {
                    let mut blocks = text_block(text);
                    blocks.extend(m.tool_calls.iter().filter_map(|c| {
                        ToolUseBlock::builder()
                            .tool_use_id(&c.id)
                            .name(&c.name)
                            .input(arguments_document(&c.arguments))
                            .build()
                            .ok()
                            .map(ContentBlock::ToolUse)
                    }));
                    (ConversationRole::Assistant, blocks)
                }
                Role::Tool => {
                    let result = ToolResultBlock::builder()
                        .tool_use_id(m.tool_call_id.unwrap_or_default())
                        .content(ToolResultContentBlock::Text(text))
                        .build()
                        .ok()
                        .map(ContentBlock::ToolResult);
                    (ConversationRole::User, result.into_iter().collect())
                }
            };
            if blocks.is_empty() {
                continue; // Converse refuses blank text blocks.
            }
            match turns.last_mut() {
                Some((last, have)) if *last == role => have.extend(blocks),
                _ => turns.push((role, blocks)),
            }
        }
        let messages = turns
            .into_iter()
            .filter_map(|(role, blocks)| {
                BedrockMessage::builder()
                    .role(role)
                    .set_content(Some(blocks))
                    .build()
                    .ok()
            })
            .collect();
        let any = request.max_tokens.is_some()
            || request.temperature.is_some()
            || request.top_p.is_some()
            || request.stop.is_some();
        let inference = any.then(|| {
            InferenceConfiguration::builder()
                .set_max_tokens(
                    request
                        .max_tokens
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                )
                .set_temperature(request.temperature.map(|t| t as f32))
                .set_top_p(request.top_p.map(|p| p as f32))
                .set_stop_sequences(request.stop)
                .build()
        });
        let tools = match &answer {
            Some(tool) => tool_config(
                std::slice::from_ref(tool),
                Some(&ToolChoice::Function(tool.name.clone())),
            ),
            None => tool_config(&request.tools, request.tool_choice.as_ref()),
        };
        Self {
            model: request.model,
            messages,
            system,
            inference,
            tools,
            answer_tool: answer.map(|t| t.name),
            metadata,
        }
    }
}

/// A user message's blocks: its text, and its images (`data:` URIs; a URL was refused before).
fn user_blocks(content: &Content) -> Vec<ContentBlock> {
    let Content::Parts(parts) = content else {
        return text_block(content.text());
    };
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } if !text.is_empty() => Some(ContentBlock::Text(text.clone())),
            Part::Text { .. } => None,
            Part::ImageUrl { image_url } => image(&image_url.url).map(ContentBlock::Image),
        })
        .collect()
}

/// An image block of a `data:` URI of a PNG, JPEG, GIF or WebP image.
fn image(url: &str) -> Option<ImageBlock> {
    let (media_type, bytes) = super::decode_data_uri(url)?;
    let format = match media_type {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::Webp,
        _ => return None,
    };
    ImageBlock::builder()
        .format(format)
        .source(ImageSource::Bytes(aws_smithy_types::Blob::new(bytes)))
        .build()
        .ok()
}

/// With `response_format` `json_schema` (or `json_object`): the tool that carries the answer
/// (its name, description and input schema). Converse has no JSON mode: the model is made to
/// call this tool, and its input is the answer.
fn answer_tool(request: &CompletionRequest) -> Option<super::Tool> {
    let format = request.extra.get("response_format")?;
    match format.get("type").and_then(|t| t.as_str())? {
        "json_schema" => {
            let spec = format.get("json_schema")?;
            Some(super::Tool {
                name: spec.get("name")?.as_str()?.to_owned(),
                description: spec
                    .get("description")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned),
                parameters: spec
                    .get("schema")
                    .filter(|s| s.is_object())
                    .map(super::RawJson::from_value),
                strict: None,
            })
        }
        "json_object" => Some(super::Tool {
            name: "json_object".into(),
            description: Some("The answer, as a JSON object".into()),
            parameters: Some(super::RawJson::from_value(
                &serde_json::json!({"type": "object"}),
            )),
            strict: None,
        }),
        _ => None,
    }
}

/// A text block, unless the text is blank.
fn text_block(text: String) -> Vec<ContentBlock> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![ContentBlock::Text(text)]
    }
}

/// `toolConfig` for the request's tools (none: no tools, or `tool_choice: none`, which
/// Converse expresses by offering none).
fn tool_config(tools: &[super::Tool], choice: Option<&ToolChoice>) -> Option<ToolConfiguration> {
    if tools.is_empty() || choice == Some(&ToolChoice::None) {
        return None;
    }
    let specs = tools
        .iter()
        .filter_map(|t| {
            let schema = t.parameters.as_ref().map_or_else(
                || serde_json::json!({"type": "object", "properties": {}}),
                super::RawJson::value,
            );
            ToolSpecification::builder()
                .name(&t.name)
                .set_description(t.description.clone())
                .input_schema(ToolInputSchema::Json(document(&schema)))
                .build()
                .ok()
                .map(BedrockTool::ToolSpec)
        })
        .collect();
    let choice = match choice {
        Some(ToolChoice::Required) => Some(BedrockChoice::Any(AnyToolChoice::builder().build())),
        Some(ToolChoice::Function(name)) => SpecificToolChoice::builder()
            .name(name)
            .build()
            .ok()
            .map(BedrockChoice::Tool),
        _ => Some(BedrockChoice::Auto(AutoToolChoice::builder().build())),
    };
    ToolConfiguration::builder()
        .set_tools(Some(specs))
        .set_tool_choice(choice)
        .build()
        .ok()
}

/// A call's arguments (JSON text) as a document; text that is not a JSON object (a model may
/// write anything) goes as the string it is.
fn arguments_document(arguments: &str) -> Document {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => document(&v),
        _ if arguments.trim().is_empty() => Document::Object(Default::default()),
        _ => Document::String(arguments.to_owned()),
    }
}

/// A JSON value as a Smithy document.
fn document(v: &serde_json::Value) -> Document {
    use serde_json::Value;
    match v {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(document).collect()),
        Value::Object(o) => {
            Document::Object(o.iter().map(|(k, v)| (k.clone(), document(v))).collect())
        }
    }
}

/// Reads the event stream as chunks: text as it comes, then `Finish` once the stream ends after
/// `messageStop` (its `metadata`, with the usage, comes last), or an error.
struct Reader {
    events: Events,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    ended: bool,
    /// What [`BedrockProvider::open`] read before handing the stream over.
    first: Option<Result<Chunk, ProviderError>>,
    /// The forced tool whose input is the answer (structured output), and the block it came in:
    /// its input streams as text.
    answer_tool: Option<String>,
    answer_block: Option<i32>,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Chunk, ProviderError>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.ended {
            return None;
        }
        loop {
            match self.events.recv().await {
                Ok(Some(ConverseStreamOutput::ContentBlockStart(e))) => {
                    if let Some(ContentBlockStart::ToolUse(t)) = e.start {
                        if self.answer_tool.as_deref() == Some(t.name.as_str()) {
                            self.answer_block = Some(e.content_block_index);
                            continue;
                        }
                        return Some(Ok(Chunk::ToolCall(ToolCallDelta {
                            index: u32::try_from(e.content_block_index).unwrap_or_default(),
                            id: Some(t.tool_use_id),
                            name: Some(t.name),
                            arguments: String::new(),
                        })));
                    }
                }
                Ok(Some(ConverseStreamOutput::ContentBlockDelta(e))) => match e.delta {
                    Some(ContentBlockDelta::Text(text)) if !text.is_empty() => {
                        return Some(Ok(Chunk::Text(text)));
                    }
                    Some(ContentBlockDelta::ToolUse(t))
                        if !t.input.is_empty()
                            && self.answer_block == Some(e.content_block_index) =>
                    {
                        return Some(Ok(Chunk::Text(t.input)));
                    }
                    Some(ContentBlockDelta::ToolUse(t)) if !t.input.is_empty() => {
                        return Some(Ok(Chunk::ToolCall(ToolCallDelta {
                            index: u32::try_from(e.content_block_index).unwrap_or_default(),
                            id: None,
                            name: None,
                            arguments: t.input,
                        })));
                    }
                    _ => {}
                },
                Ok(Some(ConverseStreamOutput::MessageStop(e))) => self.stop = Some(e.stop_reason),
                Ok(Some(ConverseStreamOutput::Metadata(e))) => {
                    // Bedrock counts tokens read from its cache apart from `inputTokens`.
                    self.usage = e.usage.map(|u| {
                        let cached = u.cache_read_input_tokens.unwrap_or(0);
                        Usage {
                            prompt_tokens: Some(u.input_tokens.saturating_add(cached)),
                            completion_tokens: Some(u.output_tokens),
                            total_tokens: Some(u.total_tokens),
                            cached_tokens: (cached > 0).then_some(cached),
                        }
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.ended = true;
                    return Some(match self.stop.take() {
                        Some(stop) => Ok(Chunk::Finish {
                            // The forced answer tool's call is the answer, not a tool call.
                            reason: Some(match (&stop, self.answer_block) {
                                (StopReason::ToolUse, Some(_)) => "stop".to_owned(),
                                _ => finish_reason(&stop).to_owned(),
                            }),
                            usage: self.usage.take(),
                            raw_reason: Some(stop.as_str().to_owned()),
                        }),
                        None => Err(ProviderError::Incomplete),
                    });
                }
                Err(e) => {
                    self.ended = true;
                    return Some(Err(stream_error(e)));
                }
            }
        }
    }
}

/// Bedrock's `stopReason` in the words clients already get.
pub fn finish_reason(stop: &StopReason) -> &str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
        StopReason::GuardrailIntervened | StopReason::ContentFiltered => "content_filter",
        StopReason::ToolUse => "tool_calls",
        other => other.as_str(),
    }
}

fn reported(
    kind: &str,
    message: Option<&str>,
    code: &'static str,
    retryable: bool,
) -> ProviderError {
    ProviderError::Reported {
        kind: kind.to_owned(),
        message: message.unwrap_or_default().to_owned(),
        code,
        retryable,
    }
}

const RATE_LIMITED: &str = "provider_rate_limited";
const ERROR: &str = "provider_error";

/// An error before the stream: an HTTP error Bedrock named, or no answer at all.
fn start_error(e: SdkError<ConverseStreamError>) -> ProviderError {
    use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
    let status = e.raw_response().map(|r| r.status().as_u16());
    let err = match e {
        SdkError::ServiceError(ctx) => ctx.into_err(),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            return ProviderError::Connect(Box::new(e));
        }
        other => {
            return ProviderError::Malformed {
                reason: aws_sdk_bedrockruntime::error::DisplayErrorContext(&other).to_string(),
            };
        }
    };
    let message = err.message();
    let kind = err.code().unwrap_or("UnknownError");
    match &err {
        ConverseStreamError::ThrottlingException(_) => reported(kind, message, RATE_LIMITED, true),
        ConverseStreamError::InternalServerException(_)
        | ConverseStreamError::ServiceUnavailableException(_)
        | ConverseStreamError::ModelNotReadyException(_) => reported(kind, message, ERROR, true),
        ConverseStreamError::ModelTimeoutException(_) => {
            reported(kind, message, "provider_timeout", true)
        }
        // Validation, access denied, an unknown model, a model error: retrying cannot help.
        ConverseStreamError::ValidationException(_) => {
            reported(kind, message, "provider_bad_request", false)
        }
        ConverseStreamError::AccessDeniedException(_) => {
            reported(kind, message, "provider_auth", false)
        }
        ConverseStreamError::ResourceNotFoundException(_) => {
            reported(kind, message, "provider_model_not_found", false)
        }
        ConverseStreamError::ModelErrorException(_)
        | ConverseStreamError::ModelStreamErrorException(_) => {
            reported(kind, message, ERROR, false)
        }
        _ => match status {
            Some(429) => reported(kind, message, RATE_LIMITED, true),
            Some(503) => reported(kind, message, "provider_unavailable", true),
            Some(s) if s >= 500 => reported(kind, message, ERROR, true),
            _ => reported(kind, message, ERROR, false),
        },
    }
}

/// An error inside the stream: an exception event, or the connection gone.
fn stream_error<R>(e: SdkError<ConverseStreamOutputError, R>) -> ProviderError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
    let err = match e {
        SdkError::ServiceError(ctx) => ctx.into_err(),
        other => return ProviderError::Disconnected(Box::new(other)),
    };
    let message = err.message();
    match &err {
        ConverseStreamOutputError::ThrottlingException(_) => {
            reported("throttlingException", message, RATE_LIMITED, true)
        }
        ConverseStreamOutputError::InternalServerException(_) => {
            reported("internalServerException", message, ERROR, true)
        }
        ConverseStreamOutputError::ServiceUnavailableException(_) => {
            reported("serviceUnavailableException", message, ERROR, true)
        }
        ConverseStreamOutputError::ModelStreamErrorException(_) => {
            reported("modelStreamErrorException", message, ERROR, false)
        }
        ConverseStreamOutputError::ValidationException(_) => {
            reported("validationException", message, ERROR, false)
        }
        _ => reported(
            err.code().unwrap_or("unknownException"),
            message,
            ERROR,
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

    fn texts(blocks: &[ContentBlock]) -> Vec<&str> {
        blocks
            .iter()
            .map(|b| b.as_text().map(String::as_str).unwrap_or("?"))
            .collect()
    }

    #[test]
    fn messages_alternate_and_system_messages_become_system_blocks() {
        let mut request = CompletionRequest::prompt("", "m");
        request.messages = vec![
            Message::new(Role::System, "be brief"),
            Message::new(Role::User, "q1"),
            Message::new(Role::Assistant, "a1"),
            // A failed turn left no answer: two user messages in a row.
            Message::new(Role::User, "q2"),
            Message::new(Role::Developer, "in French"),
            Message {
                content: Content::Parts(vec![Part::text("q"), Part::text("3")]),
                ..Message::new(Role::User, "")
            },
            Message::new(Role::Assistant, ""),
        ];
        let input = Input::from(request);
        let system: Vec<&str> = input
            .system
            .iter()
            .map(|b| b.as_text().map(String::as_str).unwrap_or("?"))
            .collect();
        assert_eq!(system, ["be brief", "in French"]);
        let turns: Vec<(&str, Vec<&str>)> = input
            .messages
            .iter()
            .map(|m| (m.role.as_str(), texts(&m.content)))
            .collect();
        assert_eq!(
            turns,
            [
                ("user", vec!["q1"]),
                ("assistant", vec!["a1"]),
                ("user", vec!["q2", "q", "3"]),
            ]
        );
        assert!(input.inference.is_none());
    }

    #[test]
    fn limits_go_into_the_inference_config() {
        let mut request = CompletionRequest::prompt("hi", "m");
        request.max_tokens = Some(64);
        request.temperature = Some(0.5);
        request.stop = Some(vec!["END".into()]);
        let inference = Input::from(request).inference.unwrap();
        assert_eq!(inference.max_tokens, Some(64));
        assert_eq!(inference.temperature, Some(0.5));
        assert_eq!(inference.top_p, None);
        assert_eq!(inference.stop_sequences, Some(vec!["END".to_owned()]));
    }

    #[test]
    fn stop_reasons_map_onto_finish_reasons() {
        for (raw, ours) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
            ("tool_use", "tool_calls"),
            ("something_new", "something_new"),
        ] {
            assert_eq!(finish_reason(&StopReason::from(raw)), ours, "{raw}");
        }
    }
}
