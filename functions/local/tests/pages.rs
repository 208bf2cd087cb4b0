#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Pages that fit a buffered Lambda response: every page (history, search, a thread's turns)
//! and every single turn is at most 5,000,000 bytes, against the local server as a process.

use std::time::Duration;

use serde_json::Value;
use testkit::TestDb;
use testkit::process::serve;

const CAP: usize = 5_000_000;

fn client() -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Inserts a thread of `n` complete turns whose answers are `chars` characters long (the
/// thread's first turn first), all of owner `local`; their ids, oldest first.
async fn long_thread(db: &TestDb, n: usize, chars: usize) -> Vec<uuid::Uuid> {
    let client = db.client().await;
    let mut ids: Vec<uuid::Uuid> = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::now_v7();
        let thread = ids.first().copied().unwrap_or(id);
        client
            .execute(
                "INSERT INTO conversations (id, owner, prompt, response, status, provider, \
                 model, thread_id, previous_id, created_at, updated_at) VALUES ($1, 'local', \
                 $2, repeat('ab\"c ', $3 / 5), 'complete', 'openai', 'm', $4, $5, \
                 now() + make_interval(secs => $6), now())",
                &[
                    &id,
                    &format!("question {i}"),
                    &(chars as i32),
                    &thread,
                    &ids.last(),
                    &(i as f64),
                ],
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Follows `path`'s pages to the end: each body's size, and every item's id.
async fn every_page(http: &reqwest::Client, base: &str, path: &str) -> (Vec<usize>, Vec<String>) {
    let (mut sizes, mut ids) = (Vec::new(), Vec::new());
    let mut cursor = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let resp = http
            .get(format!("{base}{path}{sep}cursor={cursor}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.unwrap();
        sizes.push(body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["truncated"], false, "a whole turn was cut");
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return (sizes, ids),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_long_turns_stay_within_the_cap_and_go_on_by_cursor() {
    let db = TestDb::new().await;
    // Five turns of 2,000,000 characters: 10 MB in all (more with JSON escapes).
    let ids = long_thread(&db, 5, 2_000_000).await;
    let (_proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-pages",
        &[("DATABASE_URL", db.url.as_str()), ("AUTH", "off")],
    )
    .await;
    let http = client();
    let newest_first: Vec<String> = ids.iter().rev().map(ToString::to_string).collect();
    let oldest_first: Vec<String> = ids.iter().map(ToString::to_string).collect();

    let (sizes, got) = every_page(&http, &base, "/history?limit=100").await;
    assert!(sizes.iter().all(|s| *s <= CAP), "{sizes:?}");
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert_eq!(got, newest_first);

    let (sizes, got) = every_page(&http, &base, "/search?query=question&limit=100").await;
    assert!(sizes.iter().all(|s| *s <= CAP), "{sizes:?}");
    assert_eq!(got.len(), 5);

    let thread = format!("/threads/{}?limit=100", ids[0]);
    let (sizes, got) = every_page(&http, &base, &thread).await;
    assert!(sizes.iter().all(|s| *s <= CAP), "{sizes:?}");
    assert_eq!(got, oldest_first);
    // `limit` pages a thread as it does the history.
    let (sizes, got) = every_page(&http, &base, &format!("/threads/{}?limit=2", ids[0])).await;
    assert!(sizes.len() >= 3);
    assert_eq!(got, oldest_first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_larger_than_the_cap_is_cut_and_read_whole_as_a_stream() {
    let db = TestDb::new().await;
    let ids = long_thread(&db, 1, 6_000_000).await;
    let (_proc, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-giant",
        &[("DATABASE_URL", db.url.as_str()), ("AUTH", "off")],
    )
    .await;
    let http = client();
    let id = ids[0];
    for path in [format!("/history/{id}"), "/history".to_owned()] {
        let body = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(body.len() <= CAP, "{path}: {} bytes", body.len());
        let v: Value = serde_json::from_slice(&body).unwrap();
        let turn = if path == "/history" {
            &v["items"][0]
        } else {
            &v
        };
        assert_eq!(turn["truncated"], true, "{path}");
        assert!(
            turn["response"].as_str().unwrap().len() > 3_000_000,
            "{path}"
        );
    }
    // The whole answer, of any length, through the streaming route.
    let resp = http
        .get(format!("{base}/stream/{id}"))
        .send()
        .await
        .unwrap();
    let events = testkit::sse::read(resp, None).await;
    assert_eq!(testkit::sse::text(&events).chars().count(), 6_000_000);
    assert_eq!(events.last().unwrap().name, "done");
}
