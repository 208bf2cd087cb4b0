#![allow(clippy::unwrap_used, clippy::expect_used)]
//! API keys over the whole local router: every path but `/health` needs a valid key, and each
//! owner sees only their own conversations.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::store::{ApiKeys, PgStore};
use http_body_util::BodyExt;
use serde_json::Value;
use testkit::{TestDb, seed_owned};
use tower::ServiceExt;

async fn app(db: &TestDb, extra: &[(&str, &str)]) -> (Router, Arc<PgStore>) {
    let mut env = vec![("AUTH", "required")];
    env.extend_from_slice(extra);
    // A later AUTH wins: the map keeps the last value.
    let settings = db.settings_with(&env);
    let store = Arc::new(PgStore::from_settings(&settings).unwrap());
    (local::app(&settings, store.clone()).unwrap(), store)
}

async fn new_key(store: &PgStore, owner: &str) -> (uuid::Uuid, String) {
    let key = common::auth::new_key().unwrap();
    let id = uuid::Uuid::now_v7();
    store
        .add_key(
            id,
            owner,
            "test",
            &common::auth::digest(&key),
            &Default::default(),
        )
        .await
        .unwrap();
    (id, key)
}

async fn send(app: &Router, method: &str, uri: &str, auth: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let body = if method == "POST" {
        Body::from(r#"{"prompt":"isolated words"}"#)
    } else {
        Body::empty()
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_path_but_health_refuses_missing_malformed_unknown_and_revoked_keys() {
    let db = TestDb::new().await;
    let (app, store) = app(&db, &[]).await;
    let (revoked_id, revoked) = new_key(&store, "alice").await;
    assert!(store.revoke_key(revoked_id).await.unwrap());
    let unknown = common::auth::new_key().unwrap();
    let paths = [
        ("GET", "/history".to_owned()),
        ("GET", format!("/history/{}", uuid::Uuid::now_v7())),
        ("GET", "/search?query=x".to_owned()),
        ("POST", "/stream".to_owned()),
    ];
    let headers = [
        None,
        Some("".to_owned()),
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {revoked}")),
        Some(format!("Token {unknown}")),
    ];
    for (method, path) in &paths {
        for h in &headers {
            let (status, body) = send(&app, method, path, h.as_deref()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {h:?}"
            );
            assert_eq!(testkit::call::error_code(&body), "unauthorized");
        }
    }
    let (status, _) = send(&app, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    let n = db.count().await;
    assert_eq!(n, 0, "a refused stream must not write a row");
}

#[tokio::test]
async fn an_owner_cannot_list_get_or_find_another_owners_conversations() {
    let db = TestDb::new().await;
    let (app, store) = app(&db, &[]).await;
    let (_, alice) = new_key(&store, "alice").await;
    let (_, bob) = new_key(&store, "bob").await;
    let alice_rows = seed_owned(&db, "alice", 3, 1).await;
    let bob_rows = seed_owned(&db, "bob", 2, 1).await;
    let alice = format!("Bearer {alice}");
    let bob = format!("Bearer {bob}");

    let (status, page) = send(&app, "GET", "/history", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        alice_rows
            .iter()
            .all(|c| ids.contains(&c.id.to_string().as_str()))
    );

    let (status, _) = send(
        &app,
        "GET",
        &format!("/history/{}", bob_rows[0].id),
        Some(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, one) = send(
        &app,
        "GET",
        &format!("/history/{}", bob_rows[0].id),
        Some(&bob),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["owner"], "bob");

    let (_, found) = send(&app, "GET", "/search?query=prompt", Some(&alice)).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 3);
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["owner"] == "alice")
    );

    // A stream is saved under the caller's owner.
    let (status, _) = send(&app, "POST", "/stream", Some(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    let owner: String = db
        .client()
        .await
        .query_one(
            "SELECT owner FROM conversations WHERE prompt = 'isolated words'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "bob");
    let (_, page) = send(&app, "GET", "/search?query=isolated", Some(&alice)).await;
    assert_eq!(page["items"], serde_json::json!([]));
}

#[tokio::test]
async fn a_static_token_from_the_environment_works_for_its_owner() {
    let db = TestDb::new().await;
    let (app, _) = app(
        &db,
        &[
            ("AUTH_TOKEN", "a-static-token-of-some-length"),
            ("AUTH_TOKEN_OWNER", "ops"),
        ],
    )
    .await;
    seed_owned(&db, "ops", 2, 1).await;
    let (status, page) = send(
        &app,
        "GET",
        "/history",
        Some("Bearer a-static-token-of-some-length"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (status, _) = send(
        &app,
        "GET",
        "/history",
        Some("Bearer a-static-token-of-some-lengt"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_auth_off_every_request_is_the_local_owners() {
    let db = TestDb::new().await;
    let (app, _) = app(&db, &[("AUTH", "off")]).await;
    seed_owned(&db, "local", 1, 1).await;
    seed_owned(&db, "alice", 1, 1).await;
    let (status, page) = send(&app, "GET", "/history", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["owner"], "local");
}
