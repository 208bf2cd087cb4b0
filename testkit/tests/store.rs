//! The store suite: each test body is written once and runs against both backends, the
//! connection pool (`DATABASE_URL`) and the RDS Data API (`DB_CLUSTER_ARN`, through the local
//! Data API endpoint on the same PostgreSQL). Each test has a fresh database; in Data API mode
//! the schema is applied through the Data API itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use common::guard::Flag;
use common::store::{Backend, CancelOutcome, Cursor, PageQuery, SearchQuery};
use common::{Conversation, Status};
use testkit::data_api::DataApi;
use testkit::{TestDb, migration_files};
use uuid::Uuid;

/// One backend on one fresh database.
struct Harness {
    db: TestDb,
    store: Arc<dyn Backend>,
    /// The local Data API endpoint, in Data API mode.
    api: Option<DataApi>,
}

impl Harness {
    async fn pool() -> Self {
        let db = TestDb::new().await;
        let store = db.backend(None, &[]);
        Self {
            db,
            store,
            api: None,
        }
    }

    async fn data_api() -> Self {
        let db = TestDb::blank().await;
        let api = DataApi::start(&testkit::admin_url()).await;
        let store = db.backend(Some(&api.endpoint), &[]);
        let applied = store
            .migrate("english")
            .await
            .expect("migrate through the Data API");
        assert_eq!(applied, migration_files(), "every migration applied");
        assert_eq!(
            api.ddl_without_continue(),
            0,
            "a schema statement would be cut at the Data API's 45 s"
        );
        Self {
            db,
            store,
            api: Some(api),
        }
    }

    /// Another backend of the same kind on the same database, with `extra` settings.
    fn backend_with(&self, extra: &[(&str, &str)]) -> Arc<dyn Backend> {
        self.db
            .backend(self.api.as_ref().map(|a| a.endpoint.as_str()), extra)
    }
}

/// `owner`'s turn `id` as the API shows it (the heartbeat is internal).
async fn get(
    h: &Harness,
    owner: &str,
    id: Uuid,
) -> Result<Option<Conversation>, common::error::StoreError> {
    Ok(h.store.get(owner, id).await?.map(|mut c| {
        c.heartbeat_at = None;
        c
    }))
}

/// Runs each named test body against both backends.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod pool {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Harness::pool().await).await;
                }
            )*
        }
        mod data_api {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Harness::data_api().await).await;
                }
            )*
        }
    };
}

suite!(
    migrations_are_idempotent_and_shared_by_both_modes,
    every_field_round_trips,
    nulls_round_trip,
    writes_are_idempotent,
    checkpoints_touch_only_streaming_rows,
    reads_are_owner_scoped,
    pages_are_newest_first_by_offset_and_cursor,
    long_text_round_trips,
    search_ranks_filters_and_highlights,
    api_keys_have_a_lifecycle,
    reservations_admit_refuse_and_settle,
    search_config_changes_rebuild_the_column,
    ping_answers,
    nul_characters_cannot_make_a_record_unsaveable,
    a_chain_is_read_newest_first_as_far_as_the_budget_reaches,
    branches_share_a_thread_and_each_chain_is_its_own,
    threads_are_listed_by_latest_activity_with_cursors,
    a_thread_is_read_oldest_first_and_deleted_whole,
    threads_are_owner_isolated,
    a_turn_of_a_deleted_thread_does_not_bring_it_back,
    a_running_turn_is_read_from_any_position_of_its_log,
    an_ended_turn_is_read_from_its_record,
    cancel_requests_reach_running_turns_only,
    a_piece_sent_again_keeps_the_longer_text,
    a_turn_not_heard_from_reads_as_interrupted,
    a_deletion_racing_a_new_turn_leaves_nothing,
    a_long_thread_of_long_turns_is_continued_in_pages,
    a_thread_is_read_a_page_at_a_time,
    each_function_connects_as_the_least_it_needs,
);

fn tricky_text() -> String {
    "Grüße, 漢字 and 🙂; it's \"quoted\", a back\\slash, a tab\t, a newline\n, :named and $1, \
     '; DROP TABLE conversations; --"
        .to_owned()
}

fn finished(owner: &str, prompt: &str, response: &str) -> Conversation {
    let mut c = Conversation::start(owner, prompt.to_owned(), "openai", "gpt-test");
    c.response = response.to_owned();
    c.status = Status::Complete;
    c.prompt_tokens = Some(12);
    c.completion_tokens = Some(34);
    c.total_tokens = Some(46);
    c.ttfb_ms = Some(7);
    c.duration_ms = Some(1234);
    c.updated_at = c.created_at + Duration::from_micros(1_500_001);
    c
}

async fn migrations_are_idempotent_and_shared_by_both_modes(h: &Harness) {
    assert_eq!(h.store.migrate("english").await.unwrap(), 0);
    // The other mode sees the same history (same versions and checksums).
    let pool = h.db.backend(None, &[]);
    assert_eq!(pool.migrate("english").await.unwrap(), 0);
    // The planner settings reach sessions the service does not open itself (V5).
    let settings: Vec<String> =
        h.db.client()
            .await
            .query_one(
                "SELECT setconfig FROM pg_db_role_setting \
             WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert!(
        settings.contains(&"plan_cache_mode=force_custom_plan".to_owned()),
        "{settings:?}"
    );
    assert!(
        settings.contains(&"max_parallel_workers_per_gather=0".to_owned()),
        "{settings:?}"
    );
}

async fn every_field_round_trips(h: &Harness) {
    let mut c = Conversation::start("alice", tricky_text(), "openai", "gpt-test");
    h.store.create(&c).await.unwrap();
    assert_eq!(get(h, "alice", c.id).await.unwrap(), Some(c.clone()));

    c.response = tricky_text().repeat(3);
    c.status = Status::Partial;
    c.error = Some("provider_error".into());
    c.prompt_tokens = Some(1);
    c.completion_tokens = Some(2);
    c.total_tokens = Some(3);
    c.ttfb_ms = Some(0);
    c.duration_ms = Some(i32::MAX);
    c.flags = vec![Flag {
        check: "repetition".into(),
        verdict: "stopped".into(),
        detail: "the same 40 characters 3 times".into(),
    }];
    c.updated_at = c.created_at + Duration::from_micros(123_457);
    c.finish_reason = Some("length".into());
    c.system = Some(tricky_text());
    c.messages = Some(serde_json::json!([
        {"role": "system", "content": tricky_text()},
        {"role": "user", "content": [{"type": "text", "text": "part"}]},
        // Any field a client sends is kept; PostgreSQL writes these numbers back as long
        // decimals, which must read back as the same numbers.
        {"role": "user", "content": "n", "x": [f64::MAX, -f64::MAX, f64::MIN_POSITIVE, 5e-324,
            -2.2250738585e-313, 0.1, u64::MAX, i64::MIN]}
    ]));
    c.context_turns = Some(2);
    h.store.finish(&c).await.unwrap();
    assert_eq!(get(h, "alice", c.id).await.unwrap(), Some(c));
}

async fn nulls_round_trip(h: &Harness) {
    let mut c = finished("alice", "p", "");
    c.prompt_tokens = None;
    c.completion_tokens = None;
    c.total_tokens = None;
    c.ttfb_ms = None;
    c.duration_ms = None;
    c.error = None;
    c.status = Status::Failed;
    h.store.finish(&c).await.unwrap();
    assert_eq!(get(h, "alice", c.id).await.unwrap(), Some(c));
}

async fn writes_are_idempotent(h: &Harness) {
    let c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    h.store.create(&c).await.unwrap();
    let done = finished("alice", "q", "answer");
    h.store.finish(&done).await.unwrap(); // never created: inserted whole
    h.store.finish(&done).await.unwrap();
    assert_eq!(h.db.count().await, 2);
    assert_eq!(get(h, "alice", done.id).await.unwrap(), Some(done));
}

async fn checkpoints_touch_only_streaming_rows(h: &Harness) {
    let c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    h.store
        .checkpoint(None, c.id, Some((0, "so ")))
        .await
        .unwrap();
    h.store
        .checkpoint(None, c.id, Some((3, "far")))
        .await
        .unwrap();
    let got = get(h, "alice", c.id).await.unwrap().unwrap();
    assert_eq!(
        (got.response.as_str(), got.status),
        ("so far", Status::Streaming)
    );

    let done = finished("alice", "p", "final");
    h.store.finish(&done).await.unwrap();
    h.store
        .checkpoint(None, done.id, Some((0, "late")))
        .await
        .unwrap();
    let got = get(h, "alice", done.id).await.unwrap().unwrap();
    assert_eq!(got.response, "final");
}

async fn reads_are_owner_scoped(h: &Harness) {
    let c = finished("alice", "secret", "answer");
    h.store.finish(&c).await.unwrap();
    assert_eq!(get(h, "bob", c.id).await.unwrap(), None);
    assert_eq!(get(h, "alice", uuid::Uuid::now_v7()).await.unwrap(), None);
    let page = PageQuery {
        limit: 10,
        offset: 0,
        after: None,
    };
    assert!(h.store.list("bob", &page).await.unwrap().items.is_empty());
    assert_eq!(h.store.list("alice", &page).await.unwrap().items, vec![c]);
}

async fn pages_are_newest_first_by_offset_and_cursor(h: &Harness) {
    let mut rows = testkit::seed_owned(&h.db, "alice", 30, 4).await;
    testkit::seed_owned(&h.db, "bob", 5, 1).await;
    rows.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
    let expected: Vec<uuid::Uuid> = rows.iter().map(|c| c.id).collect();

    let page = PageQuery {
        limit: 7,
        offset: 9,
        after: None,
    };
    let got: Vec<_> = h.store.list("alice", &page).await.unwrap().items;
    assert_eq!(
        got.iter().map(|c| c.id).collect::<Vec<_>>(),
        expected[9..16]
    );
    assert_eq!(got[0], rows[9]);

    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = PageQuery {
            limit: 7,
            offset: 0,
            after,
        };
        let got = h.store.list("alice", &page).await.unwrap().items;
        let Some(last) = got.last() else { break };
        after = Some(Cursor::after(last));
        walked.extend(got.iter().map(|c| c.id));
    }
    assert_eq!(walked, expected);
}

async fn long_text_round_trips(h: &Harness) {
    // Multi-byte text well over the Data API's 1 MiB response limit in all.
    let response: String = "é漢🙂 a longer answer line\n".repeat(12_000);
    let prompt: String = "ü".repeat(70_000);
    let mut made = Vec::new();
    for _ in 0..3 {
        let c = finished("alice", &prompt, &response);
        h.store.finish(&c).await.unwrap();
        made.push(c);
    }
    let got = get(h, "alice", made[0].id).await.unwrap().unwrap();
    assert_eq!(got.response.chars().count(), response.chars().count());
    assert_eq!(got, made[0]);
    let page = PageQuery {
        limit: 3,
        offset: 0,
        after: None,
    };
    let mut listed = h.store.list("alice", &page).await.unwrap().items;
    listed.sort_by_key(|c| c.id);
    assert_eq!(listed, made);
    let hits = h
        .store
        .search("alice", &search("longer answer"))
        .await
        .unwrap()
        .items;
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|hit| hit.conversation.response == response));
}

fn search(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        from: None,
        to: None,
        limit: 10,
        offset: 0,
        candidates: 1000,
    }
}

async fn search_ranks_filters_and_highlights(h: &Harness) {
    let strong = finished(
        "alice",
        "PostgreSQL full text search",
        "search with PostgreSQL",
    );
    let mut weak = finished("alice", "cooking", "a note on PostgreSQL");
    weak.created_at = strong.created_at + Duration::from_secs(1);
    let other = finished("bob", "PostgreSQL", "PostgreSQL PostgreSQL");
    let unrelated = finished("alice", "gardening", "tomatoes");
    for c in [&strong, &weak, &other, &unrelated] {
        h.store.finish(c).await.unwrap();
    }
    let hits = h
        .store
        .search("alice", &search("postgresql"))
        .await
        .unwrap()
        .items;
    let ids: Vec<_> = hits.iter().map(|hit| hit.conversation.id).collect();
    assert_eq!(ids, vec![strong.id, weak.id]);
    assert!(hits[0].rank > hits[1].rank, "{hits:?}");
    assert!(
        hits[0].snippet.contains("<mark>PostgreSQL</mark>"),
        "{}",
        hits[0].snippet
    );
    assert_eq!(hits[0].conversation, strong);

    // A phrase goes through the newest-rows window first.
    let hits = h
        .store
        .search("alice", &search("\"full text search\""))
        .await
        .unwrap()
        .items;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.id, strong.id);

    let mut ranged = search("postgresql");
    ranged.from = Some(weak.created_at);
    let hits = h.store.search("alice", &ranged).await.unwrap().items;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.id, weak.id);
    ranged.from = None;
    ranged.to = Some(weak.created_at);
    let hits = h.store.search("alice", &ranged).await.unwrap().items;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.id, strong.id);

    assert!(
        h.store
            .search("alice", &search("the and of"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let hits = h
        .store
        .search("alice", &search("postgresql -cooking"))
        .await
        .unwrap()
        .items;
    assert_eq!(hits.len(), 1);
}

async fn api_keys_have_a_lifecycle(h: &Harness) {
    use common::spend::{KeyLimits, Period};
    let id = uuid::Uuid::now_v7();
    let digest = common::auth::digest("lsk_test_key");
    assert_eq!(h.store.key_of(&digest).await.unwrap(), None);
    let limits = KeyLimits {
        rpm: Some(60),
        budget_usd: Some(0.25),
        period: Period::Day,
        ..KeyLimits::default()
    };
    h.store
        .add_key(id, "alice", "laptop", &digest, &limits)
        .await
        .unwrap();
    let k = h.store.key_of(&digest).await.unwrap().unwrap();
    assert_eq!((k.id, k.owner.as_str(), k.limits), (id, "alice", limits));
    let fewer = KeyLimits {
        concurrency: Some(2),
        ..KeyLimits::default()
    };
    assert!(h.store.set_limits(id, &fewer).await.unwrap());
    let listed = h.store.list_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].limits, listed[0].spend.running), (fewer, 0));
    assert!(h.store.revoke_key(id).await.unwrap());
    assert_eq!(h.store.key_of(&digest).await.unwrap(), None);
    assert!(!h.store.revoke_key(id).await.unwrap());
    assert!(!h.store.revoke_key(uuid::Uuid::now_v7()).await.unwrap());
    assert!(!h.store.set_limits(id, &limits).await.unwrap());
}

/// The reservation statement and the final record's settlement, on both backends: a
/// concurrency of one refuses a second request until the first turn's record is written, which
/// settles it at its usage and counts it in the rollup.
async fn reservations_admit_refuse_and_settle(h: &Harness) {
    use common::spend::{GroupBy, KeyLimits, Reservation, UsageQuery};
    let key = uuid::Uuid::now_v7();
    let limits = KeyLimits {
        concurrency: Some(1),
        budget_usd: Some(1.0),
        ..KeyLimits::default()
    };
    h.store
        .add_key(
            key,
            "alice",
            "k",
            &common::auth::digest("lsk_spend"),
            &limits,
        )
        .await
        .unwrap();
    let mut c = finished("alice", "prompt", "answer");
    c.key_id = Some(key);
    c.model = "m".into();
    let reservation = |turn| Reservation {
        key_id: key,
        turn_id: turn,
        owner: "alice".into(),
        model: "m".into(),
        prompt_tokens: 100,
        output_tokens: 100,
        input_price: Some(1.0),
        output_price: Some(2.0),
        stale: std::time::Duration::from_secs(10),
        lease: std::time::Duration::from_secs(600),
    };
    assert_eq!(h.store.reserve(&reservation(c.id)).await.unwrap(), None);
    let refused = h
        .store
        .reserve(&reservation(uuid::Uuid::now_v7()))
        .await
        .unwrap()
        .expect("the second is refused");
    assert_eq!(refused.code, "rate_limited");
    assert!(refused.retry_after.is_some_and(|s| s >= 1));
    let spend = h.store.key_spend(key).await.unwrap().unwrap();
    assert_eq!((spend.running, spend.reserved_tokens), (1, 200));
    assert!((spend.reserved_usd - 0.0003).abs() < 1e-12, "{spend:?}");

    c.prompt_tokens = Some(10);
    c.completion_tokens = Some(5);
    c.cost_usd = Some(0.00002);
    h.store.finish(&c).await.unwrap();
    // Written again (a retried save), it is not counted twice.
    h.store.finish(&c).await.unwrap();
    let spend = h.store.key_spend(key).await.unwrap().unwrap();
    assert_eq!((spend.running, spend.spent_tokens), (0, 15));
    assert!((spend.spent_usd - 0.00002).abs() < 1e-12, "{spend:?}");
    assert_eq!(
        h.store
            .reserve(&reservation(uuid::Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );

    let query = |group_by| UsageQuery {
        from: None,
        to: None,
        group_by,
    };
    let (items, total) = h.store.usage("alice", &query(GroupBy::Key)).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key_id, Some(Some(key)));
    assert_eq!(
        (total.requests, total.prompt_tokens, total.completion_tokens),
        (1, 10, 5)
    );
    let (items, _) = h
        .store
        .usage("alice", &query(GroupBy::Model))
        .await
        .unwrap();
    assert_eq!(items[0].model.as_deref(), Some("m"));
    let (items, total) = h.store.usage("bob", &query(GroupBy::Day)).await.unwrap();
    assert!(items.is_empty());
    assert_eq!(total.requests, 0);
}

async fn search_config_changes_rebuild_the_column(h: &Harness) {
    let c = finished("alice", "the running dogs", "");
    h.store.finish(&c).await.unwrap();
    // English stems "running" to "run"; the simple configuration does not.
    assert_eq!(
        h.store
            .search("alice", &search("run"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let err = h.store.migrate("no_such_config").await.unwrap_err();
    assert!(err.to_string().contains("no_such_config"), "{err}");

    let simple = h.backend_with(&[("SEARCH_CONFIG", "simple")]);
    simple.migrate("simple").await.unwrap();
    assert!(
        simple
            .search("alice", &search("run"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        simple
            .search("alice", &search("running"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // The row survived the rebuild.
    assert_eq!(simple.get("alice", c.id).await.unwrap(), Some(c));
}

async fn nul_characters_cannot_make_a_record_unsaveable(h: &Harness) {
    // PostgreSQL text cannot hold NUL; a provider may still send one, and a client may send one
    // in the earlier messages of an OpenAI-style call (in a string or a key).
    let mut c = Conversation::start("alice", "p".into(), "offline", "m");
    c.messages = Some(serde_json::json!([{"role": "user", "content": "a\0b", "k\0": null}]));
    h.store.create(&c).await.unwrap();
    h.store
        .checkpoint(None, c.id, Some((0, "so\0far")))
        .await
        .unwrap();
    let mut done = c.clone();
    done.response = "an\0answer".into();
    done.status = Status::Complete;
    done.flags = vec![Flag {
        check: "deny_pattern".into(),
        verdict: "stopped".into(),
        detail: "x\0".into(),
    }];
    h.store.finish(&done).await.unwrap();
    let got = get(h, "alice", c.id).await.unwrap().unwrap();
    assert_eq!(got.response, "an\u{FFFD}answer");
    assert_eq!(got.flags[0].detail, "x\u{FFFD}");
    assert_eq!(
        got.messages,
        Some(serde_json::json!([{"role": "user", "content": "a\u{FFFD}b", "k\u{FFFD}": null}]))
    );
}

async fn ping_answers(h: &Harness) {
    h.store.ping().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_in_both_modes() {
    let db = TestDb::blank().await;
    let port = testkit::process::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let pool = common::store::from_settings(&testkit_settings(&url)).unwrap();
    let err = pool.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    let endpoint = format!("http://127.0.0.1:{}", testkit::process::free_port());
    let api = db.backend(Some(&endpoint), &[]);
    let err = api.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

fn testkit_settings(url: &str) -> common::Settings {
    let env: std::collections::HashMap<&str, &str> =
        [("DATABASE_URL", url), ("DB_CONNECT_TIMEOUT_MS", "500")].into();
    common::Settings::from_source(&env).unwrap()
}

#[tokio::test]
async fn a_statement_the_database_rejects_is_not_unavailable() {
    let h = Harness::data_api().await;
    // A row the table refuses is rejected by PostgreSQL, and reported as such through the API.
    h.db.client()
        .await
        .batch_execute("ALTER TABLE conversations ADD CONSTRAINT owner_set CHECK (owner <> 'x')")
        .await
        .unwrap();
    let err = h.store.finish(&finished("x", "p", "r")).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("owner_set"), "{err}");
}

#[tokio::test]
async fn a_data_api_page_of_100_typical_conversations_takes_at_most_3_calls() {
    let h = Harness::data_api().await;
    let api = h.api.as_ref().unwrap();
    // 101 conversations of 2,000 characters (the page and one more, so another page follows).
    let client = h.db.client().await;
    client
        .batch_execute(
            "INSERT INTO conversations (id, owner, prompt, response, status, provider, model, \
             created_at, updated_at) \
             SELECT gen_random_uuid(), 'alice', 'question ' || i, repeat('answer text ', 166), \
             'complete', 'openai', 'm', now() - i * interval '1 second', now() \
             FROM generate_series(1, 101) AS i",
        )
        .await
        .unwrap();
    let page = PageQuery {
        limit: 100,
        offset: 0,
        after: None,
    };
    let before = api.calls();
    let listed = h.store.list("alice", &page).await.unwrap();
    let calls = api.calls() - before;
    assert_eq!(listed.items.len(), 100);
    assert!(listed.more);
    assert!(
        listed
            .items
            .iter()
            .all(|c| c.response.chars().count() == 1992)
    );
    assert!(calls <= 3, "{calls} Data API calls for one page");

    // Text too long for one call's share is completed in batches, never the look-ahead row.
    client
        .batch_execute("UPDATE conversations SET response = repeat('long answer ', 2000)")
        .await
        .unwrap();
    let before = api.calls();
    let listed = h.store.list("alice", &page).await.unwrap();
    let calls = api.calls() - before;
    assert!(
        listed
            .items
            .iter()
            .all(|c| c.response.chars().count() == 24_000)
    );
    // 100 answers of 24,000 characters: 2.4 MB in calls of at most 900 KiB.
    assert!(calls <= 5, "{calls} Data API calls for one page");
}

/// A complete turn continuing `previous` (a first turn when `None`), `minutes` after a base time.
fn turn(owner: &str, previous: Option<&Conversation>, text: &str, minutes: u64) -> Conversation {
    let mut c = finished(owner, &format!("q {text}"), &format!("a {text}"));
    let base = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    c.created_at = base + Duration::from_secs(minutes * 60);
    c.updated_at = c.created_at;
    if let Some(p) = previous {
        c.thread_id = p.thread_id;
        c.previous_id = Some(p.id);
        c.system = p.system.clone();
    }
    c
}

async fn save_all(h: &Harness, turns: &[&Conversation]) {
    for t in turns {
        h.store.finish(t).await.unwrap();
    }
}

async fn a_chain_is_read_newest_first_as_far_as_the_budget_reaches(h: &Harness) {
    let mut first = turn("alice", None, "0", 0);
    first.system = Some("be brief".into());
    let mut chain = vec![first];
    for i in 1..5 {
        let next = turn("alice", chain.last(), &i.to_string(), i);
        chain.push(next);
    }
    save_all(h, &chain.iter().collect::<Vec<_>>()).await;
    let last = chain.last().unwrap();
    let read = h
        .store
        .chain("alice", last.id, 1_000_000)
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<_> = read.iter().map(|t| t.id).collect();
    let expected: Vec<_> = chain.iter().rev().map(|c| c.id).collect();
    assert_eq!(ids, expected);
    assert_eq!(read[0].prompt, "q 4");
    assert_eq!(read[0].response, "a 4");
    assert_eq!(read[0].system.as_deref(), Some("be brief"));
    assert!(read.iter().all(|t| t.thread_id == chain[0].id));
    // Each turn is 6 characters: a budget of 13 reads three (the third crosses it).
    let read = h.store.chain("alice", last.id, 13).await.unwrap().unwrap();
    assert_eq!(read.len(), 3);
    // A budget of nothing still reads the turn itself.
    let read = h.store.chain("alice", last.id, 0).await.unwrap().unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(h.store.chain("bob", last.id, 100).await.unwrap(), None);
    assert_eq!(
        h.store.chain("alice", Uuid::now_v7(), 100).await.unwrap(),
        None
    );
}

async fn branches_share_a_thread_and_each_chain_is_its_own(h: &Harness) {
    let root = turn("alice", None, "root", 0);
    let a = turn("alice", Some(&root), "a", 1);
    let b = turn("alice", Some(&root), "b", 2);
    let a2 = turn("alice", Some(&a), "a2", 3);
    save_all(h, &[&root, &a, &b, &a2]).await;
    let chain_a: Vec<_> = h
        .store
        .chain("alice", a2.id, 1_000)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(chain_a, [a2.id, a.id, root.id]);
    let chain_b: Vec<_> = h
        .store
        .chain("alice", b.id, 1_000)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(chain_b, [b.id, root.id]);
    let (thread, turns) = h
        .store
        .thread("alice", root.id, &testkit::whole_thread())
        .await
        .unwrap()
        .map(|(t, l)| (t, l.items))
        .unwrap();
    assert_eq!(thread.turns, 4);
    assert_eq!(thread.title, "q root");
    let ids: Vec<_> = turns.iter().map(|t| (t.id, t.previous_id)).collect();
    assert_eq!(
        ids,
        [
            (root.id, None),
            (a.id, Some(root.id)),
            (b.id, Some(root.id)),
            (a2.id, Some(a.id))
        ]
    );
}

async fn threads_are_listed_by_latest_activity_with_cursors(h: &Harness) {
    // Three threads; the oldest gets a new turn last, so it is the most recently active.
    let t1 = turn("alice", None, "one", 0);
    let t2 = turn("alice", None, "two", 1);
    let t3 = turn("alice", None, "three", 2);
    let t1b = turn("alice", Some(&t1), "one again", 10);
    save_all(h, &[&t1, &t2, &t3, &t1b]).await;
    testkit::seed_owned(&h.db, "bob", 3, 1).await;
    let page = |after| PageQuery {
        limit: 2,
        offset: 0,
        after,
    };
    let first = h.store.threads("alice", &page(None)).await.unwrap();
    let ids: Vec<_> = first.items.iter().map(|t| t.id).collect();
    assert_eq!(ids, [t1.id, t3.id]);
    assert!(first.more);
    assert_eq!(first.items[0].turns, 2);
    assert_eq!(first.items[0].updated_at, t1b.created_at);
    assert_eq!(first.items[0].created_at, t1.created_at);
    let last = first.items.last().unwrap();
    let after = Cursor {
        created_at: last.updated_at,
        id: last.id,
    };
    let second = h.store.threads("alice", &page(Some(after))).await.unwrap();
    assert_eq!(
        second.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        [t2.id]
    );
    assert!(!second.more);
    // Rows written without a thread (older writers, bulk loads) are threads of their own.
    assert_eq!(
        h.store
            .threads("bob", &page(None))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

async fn a_thread_is_read_oldest_first_and_deleted_whole(h: &Harness) {
    let root = turn("alice", None, "deletable zebra", 0);
    let next = turn("alice", Some(&root), "more zebra", 1);
    let other = turn("alice", None, "kept zebra", 2);
    save_all(h, &[&root, &next, &other]).await;
    // A turn still running in the thread, with a log.
    let mut running = Conversation::start("alice", "running zebra".into(), "offline", "m");
    running.thread_id = root.id;
    running.previous_id = Some(next.id);
    h.store.create(&running).await.unwrap();
    h.store
        .checkpoint(None, running.id, Some((0, "so far")))
        .await
        .unwrap();
    let (_, turns) = h
        .store
        .thread("alice", root.id, &testkit::whole_thread())
        .await
        .unwrap()
        .map(|(t, l)| (t, l.items))
        .unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[2].response, "so far");

    assert!(h.store.delete_thread("alice", root.id).await.unwrap());
    assert_eq!(
        h.store
            .thread("alice", root.id, &testkit::whole_thread())
            .await
            .unwrap()
            .map(|(t, l)| (t, l.items)),
        None
    );
    for gone in [root.id, next.id, running.id] {
        assert_eq!(get(h, "alice", gone).await.unwrap(), None);
    }
    let hits = h
        .store
        .search("alice", &search("zebra"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        hits.iter()
            .map(|hit| hit.conversation.id)
            .collect::<Vec<_>>(),
        [other.id]
    );
    let page = PageQuery {
        limit: 10,
        offset: 0,
        after: None,
    };
    let left: Vec<_> = h
        .store
        .list("alice", &page)
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [other.id]);
    let logs: i64 =
        h.db.client()
            .await
            .query_one("SELECT count(*) FROM turn_chunks", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(logs, 0);
    assert!(!h.store.delete_thread("alice", root.id).await.unwrap());
}

async fn threads_are_owner_isolated(h: &Harness) {
    let root = turn("alice", None, "mine", 0);
    save_all(h, &[&root]).await;
    assert_eq!(
        h.store
            .thread("bob", root.id, &testkit::whole_thread())
            .await
            .unwrap()
            .map(|(t, l)| (t, l.items)),
        None
    );
    assert!(!h.store.delete_thread("bob", root.id).await.unwrap());
    let page = PageQuery {
        limit: 10,
        offset: 0,
        after: None,
    };
    assert!(
        h.store
            .threads("bob", &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        h.store
            .thread("alice", root.id, &testkit::whole_thread())
            .await
            .unwrap()
            .map(|(t, l)| (t, l.items))
            .is_some()
    );
}

async fn a_turn_of_a_deleted_thread_does_not_bring_it_back(h: &Harness) {
    let root = turn("alice", None, "root", 0);
    save_all(h, &[&root]).await;
    let mut running = Conversation::start("alice", "late".into(), "offline", "m");
    running.thread_id = root.id;
    running.previous_id = Some(root.id);
    h.store.create(&running).await.unwrap();
    assert!(h.store.delete_thread("alice", root.id).await.unwrap());
    // Its checkpoints find the row gone and log nothing; its end is not saved.
    let seen = h
        .store
        .checkpoint(None, running.id, Some((0, "x")))
        .await
        .unwrap();
    assert!(!seen.found);
    let seen = h
        .store
        .checkpoint(Some(&running), running.id, Some((0, "x")))
        .await
        .unwrap();
    assert!(!seen.found);
    running.status = Status::Complete;
    running.response = "done".into();
    h.store.finish(&running).await.unwrap();
    assert_eq!(get(h, "alice", running.id).await.unwrap(), None);
    assert_eq!(
        h.store
            .thread("alice", root.id, &testkit::whole_thread())
            .await
            .unwrap()
            .map(|(t, l)| (t, l.items)),
        None
    );
    assert_eq!(h.db.count().await, 0);
}

#[tokio::test]
async fn existing_conversations_become_one_turn_threads_when_migrated() {
    let db = TestDb::blank().await;
    let pool = common::db::pool(&db.settings().db).unwrap();
    common::db::migrate_to(&pool, 6).await.unwrap();
    testkit::seed_owned(&db, "alice", 3, 1).await;
    common::db::migrate(&pool, "english").await.unwrap();
    let store = db.backend(None, &[]);
    let page = PageQuery {
        limit: 10,
        offset: 0,
        after: None,
    };
    let threads = store.threads("alice", &page).await.unwrap().items;
    assert_eq!(threads.len(), 3);
    assert!(
        threads
            .iter()
            .all(|t| t.turns == 1 && t.title.starts_with("prompt "))
    );
    let listed = store.list("alice", &page).await.unwrap().items;
    assert!(
        listed
            .iter()
            .all(|c| c.thread_id == c.id && c.previous_id.is_none())
    );
}

async fn a_running_turn_is_read_from_any_position_of_its_log(h: &Harness) {
    let c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    // Pieces as checkpoints write them: contiguous, multi-byte text included.
    h.store
        .checkpoint(None, c.id, Some((0, "Grüße ")))
        .await
        .unwrap();
    h.store
        .checkpoint(None, c.id, Some((6, "漢字🙂 ")))
        .await
        .unwrap();
    h.store
        .checkpoint(None, c.id, Some((10, "and more")))
        .await
        .unwrap();
    let whole = "Grüße 漢字🙂 and more";
    for from in [0usize, 3, 6, 8, 10, 17, 18, 40] {
        let read = h
            .store
            .read_log("alice", c.id, from as i64, 1000)
            .await
            .unwrap()
            .unwrap();
        let expected: String = whole.chars().skip(from).collect();
        assert_eq!(read.text, expected, "from {from}");
        assert_eq!(read.total, 18);
        assert_eq!(read.turn.status, Status::Streaming);
        assert_eq!(read.turn.response, "");
    }
    let read = h
        .store
        .read_log("alice", c.id, 2, 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.text, "üße 漢");
    assert_eq!(h.store.read_log("bob", c.id, 0, 10).await.unwrap(), None);
    assert_eq!(
        h.store
            .read_log("alice", Uuid::now_v7(), 0, 10)
            .await
            .unwrap(),
        None
    );
}

async fn an_ended_turn_is_read_from_its_record(h: &Harness) {
    let mut c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    h.store
        .checkpoint(None, c.id, Some((0, "so far")))
        .await
        .unwrap();
    c.response = "so far, and the end".into();
    c.status = Status::Complete;
    c.finish_reason = Some("stop".into());
    h.store.finish(&c).await.unwrap();
    let read = h
        .store
        .read_log("alice", c.id, 6, 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.text, ", and the end");
    assert_eq!((read.total, read.turn.status), (19, Status::Complete));
    assert_eq!(read.turn.finish_reason.as_deref(), Some("stop"));
    // The final save dropped the log.
    let logs: i64 =
        h.db.client()
            .await
            .query_one("SELECT count(*) FROM turn_chunks", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(logs, 0);
    // A turn abandoned while streaming reads as ended, its log as its text.
    let gone = Conversation::start("alice", "q".into(), "offline", "m");
    h.store.create(&gone).await.unwrap();
    h.store
        .checkpoint(None, gone.id, Some((0, "half")))
        .await
        .unwrap();
    h.db.client()
        .await
        .execute(
            "UPDATE conversations SET created_at = now() - interval '1 day' WHERE id = $1",
            &[&gone.id],
        )
        .await
        .unwrap();
    let read = h
        .store
        .read_log("alice", gone.id, 0, 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (read.text.as_str(), read.turn.status),
        ("half", Status::Partial)
    );
    assert_eq!(read.turn.error.as_deref(), Some("interrupted"));
}

async fn cancel_requests_reach_running_turns_only(h: &Harness) {
    let c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    assert_eq!(
        h.store.request_cancel("bob", c.id).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert!(
        !h.store
            .checkpoint(None, c.id, None)
            .await
            .unwrap()
            .cancel_requested
    );
    assert_eq!(
        h.store.request_cancel("alice", c.id).await.unwrap(),
        CancelOutcome::Requested
    );
    let seen = h.store.checkpoint(None, c.id, None).await.unwrap();
    assert!(seen.cancel_requested && seen.found);
    let mut done = c.clone();
    done.status = Status::Cancelled;
    done.error = Some("cancelled".into());
    h.store.finish(&done).await.unwrap();
    assert_eq!(
        h.store.request_cancel("alice", c.id).await.unwrap(),
        CancelOutcome::Finished(Status::Cancelled)
    );
    assert_eq!(
        h.store
            .request_cancel("alice", Uuid::now_v7())
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
}

/// A checkpoint whose commit its caller never heard of (a timeout after the commit) is sent
/// again, longer, at the same position: the log keeps the longer piece, so a reader gets every
/// character once (it got `abc` + `ghi` + `ghi` when the longer piece was dropped).
async fn a_piece_sent_again_keeps_the_longer_text(h: &Harness) {
    let c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    for (at, piece) in [(0, "abc"), (0, "abcdef"), (6, "ghi"), (0, "abc"), (6, "gh")] {
        h.store
            .checkpoint(None, c.id, Some((at, piece)))
            .await
            .unwrap();
    }
    for (from, expected) in [(0, "abcdefghi"), (3, "defghi"), (7, "hi")] {
        let read = h
            .store
            .read_log("alice", c.id, from, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (read.text.as_str(), read.total),
            (expected, 9),
            "from {from}"
        );
    }
    let row = get(h, "alice", c.id).await.unwrap().unwrap();
    assert_eq!(row.response, "abcdefghi");
}

/// A running turn whose process died stops sending heartbeats: within a few checkpoint
/// intervals it reads as interrupted (not after the longest a stream may run), and a cancel
/// finds it ended; a heartbeat brings it back.
async fn a_turn_not_heard_from_reads_as_interrupted(h: &Harness) {
    let c = Conversation::start("alice", "p".into(), "offline", "m");
    h.store.create(&c).await.unwrap();
    h.store
        .checkpoint(None, c.id, Some((0, "so far")))
        .await
        .unwrap();
    assert_eq!(
        get(h, "alice", c.id).await.unwrap().unwrap().status,
        Status::Streaming
    );
    h.db.client()
        .await
        .execute(
            "UPDATE conversations SET heartbeat_at = now() - interval '11 seconds' WHERE id = $1",
            &[&c.id],
        )
        .await
        .unwrap();
    let read = h
        .store
        .read_log("alice", c.id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            read.turn.status,
            read.turn.error.as_deref(),
            read.text.as_str()
        ),
        (Status::Partial, Some("interrupted"), "so far")
    );
    assert_eq!(
        h.store.request_cancel("alice", c.id).await.unwrap(),
        CancelOutcome::Finished(Status::Partial)
    );
    let seen = h.store.checkpoint(None, c.id, None).await.unwrap();
    assert!(seen.found && !seen.cancel_requested);
    assert_eq!(
        get(h, "alice", c.id).await.unwrap().unwrap().status,
        Status::Streaming
    );
}

/// A new turn whose insert races its thread's deletion: the deletion holds its locks for a
/// moment after leaving its tombstone, and the insert, which began meanwhile, must neither
/// survive nor bring the thread back.
async fn a_deletion_racing_a_new_turn_leaves_nothing(h: &Harness) {
    let first = finished("alice", "first", "a");
    h.store.finish(&first).await.unwrap();
    h.db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION slow_tomb() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(0.6); RETURN NULL; END $$; \
             CREATE TRIGGER slow_tomb AFTER INSERT ON deleted_threads \
             FOR EACH ROW EXECUTE FUNCTION slow_tomb();",
        )
        .await
        .unwrap();
    let store = h.store.clone();
    let thread = first.id;
    let deletion = tokio::spawn(async move { store.delete_thread("alice", thread).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = Conversation::start("alice", "second".into(), "offline", "m");
    next.thread_id = first.id;
    next.previous_id = Some(first.id);
    let _ = h.store.create(&next).await;
    assert!(deletion.await.unwrap().unwrap());
    let _ = h.store.finish(&next).await;
    assert_eq!(
        h.db.count().await,
        0,
        "a turn of the deleted thread survived"
    );
    let threads: i64 =
        h.db.client()
            .await
            .query_one("SELECT count(*) FROM threads", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(threads, 0, "the deleted thread came back");
}

/// A thread of 300 turns with 3 KB answers: the chain a continuation needs is read in pages
/// (the Data API answers at most 1 MiB, which reading the whole thread at once exceeds), as far
/// as the context budget reaches, newest first and unbroken.
async fn a_long_thread_of_long_turns_is_continued_in_pages(h: &Harness) {
    let answer = "lorem ipsum dolor sit amet ".repeat(111); // about 3 KB
    let client = h.db.client().await;
    let first = Uuid::now_v7();
    let mut previous: Option<Uuid> = None;
    let mut ids = Vec::new();
    let mut sql = String::from(
        "INSERT INTO conversations (id, owner, prompt, response, status, provider, model, \
         thread_id, previous_id, created_at, updated_at) VALUES ",
    );
    for i in 0..300 {
        let id = if i == 0 { first } else { Uuid::now_v7() };
        let prev = previous.map_or("NULL".to_owned(), |p| format!("'{p}'"));
        sql.push_str(&format!(
            "{}('{id}', 'alice', 'question {i}', '{answer}{i}', 'complete', 'openai', 'm', \
             '{first}', {prev}, now() + interval '{i} milliseconds', now())",
            if i == 0 { "" } else { ", " }
        ));
        ids.push(id);
        previous = Some(id);
    }
    client.batch_execute(&sql).await.unwrap();
    let last = *ids.last().unwrap();
    let chain = h
        .store
        .chain("alice", last, 200_000)
        .await
        .unwrap()
        .expect("the chain");
    let per_turn = answer.len() + 5 + "question 299".len();
    assert!(chain.len() >= 200_000 / per_turn, "{} turns", chain.len());
    assert!(
        chain.len() <= 200_000 / (answer.len()) + 2,
        "{} turns",
        chain.len()
    );
    let expected: Vec<Uuid> = ids.iter().rev().take(chain.len()).copied().collect();
    let got: Vec<Uuid> = chain.iter().map(|t| t.id).collect();
    assert_eq!(got, expected);
    // A small budget still reads only the newest turns; the whole thread reads when it fits.
    let whole = h
        .store
        .chain("alice", last, i64::MAX)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole.len(), 300);
    assert_eq!(whole.last().unwrap().id, first);
}

/// A thread's turns come a page at a time, oldest first, with a position to go on from.
async fn a_thread_is_read_a_page_at_a_time(h: &Harness) {
    let root = finished("alice", "t0", "a0");
    let mut turns = vec![root.clone()];
    for i in 1..5 {
        let mut t = finished("alice", &format!("t{i}"), "a");
        t.thread_id = root.id;
        t.previous_id = Some(turns[i - 1].id);
        turns.push(t);
    }
    save_all(h, &turns.iter().collect::<Vec<_>>()).await;
    let mut page = common::store::PageQuery {
        limit: 2,
        offset: 0,
        after: None,
    };
    let mut got = Vec::new();
    loop {
        let (_, listed) = h
            .store
            .thread("alice", root.id, &page)
            .await
            .unwrap()
            .unwrap();
        assert!(listed.items.len() <= 2);
        got.extend(listed.items.iter().map(|c| c.id));
        if !listed.more {
            break;
        }
        page.after = listed.items.last().map(Cursor::after);
    }
    assert_eq!(got, turns.iter().map(|t| t.id).collect::<Vec<_>>());
}

/// The roles of migration V9: a reader reads and nothing more, the history function's login
/// also deletes threads and turns, the stream function's writes turns but cannot change the schema.
async fn each_function_connects_as_the_least_it_needs(h: &Harness) {
    let tag = &Uuid::now_v7().simple().to_string()[20..];
    let (reader, history, writer) = (
        format!("t_reader_{tag}"),
        format!("t_history_{tag}"),
        format!("t_writer_{tag}"),
    );
    h.store
        .ensure_login(&reader, "pw-reader", "llm_stream_reader")
        .await
        .unwrap();
    h.store
        .ensure_login(
            &history,
            "pw-history",
            "llm_stream_reader,llm_stream_thread_deleter",
        )
        .await
        .unwrap();
    h.store
        .ensure_login(&writer, "pw-writer", "llm_stream_writer")
        .await
        .unwrap();
    // Again: the password changes, nothing fails.
    h.store
        .ensure_login(&reader, "pw-reader-2", "llm_stream_reader")
        .await
        .unwrap();
    let thread = finished("alice", "p", "a");
    h.store.finish(&thread).await.unwrap();
    let as_user = |user: &str| {
        let (scheme, rest) = h.db.url.split_once("://").unwrap();
        let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
        format!("{scheme}://{user}:pw@{rest}")
    };
    let connect = |user: String| async move {
        let (client, conn) = tokio_postgres::connect(&user, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    };
    let denied = |r: Result<u64, tokio_postgres::Error>| {
        r.err()
            .and_then(|e| e.code().cloned())
            .is_some_and(|c| c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    };

    let r = connect(as_user(&reader)).await;
    let n: i64 = r
        .query_one("SELECT count(*) FROM conversations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert!(denied(r.execute("DELETE FROM conversations", &[]).await));
    assert!(denied(
        r.execute(
            "INSERT INTO deleted_threads (id) VALUES (gen_random_uuid())",
            &[]
        )
        .await
    ));
    assert!(denied(r.execute("CREATE TABLE t_nope (x int)", &[]).await));

    let w = connect(as_user(&writer)).await;
    assert!(denied(w.execute("CREATE TABLE t_nope (x int)", &[]).await));
    assert!(denied(
        w.execute("ALTER TABLE conversations ADD COLUMN x int", &[])
            .await
    ));
    let mut env = std::collections::HashMap::new();
    let writer_url = as_user(&writer);
    env.insert("DATABASE_URL", writer_url.as_str());
    let settings = common::Settings::from_source(&env).unwrap();
    let as_writer = common::store::PgStore::from_settings(&settings).unwrap();
    use common::store::{ConversationCreate, ConversationFinish, ConversationLog};
    let mut turn = Conversation::start("alice", "q".into(), "offline", "m");
    turn.thread_id = thread.id;
    turn.previous_id = Some(thread.id);
    as_writer.create(&turn).await.unwrap();
    as_writer
        .checkpoint(None, turn.id, Some((0, "so far")))
        .await
        .unwrap();
    as_writer.request_cancel("alice", turn.id).await.unwrap();
    turn.status = Status::Complete;
    turn.response = "so far, done".into();
    as_writer.finish(&turn).await.unwrap();

    let hist = connect(as_user(&history)).await;
    // `DELETE /history/{id}`: the newest turn of the thread, then (below) the thread.
    let outcome: String = hist
        .query_one("SELECT delete_turn($1, 'alice')", &[&turn.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "deleted");
    let deleted: bool = hist
        .query_one("SELECT delete_thread($1, 'alice')", &[&thread.id])
        .await
        .unwrap()
        .get(0);
    assert!(deleted);
    assert_eq!(h.db.count().await, 0);

    let admin = h.db.client().await;
    for role in [&reader, &history, &writer] {
        admin
            .batch_execute(&format!("DROP ROLE {role}"))
            .await
            .unwrap();
    }
}
