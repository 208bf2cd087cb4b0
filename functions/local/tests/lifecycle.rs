#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The data's lifecycle over real HTTP and the real commands, on the pool and on the Data API
//! backend: retention (`local purge`), export (`GET /export`, `local export`), erasure (`local
//! owner erase`) and deleting one turn (`DELETE /history/{id}`).

use std::process::Command;

use serde_json::{Value, json};
use testkit::TestDb;
use testkit::data_api::DataApi;
use testkit::process::{Proc, serve};
use testkit::sse;
use uuid::Uuid;

/// A server (one process) on a new database, through the Data API emulator with `data_api`.
struct Site {
    server: (Proc, String),
    db: TestDb,
    env: Vec<(String, String)>,
    api: Option<DataApi>,
}

async fn site(data_api: bool, extra: &[(&str, &str)]) -> Site {
    let db = TestDb::new().await;
    let api = if data_api {
        Some(DataApi::start(&testkit::admin_url()).await)
    } else {
        None
    };
    let mut env: Vec<(String, String)> = match &api {
        Some(api) => db
            .data_api_env(&api.endpoint, &[])
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        None => vec![("DATABASE_URL".into(), db.url.clone())],
    };
    for (k, v) in extra {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = serve(env!("CARGO_BIN_EXE_local"), "lifecycle", &pairs).await;
    Site {
        server,
        db,
        env,
        api,
    }
}

impl Site {
    fn base(&self) -> &str {
        &self.server.1
    }

    /// Runs `local ARGS` with this site's settings: (exit ok, stdout, stderr).
    fn local(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_local"));
        cmd.args(args).env_remove("DATABASE_URL");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The backend the server uses, for calls the commands make.
    fn backend(&self) -> std::sync::Arc<dyn common::store::Backend> {
        self.db
            .backend(self.api.as_ref().map(|a| a.endpoint.as_str()), &[])
    }

    /// Streams a turn (continuing `previous`) with `key` (none: AUTH=off); its id.
    async fn turn(&self, key: Option<&str>, prompt: &str, previous: Option<&str>) -> String {
        let mut body = json!({ "prompt": prompt });
        if let Some(p) = previous {
            body["previous_id"] = json!(p);
        }
        let mut req = testkit::http_client()
            .post(format!("{}/stream", self.base()))
            .json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let events = sse::read(resp, None).await;
        assert_eq!(events.last().unwrap().name, "done", "{events:?}");
        events[0].data["id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, key: Option<&str>, path: &str) -> (u16, Value) {
        let mut req = testkit::http_client().get(format!("{}{path}", self.base()));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn sql(&self, statement: &str) {
        self.db
            .client()
            .await
            .batch_execute(statement)
            .await
            .unwrap();
    }

    async fn number(&self, query: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(query, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Moves turns `ids` (and so their threads' latest activity) `days` days back.
    async fn age(&self, ids: &[&str], days: u32) {
        let list = ids
            .iter()
            .map(|i| format!("'{i}'"))
            .collect::<Vec<_>>()
            .join(",");
        self.sql(&format!(
            "UPDATE conversations SET created_at = created_at - interval '{days} days' \
             WHERE id IN ({list}); \
             UPDATE threads t SET updated_at = (SELECT max(created_at) FROM conversations c \
             WHERE c.thread_id = t.id), created_at = (SELECT min(created_at) FROM conversations c \
             WHERE c.thread_id = t.id)"
        ))
        .await;
    }
}

testkit::on_both_backends!(
    purge_removes_old_threads_whole_and_keeps_the_rest,
    purge_batches_are_bounded_and_a_long_thread_goes_from_its_newest_end,
    export_sends_every_turn_of_the_caller_once_oldest_first,
    erase_leaves_no_row_of_the_owner_and_touches_no_one_else,
);

async fn purge_removes_old_threads_whole_and_keeps_the_rest(data_api: bool) {
    let s = site(data_api, &[("AUTH", "off")]).await;
    // Old: a thread of three turns, a standalone turn with a rare word. Kept: a thread whose
    // first turn is old but whose latest is recent, and a recent standalone turn.
    let a1 = s.turn(None, "old thread one", None).await;
    let a2 = s.turn(None, "old thread two", Some(&a1)).await;
    let a3 = s.turn(None, "old thread three", Some(&a2)).await;
    let lone = s.turn(None, "quokkaword standalone", None).await;
    let k1 = s.turn(None, "kept first narwhalword", None).await;
    let k2 = s.turn(None, "kept second", Some(&k1)).await;
    let recent = s.turn(None, "recent standalone", None).await;
    s.age(&[&a1, &a2, &a3, &lone, &k1], 40).await;
    s.age(&[&a1], 1).await; // a thread's turns need not be equally old
    // Leftovers of the turn log: a piece that landed after its turn's final save, and a turn
    // abandoned by its writer a day ago (still `streaming`, its text only in its log).
    let abandoned = Uuid::now_v7();
    s.sql(&format!(
        "INSERT INTO turn_chunks (turn_id, position, text) VALUES ('{k2}', 999, 'late'); \
         INSERT INTO conversations (id, owner, prompt, status, provider, model, created_at, \
         updated_at, heartbeat_at) VALUES ('{abandoned}', 'local', 'abandoned', 'streaming', \
         'offline', 'offline-echo', now() - interval '1 day', now() - interval '1 day', \
         now() - interval '1 day'); \
         INSERT INTO turn_chunks (turn_id, position, text) VALUES \
         ('{abandoned}', 0, 'half an '), ('{abandoned}', 8, 'answer')"
    ))
    .await;
    let usage_before = s.get(None, "/usage").await.1["total"].clone();
    let turns_before = s.db.count().await;

    // A dry run counts and changes nothing.
    let (ok, out, err) = s.local(&["purge", "--older-than", "30", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("would purge 2 threads (4 turns)"), "{out}");
    assert_eq!(s.db.count().await, turns_before);
    assert_eq!(s.number("SELECT count(*) FROM turn_chunks").await, 3);

    // Neither a flag nor RETENTION_DAYS: nothing to purge by, and a clear error.
    let (ok, _, err) = s.local(&["purge"]);
    assert!(!ok);
    assert!(
        err.contains("--older-than DAYS or set RETENTION_DAYS"),
        "{err}"
    );
    let (ok, _, err) = s.local(&["purge", "--older-than", "soon"]);
    assert!(!ok);
    assert!(err.contains("whole number of days"), "{err}");

    let (ok, out, err) = s.local(&["purge", "--older-than", "30"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("purged 2 threads (4 turns)"), "{out}");
    assert!(out.contains("turn logs dropped: 2"), "{out}");
    for gone in [&a1, &a2, &a3, &lone] {
        assert_eq!(s.get(None, &format!("/history/{gone}")).await.0, 404);
    }
    for kept in [&k1, &k2, &recent] {
        assert_eq!(s.get(None, &format!("/history/{kept}")).await.0, 200);
    }
    let (_, threads) = s.get(None, "/threads").await;
    let titles: Vec<&str> = threads["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 3, "{titles:?}");
    assert!(
        !titles
            .iter()
            .any(|t| t.starts_with("old") || t.starts_with("quokka"))
    );
    // Search agrees: the removed turn's rare word finds nothing, a kept one's still finds it.
    let (_, hits) = s.get(None, "/search?query=quokkaword").await;
    assert_eq!(hits["items"].as_array().unwrap().len(), 0);
    let (_, hits) = s.get(None, "/search?query=narwhalword").await;
    assert_eq!(hits["items"].as_array().unwrap().len(), 1);
    // The abandoned turn's text moved into its row, which still reads as interrupted.
    let (_, one) = s.get(None, &format!("/history/{abandoned}")).await;
    assert_eq!(one["response"], "half an answer");
    assert_eq!(one["status"], "partial");
    assert_eq!(one["error"], "interrupted");
    assert_eq!(s.number("SELECT count(*) FROM turn_chunks").await, 0);
    // Spent is spent: the usage rollup is the same.
    assert_eq!(s.get(None, "/usage").await.1["total"], usage_before);

    // Again: nothing left to remove.
    let (ok, out, _) = s.local(&["purge", "--older-than", "30"]);
    assert!(ok);
    assert!(out.contains("purged 0 threads (0 turns)"), "{out}");
}

async fn purge_batches_are_bounded_and_a_long_thread_goes_from_its_newest_end(data_api: bool) {
    let s = site(data_api, &[("AUTH", "off")]).await;
    // 1,500 old turns in one thread, and 1,200 old standalone turns.
    s.sql(
        "INSERT INTO conversations (id, owner, prompt, response, status, provider, model, \
         created_at, updated_at, thread_id, previous_id) \
         SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 'local', \
         'long ' || i, 'a', 'complete', 'offline', 'm', \
         now() - interval '90 days' + i * interval '1 second', now(), \
         '00000000-0000-7000-8000-000000000001', \
         CASE WHEN i > 1 THEN ('00000000-0000-7000-8000-' || lpad((i - 1)::text, 12, '0'))::uuid END \
         FROM generate_series(1, 1500) i; \
         INSERT INTO conversations (id, owner, prompt, response, status, provider, model, \
         created_at, updated_at) \
         SELECT gen_random_uuid(), 'local', 'lone ' || i, 'a', 'complete', 'offline', 'm', \
         now() - interval '60 days', now() FROM generate_series(1, 1200) i",
    )
    .await;
    let store = s.backend();
    let before = Some(time::OffsetDateTime::now_utc() - time::Duration::days(30));
    // The long thread is the oldest: a batch of its newest 1,000 turns alone.
    let (threads, turns) = store.purge_batch(before, None, 1000, false).await.unwrap();
    assert_eq!((threads, turns), (0, 1000));
    // What stays of it is its start: turns 1..=500, each continuing one that is still there.
    let left = s
        .number(
            "SELECT count(*) FROM conversations WHERE prompt LIKE 'long %' \
             AND split_part(prompt, ' ', 2)::int <= 500",
        )
        .await;
    assert_eq!(left, 500);
    assert_eq!(
        s.number("SELECT count(*) FROM conversations WHERE prompt LIKE 'long %'")
            .await,
        500
    );
    assert_eq!(
        s.number(
            "SELECT turns::int8 FROM threads WHERE id = '00000000-0000-7000-8000-000000000001'"
        )
        .await,
        500
    );
    // Then batches of whole threads, never more than the bound.
    let mut batches = 0;
    loop {
        let (threads, turns) = store.purge_batch(before, None, 1000, false).await.unwrap();
        assert!(turns <= 1000, "a batch of {turns} turns");
        if threads == 0 && turns == 0 {
            break;
        }
        batches += 1;
    }
    assert!(batches >= 2, "{batches}");
    assert_eq!(s.db.count().await, 0);
    assert_eq!(s.number("SELECT count(*) FROM threads").await, 0);
}

async fn export_sends_every_turn_of_the_caller_once_oldest_first(data_api: bool) {
    let s = site(data_api, &[("AUTH", "required")]).await;
    let alice = s.db.key("alice", "laptop").await;
    let bob = s.db.key("bob", "laptop").await;
    let mut ids = Vec::new();
    let first = s.turn(Some(&alice), "export one", None).await;
    ids.push(first.clone());
    ids.push(s.turn(Some(&alice), "export two", Some(&first)).await);
    ids.push(s.turn(Some(&alice), "export three", None).await);
    s.turn(Some(&bob), "not alice's", None).await;
    // More than a page of them (100 a read), seeded.
    testkit::seed_owned(&s.db, "alice", 230, 7).await;

    let resp = testkit::http_client()
        .get(format!("{}/export", s.base()))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.text().await.unwrap();
    assert!(body.ends_with('\n'));
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 233);
    assert!(lines.iter().all(|l| l["owner"] == "alice"));
    let mut seen = std::collections::HashSet::new();
    assert!(
        lines
            .iter()
            .all(|l| seen.insert(l["id"].as_str().unwrap().to_owned()))
    );
    let order: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["created_at"].as_str().unwrap().to_owned(),
                l["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| {
        let t = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        (t(&a.0), &a.1).cmp(&(t(&b.0), &b.1))
    });
    assert_eq!(order, sorted, "oldest first, ties by id");
    // Each line is the turn as GET /history/{id} has it.
    let last = lines.iter().find(|l| l["id"] == ids[1].as_str()).unwrap();
    let (_, one) = s.get(Some(&alice), &format!("/history/{}", ids[1])).await;
    assert_eq!(*last, one);
    assert_eq!(last["previous_id"], first.as_str());

    // from/to bound by creation time; a bad one is a 422.
    let since = lines[lines.len() - 2]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/export?from={}", s.base(), since.replace('+', "%2B"));
    let tail = testkit::http_client()
        .get(url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        tail.lines().count() >= 2 && tail.lines().count() < 233,
        "{tail}"
    );
    let (status, err) = s.get(Some(&alice), "/export?to=tomorrow").await;
    assert_eq!(status, 422);
    assert_eq!(testkit::call::error_code(&err), "invalid_request");
    assert_eq!(s.get(None, "/export").await.0, 401);
    // Bob's export holds his one turn.
    let (_, bobs) = s.get(Some(&bob), "/export").await;
    assert_eq!(bobs["owner"], "bob");

    // The operator's command writes the same lines.
    let (ok, out, err) = s.local(&["export", "alice"]);
    assert!(ok, "{err}");
    assert_eq!(out, body);
    assert!(err.contains("exported 233 turns"), "{err}");
}

async fn erase_leaves_no_row_of_the_owner_and_touches_no_one_else(data_api: bool) {
    let s = site(data_api, &[("AUTH", "required")]).await;
    let owner = "erase-me-7f3a";
    let (_, limited) =
        s.db.limited_key(
            owner,
            "limited",
            &common::spend::KeyLimits {
                rpm: Some(100),
                budget_usd: Some(10.0),
                period: common::spend::Period::Month,
                ..Default::default()
            },
        )
        .await;
    let plain = s.db.key(owner, "plain").await;
    let bob = s.db.key("bob-stays", "laptop").await;
    let first = s.turn(Some(&limited), "erase me", None).await;
    s.turn(Some(&limited), "and me", Some(&first)).await;
    s.turn(Some(&plain), "me too", None).await;
    let bobs = s.turn(Some(&bob), "bob's own", None).await;
    // A leftover log piece of one of the owner's turns.
    s.sql(&format!(
        "INSERT INTO turn_chunks (turn_id, position, text) VALUES ('{first}', 999, 'late')"
    ))
    .await;
    let usage_rows = s
        .number(&format!(
            "SELECT count(*) FROM usage_daily WHERE owner = '{owner}'"
        ))
        .await;
    assert!(usage_rows >= 1);
    let bob_usage = s.get(Some(&bob), "/usage").await.1["total"].clone();

    let (ok, out, err) = s.local(&["owner", "erase", owner]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "2 threads, 3 turns, 2 keys, {usage_rows} usage rows"
        )),
        "{out}"
    );
    // No table holds a row that names the owner, or a key or turn of it.
    let client = s.db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 10, "{tables:?}");
    for table in &tables {
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%{owner}%'"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} still holds a row of the owner");
    }
    for table in ["key_spend", "key_window", "reservations", "turn_chunks"] {
        assert_eq!(
            s.number(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    // The erasure is recorded by the owner's hash only.
    assert_eq!(
        s.number(&format!(
            "SELECT count(*) FROM erasures WHERE owner_sha256 = sha256('{owner}'::bytea) \
             AND turns = 3 AND threads = 2 AND keys = 2"
        ))
        .await,
        1
    );
    // The owner's keys no longer open anything; bob's data and usage are untouched.
    assert_eq!(s.get(Some(&plain), "/history").await.0, 401);
    assert_eq!(s.get(Some(&bob), &format!("/history/{bobs}")).await.0, 200);
    assert_eq!(s.get(Some(&bob), "/usage").await.1["total"], bob_usage);
    // Erasing again finds nothing, and says so.
    let (ok, out, _) = s.local(&["owner", "erase", owner]);
    assert!(ok);
    assert!(
        out.contains("0 threads, 0 turns, 0 keys, 0 usage rows"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_history_removes_one_turn_from_the_newest_end() {
    let s = site(
        false,
        &[("AUTH", "required"), ("OFFLINE_CHUNK_DELAY_MS", "100")],
    )
    .await;
    let alice = s.db.key("alice", "laptop").await;
    let bob = s.db.key("bob", "laptop").await;
    let http = testkit::http_client();
    let delete = |key: String, id: String| {
        let (http, base) = (http.clone(), s.base().to_owned());
        async move {
            let resp = http
                .delete(format!("{base}/history/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let first = s.turn(Some(&alice), "first zorillaword", None).await;
    let second = s.turn(Some(&alice), "second", Some(&first)).await;

    // A turn that a later one continues: 409, nothing changes.
    let (status, body) = delete(alice.clone(), first.clone()).await;
    assert_eq!(status, 409);
    assert_eq!(testkit::call::error_code(&body), "turn_continued");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DELETE /threads/")
    );
    // Someone else's: not found. A malformed id: 422.
    assert_eq!(delete(bob.clone(), second.clone()).await.0, 404);
    assert_eq!(delete(alice.clone(), "nope".into()).await.0, 422);
    assert_eq!(
        delete(alice.clone(), Uuid::now_v7().to_string()).await.0,
        404
    );

    // The newest: gone from history and its thread; the thread counts one turn.
    assert_eq!(delete(alice.clone(), second.clone()).await.0, 204);
    assert_eq!(
        s.get(Some(&alice), &format!("/history/{second}")).await.0,
        404
    );
    let (_, thread) = s.get(Some(&alice), &format!("/threads/{first}")).await;
    assert_eq!(thread["thread"]["turns"], 1);
    // Then the first, and its thread goes with it; search agrees.
    assert_eq!(delete(alice.clone(), first.clone()).await.0, 204);
    assert_eq!(
        s.get(Some(&alice), &format!("/threads/{first}")).await.0,
        404
    );
    let (_, hits) = s.get(Some(&alice), "/search?query=zorillaword").await;
    assert_eq!(hits["items"].as_array().unwrap().len(), 0);
    assert_eq!(delete(alice.clone(), first.clone()).await.0, 404);

    // A turn still running: 409 until it ends.
    let resp = http
        .post(format!("{}/stream", s.base()))
        .bearer_auth(&alice)
        .json(&json!({ "prompt": "a slow one" }))
        .send()
        .await
        .unwrap();
    let (events, rest) = sse::read_some(resp, 1).await;
    let running = events[0].data["id"].as_str().unwrap().to_owned();
    let (status, body) = delete(alice.clone(), running.clone()).await;
    assert_eq!(status, 409);
    assert_eq!(testkit::call::error_code(&body), "turn_running");
    let events = rest.finish().await;
    assert_eq!(events.last().unwrap().name, "done");
    testkit::finished(&s.db.store(), "alice", running.parse().unwrap()).await;
    assert_eq!(delete(alice.clone(), running).await.0, 204);
}
