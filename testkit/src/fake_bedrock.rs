//! A local Amazon Bedrock runtime endpoint for ConverseStream
//! (`POST /model/{modelId}/converse-stream`): it checks each request's SigV4 signature for the
//! `bedrock` service (recomputed with `aws-sigv4` from the test's credentials), and answers in
//! the AWS event-stream binary framing (`aws-smithy-eventstream` writes it), as Bedrock does:
//! `messageStart`, `contentBlockStart` (a `toolUse` block), `contentBlockDelta` (text, or a tool's
//! input), `contentBlockStop`, `messageStop`, `metadata`. On demand
//! it fails as Bedrock does: an error before the stream (named by `x-amzn-errortype`), an
//! exception event inside it, a stall, a cut connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::script::Script;

/// The credentials the service under test is given, and the endpoint checks signatures with.
pub const ACCESS_KEY_ID: &str = "AKIDLOCALBEDROCK";
pub const SECRET_ACCESS_KEY: &str = "local-bedrock-secret";
pub const SESSION_TOKEN: &str = "local-bedrock-session";
pub const REGION: &str = "eu-west-1";
pub const MODEL_ID: &str = "amazon.nova-lite-v1:0";

/// One piece of a streamed answer.
#[derive(Debug, Clone)]
pub enum Event {
    /// `messageStart` (the assistant's role).
    Start,
    /// `contentBlockDelta` with this text.
    Text(String),
    /// `contentBlockStop`.
    BlockStop,
    /// `contentBlockStart` of a `toolUse` block at this index, with its id and tool name.
    ToolStart {
        index: i32,
        id: &'static str,
        name: &'static str,
    },
    /// `contentBlockDelta` of a `toolUse` block: a piece of its input (JSON text).
    ToolInput { index: i32, input: &'static str },
    /// `messageStop` with this `stopReason`.
    Stop(&'static str),
    /// `metadata` with this usage (input and output tokens) and a latency.
    Usage { input: i32, output: i32 },
    /// An exception message (`:message-type: exception`), such as `throttlingException` or
    /// `modelStreamErrorException`; the stream ends after it, as Bedrock's does.
    Exception(&'static str),
    /// Silence.
    Sleep(Duration),
    /// The connection is cut here, in the middle of a message (after a short pause, so that
    /// what came before is delivered first).
    Cut,
}

/// What the endpoint answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An error before the stream: this status, `x-amzn-errortype: kind`, `{"message"}`.
    Error { status: u16, kind: &'static str },
    /// A `200 application/vnd.amazon.eventstream` answer of these events.
    Stream(Vec<Event>),
}

/// The whole answer `words`, one delta each, `gap` apart, ending with `end_turn` and a usage.
pub fn answer(words: &[&str], gap: Duration) -> Vec<Event> {
    let mut events = vec![Event::Start];
    for (i, w) in words.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            events.push(Event::Sleep(gap));
        }
        events.push(Event::Text((*w).to_owned()));
    }
    events.extend([
        Event::BlockStop,
        Event::Stop("end_turn"),
        Event::Usage {
            input: 11,
            output: i32::try_from(words.len()).unwrap_or(i32::MAX),
        },
    ]);
    events
}

/// A request as received: the model ID of its path and its JSON body.
#[derive(Debug, Clone)]
pub struct Received {
    pub model_id: String,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    script: Script<Reply>,
    requests: Mutex<Vec<Received>>,
    /// Requests refused for their signature, and why.
    refused: Mutex<Vec<String>>,
}

/// A running endpoint. Replies are used in order; the last one repeats.
pub struct FakeBedrock {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeBedrock {
    pub async fn start(script: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            script: Script::new(script),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/model/{model_id}/converse-stream", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { common::http::serve(listener, app).await });
        Self { addr, shared }
    }

    /// The settings that point the service at this endpoint.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LLM_PROVIDER", "bedrock".into()),
            ("BEDROCK_MODEL_ID", MODEL_ID.into()),
            ("AWS_REGION", REGION.into()),
            (
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                format!("http://{}", self.addr),
            ),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN.into()),
        ]
    }

    /// The requests accepted so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Why requests were refused for their signature (empty when all were signed right).
    pub fn refused(&self) -> Vec<String> {
        self.shared.refused.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("x-amzn-errortype", kind.to_owned())],
        axum::Json(json!({ "message": message })),
    )
        .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(model_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = check_signature("bedrock", &uri, &headers, &body) {
        shared.refused.lock().unwrap().push(why.clone());
        return error(StatusCode::FORBIDDEN, "InvalidSignatureException", &why);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared
        .requests
        .lock()
        .unwrap()
        .push(Received { model_id, body });
    match shared
        .script
        .next(|| Reply::Stream(answer(&["ok"], Duration::ZERO)))
    {
        Reply::Error { status, kind } => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            "scripted failure",
        ),
        Reply::Stream(events) => {
            let steps: Vec<Step> = events.iter().flat_map(steps).collect();
            let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
                loop {
                    match steps.next()? {
                        Step::Sleep(d) => tokio::time::sleep(d).await,
                        Step::Send(bytes) => return Some((Ok(bytes), steps)),
                        Step::Fail => {
                            let cut = std::io::Error::other("connection cut by the test");
                            return Some((Err(cut), steps));
                        }
                    }
                }
            });
            Response::builder()
                .header("content-type", "application/vnd.amazon.eventstream")
                .header("x-amzn-requestid", uuid::Uuid::now_v7().to_string())
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

/// What the answer's body does next.
enum Step {
    Send(Bytes),
    Sleep(Duration),
    /// The body fails: the connection is closed without the end of the response.
    Fail,
}

fn steps(event: &Event) -> Vec<Step> {
    match event {
        Event::Sleep(d) => vec![Step::Sleep(*d)],
        Event::Cut => {
            let whole = frame(&Event::Text("never whole".into()));
            // The pauses let what came before, and the half message, reach the client
            // before the connection goes (the server would otherwise drop unflushed bytes).
            let settle = Duration::from_millis(50);
            vec![
                Step::Sleep(settle),
                Step::Send(whole.slice(..whole.len() / 2)),
                Step::Sleep(settle),
                Step::Fail,
            ]
        }
        other => vec![Step::Send(frame(other))],
    }
}

/// One event-stream message, as Bedrock frames it.
fn frame(event: &Event) -> Bytes {
    let (message_type, name, payload) = match event {
        Event::Start => ("event", "messageStart", json!({"role": "assistant"})),
        Event::Text(text) => (
            "event",
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": text}}),
        ),
        Event::BlockStop => ("event", "contentBlockStop", json!({"contentBlockIndex": 0})),
        Event::ToolStart { index, id, name } => (
            "event",
            "contentBlockStart",
            json!({"contentBlockIndex": index,
                   "start": {"toolUse": {"toolUseId": id, "name": name}}}),
        ),
        Event::ToolInput { index, input } => (
            "event",
            "contentBlockDelta",
            json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": input}}}),
        ),
        Event::Stop(reason) => ("event", "messageStop", json!({"stopReason": reason})),
        Event::Usage { input, output } => (
            "event",
            "metadata",
            json!({"usage": {"inputTokens": input, "outputTokens": output,
                             "totalTokens": input + output},
                   "metrics": {"latencyMs": 42}}),
        ),
        Event::Exception(kind) => (
            "exception",
            *kind,
            json!({"message": format!("scripted {kind}")}),
        ),
        Event::Sleep(_) | Event::Cut => unreachable!("not a message"),
    };
    let kind_header = if message_type == "event" {
        ":event-type"
    } else {
        ":exception-type"
    };
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.into()),
        ))
        .add_header(Header::new(
            kind_header,
            HeaderValue::String(name.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out)
        .expect("a message of our own encodes");
    Bytes::from(out)
}

/// Recomputes the request's SigV4 signature (for `service`, [`REGION`], the test credentials
/// ([`ACCESS_KEY_ID`], [`SECRET_ACCESS_KEY`], [`SESSION_TOKEN`]), the headers it says it
/// signed, its body) and compares it with the one sent.
pub fn check_signature(
    service: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header: requests must be signed with SigV4")?;
    let fields = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| format!("not a SigV4 signature: {auth}"))?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in {auth}"))
    };
    let credential = field("Credential=")?;
    let signed = field("SignedHeaders=")?;
    let signature = field("Signature=")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != ACCESS_KEY_ID || scope[2] != REGION || scope[3] != service {
        return Err(format!(
            "credential scope {credential}: expected {ACCESS_KEY_ID}/<date>/{REGION}/{service}/aws4_request"
        ));
    }
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no x-amz-date")?;
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(date, &format)
        .map_err(|e| format!("x-amz-date {date}: {e}"))?
        .assume_utc();
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if token != Some(SESSION_TOKEN) {
        return Err("the session token is missing or wrong".into());
    }
    let signed_headers: Vec<(&str, &str)> = signed
        .split(';')
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name, value))
        })
        .collect();
    let identity = aws_credential_types::Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        Some(SESSION_TOKEN.to_owned()),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(at.into())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let url = format!("http://{host}{uri}");
    let request = SignableRequest::new(
        "POST",
        url,
        signed_headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let expected = sign(request, &params).map_err(|e| e.to_string())?;
    if expected.signature() == signature {
        Ok(())
    } else {
        Err(format!(
            "signature mismatch (headers signed: {signed}): the request was not signed for \
             {service} in {REGION} with the test credentials"
        ))
    }
}
