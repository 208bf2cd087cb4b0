//! Background responses in Lambda. The invocation that answers `POST /v1/responses` with
//! `background: true` ends with its response (Lambda freezes the process), so it cannot
//! generate the answer itself. Instead it writes the turn's row, queues what the generation
//! needs in `background_runs` (migration V17) under the SHA-256 of a one-time token, and invokes
//! its own function asynchronously (`InvocationType: Event`, signed with the function's own
//! credentials) with an event shaped as a function URL request for
//! `POST /internal/background/{turn id}` that carries the token. That invocation takes the run
//! (once: a second delivery finds nothing), generates the turn as any other (checkpoints,
//! cancel from any process, the final record), bounded by its own Lambda deadline, and its
//! response streams until the turn has ended, which keeps the invocation alive that long. A
//! run that never starts, or whose invocation dies, leaves a `streaming` row without heartbeat,
//! which reads as failed or incomplete, never stuck `in_progress`.
//!
//! The internal route is served outside the key check: the token is its authentication (256
//! random bits, of which the database keeps only the hash, for one use).

use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::error::{OpenAiError, error_chain};
use common::provider::CompletionRequest;
use common::settings::SelfInvoke;
use common::{ApiError, Conversation, Status};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::engine::run::StatusRule;
use crate::engine::spend::Held;
use crate::engine::{RequestParts, StreamState, begin};
use crate::openai::{V1Error, failure_status};

/// The header that carries a run's token.
pub const TOKEN_HEADER: &str = "x-background-token";

/// The path of the internal route that runs turn `{id}`'s queued generation.
pub const RUN_PATH: &str = "/internal/background/{id}";

/// What the generating invocation needs: the turn as it starts, the provider request, the
/// key's reservation, and what the create call decided.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    conversation: Conversation,
    request: CompletionRequest,
    held: Option<Held>,
    /// `store: false`: the turn is deleted once it ends.
    store: bool,
    request_id: String,
}

/// Invokes this function asynchronously through the Lambda Invoke API.
pub struct Invoker {
    http: reqwest::Client,
    url: String,
    region: String,
    credentials: aws_credential_types::Credentials,
}

impl Invoker {
    pub fn new(settings: &SelfInvoke) -> Self {
        common::install_crypto_provider();
        let c = &settings.credentials;
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            url: format!(
                "{}/2015-03-31/functions/{}/invocations",
                settings.endpoint_url.trim_end_matches('/'),
                settings.function_name
            ),
            region: settings.region.clone(),
            credentials: aws_credential_types::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.expose().to_owned(),
                c.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "lambda-environment",
            ),
        }
    }

    /// Sends `payload` as an `Event` invocation (SigV4, service `lambda`) and returns once
    /// Lambda has accepted it; what the invocation answers is not read.
    async fn invoke(&self, payload: Vec<u8>) -> Result<(), String> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let headers = [
            ("content-type", "application/json"),
            ("x-amz-invocation-type", "Event"),
        ];
        let signable = SignableRequest::new(
            "POST",
            &self.url,
            headers.iter().copied(),
            SignableBody::Bytes(&payload),
        )
        .map_err(|e| e.to_string())?;
        let (signed, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let mut request = self.http.post(&self.url);
        for (name, value) in headers.iter().copied().chain(signed.headers()) {
            request = request.header(name, value);
        }
        let response = request
            .body(payload)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!(
            "the Invoke API answered {status}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}

/// The invocation event for turn `id`'s run: a function URL request (payload format 2.0) for
/// [`RUN_PATH`] with the token in its headers.
fn event(id: Uuid, token: &str) -> Value {
    let path = RUN_PATH.replace("{id}", &id.to_string());
    let epoch_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {TOKEN_HEADER: token, "content-type": "application/json"},
        "requestContext": {
            "routeKey": "$default",
            "stage": "$default",
            "requestId": id.to_string(),
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "llm-stream-background",
            },
            "timeEpoch": epoch_ms,
        },
        "isBase64Encoded": false,
    })
}

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token() -> Result<String, String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for a token".to_owned())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The refusal of `background: true` by a Lambda function that cannot invoke itself.
pub fn unavailable() -> V1Error {
    V1Error(
        StatusCode::BAD_REQUEST,
        OpenAiError::new(
            "invalid_request_error",
            "unsupported_parameter",
            "background responses need this function to invoke itself: its environment lacks \
             AWS_LAMBDA_FUNCTION_NAME, AWS_REGION or the AWS credentials",
            Some("background"),
        ),
    )
}

/// Queues turn `conversation`'s generation and invokes this function to run it. On failure
/// the turn is saved as failed (`background_unavailable`), which settles its reservation.
pub async fn queue(
    state: &StreamState,
    invoker: &Invoker,
    conversation: Conversation,
    request: CompletionRequest,
    held: Option<Held>,
    store: bool,
    request_id: String,
) -> Result<(), V1Error> {
    let id = conversation.id;
    let mut start = conversation.clone();
    if let Some(r) = &state.redactor {
        r.redact_request(&mut start);
    }
    state.store.create(&start).await?;
    let job = Job {
        conversation,
        request,
        held,
        store,
        request_id,
    };
    let token = new_token().map_err(|e| ApiError::Internal(e.into()))?;
    let hash = sha256_hex(&token);
    let queued = async {
        let job = serde_json::to_value(&job).map_err(|e| e.to_string())?;
        state
            .store
            .queue_run(id, &hash, &job)
            .await
            .map_err(|e| error_chain(&e))?;
        invoker
            .invoke(event(id, &token).to_string().into_bytes())
            .await
    };
    let Err(why) = queued.await else {
        return Ok(());
    };
    tracing::error!(%id, error = %why, "could not start a background response");
    // What was queued goes (the failed record keeps what a turn keeps).
    let _ = state.store.take_run(id, &hash).await;
    save_failed(state, job.conversation, "background_unavailable").await;
    Err(V1Error(
        StatusCode::SERVICE_UNAVAILABLE,
        OpenAiError::new(
            "server_error",
            "background_unavailable",
            "the background response could not be started; try again",
            None,
        ),
    ))
}

/// Generates turn `run`'s answer in a task of this process and, for `store: false`, deletes
/// the turn once it has ended; the task ends when both are done.
pub(crate) fn detach(
    state: StreamState,
    run: crate::engine::run::TurnRun,
    request: CompletionRequest,
    store: bool,
) -> tokio::task::JoinHandle<()> {
    let (id, owner) = (run.conversation.id, run.conversation.owner.clone());
    tokio::spawn(async move {
        crate::engine::run::run(state.clone(), run, request).await;
        // `store: false`: the turn lived while it ran (resume and cancel worked); now it goes.
        if !store && let Err(e) = state.store.delete_turn(&owner, id).await {
            tracing::warn!(%id, error = %error_chain(&e),
                "could not delete a response made with store: false");
        }
    })
}

/// `POST /internal/background/{id}`: takes turn `id`'s queued run (its token in
/// [`TOKEN_HEADER`]) and generates it. The response streams until the turn has ended (a line
/// with its id), so that its Lambda invocation lasts as long as the generation.
pub async fn run_queued(
    State(state): State<StreamState>,
    Path(raw): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    const NO_RUN: ApiError = ApiError::NotFound("no background run with this id and token");
    let id = Uuid::parse_str(&raw).map_err(|_| NO_RUN)?;
    let token = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(NO_RUN)?;
    let taken = state
        .store
        .take_run(id, &sha256_hex(token))
        .await
        .map_err(ApiError::Unavailable)?
        .ok_or(NO_RUN)?;
    let job: Job = serde_json::from_value(taken.job).map_err(|e| {
        tracing::error!(%id, error = %e, "a queued background run does not decode");
        ApiError::invalid("the queued run does not decode")
    })?;
    if taken.waited_secs > state.spend.stale.as_secs_f64() {
        return Err(expired(&state, job.conversation).await);
    }
    let parts = RequestParts::of(&request);
    let started = Instant::now();
    let mut run = begin(
        &state,
        job.conversation,
        &parts,
        started,
        job.request_id,
        "/v1/responses",
    );
    run.held = job.held;
    run.status_rule = StatusRule::Held(failure_status);
    // Nobody reads this turn here: readers follow it from the database.
    run.client.detach();
    tracing::info!(%id, waited_ms = (taken.waited_secs * 1000.0) as u64,
        "running a background response");
    let task = detach(state, run, job.request, job.store);
    let ended = futures_util::stream::once(async move {
        let outcome = if task.await.is_ok() {
            "ended"
        } else {
            "panicked"
        };
        Ok::<_, std::io::Error>(format!("{{\"id\":\"{id}\",\"run\":\"{outcome}\"}}\n"))
    });
    Ok((StatusCode::ACCEPTED, Body::from_stream(ended)).into_response())
}

/// Saves turn `c` (as it started), which will not be generated, as `failed` with `code`; what
/// it keeps of its request redacted as every record's is.
async fn save_failed(state: &StreamState, mut c: Conversation, code: &str) {
    if let Some(r) = &state.redactor {
        r.redact_request(&mut c);
    }
    c.status = Status::Failed;
    c.error = Some(code.to_owned());
    c.updated_at = common::domain::now_micros();
    if let Err(e) = state.store.finish(&c).await {
        tracing::error!(id = %c.id, error = %error_chain(&e), "could not save a background turn as failed");
    }
}

/// A run taken after its turn's heartbeat went stale: the turn has read as failed
/// (`interrupted`) since, and is saved so rather than started late.
async fn expired(state: &StreamState, c: Conversation) -> ApiError {
    tracing::warn!(id = %c.id, "a background run started too late; its turn is saved as failed");
    save_failed(state, c, "interrupted").await;
    ApiError::Conflict {
        code: "run_expired",
        message: "the run waited longer than its turn's heartbeat lasts".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use common::provider::{Content, ImageUrl, Message, Part, Role, Tool, ToolCall, ToolChoice};

    /// What is queued comes back the same: messages with parts and tool calls, tools, the
    /// choice, the parameters passed on as sent.
    #[test]
    fn a_job_round_trips_through_json() {
        let mut assistant = Message::new(Role::Assistant, "");
        assistant.content = Content::None;
        assistant.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        }];
        let mut tool = Message::new(Role::Tool, "12 C");
        tool.tool_call_id = Some("call_1".into());
        let mut user = Message::new(Role::User, "");
        user.content = Content::Parts(vec![
            Part::text("and this?"),
            Part::ImageUrl {
                image_url: ImageUrl {
                    url: "data:image/png;base64,iVBORw0KGgo=".into(),
                    detail: Some("low".into()),
                },
            },
        ]);
        let mut extra = serde_json::Map::new();
        extra.insert("seed".into(), json!(7));
        extra.insert("temperature_exact".into(), json!(0.30000000000000004));
        let request = CompletionRequest {
            messages: vec![
                Message::new(Role::System, "be brief"),
                Message::new(Role::User, "weather?"),
                assistant,
                tool,
                user,
            ],
            model: "m".into(),
            max_tokens: Some(64),
            temperature: Some(0.2),
            top_p: None,
            stop: Some(vec!["END".into()]),
            extra,
            tools: vec![Tool {
                name: "weather".into(),
                description: Some("the weather".into()),
                parameters: Some(common::provider::RawJson::from_value(
                    &json!({"type": "object"}),
                )),
                strict: Some(true),
            }],
            tool_choice: Some(ToolChoice::Function("weather".into())),
            attempts: Default::default(),
        };
        let job = Job {
            conversation: Conversation::start("o", "and this?".into(), "offline", "m"),
            request: request.clone(),
            held: Some(Held {
                prompt_bound: 10,
                output_cap: 64,
            }),
            store: false,
            request_id: "r".into(),
        };
        let back: Job = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(back.request.messages, request.messages);
        assert_eq!(back.request.tools, request.tools);
        assert_eq!(back.request.tool_choice, request.tool_choice);
        assert_eq!(back.request.extra, request.extra);
        assert_eq!(
            (
                back.request.max_tokens,
                back.request.temperature,
                back.request.stop
            ),
            (Some(64), Some(0.2), Some(vec!["END".to_owned()]))
        );
        assert_eq!(back.conversation.id, job.conversation.id);
        assert_eq!(back.held.unwrap().output_cap, 64);
        assert!(!back.store);
    }

    /// The invocation event is a function URL request that the Lambda runtime reads as one:
    /// a POST to the run's path with the token.
    #[test]
    fn the_event_reads_as_a_function_url_request() {
        let id = Uuid::now_v7();
        let event = event(id, "tok");
        let request: lambda_http::request::LambdaRequest =
            serde_json::from_value(event).expect("a request event");
        let request: lambda_http::Request = request.into();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri().path(), format!("/internal/background/{id}"));
        assert_eq!(request.headers()[TOKEN_HEADER], "tok");
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(sha256_hex(&a).len(), 64);
        assert_ne!(sha256_hex(&a), sha256_hex(&b));
    }
}
