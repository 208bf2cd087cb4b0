//! The stream function's router served over real HTTP on a fresh database, as the provider
//! tests (`bedrock.rs`, `routing.rs`) use it.

use std::net::SocketAddr;
use std::sync::Arc;

use common::Conversation;
use common::auth::Auth;
use common::store::PgStore;
use serde_json::Value;
use stream::StreamState;
use testkit::TestDb;
use testkit::sse::{self, Received};

pub struct Harness {
    _db: TestDb,
    pub store: Arc<PgStore>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

/// The router with these settings (over a fresh database), listening on a free port.
pub async fn serve(pairs: &[(&str, &str)]) -> Harness {
    let db = TestDb::new().await;
    let settings = db.settings_with(pairs);
    let store = Arc::new(PgStore::from_settings(&settings).unwrap());
    let state = StreamState::from_settings(&settings, store.clone()).unwrap();
    let app = stream::router(
        state,
        store.clone(),
        store.clone(),
        Auth::off(store.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { common::http::serve(listener, app).await });
    Harness {
        _db: db,
        store,
        addr,
        http: testkit::http_client(),
    }
}

impl Harness {
    /// `POST /stream` with `body`: its events.
    pub async fn stream(&self, body: Value) -> Vec<Received> {
        let resp = self
            .http
            .post(format!("http://{}/stream", self.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        sse::read(resp, None).await
    }

    /// The turn `events` started, once it has left `streaming`.
    pub async fn finished(&self, events: &[Received]) -> Conversation {
        assert_eq!(events[0].name, "start", "{events:?}");
        let id = uuid::Uuid::parse_str(events[0].data["id"].as_str().unwrap()).unwrap();
        testkit::finished(self.store.as_ref(), "local", id).await
    }
}
