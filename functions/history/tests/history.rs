#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `/history` against a real PostgreSQL, a fresh database per test.

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::StatusCode;
use common::auth::Auth;
use testkit::call::{error_code, get};
use testkit::{TestDb, seed};

fn app(db: &TestDb) -> axum::Router {
    let store = Arc::new(db.store());
    history::router(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Auth::off(store),
        None,
    )
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_empty_table_gives_an_empty_first_page() {
    let db = TestDb::new().await;
    let (status, body) = get(&app(&db), "/history").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], serde_json::json!([]));
    assert_eq!(body["limit"], 20);
    assert_eq!(body["offset"], 0);
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn pages_are_newest_first_with_ties_broken_by_id() {
    let db = TestDb::new().await;
    // 30 rows, every 3 sharing one created_at.
    let rows = seed(&db, 30, 3).await;
    let mut expected = rows.clone();
    expected.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
    let expected: Vec<String> = expected.iter().map(|c| c.id.to_string()).collect();

    let app = app(&db);
    let (_, first) = get(&app, "/history?limit=10").await;
    let (_, second) = get(&app, "/history?limit=10&offset=10").await;
    let (_, third) = get(&app, "/history?limit=10&offset=20").await;
    let walked: Vec<String> = [first, second, third].iter().flat_map(ids).collect();
    assert_eq!(walked, expected);
    // The same request twice gives the same page.
    let (_, again) = get(&app, "/history?limit=10&offset=10").await;
    assert_eq!(ids(&again), expected[10..20]);
}

#[tokio::test]
async fn an_offset_past_the_end_is_an_empty_page() {
    let db = TestDb::new().await;
    seed(&db, 5, 1).await;
    let (status, body) = get(&app(&db), "/history?offset=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body).len(), 0);
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn limit_and_offset_bounds_are_enforced_with_json_errors() {
    let db = TestDb::new().await;
    let app = app(&db);
    for uri in [
        "/history?limit=0",
        "/history?limit=101",
        "/history?limit=-5",
        "/history?limit=abc",
        "/history?offset=-1",
        "/history?offset=1e3",
        "/history?cursor=not-a-cursor",
        "/history?limit=%FF",
    ] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
        assert_eq!(error_code(&body), "invalid_request", "{uri}");
    }
    let (status, body) = get(&app, "/history?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["limit"], 100);
}

#[tokio::test]
async fn a_cursor_walk_over_ten_thousand_rows_returns_each_row_once_newest_first() {
    let db = TestDb::new().await;
    let rows = seed(&db, 10_000, 7).await;
    let app = app(&db);
    let mut seen = Vec::with_capacity(rows.len());
    let mut uri = "/history?limit=100".to_owned();
    loop {
        let (status, page) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page["items"].as_array().unwrap().iter().map(|c| {
            (
                c["created_at"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        }));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/history?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), rows.len());
    let unique: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(unique.len(), rows.len(), "a row came twice");
    let mut expected = rows.clone();
    expected.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
    let expected: Vec<String> = expected.iter().map(|c| c.id.to_string()).collect();
    let got: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn the_cursor_query_walks_the_index_not_the_table() {
    let db = TestDb::new().await;
    seed(&db, 2_000, 1).await;
    let plan = db
        .explain(
            "SELECT id FROM conversations WHERE (created_at, id) < (now(), gen_random_uuid()) \
             ORDER BY created_at DESC, id DESC LIMIT 21",
            &[],
        )
        .await;
    assert!(plan.contains("created_at_id_idx"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
}

#[tokio::test]
async fn health_reports_the_database_down_with_503() {
    let db = TestDb::new().await;
    let (status, body) = get(&app(&db), "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok", "database": "ok"}));

    let settings = db.settings_with(&[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:9/nowhere"),
        ("DB_CONNECT_TIMEOUT_MS", "500"),
    ]);
    let down = Arc::new(common::store::PgStore::from_settings(&settings).unwrap());
    let app = history::router(
        down.clone(),
        down.clone(),
        down.clone(),
        down.clone(),
        down.clone(),
        Auth::off(down),
        None,
    );
    let (status, body) = get(&app, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["database"], "unavailable");
    let (status, body) = get(&app, "/history").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "database_unavailable");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "internal detail leaked: {body}"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let db = TestDb::new().await;
    let app = app(&db);
    let (status, body) = get(&app, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = testkit::call::call(&app, "DELETE", "/history", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
}

#[tokio::test]
async fn a_query_cut_by_its_statement_timeout_is_a_503_not_a_500() {
    let db = TestDb::new().await;
    seed(&db, 3, 1).await;
    let store = Arc::new(
        common::store::PgStore::from_settings(
            &db.settings_with(&[("DB_STATEMENT_TIMEOUT_MS", "200")]),
        )
        .unwrap(),
    );
    let app = history::router(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Auth::off(store),
        None,
    );
    // Another session holds the table: the page query waits until its timeout cancels it.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (status, body) = get(&app, "/history").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "database_unavailable");
    tx.rollback().await.unwrap();
    let (status, _) = get(&app, "/history").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn threads_are_listed_read_and_deleted_through_their_routes() {
    let db = TestDb::new().await;
    let rows = seed(&db, 3, 1).await;
    let app = app(&db);
    let (status, page) = get(&app, "/threads?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    // Seeded conversations are threads of one turn, newest first.
    assert_eq!(ids(&page), [rows[2].id.to_string(), rows[1].id.to_string()]);
    assert_eq!(page["items"][0]["turns"], 1);
    assert_eq!(page["items"][0]["title"], "prompt 2");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = get(&app, &format!("/threads?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&next), [rows[0].id.to_string()]);
    assert!(next["next_cursor"].is_null());

    let id = rows[1].id;
    let (status, one) = get(&app, &format!("/threads/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["thread"]["id"], id.to_string());
    assert_eq!(one["items"][0]["thread_id"], id.to_string());
    assert!(one["items"][0]["previous_id"].is_null());

    let (status, _) = testkit::call::call(&app, "DELETE", &format!("/threads/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = get(&app, &format!("/threads/{id}")).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _) = testkit::call::call(&app, "DELETE", &format!("/threads/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&app, "/threads/not-a-uuid").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let (_, history) = get(&app, "/history").await;
    assert_eq!(
        ids(&history),
        [rows[2].id.to_string(), rows[0].id.to_string()]
    );
}
