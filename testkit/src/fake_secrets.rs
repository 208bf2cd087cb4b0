//! A local AWS Secrets Manager endpoint (`GetSecretValue` over its JSON 1.1 protocol) holding
//! the secrets a test gives it: it refuses requests that are not SigV4-signed for the
//! `secretsmanager` service, and answers an unknown secret as the service does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// A running endpoint.
pub struct FakeSecrets {
    pub endpoint: String,
    reads: Arc<Mutex<Vec<String>>>,
}

struct Shared {
    secrets: HashMap<String, String>,
    reads: Arc<Mutex<Vec<String>>>,
}

impl FakeSecrets {
    /// Serves `secrets` (ARN, value).
    pub async fn start(secrets: &[(&str, &str)]) -> Self {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            secrets: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            reads: reads.clone(),
        });
        let app = Router::new().route("/", post(handle)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            endpoint: format!("http://{addr}"),
            reads,
        }
    }

    /// The ARNs read so far, in order.
    pub fn reads(&self) -> Vec<String> {
        self.reads.lock().unwrap().clone()
    }
}

fn error(kind: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

async fn handle(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let auth = header("authorization");
    if !auth.starts_with("AWS4-HMAC-SHA256 ") || !auth.contains("/secretsmanager/aws4_request") {
        return error(
            "UnrecognizedClientException",
            "requests must be signed with SigV4",
        );
    }
    if header("x-amz-target") != "secretsmanager.GetSecretValue" {
        return error("InvalidAction", "only GetSecretValue is served here");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error("SerializationException", "the body is not JSON");
    };
    let id = request["SecretId"].as_str().unwrap_or_default().to_owned();
    s.reads.lock().unwrap().push(id.clone());
    match s.secrets.get(&id) {
        Some(value) => (
            [("content-type", "application/x-amz-json-1.1")],
            json!({"ARN": id, "Name": "test", "SecretString": value, "VersionId": "v1"})
                .to_string(),
        )
            .into_response(),
        None => error(
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        ),
    }
}
