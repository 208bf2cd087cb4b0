#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `/history/{id}` against a real PostgreSQL, a fresh database per test.

use std::sync::Arc;

use axum::http::StatusCode;
use common::auth::Auth;
use common::store::{ConversationCreate, ConversationFinish, ConversationGet};
use common::{Conversation, Status};
use testkit::TestDb;
use testkit::call::{error_code, get};

fn app(db: &TestDb) -> axum::Router {
    let store = Arc::new(db.store());
    get::router(store.clone(), store.clone(), Auth::off(store))
}

#[tokio::test]
async fn a_saved_conversation_is_returned_whole() {
    let db = TestDb::new().await;
    let rows = testkit::seed(&db, 3, 1).await;
    let (status, body) = get(&app(&db), &format!("/history/{}", rows[1].id)).await;
    assert_eq!(status, StatusCode::OK);
    let got: Conversation = serde_json::from_value(body).unwrap();
    assert_eq!(got, rows[1]);
}

#[tokio::test]
async fn an_unknown_id_is_404_and_a_malformed_one_422() {
    let db = TestDb::new().await;
    let app = app(&db);
    let (status, body) = get(&app, &format!("/history/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    for bad in [
        "abc",
        "123",
        "0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4",
        "%27%20or%201%3D1",
    ] {
        let (status, body) = get(&app, &format!("/history/{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(error_code(&body), "invalid_request");
    }
}

#[tokio::test]
async fn finish_inserts_a_record_whose_start_was_never_saved_and_is_idempotent() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut c = Conversation::start("local", "p".into(), "offline", "m");
    c.response = "all of it".into();
    c.status = Status::Complete;
    store.finish(&c).await.unwrap();
    store.finish(&c).await.unwrap();
    assert_eq!(store.get("local", c.id).await.unwrap(), Some(c.clone()));
    let n = db.count().await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn checkpoints_append_to_a_streaming_turn_and_a_finished_one_reads_its_record() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut c = Conversation::start("local", "p".into(), "offline", "m");
    store.create(&c).await.unwrap();
    store.checkpoint(None, c.id, Some((0, "ha"))).await.unwrap();
    store.checkpoint(None, c.id, Some((2, "lf"))).await.unwrap();
    let got = store.get("local", c.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.response.as_str()),
        (Status::Streaming, "half")
    );

    c.response = "whole".into();
    c.status = Status::Complete;
    store.finish(&c).await.unwrap();
    store
        .checkpoint(None, c.id, Some((4, "late")))
        .await
        .unwrap();
    let got = store.get("local", c.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.response.as_str()),
        (Status::Complete, "whole")
    );
}

#[tokio::test]
async fn a_row_abandoned_while_streaming_reads_as_interrupted() {
    let db = TestDb::new().await;
    let store = db.store();
    let c = Conversation::start("local", "p".into(), "offline", "m");
    store.create(&c).await.unwrap();
    db.client()
        .await
        .execute(
            "UPDATE conversations SET created_at = now() - interval '1 day' WHERE id = $1",
            &[&c.id],
        )
        .await
        .unwrap();
    let got = store.get("local", c.id).await.unwrap().unwrap();
    assert_eq!(got.status, Status::Partial);
    assert_eq!(got.error.as_deref(), Some("interrupted"));
}
