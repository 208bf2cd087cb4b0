#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Background responses as a Lambda function makes them: the create call queues the turn and
//! invokes the function itself (a signed `Event` call to the Invoke API, here a local one that
//! checks the SigV4 signature and keeps what it got); the invocation event, delivered to the
//! function's internal route, generates the turn. Every request carries the Lambda runtime's
//! context, as lambda_http gives it. The whole path under `cargo lambda watch` is in
//! `local/tests/lambda_watch/background.rs`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use common::auth::Auth;
use common::store::PgStore;
use serde_json::{Value, json};
use stream::StreamState;
use testkit::TestDb;
use testkit::fake_bedrock::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, SESSION_TOKEN};

/// What the local Invoke API got: path, headers, body.
type Got = Arc<Mutex<Vec<(String, axum::http::HeaderMap, Vec<u8>)>>>;

/// A local Lambda Invoke API: checks each call's signature (service `lambda`), keeps it, and
/// answers 202 as Lambda does for an `Event` invocation.
async fn invoke_api() -> (String, Got) {
    async fn invoke(State(got): State<Got>, request: Request) -> StatusCode {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec();
        if let Err(why) =
            testkit::fake_bedrock::check_signature("lambda", &parts.uri, &parts.headers, &body)
        {
            panic!("the Invoke call is not signed right: {why}");
        }
        got.lock()
            .unwrap()
            .push((parts.uri.path().to_owned(), parts.headers, body));
        StatusCode::ACCEPTED
    }
    let got: Got = Arc::default();
    let app = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

struct Queued {
    turn: uuid::Uuid,
    created: Value,
    path: String,
    headers: axum::http::HeaderMap,
    event: Value,
}

struct Lambda {
    db: TestDb,
    base: String,
    http: reqwest::Client,
}

/// The stream function's router as the Lambda runtime serves it (each request with its
/// context), in the environment Lambda gives a function, its Invoke API at `endpoint`.
async fn lambda(endpoint: Option<&str>, extra: &[(&'static str, &'static str)]) -> Lambda {
    let db = TestDb::new().await;
    let mut env = vec![
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("AWS_LAMBDA_FUNCTION_NAME", "llm-stream-StreamFunction"),
        ("AWS_REGION", REGION),
        ("OFFLINE_CHUNK_DELAY_MS", "20"),
    ];
    if let Some(endpoint) = endpoint {
        env.extend([
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ("AWS_ENDPOINT_URL_LAMBDA", endpoint),
        ]);
    }
    env.extend_from_slice(extra);
    let settings = db.settings_with(&env);
    let store = Arc::new(PgStore::from_settings(&settings).unwrap());
    let state = StreamState::from_settings(&settings, store.clone()).unwrap();
    assert_eq!(state.self_invoke.is_some(), endpoint.is_some());
    let app = stream::router(
        state,
        store.clone(),
        store.clone(),
        Auth::off(store.clone()),
    )
    .layer(axum::middleware::map_request(|mut r: Request| async move {
        r.extensions_mut().insert(lambda_http::Context::default());
        r
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { common::http::serve(listener, app).await });
    Lambda {
        db,
        base: format!("http://{addr}"),
        http: testkit::http_client(),
    }
}

impl Lambda {
    async fn create(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/responses", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The turn's status and error as stored (`None`: no such turn).
    async fn stored(&self, id: uuid::Uuid) -> Option<(String, Option<String>)> {
        let row = self
            .db
            .client()
            .await
            .query_opt(
                "SELECT status, error FROM conversations WHERE id = $1::text::uuid",
                &[&id.to_string()],
            )
            .await
            .unwrap();
        row.map(|r| (r.get(0), r.get(1)))
    }

    async fn status(&self, id: uuid::Uuid) -> (String, Option<String>) {
        self.stored(id).await.expect("the turn's row")
    }

    /// `GET /v1/responses/{id}`.
    async fn read(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/responses/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A background create call that the function answered and queued: the turn, the created
    /// response, and the one Invoke call it made (path, headers, the event).
    async fn queue(&self, got: &Got, body: Value) -> Queued {
        let resp = self.create(body).await;
        assert_eq!(resp.status(), 200);
        let turn =
            uuid::Uuid::parse_str(resp.headers()["x-conversation-id"].to_str().unwrap()).unwrap();
        let created = resp.json().await.unwrap();
        let (path, headers, body) = got.lock().unwrap().pop().expect("an Invoke call");
        assert!(got.lock().unwrap().is_empty(), "one Invoke call");
        Queued {
            turn,
            created,
            path,
            headers,
            event: serde_json::from_slice(&body).unwrap(),
        }
    }

    /// Delivers an invocation event to the function, as the Lambda runtime would: its path,
    /// headers and body. Returns the status and the whole body.
    async fn deliver(&self, event: &Value) -> (u16, String) {
        let mut request = self.http.post(format!(
            "{}{}",
            self.base,
            event["rawPath"].as_str().unwrap()
        ));
        for (name, value) in event["headers"].as_object().unwrap() {
            request = request.header(name, value.as_str().unwrap());
        }
        let resp = request.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test]
async fn a_background_response_is_generated_by_the_invocation_it_queues() {
    let (endpoint, got) = invoke_api().await;
    let f = lambda(Some(&endpoint), &[]).await;
    let Queued {
        turn,
        created,
        path,
        headers,
        event,
    } = f
        .queue(
            &got,
            json!({"model": "m", "background": true, "input": "queue me", "store": true}),
        )
        .await;
    assert_eq!(created["status"], "in_progress", "{created}");

    // One signed Event invocation of the function itself.
    assert_eq!(
        path,
        "/2015-03-31/functions/llm-stream-StreamFunction/invocations"
    );
    assert_eq!(headers["x-amz-invocation-type"], "Event");
    assert_eq!(
        event["rawPath"],
        format!("/internal/background/{turn}").as_str()
    );
    let token = event["headers"]["x-background-token"].as_str().unwrap();
    assert!(token.len() >= 43);
    // Only the token's hash is stored.
    let stored: String =
        f.db.client()
            .await
            .query_one("SELECT token_sha256 || job::text FROM background_runs", &[])
            .await
            .unwrap()
            .get(0);
    assert!(!stored.contains(token));

    // Nothing generates it in the create call's process: it waits for its invocation.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(f.status(turn).await, ("streaming".into(), None));

    // Another token runs nothing, and leaves the run queued.
    let mut forged = event.clone();
    forged["headers"]["x-background-token"] = json!("A".repeat(43));
    assert_eq!(f.deliver(&forged).await.0, 404);
    let (status, body) = f.deliver(&event).await;
    assert_eq!(status, 202, "{body}");
    // The invocation's response ends once the turn has ended, and the record is saved.
    assert_eq!(body, format!("{{\"id\":\"{turn}\",\"run\":\"ended\"}}\n"));
    assert_eq!(f.status(turn).await, ("complete".into(), None));
    let done = f.read(&format!("resp_{}", turn.simple())).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        !done["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // A second delivery of the same event finds nothing to run.
    assert_eq!(f.deliver(&event).await.0, 404);
    assert_eq!(f.status(turn).await.0, "complete");
}

/// A run whose event comes after its turn's heartbeat went stale (the turn has read as failed
/// since) is not started late: the turn is saved as it read, `failed` (`interrupted`).
#[tokio::test]
async fn a_run_that_starts_after_its_turn_went_stale_is_not_generated() {
    let (endpoint, got) = invoke_api().await;
    // Heartbeats every 20 ms: stale after the floor of 2 s.
    let f = lambda(Some(&endpoint), &[("CHECKPOINT_INTERVAL_MS", "20")]).await;
    let Queued { turn, event, .. } = f
        .queue(
            &got,
            json!({"model": "m", "background": true, "input": "too late"}),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let read = f.read(&turn.to_string()).await;
    assert_eq!(read["status"], "failed", "{read}");
    let (status, body) = f.deliver(&event).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        f.status(turn).await,
        ("failed".into(), Some("interrupted".into()))
    );
}

/// `store: false` in the background: the turn exists while it runs and is gone once it ends.
#[tokio::test]
async fn a_background_response_without_store_is_deleted_when_it_ends() {
    let (endpoint, got) = invoke_api().await;
    let f = lambda(Some(&endpoint), &[]).await;
    let Queued { turn, event, .. } = f
        .queue(
            &got,
            json!({"model": "m", "background": true, "input": "forget me", "store": false}),
        )
        .await;
    assert_eq!(f.status(turn).await.0, "streaming");
    assert_eq!(f.deliver(&event).await.0, 202);
    assert_eq!(f.stored(turn).await, None);
}

/// When the function cannot invoke itself (its Invoke API refuses connections), the create call
/// says so (503), and the turn is saved as failed rather than left running.
#[tokio::test]
async fn a_background_response_that_cannot_be_started_is_failed_not_left_running() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let f = lambda(Some(&format!("http://{closed}")), &[]).await;
    let resp = f
        .create(json!({"model": "m", "background": true, "input": "nowhere to go"}))
        .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "background_unavailable", "{body}");
    let row =
        f.db.client()
            .await
            .query_one(
                "SELECT status, error, (SELECT count(*) FROM background_runs) FROM conversations",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("failed".to_owned(), "background_unavailable".to_owned())
    );
    assert_eq!(row.get::<_, i64>(2), 0);
}

/// A Lambda function without what it needs to invoke itself refuses `background` by name,
/// before anything is stored; the other modes work as ever.
#[tokio::test]
async fn a_lambda_function_that_cannot_invoke_itself_refuses_background_by_name() {
    let f = lambda(None, &[]).await;
    let resp = f
        .create(json!({"model": "m", "background": true, "input": "x"}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "background", "{body}");
    let count: i64 =
        f.db.client()
            .await
            .query_one("SELECT count(*) FROM conversations", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(count, 0);
    let resp = f.create(json!({"model": "m", "input": "x"})).await;
    assert_eq!(resp.status(), 200);
}

/// Queuing and taking a run on both backends: only its token's hash takes it, once; a turn
/// deleted before its run started takes its run with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_taken_once_by_its_token_on_both_backends() {
    use common::Conversation;
    let db = TestDb::new().await;
    let api = testkit::data_api::DataApi::start(&testkit::admin_url()).await;
    for endpoint in [None, Some(api.endpoint.as_str())] {
        let backend = db.backend(endpoint, &[]);
        let c = Conversation::start("local", "queued".into(), "offline", "m");
        backend.create(&c).await.unwrap();
        let job = json!({"request": {"messages": [{"role": "user", "content": "queued é"}]}});
        backend.queue_run(c.id, "aa", &job).await.unwrap();
        assert_eq!(backend.take_run(c.id, "bb").await.unwrap(), None);
        let taken = backend
            .take_run(c.id, "aa")
            .await
            .unwrap()
            .expect("the run");
        assert_eq!(taken.job, job, "{endpoint:?}");
        assert!(taken.waited_secs >= 0.0 && taken.waited_secs < 60.0);
        assert_eq!(backend.take_run(c.id, "aa").await.unwrap(), None);

        let gone = Conversation::start("local", "deleted".into(), "offline", "m");
        backend.create(&gone).await.unwrap();
        backend.queue_run(gone.id, "cc", &job).await.unwrap();
        db.client()
            .await
            .execute(
                "DELETE FROM conversations WHERE id = $1::text::uuid",
                &[&gone.id.to_string()],
            )
            .await
            .unwrap();
        assert_eq!(backend.take_run(gone.id, "cc").await.unwrap(), None);
    }
}
