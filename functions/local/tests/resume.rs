#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Re-attaching and cancelling, over real HTTP against two server processes that share one
//! database (as two Lambda sandboxes do): the process that generates a turn (A) and another one
//! (B) that only has the database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer};
use testkit::process::{Proc, serve};
use testkit::sse::{self, Received};

fn client() -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Two servers on one database, with `extra` settings.
async fn two(db: &TestDb, extra: &[(&str, &str)]) -> ((Proc, String), (Proc, String)) {
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("AUTH", "off"),
        ("CHECKPOINT_INTERVAL_MS", "200"),
        ("RESUME_POLL_MS", "50"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    let a = serve(env!("CARGO_BIN_EXE_local"), "local-a", &env).await;
    let b = serve(env!("CARGO_BIN_EXE_local"), "local-b", &env).await;
    (a, b)
}

/// Two servers on one database whose provider is `fake`.
async fn two_on(db: &TestDb, fake: &FakeOpenAi) -> ((Proc, String), (Proc, String)) {
    let base_url = fake.base_url();
    two(
        db,
        &[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", base_url.as_str()),
        ],
    )
    .await
}

async fn start(http: &reqwest::Client, base: &str, prompt: &str) -> reqwest::Response {
    let resp = http
        .post(format!("{base}/stream"))
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

fn id_of(events: &[Received]) -> String {
    assert_eq!(events[0].name, "start", "{events:?}");
    events[0].data["id"].as_str().unwrap().to_owned()
}

/// The stored answer and the status of turn `id`, once it has ended.
async fn stored(db: &TestDb, id: &str) -> (String, String, Option<String>) {
    let id = uuid::Uuid::parse_str(id).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT response, status, error FROM conversations WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let status: String = row.get(1);
        if status != "streaming" {
            return (row.get(0), status, row.get(2));
        }
        assert!(Instant::now() < until, "the turn never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The delta ids are the positions after each delta in the stored text.
fn assert_positions(events: &[Received], from: usize) {
    let mut at = from;
    for e in events.iter().filter(|e| e.name == "delta") {
        at += e.data["text"].as_str().unwrap().chars().count();
        assert_eq!(e.id.as_deref(), Some(at.to_string().as_str()), "{events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_re_attaches_anywhere_gets_exactly_the_rest() {
    let db = TestDb::new().await;
    let ((_a, a), (_b, b)) = two(&db, &[("OFFLINE_CHUNK_DELAY_MS", "60")]).await;
    let http = client();
    let prompt = "tell me a long story about rivers and lanterns and quiet markets";

    // Re-attaching to the other process, with Last-Event-ID (what EventSource sends).
    let first = sse::read(start(&http, &a, prompt).await, Some(5)).await;
    let id = id_of(&first);
    let position = sse::last_id(&first).unwrap();
    assert_positions(&first, 0);
    let rest = http
        .get(format!("{b}/stream/{id}"))
        .header("last-event-id", &position)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = sse::read(rest, None).await;
    assert_eq!(rest[0].name, "start");
    assert_positions(&rest, position.parse().unwrap());
    let (answer, status, _) = stored(&db, &id).await;
    assert_eq!(status, "complete");
    assert_eq!(format!("{}{}", sse::text(&first), sse::text(&rest)), answer);
    let last = rest.last().unwrap();
    assert_eq!(last.name, "done");
    assert_eq!(
        (last.data["id"].as_str(), &last.data["saved"]),
        (Some(id.as_str()), &json!(true))
    );

    // Within the process that generates it, with ?after=.
    let first = sse::read(start(&http, &a, prompt).await, Some(3)).await;
    let id = id_of(&first);
    let position = sse::last_id(&first).unwrap();
    let rest = http
        .get(format!("{a}/stream/{id}?after={position}"))
        .send()
        .await
        .unwrap();
    let rest = sse::read(rest, None).await;
    let (answer, _, _) = stored(&db, &id).await;
    assert_eq!(format!("{}{}", sse::text(&first), sse::text(&rest)), answer);
    assert_positions(&rest, position.parse().unwrap());
    assert_eq!(rest.last().unwrap().name, "done");

    // After the turn ended: the rest and the final event at once, from either process; from
    // the start when no position is given.
    for base in [&a, &b] {
        let after = http
            .get(format!("{base}/stream/{id}?after=10"))
            .send()
            .await
            .unwrap();
        let after = sse::read(after, None).await;
        assert_eq!(sse::names(&after), ["start", "delta", "done"]);
        assert_eq!(
            sse::text(&after),
            answer.chars().skip(10).collect::<String>()
        );
        let whole = sse::read(
            http.get(format!("{base}/stream/{id}"))
                .send()
                .await
                .unwrap(),
            None,
        )
        .await;
        assert_eq!(sse::text(&whole), answer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_beyond_what_is_logged_waits_for_the_text() {
    let db = TestDb::new().await;
    // Checkpoints every 2 s: the other process's log lags the live stream.
    let ((_a, a), (_b, b)) = two(
        &db,
        &[
            ("OFFLINE_CHUNK_DELAY_MS", "50"),
            ("CHECKPOINT_INTERVAL_MS", "2000"),
        ],
    )
    .await;
    let http = client();
    let first = sse::read(start(&http, &a, "wait for me").await, Some(8)).await;
    let id = id_of(&first);
    let position = sse::last_id(&first).unwrap();
    let rest = http
        .get(format!("{b}/stream/{id}"))
        .header("last-event-id", &position)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = sse::read(rest, None).await;
    let (answer, _, _) = stored(&db, &id).await;
    assert_eq!(format!("{}{}", sse::text(&first), sse::text(&rest)), answer);
}

/// A long answer (`words` words, `gap` apart) running on the first of two servers on one
/// database, its client reading it in a task.
struct Running {
    db: TestDb,
    fake: FakeOpenAi,
    a: (Proc, String),
    b: (Proc, String),
    http: reqwest::Client,
    id: String,
    reader: tokio::task::JoinHandle<Vec<Received>>,
}

async fn running_on_two(words: usize, gap: Duration, prompt: &str) -> Running {
    let words: Vec<String> = (0..words).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let fake = FakeOpenAi::start(vec![Reply::Stream(answer(&refs, gap))]).await;
    let db = TestDb::new().await;
    let (a, b) = two_on(&db, &fake).await;
    let http = client();
    let resp = start(&http, &a.1, prompt).await;
    let id = resp.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let reader = tokio::spawn(sse::read(resp, None));
    Running {
        db,
        fake,
        a,
        b,
        http,
        id,
        reader,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_process_stops_the_generation_within_a_checkpoint() {
    let Running {
        db,
        fake,
        a: (_a, a),
        b: (_b, b),
        http,
        id,
        reader,
    } = running_on_two(100, Duration::from_millis(100), "a long answer").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent = Instant::now();
    let cancel = http
        .post(format!("{b}/stream/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let body: Value = cancel.json().await.unwrap();
    assert_eq!(
        (body["id"].as_str(), body["status"].as_str()),
        (Some(id.as_str()), Some("cancelling"))
    );
    let events = reader.await.unwrap();
    let stopped = sent.elapsed();
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.name.as_str(),
            last.data["status"].as_str(),
            last.data["code"].as_str()
        ),
        ("error", Some("cancelled"), Some("cancelled"))
    );
    // Within one checkpoint interval (200 ms) and the save, far before the answer's 10 s.
    assert!(
        stopped < Duration::from_secs(3),
        "stopped after {stopped:?}"
    );
    let (answer, status, error) = stored(&db, &id).await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("cancelled", Some("cancelled"))
    );
    assert_eq!(answer, sse::text(&events));
    let whole: usize = (0..100).map(|i| format!("w{i} ").len()).sum();
    assert!(!answer.is_empty() && answer.len() < whole);
    // The provider's connection was closed before the answer's end: no more tokens.
    let until = Instant::now() + Duration::from_secs(5);
    while fake.dropped_by_client() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.dropped_by_client(), 1);

    // Again: the turn has ended.
    for base in [&a, &b] {
        let again = http
            .post(format!("{base}/stream/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 409);
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["error"]["code"], "already_finished");
    }
    let unknown = http
        .post(format!("{b}/stream/{}/cancel", uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// A Stop or a re-attach sent to another process at once, before the turn's first text (and so
/// before its row is written), still reaches the turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_reaches_a_turn_before_its_first_text() {
    let mut slow = vec![Part::Sleep(Duration::from_millis(1500))];
    slow.extend(answer(&["never ", "sent"], Duration::from_millis(10)));
    let fake = FakeOpenAi::start(vec![Reply::Stream(slow.clone()), Reply::Stream(slow)]).await;
    let db = TestDb::new().await;
    let ((_a, a), (_b, b)) = two_on(&db, &fake).await;
    let http = client();
    let id_of = |resp: &reqwest::Response| {
        resp.headers()["x-conversation-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Re-attaching at once: the same start, then the whole answer.
    let resp = start(&http, &a, "first").await;
    let id = id_of(&resp);
    let reader = tokio::spawn(sse::read(resp, None));
    let rest = http.get(format!("{b}/stream/{id}")).send().await.unwrap();
    assert_eq!(rest.status(), 200);
    let rest = sse::read(rest, None).await;
    let events = reader.await.unwrap();
    assert_eq!(sse::text(&rest), "never sent");
    assert_eq!(sse::text(&rest), sse::text(&events));
    assert_eq!(rest.last().unwrap().name, "done", "{rest:?}");

    // Stopping at once: the turn is cancelled and the provider's connection closed.
    let resp = start(&http, &a, "second").await;
    let id = id_of(&resp);
    let reader = tokio::spawn(sse::read(resp, None));
    let cancel = http
        .post(format!("{b}/stream/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let events = reader.await.unwrap();
    assert_eq!(
        events.last().unwrap().data["code"],
        "cancelled",
        "{events:?}"
    );
    let (answer, status, _) = stored(&db, &id).await;
    assert_eq!((answer.as_str(), status.as_str()), ("", "cancelled"));
    let until = Instant::now() + Duration::from_secs(5);
    while fake.dropped_by_client() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.dropped_by_client(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_the_generating_process_is_immediate() {
    let db = TestDb::new().await;
    let ((_a, a), _) = two(&db, &[("OFFLINE_CHUNK_DELAY_MS", "200")]).await;
    let http = client();
    let resp = start(&http, &a, "stop me").await;
    let id = resp.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let reader = tokio::spawn(sse::read(resp, None));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = http
        .post(format!("{a}/stream/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let body: Value = cancel.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    let events = reader.await.unwrap();
    assert_eq!(events.last().unwrap().data["code"], "cancelled");
    let (_, status, _) = stored(&db, &id).await;
    assert_eq!(status, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_attaching_needs_the_owners_key_and_a_well_formed_position() {
    let db = TestDb::new().await;
    let (alice, bob) = (db.key("alice", "k").await, db.key("bob", "k").await);
    let (_p, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-resume-auth",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "required"),
            ("OFFLINE_CHUNK_DELAY_MS", "0"),
        ],
    )
    .await;
    let http = client();
    let resp = http
        .post(format!("{base}/stream"))
        .bearer_auth(&alice)
        .json(&json!({"prompt": "mine"}))
        .send()
        .await
        .unwrap();
    let events = sse::read(resp, None).await;
    let id = id_of(&events);
    let status = |key: &str, path: &str, pos: Option<&str>| {
        let mut req = http.get(format!("{base}{path}")).bearer_auth(key);
        if let Some(p) = pos {
            req = req.header("last-event-id", p);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let own = format!("/stream/{id}");
    assert_eq!(status(&alice, &own, None).await, 200);
    assert_eq!(status(&bob, &own, None).await, 404);
    assert_eq!(status(&alice, &own, Some("-3")).await, 422);
    // A position past any answer is past this one's end: its final event, not a 500.
    assert_eq!(status(&alice, &own, Some("7030106544")).await, 200);
    assert_eq!(
        status(&alice, &format!("{own}?after=99999999999"), None).await,
        200
    );
    assert_eq!(status(&alice, &format!("{own}?after=x"), None).await, 422);
    assert_eq!(status(&alice, "/stream/not-a-uuid", None).await, 422);
    let cancel = http
        .post(format!("{base}/stream/{id}/cancel"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pii_redaction_positions_count_in_the_stored_text() {
    let db = TestDb::new().await;
    let ((_a, a), (_b, b)) = two(
        &db,
        &[("OFFLINE_CHUNK_DELAY_MS", "60"), ("PII_REDACTION", "true")],
    )
    .await;
    let http = client();
    // The offline answer restates the prompt: an address and a number early in the answer.
    let prompt = "mail jane@example.com or call 4155550100 then tell a long story about harbors";
    let first = sse::read(start(&http, &a, prompt).await, Some(12)).await;
    let id = id_of(&first);
    assert!(
        sse::text(&first).contains("jane@example.com"),
        "the client sees the text as generated"
    );
    let position = sse::last_id(&first).unwrap();
    for base in [&a, &b] {
        let rest = http
            .get(format!("{base}/stream/{id}"))
            .header("last-event-id", &position)
            .send()
            .await
            .unwrap();
        let rest = sse::read(rest, None).await;
        let (stored_text, _, _) = stored(&db, &id).await;
        assert!(stored_text.contains("[email]") && stored_text.contains("[phone]"));
        let expected: String = stored_text
            .chars()
            .skip(position.parse().unwrap())
            .collect();
        assert_eq!(sse::text(&rest), expected, "from {base}");
        let whole = sse::read(
            http.get(format!("{base}/stream/{id}"))
                .send()
                .await
                .unwrap(),
            None,
        )
        .await;
        assert_eq!(sse::text(&whole), stored_text);
    }
}

/// The id `start` names is usable at once on every route that takes it, in another process
/// too, although the turn's row is written only once its first text is out (or after 100 ms):
/// its history is `streaming`, its thread lists it, and continuing it is a 409 until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_usable_on_every_route_the_moment_start_names_it() {
    let mut slow = vec![Part::Sleep(Duration::from_millis(1500))];
    slow.extend(answer(&["late ", "text"], Duration::from_millis(10)));
    let fake = FakeOpenAi::start(vec![Reply::Stream(slow)]).await;
    let db = TestDb::new().await;
    let ((_a, a), (_b, b)) = two_on(&db, &fake).await;
    let http = client();
    let resp = start(&http, &a, "just started").await;
    let id = resp.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let reader = tokio::spawn(sse::read(resp, None));

    let history = http.get(format!("{b}/history/{id}")).send().await.unwrap();
    assert_eq!(history.status(), 200);
    let history: Value = history.json().await.unwrap();
    assert_eq!(history["status"], "streaming", "{history}");
    let thread = http.get(format!("{b}/threads/{id}")).send().await.unwrap();
    assert_eq!(thread.status(), 200);
    let thread: Value = thread.json().await.unwrap();
    assert_eq!(thread["items"][0]["id"], id.as_str(), "{thread}");
    let next = http
        .post(format!("{b}/stream"))
        .json(&json!({"prompt": "and then?", "previous_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 409);
    let next: Value = next.json().await.unwrap();
    assert_eq!(next["error"]["code"], "previous_not_usable");
    assert!(!reader.is_finished(), "the turn ended before the checks");
    assert_eq!(sse::text(&reader.await.unwrap()), "late text");
}

/// A process killed mid-answer (SIGKILL: no shutdown, no save) leaves its turn `streaming`; its
/// missing heartbeat makes it read as ended within a few checkpoint intervals: a reader
/// re-attached in another process gets the final `error` (`interrupted`), the history shows it
/// ended, and a cancel finds it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_process_was_killed_ends_within_seconds() {
    let Running {
        db: _db,
        fake: _fake,
        a: (mut a_proc, _),
        b: (_b, b),
        http,
        id,
        reader: _reader,
    } = running_on_two(400, Duration::from_millis(50), "doomed").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed = std::process::Command::new("kill")
        .args(["-s", "KILL", &a_proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    a_proc.wait(Duration::from_secs(5));

    let killed_at = Instant::now();
    let rest = http.get(format!("{b}/stream/{id}")).send().await.unwrap();
    assert_eq!(rest.status(), 200);
    let rest = tokio::time::timeout(Duration::from_secs(15), sse::read(rest, None))
        .await
        .expect("the re-attached reader never got a final event");
    let last = rest.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.data["code"].as_str()),
        ("error", Some("interrupted")),
        "{rest:?}"
    );
    // Five checkpoint intervals of 200 ms, floored at 2 s, plus the polls.
    assert!(
        killed_at.elapsed() < Duration::from_secs(8),
        "{:?}",
        killed_at.elapsed()
    );
    let history: Value = http
        .get(format!("{b}/history/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (history["status"].as_str(), history["error"].as_str()),
        (Some("partial"), Some("interrupted"))
    );
    let cancel = http
        .post(format!("{b}/stream/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 409);
}

/// Deleting a thread while one of its turns streams (from another process): the turn stops at
/// its next checkpoint and says why (`thread_deleted`, not `cancelled`), and nothing of it comes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_thread_is_deleted_stops_and_says_so() {
    let Running {
        db,
        a: (_a, _),
        b: (_b, b),
        fake: _fake,
        http,
        id,
        reader,
    } = running_on_two(100, Duration::from_millis(50), "soon gone").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deleted = http
        .delete(format!("{b}/threads/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the turn went on after its thread was deleted")
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.name.as_str(),
            last.data["code"].as_str(),
            last.data["saved"].as_bool()
        ),
        ("error", Some("thread_deleted"), Some(false)),
        "{events:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(db.count().await, 0);
    let gone = http.get(format!("{b}/history/{id}")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}
