//! OpenAI-compatible Chat Completions streaming (OpenAI, vLLM, Ollama, llama.cpp, gateways).
//! SSE framing is parsed by `eventsource-stream`; each chunk's JSON by [`parse_chunk`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::{
    Chunk, ChunkStream, CompletionRequest, Provider, ProviderError, ToolCallDelta, ToolChoice,
};
use crate::domain::Usage;
use crate::settings::{ProviderSettings, Secret};

/// The longest `Retry-After` we honour before the first chunk.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);
/// How much of an error body is kept for the log.
const ERROR_BODY_BYTES: usize = 2048;

pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    key: Option<Secret>,
    model: String,
    max_retries: usize,
}

impl OpenAiProvider {
    pub fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ProviderError::Api {
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ProviderError::Connect(Box::new(e)))?;
        Ok(Self {
            client,
            url: format!("{}/chat/completions", settings.openai_base_url),
            key: settings.openai_api_key.clone(),
            model: settings.model.clone(),
            max_retries: settings.max_retries,
        })
    }

    async fn send_once(&self, body: &bytes::Bytes) -> Result<reqwest::Response, ProviderError> {
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProviderError::Connect(Box::new(e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = resp.text().await.unwrap_or_default();
        if body.len() > ERROR_BODY_BYTES {
            let mut cut = ERROR_BODY_BYTES;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        Err(ProviderError::Status {
            status: status.as_u16(),
            body,
            retry_after,
        })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError> {
        // Written straight from the request (borrowed: nothing is copied into a JSON tree).
        // A cap the client named goes as it named it (`max_completion_tokens` is never
        // rewritten into `max_tokens`, which OpenAI's reasoning models refuse).
        let named_cap = ["max_tokens", "max_completion_tokens"]
            .iter()
            .any(|k| request.extra.contains_key(*k));
        let body = Body {
            model: &request.model,
            messages: &request.messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: request.max_tokens.filter(|_| !named_cap),
            temperature: request.temperature,
            top_p: request.top_p,
            stop: request.stop.as_deref(),
            tools: request.tools.iter().map(WireTool::of).collect(),
            tool_choice: request.tool_choice.as_ref().map(ToolChoice::to_openai),
            extra: &request.extra,
        };
        // Written once for every attempt, into a buffer most bodies fit without growing.
        let mut written = Vec::with_capacity(BODY_CAPACITY);
        serde_json::to_writer(&mut written, &body)
            .map_err(|e| ProviderError::Connect(Box::new(e)))?;
        let body = bytes::Bytes::from(written);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.max_retries)
            .with_jitter();
        let resp = (|| self.send_once(&body))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ProviderError::is_retryable)
            .adjust(|err, delay| {
                let after = match err {
                    ProviderError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                };
                delay.map(|d| after.map_or(d, |a| a.min(MAX_RETRY_AFTER)))
            })
            .notify(|err, delay| {
                tracing::warn!(error = %err, ?delay, "provider call failed; retrying");
            })
            .await?;
        Ok(Box::pin(chunks(resp.bytes_stream().eventsource())))
    }
}

/// The bytes set aside for a request body before it is written: a plain call's and one with
/// a few tools fit, and a long thread's grows from there.
const BODY_CAPACITY: usize = 2048;

/// The request body, as OpenAI's Chat Completions takes it.
#[derive(serde::Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [super::Message],
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    /// The parameters passed on as sent.
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// `{"type": "function", "function": {...}}`, borrowed from a [`super::Tool`].
#[derive(serde::Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionDef<'a>,
}

#[derive(serde::Serialize)]
struct WireFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

impl<'a> WireTool<'a> {
    fn of(t: &'a super::Tool) -> Self {
        Self {
            kind: "function",
            function: WireFunctionDef {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: t.parameters.as_ref().map(super::RawJson::raw),
                strict: t.strict,
            },
        }
    }
}

/// What one SSE `data:` payload of a Chat Completions stream says.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedChunk {
    pub text: Option<String>,
    /// Tool call fragments, at the upstream's indexes.
    pub tool_calls: Vec<ToolCallDelta>,
    /// `logprobs.content`, when the request asked for them.
    pub logprobs: Vec<serde_json::Value>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// The `[DONE]` sentinel.
    pub done: bool,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    delta: Option<WireDelta>,
    finish_reason: Option<String>,
    logprobs: Option<WireLogprobs>,
}

#[derive(Deserialize)]
struct WireLogprobs {
    content: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct WireDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    /// Some upstreams leave it out (a call per chunk): the fragment's position then.
    index: Option<u32>,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    name: Option<String>,
    /// A string, or (some upstreams) the arguments as a JSON object.
    arguments: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    total_tokens: Option<i64>,
    prompt_tokens_details: Option<WireTokenDetails>,
}

#[derive(Deserialize)]
struct WireTokenDetails {
    cached_tokens: Option<i64>,
}

/// Parses one `data:` payload. Error payloads (`{"error": ...}`) and unreadable JSON are errors.
pub fn parse_chunk(data: &str) -> Result<ParsedChunk, ProviderError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(ParsedChunk {
            done: true,
            ..ParsedChunk::default()
        });
    }
    let wire: WireChunk = serde_json::from_str(data).map_err(|e| ProviderError::Malformed {
        reason: e.to_string(),
    })?;
    if let Some(err) = wire.error {
        let message = err
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| err.to_string());
        return Err(ProviderError::Api { message });
    }
    let first = wire.choices.into_iter().next();
    let (delta, finish_reason, logprobs) = match first {
        Some(c) => (
            c.delta,
            c.finish_reason,
            c.logprobs.and_then(|l| l.content).unwrap_or_default(),
        ),
        None => (None, None, Vec::new()),
    };
    let (text, calls) = match delta {
        Some(d) => (d.content.filter(|t| !t.is_empty()), d.tool_calls),
        None => (None, None),
    };
    let tool_calls = calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (name, arguments) = match c.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            ToolCallDelta {
                index: c.index.unwrap_or(i as u32),
                id: c.id,
                name,
                arguments: match arguments {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s,
                    Some(other) => other.to_string(),
                },
            }
        })
        .collect();
    let to_i32 = |v: Option<i64>| v.and_then(|n| i32::try_from(n).ok());
    Ok(ParsedChunk {
        text,
        tool_calls,
        logprobs,
        finish_reason,
        usage: wire.usage.map(|u| Usage {
            prompt_tokens: to_i32(u.prompt_tokens),
            completion_tokens: to_i32(u.completion_tokens),
            total_tokens: to_i32(u.total_tokens),
            cached_tokens: to_i32(u.prompt_tokens_details.and_then(|d| d.cached_tokens)),
        }),
        done: false,
    })
}

struct State<S> {
    events: S,
    /// What a parsed chunk said beyond its first item, yielded before reading on.
    pending: std::collections::VecDeque<Chunk>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    ended: bool,
}

/// Turns SSE events into chunks: text as it comes, `Finish` on `[DONE]`, an error on anything
/// else (a cut connection before `[DONE]` included). Nothing is yielded after an error.
fn chunks<S, E>(events: S) -> impl Stream<Item = Result<Chunk, ProviderError>> + Send
where
    S: Stream<Item = Result<eventsource_stream::Event, EventStreamError<E>>> + Send + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let state = State {
        events,
        pending: std::collections::VecDeque::new(),
        finish_reason: None,
        usage: None,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(chunk) = st.pending.pop_front() {
            return Some((Ok(chunk), st));
        }
        if st.ended {
            return None;
        }
        loop {
            let item = match st.events.next().await {
                None => {
                    st.ended = true;
                    return Some((Err(ProviderError::Incomplete), st));
                }
                Some(Err(EventStreamError::Transport(e))) => {
                    st.ended = true;
                    return Some((Err(ProviderError::Disconnected(Box::new(e))), st));
                }
                Some(Err(e)) => {
                    st.ended = true;
                    let reason = e.to_string();
                    return Some((Err(ProviderError::Malformed { reason }), st));
                }
                Some(Ok(event)) => event,
            };
            if item.data.is_empty() {
                continue;
            }
            match parse_chunk(&item.data) {
                Err(e) => {
                    st.ended = true;
                    return Some((Err(e), st));
                }
                Ok(p) if p.done => {
                    st.ended = true;
                    let finish = Chunk::Finish {
                        reason: st.finish_reason.take(),
                        usage: st.usage.take(),
                        raw_reason: None,
                    };
                    return Some((Ok(finish), st));
                }
                Ok(p) => {
                    if p.finish_reason.is_some() {
                        st.finish_reason = p.finish_reason;
                    }
                    if p.usage.is_some() {
                        st.usage = p.usage;
                    }
                    st.pending.extend(p.text.map(Chunk::Text));
                    if !p.logprobs.is_empty() {
                        st.pending.push_back(Chunk::Logprobs(p.logprobs));
                    }
                    st.pending
                        .extend(p.tool_calls.into_iter().map(Chunk::ToolCall));
                    if let Some(chunk) = st.pending.pop_front() {
                        return Some((Ok(chunk), st));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_delta_is_text() {
        let p = parse_chunk(
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(p.text.as_deref(), Some("Hel"));
        assert!(!p.done);
    }

    #[test]
    fn the_role_chunk_and_the_usage_chunk_carry_no_text() {
        let p =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#)
                .unwrap();
        assert_eq!(p.text, None);
        let p = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
        )
        .unwrap();
        assert_eq!(p.usage.unwrap().total_tokens, Some(12));
    }

    #[test]
    fn done_error_and_garbage_are_recognised() {
        assert!(parse_chunk("[DONE]").unwrap().done);
        let err =
            parse_chunk(r#"{"error":{"message":"overloaded","type":"server_error"}}"#).unwrap_err();
        assert_eq!(err.code(), "provider_error");
        assert!(err.to_string().contains("overloaded"));
        assert_eq!(
            parse_chunk("{not json").unwrap_err().code(),
            "provider_malformed"
        );
    }

    #[test]
    fn retries_only_for_connect_429_and_5xx() {
        let status = |s| ProviderError::Status {
            status: s,
            body: String::new(),
            retry_after: None,
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!ProviderError::Incomplete.is_retryable());
    }
}
