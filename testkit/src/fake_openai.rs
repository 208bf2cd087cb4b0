//! A local OpenAI-compatible Chat Completions server that writes SSE exactly as OpenAI does:
//! `data: {json}\n\n` chunks, a usage chunk, `data: [DONE]`; and on demand the failures a real
//! provider shows (error statuses with `Retry-After`, stalls, cut connections, garbage).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::script::Script;

/// One piece of a streamed answer.
#[derive(Debug, Clone)]
pub enum Part {
    /// `data: <payload>\n\n`.
    Data(String),
    /// Bytes written as they are.
    Raw(String),
    /// Silence.
    Sleep(Duration),
    /// The connection is cut here (no `[DONE]`).
    Cut,
    /// A content chunk with `text` followed by `@` and the time it is sent (microseconds since
    /// the Unix epoch), to time a chunk from the provider to a reader.
    Stamped(String),
}

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A non-2xx answer with a JSON error body and an optional `Retry-After` (seconds).
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// A non-2xx answer with this error object (`{"error": error}`), as OpenAI refuses a
    /// request (`context_length_exceeded`, `rate_limit_exceeded`, ...).
    Refuse {
        status: u16,
        retry_after: Option<u64>,
        error: Value,
    },
    /// A `200 text/event-stream` answer made of these parts.
    Stream(Vec<Part>),
}

/// One tool call fragment as an upstream streams it: its index, and on a call's first fragment
/// (as OpenAI sends it) the id and name; some upstreams send no id, or every call at index 0.
pub struct Fragment<'a> {
    pub index: u32,
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

/// A streamed answer of tool call `fragments`, one chunk each, as OpenAI writes them: the role
/// chunk, the fragments, `finish_reason` (`tool_calls`, or what an upstream says instead), the
/// usage chunk and `[DONE]`.
pub fn tool_calls(fragments: &[Fragment<'_>], finish: &str) -> Vec<Part> {
    let chunk = |delta: Value, finish: Value| {
        Part::Data(
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk",
                   "created": 1_700_000_000, "model": "test-model",
                   "choices": [{"index": 0, "delta": delta, "logprobs": null,
                                "finish_reason": finish}]})
            .to_string(),
        )
    };
    let mut parts = vec![chunk(
        json!({"role": "assistant", "content": null}),
        Value::Null,
    )];
    for f in fragments {
        let mut call = json!({"index": f.index, "function": {"arguments": f.arguments}});
        if let Some(id) = f.id {
            call["id"] = id.into();
            call["type"] = "function".into();
        }
        if let Some(name) = f.name {
            call["function"]["name"] = name.into();
        }
        parts.push(chunk(json!({"tool_calls": [call]}), Value::Null));
    }
    parts.push(chunk(json!({}), finish.into()));
    parts.push(Part::Data(
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "test-model", "choices": [],
               "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}})
        .to_string(),
    ));
    parts.push(Part::Data("[DONE]".into()));
    parts
}

/// A chunk carrying `text`, as OpenAI writes it.
pub fn content_chunk(text: &str) -> Part {
    Part::Data(
        json!({
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "test-model",
            "choices": [{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]
        })
        .to_string(),
    )
}

/// The whole answer `words`, one chunk each, `gap` apart: role chunk, content chunks, finish
/// chunk, usage chunk and `[DONE]`.
pub fn answer(words: &[&str], gap: Duration) -> Vec<Part> {
    let mut parts = vec![Part::Data(
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "test-model",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
        .to_string(),
    )];
    for (i, w) in words.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            parts.push(Part::Sleep(gap));
        }
        parts.push(content_chunk(w));
    }
    parts.push(Part::Data(
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "test-model", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        .to_string(),
    ));
    parts.push(Part::Data(
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "test-model", "choices": [],
               "usage": {"prompt_tokens": 9, "completion_tokens": words.len(), "total_tokens": 9 + words.len()}})
        .to_string(),
    ));
    parts.push(Part::Data("[DONE]".into()));
    parts
}

/// Chooses a reply from the prompt (the last message's content) and how many requests with
/// that prompt came before (0 for the first).
pub type Responder = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

#[derive(Default)]
struct Shared {
    script: Script<Reply>,
    requests: Mutex<Vec<Value>>,
    responder: Option<Responder>,
    attempts: Mutex<std::collections::HashMap<String, usize>>,
    /// Streams whose client closed the connection before the answer's end.
    dropped: std::sync::atomic::AtomicUsize,
    /// Keeps no journal of the requests (see [`FakeOpenAi::without_journal`]).
    unjournaled: std::sync::atomic::AtomicBool,
}

/// A running fake provider. Replies are used in order; the last one repeats.
pub struct FakeOpenAi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeOpenAi {
    pub async fn start(script: Vec<Reply>) -> Self {
        Self::serve(Shared {
            script: Script::new(script),
            ..Shared::default()
        })
        .await
    }

    /// A server whose replies depend on the prompt, for many concurrent streams that must each
    /// meet their own failure (retries included).
    pub async fn by_prompt(
        responder: impl Fn(&str, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve(Shared {
            responder: Some(Arc::new(responder)),
            ..Shared::default()
        })
        .await
    }

    async fn serve(shared: Shared) -> Self {
        let shared = Arc::new(shared);
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { common::http::serve(listener, app).await });
        Self { addr, shared }
    }

    /// The `OPENAI_BASE_URL` for this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Keeps no journal of the requests from now on, and reads of each only its prompt, the
    /// first `content` string, found by its bytes (see `first_content`): a benchmark's
    /// upstream, whose work on large bodies (a tree of values for each, kept) would weigh on
    /// the machine the service under test shares with it.
    pub fn without_journal(&self) {
        self.shared
            .unjournaled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The JSON bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many answers the client stopped reading (closed the connection) before their end.
    pub fn dropped_by_client(&self) -> usize {
        self.shared
            .dropped
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `chars` characters of varied prose (no span repeats: no loop guard trips on it) in chunks of
/// about `chunk` characters, the same for the same `seed`.
pub fn prose(chars: usize, chunk: usize, seed: u64) -> Vec<String> {
    const WORDS: &[&str] = &[
        "river", "lantern", "quiet", "market", "copper", "falcon", "meadow", "ember", "harbor",
        "violet", "thunder", "pocket", "glacier", "orchard", "velvet", "canyon", "whisper",
        "saddle", "beacon", "marble", "timber", "sparrow", "lattice", "harvest", "cobalt",
        "juniper", "compass", "thistle", "ripple", "granite", "meridian", "sable",
    ];
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut text = String::with_capacity(chars + 16);
    while text.len() < chars {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
        text.push(if (state >> 20).is_multiple_of(11) {
            '.'
        } else {
            ' '
        });
    }
    text.truncate(chars);
    text.as_bytes()
        .chunks(chunk.max(1))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// Counts an answer as dropped by its client when its stream is dropped before its end.
struct Unfinished {
    shared: Arc<Shared>,
    finished: bool,
}

impl Unfinished {
    /// The answer was sent to its end.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.finished {
            self.shared
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A benchmark's prompt: the text of the first `"content":"` string in `body`, found by its
/// bytes rather than by reading the JSON (a benchmark's prompts hold no escapes), so that the
/// upstream's work does not grow with the rest of the body (tools, say) on the cores it shares
/// with the service under test.
fn first_content(body: &[u8]) -> String {
    const KEY: &[u8] = b"\"content\":\"";
    body.windows(KEY.len())
        .position(|w| w == KEY)
        .and_then(|at| {
            let rest = &body[at + KEY.len()..];
            let end = rest.iter().position(|&b| b == b'"')?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .unwrap_or_default()
        .to_owned()
}

async fn handle(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let prompt = if shared.unjournaled.load(std::sync::atomic::Ordering::SeqCst) {
        first_content(&body)
    } else {
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let prompt = parsed["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        shared.requests.lock().unwrap().push(parsed);
        prompt
    };
    let reply = if let Some(responder) = &shared.responder {
        let attempt = {
            let mut attempts = shared.attempts.lock().unwrap();
            let n = attempts.entry(prompt.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        responder(&prompt, attempt)
    } else {
        shared
            .script
            .next(|| Reply::Stream(answer(&["ok"], Duration::ZERO)))
    };
    match reply {
        Reply::Refuse {
            status,
            retry_after,
            error,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = (code, axum::Json(json!({"error": error}))).into_response();
            if let Some(s) = retry_after {
                resp.headers_mut().insert(
                    "retry-after",
                    HeaderValue::from_str(&s.to_string()).unwrap(),
                );
            }
            resp
        }
        Reply::Status {
            status,
            retry_after,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (
                code,
                axum::Json(
                    json!({"error": {"message": "scripted failure", "type": "server_error",
                                             "param": null, "code": null}}),
                ),
            )
                .into_response();
            if let Some(s) = retry_after {
                resp.headers_mut().insert(
                    "retry-after",
                    HeaderValue::from_str(&s.to_string()).unwrap(),
                );
            }
            resp
        }
        Reply::Stream(parts) => {
            let watch = Unfinished {
                shared: shared.clone(),
                finished: false,
            };
            let state = (parts.into_iter(), watch);
            let stream = futures_util::stream::unfold(state, |(mut parts, mut watch)| async move {
                loop {
                    let Some(part) = parts.next() else {
                        watch.finish();
                        return None;
                    };
                    match part {
                        Part::Sleep(d) => tokio::time::sleep(d).await,
                        Part::Data(d) => {
                            let bytes = Bytes::from(format!("data: {d}\n\n"));
                            return Some((Ok(bytes), (parts, watch)));
                        }
                        Part::Raw(r) => return Some((Ok(Bytes::from(r)), (parts, watch))),
                        Part::Stamped(text) => {
                            let micros = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_micros());
                            let Part::Data(d) = content_chunk(&format!("{text}@{micros} ")) else {
                                unreachable!("content_chunk makes data");
                            };
                            let bytes = Bytes::from(format!("data: {d}\n\n"));
                            return Some((Ok(bytes), (parts, watch)));
                        }
                        Part::Cut => {
                            watch.finished = true;
                            let cut = std::io::Error::other("connection cut by the test");
                            return Some((Err(cut), (parts, watch)));
                        }
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_content;

    #[test]
    fn a_benchmark_prompt_is_the_first_content_string_whatever_else_the_body_holds() {
        let body = br#"{"messages":[{"content":"slow start","role":"user"}],"model":"m","tools":[{"type":"function","function":{"name":"f","description":"content"}}]}"#;
        assert_eq!(first_content(body), "slow start");
        let ours = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        assert_eq!(first_content(ours), "hi");
        assert_eq!(first_content(br#"{"messages":[]}"#), "");
        assert_eq!(first_content(br#"{"content":"unterminated"#), "");
    }
}
