#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `/search` against a real PostgreSQL, a fresh database per test.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::auth::Auth;
use common::domain::now_micros;
use common::store::ConversationFinish;
use common::{Conversation, Status};
use serde_json::Value;
use testkit::TestDb;
use testkit::call::{error_code, get};

fn app(db: &TestDb) -> axum::Router {
    let store = Arc::new(db.store());
    search::router(store.clone(), 1000, store.clone(), Auth::off(store))
}

/// Saves conversations (prompt, response), the first the oldest, a minute apart.
async fn save(db: &TestDb, rows: &[(&str, &str)]) -> Vec<Conversation> {
    let store = db.store();
    let base = now_micros() - Duration::from_secs(3600);
    let mut out = Vec::new();
    for (i, (prompt, response)) in rows.iter().enumerate() {
        let mut c = Conversation::start("local", (*prompt).to_owned(), "offline", "m");
        c.response = (*response).to_owned();
        c.status = Status::Complete;
        c.created_at = base + Duration::from_secs(60 * i as u64);
        c.updated_at = c.created_at;
        store.finish(&c).await.unwrap();
        out.push(c);
    }
    out
}

fn prompts(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["prompt"].as_str().unwrap().to_owned())
        .collect()
}

async fn search(app: &axum::Router, q: &str) -> Vec<String> {
    let (status, page) = get(app, &format!("/search?query={}", urlencode(q))).await;
    assert_eq!(status, StatusCode::OK, "{q}: {page}");
    prompts(&page)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_prompt_hit_outranks_a_response_hit_and_carries_rank_and_snippet() {
    let db = TestDb::new().await;
    save(
        &db,
        &[
            ("how do I bake sourdough bread", "use a starter"),
            ("tell me a story", "once a baker made bread"),
        ],
    )
    .await;
    let (status, page) = get(&app(&db), "/search?query=bread").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        prompts(&page),
        ["how do I bake sourdough bread", "tell me a story"]
    );
    let first = &page["items"][0];
    let second = &page["items"][1];
    assert!(first["rank"].as_f64().unwrap() > second["rank"].as_f64().unwrap());
    assert!(
        first["snippet"]
            .as_str()
            .unwrap()
            .contains("<mark>bread</mark>"),
        "{first}"
    );
    assert!(first["id"].is_string() && first["created_at"].is_string());
    assert!(page["next_cursor"].is_null());
    assert_eq!(page["limit"], 20);
}

#[tokio::test]
async fn phrases_or_and_exclusions_follow_web_search_syntax() {
    let db = TestDb::new().await;
    save(
        &db,
        &[
            ("green apple pie recipe", "bake it"),
            ("is the apple green", "sometimes"),
            ("banana bread", "ripe bananas"),
        ],
    )
    .await;
    let app = app(&db);
    assert_eq!(
        search(&app, "\"green apple\"").await,
        ["green apple pie recipe"]
    );
    let mut either = search(&app, "pie or banana").await;
    either.sort();
    assert_eq!(either, ["banana bread", "green apple pie recipe"]);
    assert_eq!(search(&app, "apple -pie").await, ["is the apple green"]);
}

#[tokio::test]
async fn a_phrase_ranks_only_the_newest_candidates_whichever_way_it_is_read() {
    let db = TestDb::new().await;
    save(
        &db,
        &[
            ("old green apple", ""),
            ("green apple again", ""),
            ("apple green, not a phrase", ""),
            ("newest green apple", ""),
        ],
    )
    .await;
    let store = Arc::new(db.store());
    // Two candidates: the window of newest rows holds both, so it answers.
    let two = search::router(store.clone(), 2, store.clone(), Auth::off(store.clone()));
    let mut got = search(&two, "\"green apple\"").await;
    got.sort();
    assert_eq!(got, ["green apple again", "newest green apple"]);
    // A thousand candidates: the window holds fewer, so the whole table is searched.
    let all = search::router(store.clone(), 1000, store.clone(), Auth::off(store));
    assert_eq!(search(&all, "\"green apple\"").await.len(), 3);
}

#[tokio::test]
async fn words_are_stemmed() {
    let db = TestDb::new().await;
    save(
        &db,
        &[
            ("I run every morning", "good habit"),
            ("swimming", "is fun"),
        ],
    )
    .await;
    let app = app(&db);
    assert_eq!(search(&app, "running").await, ["I run every morning"]);
    assert_eq!(search(&app, "swims").await, ["swimming"]);
}

#[tokio::test]
async fn equal_ranks_come_newest_first_and_dates_filter() {
    let db = TestDb::new().await;
    let rows = save(
        &db,
        &[("kiwi one", ""), ("kiwi two", ""), ("kiwi three", "")],
    )
    .await;
    let app = app(&db);
    assert_eq!(
        search(&app, "kiwi").await,
        ["kiwi three", "kiwi two", "kiwi one"]
    );
    let fmt = |t: time::OffsetDateTime| {
        urlencode(
            &t.format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        )
    };
    let (_, page) = get(
        &app,
        &format!("/search?query=kiwi&from={}", fmt(rows[1].created_at)),
    )
    .await;
    assert_eq!(prompts(&page), ["kiwi three", "kiwi two"]);
    let (_, page) = get(
        &app,
        &format!("/search?query=kiwi&to={}", fmt(rows[1].created_at)),
    )
    .await;
    assert_eq!(prompts(&page), ["kiwi one"]);
    let (status, body) = get(&app, "/search?query=kiwi&from=last-week").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_request");
}

#[tokio::test]
async fn pages_walk_every_match_once() {
    let db = TestDb::new().await;
    let texts: Vec<String> = (0..25).map(|i| format!("mango note {i}")).collect();
    let rows: Vec<(&str, &str)> = texts.iter().map(|t| (t.as_str(), "")).collect();
    save(&db, &rows).await;
    let app = app(&db);
    let mut seen = Vec::new();
    let mut uri = "/search?query=mango&limit=10".to_owned();
    loop {
        let (status, page) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(prompts(&page));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/search?query=mango&limit=10&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25);
    let (_, page) = get(&app, "/search?query=mango&limit=10&offset=20").await;
    assert_eq!(prompts(&page).len(), 5);
}

#[tokio::test]
async fn blank_or_missing_queries_are_422_and_stop_words_find_nothing() {
    let db = TestDb::new().await;
    save(&db, &[("the and of", "a an the")]).await;
    let app = app(&db);
    for uri in [
        "/search",
        "/search?query=",
        "/search?query=%20%20",
        "/search?query=x&limit=0",
        "/search?query=x&cursor=zz",
    ] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
        assert_eq!(error_code(&body), "invalid_request");
    }
    let (status, page) = get(&app, "/search?query=the%20and%20of").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], serde_json::json!([]));
}

#[tokio::test]
async fn punctuation_and_operators_never_cause_a_server_error() {
    let db = TestDb::new().await;
    save(&db, &[("c++ & rust | go!", "(a:b) * 'quoted' \\ back")]).await;
    let app = app(&db);
    let alphabet: Vec<char> = "'&|!:*()\\\"-<>~@#%^{}[];,.?/ abcxyz0\u{e9}\u{0}"
        .chars()
        .collect();
    // A small deterministic generator: the same inputs every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = (next() % 24 + 1) as usize;
        let q: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let (status, body) = get(&app, &format!("/search?query={}", urlencode(&q))).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{q:?} gave {status}: {body}"
        );
        if status != StatusCode::OK {
            error_code(&body);
        }
    }
    for q in [
        "'",
        "&",
        "|",
        "!",
        ":*",
        "(",
        ")",
        "\\",
        "!!!a",
        "a & | b",
        "rust:*",
        "\"unclosed",
    ] {
        let (status, _) = get(&app, &format!("/search?query={}", urlencode(q))).await;
        assert_eq!(status, StatusCode::OK, "{q}");
    }
}

#[tokio::test]
async fn a_huge_response_is_saved_and_its_beginning_is_searchable() {
    let db = TestDb::new().await;
    let mut response = String::from("zebra begins here. ");
    let mut i = 0u64;
    while response.len() < 2_000_000 {
        response.push_str(&format!("word{i} "));
        i += 1;
    }
    let rows = save(&db, &[("big one", response.as_str())]).await;
    let app = app(&db);
    assert_eq!(search(&app, "zebra").await, ["big one"]);
    let saved: String = db
        .client()
        .await
        .query_one(
            "SELECT response FROM conversations WHERE id = $1",
            &[&rows[0].id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(saved.len(), response.len());
}

#[tokio::test]
async fn a_rare_term_is_found_through_the_gin_index() {
    let db = TestDb::new().await;
    testkit::seed(&db, 5_000, 1).await;
    save(&db, &[("quokka facts", "")]).await;
    // As a table in use: ten weeks of turns, vacuumed and analyzed (as autovacuum does).
    db.client()
        .await
        .batch_execute(
            "UPDATE conversations SET created_at = now() - (n % 70) * interval '1 day' \
             FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM conversations) r \
             WHERE r.id = conversations.id",
        )
        .await
        .unwrap();
    db.client()
        .await
        .batch_execute("VACUUM ANALYZE conversations")
        .await
        .unwrap();
    let plan = db
        .explain(
            &common::store::search_sql("english"),
            &[
                &"quokka",
                &None::<time::OffsetDateTime>,
                &None::<time::OffsetDateTime>,
                &1000i64,
                &21i64,
                &0i64,
                &"local",
            ],
        )
        .await;
    assert!(plan.contains("conversations_search_idx"), "{plan}");
}

#[tokio::test]
async fn changing_search_config_rebuilds_the_column_and_search_follows_it() {
    let db = TestDb::new().await;
    save(&db, &[("I run every morning", "")]).await;
    let settings = db.settings_with(&[("SEARCH_CONFIG", "simple")]);
    let store = Arc::new(common::store::PgStore::from_settings(&settings).unwrap());
    common::db::migrate(store.pool(), "simple").await.unwrap();
    let app = search::router(store.clone(), 1000, store.clone(), Auth::off(store.clone()));
    // `simple` does not stem: `running` no longer finds `run`, the exact word still does.
    assert!(search(&app, "running").await.is_empty());
    assert_eq!(search(&app, "run").await, ["I run every morning"]);
    // Migrating again with the same setting changes nothing; back to english, stemming returns.
    common::db::migrate(store.pool(), "simple").await.unwrap();
    common::db::migrate(store.pool(), "english").await.unwrap();
    assert_eq!(
        search(&app_with(&db, "english"), "running").await,
        ["I run every morning"]
    );
    let err = common::db::migrate(store.pool(), "klingon")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("klingon"), "{err}");
}

fn app_with(db: &TestDb, config: &str) -> axum::Router {
    let store = Arc::new(db.store().with_search_config(config));
    search::router(store.clone(), 1000, store.clone(), Auth::off(store))
}

/// The candidates are the newest matches across weeks (the search reads a week at a time,
/// newest first, and skips weeks without a match), within `from`/`to`, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_the_newest_matches_across_weeks_on_both_backends() {
    use common::store::SearchQuery;
    let db = TestDb::new().await;
    let store = db.store();
    let now = now_micros();
    let days = |d: u64| now - Duration::from_secs(86_400 * d);
    for (ago, prompt) in [
        (70, "plum seventy"),
        (63, "pear sixty-three"),
        (22, "plum twenty-two"),
        (21, "plum twenty-one"),
        (20, "pear twenty"),
        (1, "plum one"),
    ] {
        let mut c = Conversation::start("local", prompt.to_owned(), "offline", "m");
        c.status = Status::Complete;
        c.created_at = days(ago);
        c.updated_at = c.created_at;
        store.finish(&c).await.unwrap();
    }
    let mut other = Conversation::start("someone", "plum elsewhere".to_owned(), "offline", "m");
    other.status = Status::Complete;
    store.finish(&other).await.unwrap();
    let api = testkit::data_api::DataApi::start(&testkit::admin_url()).await;
    for endpoint in [None, Some(api.endpoint.as_str())] {
        let backend = db.backend(endpoint, &[]);
        let found = |candidates: i64, from: Option<u64>, to: Option<u64>| {
            let backend = backend.clone();
            async move {
                let query = SearchQuery {
                    text: "plum".into(),
                    from: from.map(days),
                    to: to.map(days),
                    limit: 20,
                    offset: 0,
                    candidates,
                };
                let hits = backend.search("local", &query).await.unwrap().items;
                hits.into_iter()
                    .map(|h| h.conversation.prompt)
                    .collect::<Vec<_>>()
            }
        };
        // Equal ranks come newest first.
        assert_eq!(
            found(3, None, None).await,
            ["plum one", "plum twenty-one", "plum twenty-two"],
            "{endpoint:?}"
        );
        assert_eq!(found(1000, None, None).await.len(), 4, "{endpoint:?}");
        assert_eq!(
            found(2, None, Some(2)).await,
            ["plum twenty-one", "plum twenty-two"],
            "{endpoint:?}"
        );
        assert_eq!(
            found(1000, Some(65), Some(21)).await,
            ["plum twenty-two"],
            "{endpoint:?}"
        );
        assert!(
            found(1000, Some(19), Some(2)).await.is_empty(),
            "{endpoint:?}"
        );
    }
}
