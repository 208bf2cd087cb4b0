#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Spend control over real HTTP against three server processes on one database (as Lambda
//! sandboxes are): budgets, rates and concurrency held exactly across them, on the pool and on
//! the Data API backend; and every way a turn ends settles its reservation, the death of its
//! process included.

use std::time::{Duration, Instant};

use common::spend::{KeyLimits, Period};
use serde_json::{Value, json};
use testkit::TestDb;
use testkit::data_api::DataApi;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer};
use testkit::process::{Proc, serve};
use testkit::sse;

/// 20 bytes: its bound is 20 + 2 × 8 = 36 tokens, whatever tokenizer.
const PROMPT: &str = "hold the budget now!";
/// USD per million tokens: the worst case of a request with `max_tokens` 16 is 16 × 6250 per
/// million = 0.10 USD, and the offline answer (longer than 16 words) uses all of it: every
/// request admitted beyond the budget would be spent beyond it.
const PRICES: &str = r#"{"offline-echo": {"input": 0, "output": 6250}}"#;

struct Fleet {
    servers: Vec<(Proc, String)>,
    db: TestDb,
    _api: Option<DataApi>,
}

/// Three servers on one new database (through the Data API emulator with `data_api`), with
/// `extra` settings.
async fn fleet(data_api: bool, extra: &[(&str, &str)]) -> Fleet {
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
    for (k, v) in [
        ("AUTH", "required"),
        ("LLM_PRICES", PRICES),
        ("CHECKPOINT_INTERVAL_MS", "200"),
        ("RUST_LOG", "info"),
    ]
    .iter()
    .chain(extra)
    {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut servers = Vec::new();
    for name in ["spend-a", "spend-b", "spend-c"] {
        servers.push(serve(env!("CARGO_BIN_EXE_local"), name, &env).await);
    }
    Fleet {
        servers,
        db,
        _api: api,
    }
}

impl Fleet {
    fn base(&self, i: usize) -> String {
        self.servers[i % self.servers.len()].1.clone()
    }

    async fn key(&self, limits: KeyLimits) -> (uuid::Uuid, String) {
        self.db.limited_key("alice", "limited", &limits).await
    }

    /// One number from the database.
    async fn number(&self, sql: &str, id: uuid::Uuid) -> f64 {
        let row = self.db.client().await.query_one(sql, &[&id]).await.unwrap();
        row.get::<_, Option<f64>>(0).unwrap_or(0.0)
    }

    /// Waits until no turn is `streaming`.
    async fn settled(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.db.count_where("status = 'streaming'").await > 0 {
            assert!(Instant::now() < until, "turns never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How the reservation of turn `id` settled: `(settled_by, prompt, completion)`.
    async fn reservation(&self, id: &str) -> (Option<String>, Option<i64>, Option<i64>) {
        let id = uuid::Uuid::parse_str(id).unwrap();
        let row = self
            .db
            .client()
            .await
            .query_one(
                "SELECT settled_by, settled_prompt, settled_completion FROM reservations \
                 WHERE turn_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }
}

async fn post(http: &reqwest::Client, base: &str, key: &str, body: Value) -> reqwest::Response {
    http.post(format!("{base}/stream"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A refusal's code, after checking it is a 429 with `Retry-After`.
async fn refused(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 429);
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1);
    let body: Value = resp.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

/// `n` requests at once, spread over the servers, with `key` and the body `body(i)`: how many
/// were admitted (each read to its end, which must be `done`) and the codes of the refusals.
async fn burst(
    f: &Fleet,
    key: &str,
    n: usize,
    body: impl Fn(usize) -> Value,
) -> (u32, Vec<String>) {
    let http = testkit::http_client();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, base, key, body) = (http.clone(), f.base(i), key.to_owned(), body(i));
        tasks.push(tokio::spawn(async move {
            let resp = post(&http, &base, &key, body).await;
            if resp.status() == 200 {
                let events = sse::read(resp, None).await;
                assert_eq!(events.last().unwrap().name, "done", "{events:?}");
                None
            } else {
                Some(refused(resp).await)
            }
        }));
    }
    let (mut admitted, mut codes) = (0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            None => admitted += 1,
            Some(code) => codes.push(code),
        }
    }
    (admitted, codes)
}

testkit::on_both_backends!(
    a_budget_holds_to_the_cent_under_60_concurrent_requests,
    rpm_admits_exactly_n_of_a_burst,
    concurrency_refuses_the_n_plus_first,
    a_killed_process_s_reservation_expires_and_settles,
    a_client_gone_settles_when_the_answer_is_saved,
    a_cancel_settles_before_the_final_event,
    a_provider_failing_mid_answer_settles_before_the_final_event,
    sigterm_settles_the_turns_it_stops,
);

async fn a_budget_holds_to_the_cent_under_60_concurrent_requests(data_api: bool) {
    let f = fleet(data_api, &[("OFFLINE_CHUNK_DELAY_MS", "20")]).await;
    let budget = 1.05;
    let (key_id, key) = f
        .key(KeyLimits {
            budget_usd: Some(budget),
            period: Period::Day,
            ..KeyLimits::default()
        })
        .await;
    let (admitted, codes) = burst(
        &f,
        &key,
        60,
        |_| json!({"prompt": PROMPT, "max_tokens": 16}),
    )
    .await;
    assert!(codes.iter().all(|c| c == "budget_exceeded"), "{codes:?}");
    f.settled().await;
    // Exactly what the budget allows at the worst case (0.10 a request, each spending it
    // all): no fewer, and never more (spent ≤ budget, to the cent and below).
    assert_eq!(admitted, 10);
    let spent = f
        .number(
            "SELECT sum(cost_usd) FROM conversations WHERE key_id = $1",
            key_id,
        )
        .await;
    assert!(spent <= budget + 1e-9, "spent {spent} of {budget}");
    assert!((spent - 1.0).abs() < 1e-9, "{spent}");
    // A refused request stored nothing; the key's spend and the rollup agree with the turns.
    assert_eq!(f.db.count().await, i64::from(admitted));
    let counted = f
        .number(
            "SELECT spent_usd::float8 FROM key_spend WHERE key_id = $1",
            key_id,
        )
        .await;
    assert!((counted - spent).abs() < 1e-9, "{counted} vs {spent}");
    let rolled = f
        .number(
            "SELECT sum(cost_usd)::float8 FROM usage_daily WHERE key_id = $1",
            key_id,
        )
        .await;
    assert!((rolled - spent).abs() < 1e-9, "{rolled} vs {spent}");
}

async fn rpm_admits_exactly_n_of_a_burst(data_api: bool) {
    let f = fleet(data_api, &[("OFFLINE_CHUNK_DELAY_MS", "1")]).await;
    let (_, key) = f
        .key(KeyLimits {
            rpm: Some(5),
            ..KeyLimits::default()
        })
        .await;
    let (admitted, codes) = burst(&f, &key, 12, |i| json!({"prompt": format!("burst {i}")})).await;
    assert!(codes.iter().all(|c| c == "rate_limited"), "{codes:?}");
    assert_eq!(admitted, 5);
    let http = testkit::http_client();
    // Under /v1, OpenAI's rate limit error, with Retry-After.
    let resp = http
        .post(format!("{}/v1/chat/completions", f.base(1)))
        .bearer_auth(&key)
        .json(&json!({"model": "offline-echo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    f.settled().await;
    assert_eq!(f.db.count().await, 5);
}

async fn concurrency_refuses_the_n_plus_first(data_api: bool) {
    let f = fleet(data_api, &[("OFFLINE_CHUNK_DELAY_MS", "100")]).await;
    let (_, key) = f
        .key(KeyLimits {
            concurrency: Some(2),
            ..KeyLimits::default()
        })
        .await;
    let http = testkit::http_client();
    let first = post(&http, &f.base(0), &key, json!({"prompt": "one"})).await;
    assert_eq!(first.status(), 200);
    let second = post(&http, &f.base(1), &key, json!({"prompt": "two"})).await;
    assert_eq!(second.status(), 200);
    let third = post(&http, &f.base(2), &key, json!({"prompt": "three"})).await;
    assert_eq!(refused(third).await, "rate_limited");
    // The reservation settles before the final event: a client that saw its answer end may
    // start the next one at once.
    let events = sse::read(first, None).await;
    assert_eq!(events.last().unwrap().name, "done");
    let next = post(&http, &f.base(2), &key, json!({"prompt": "four"})).await;
    assert_eq!(next.status(), 200);
    sse::read(second, None).await;
    sse::read(next, None).await;
}

/// A limited key of one answer at a time, and a running stream of it on server 0, a few
/// deltas read; returns the key's id, the key, the response and the turn's id.
async fn one_running(
    f: &Fleet,
    http: &reqwest::Client,
) -> (uuid::Uuid, String, Vec<sse::Received>, sse::Rest) {
    let (key_id, key) = f
        .key(KeyLimits {
            concurrency: Some(1),
            budget_tokens: Some(1_000_000),
            ..KeyLimits::default()
        })
        .await;
    let resp = post(
        http,
        &f.base(0),
        &key,
        json!({"prompt": "a long answer please"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (head, rest) = sse::read_some(resp, 3).await;
    (key_id, key, head, rest)
}

fn id_of(events: &[sse::Received]) -> String {
    assert_eq!(events[0].name, "start", "{events:?}");
    events[0].data["id"].as_str().unwrap().to_owned()
}

async fn a_killed_process_s_reservation_expires_and_settles(data_api: bool) {
    let mut f = fleet(data_api, &[("OFFLINE_CHUNK_DELAY_MS", "100")]).await;
    let http = testkit::http_client();
    let (key_id, key, head, rest) = one_running(&f, &http).await;
    let id = id_of(&head);
    // Let a checkpoint store some text, then kill the process outright.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pid = f.servers[0].0.pid();
    std::process::Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .status()
        .unwrap();
    drop(rest);
    let refused_now = post(&http, &f.base(1), &key, json!({"prompt": "next"})).await;
    assert_eq!(refused(refused_now).await, "rate_limited");
    // Within a few heartbeat intervals (five checkpoints, at least 2 s) the lease runs out.
    let until = Instant::now() + Duration::from_secs(20);
    let next = loop {
        let resp = post(&http, &f.base(1), &key, json!({"prompt": "next"})).await;
        if resp.status() == 200 {
            break resp;
        }
        assert_eq!(refused(resp).await, "rate_limited");
        assert!(Instant::now() < until, "the dead reservation never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    sse::read(next, None).await;
    let (by, prompt, completion) = f.reservation(&id).await;
    assert_eq!(by.as_deref(), Some("lease"));
    // Settled from what was stored: the prompt's bound and the stored text as tokens.
    assert!(
        prompt.unwrap() >= 20 && completion.unwrap() > 0,
        "{prompt:?} {completion:?}"
    );
    let spent = f
        .number(
            "SELECT spent_tokens::float8 FROM key_spend WHERE key_id = $1",
            key_id,
        )
        .await;
    assert!(spent >= (prompt.unwrap() + completion.unwrap()) as f64);
    f.servers.remove(0);
}

async fn a_client_gone_settles_when_the_answer_is_saved(data_api: bool) {
    let f = fleet(data_api, &[("OFFLINE_CHUNK_DELAY_MS", "30")]).await;
    let http = testkit::http_client();
    let (_, _, head, rest) = one_running(&f, &http).await;
    drop(rest);
    f.settled().await;
    let (by, prompt, completion) = f.reservation(&id_of(&head)).await;
    assert_eq!(by.as_deref(), Some("turn"));
    // The whole answer's usage, as the provider reported it.
    let stored =
        f.db.client()
            .await
            .query_one(
                "SELECT prompt_tokens::int8, completion_tokens::int8 FROM conversations",
                &[],
            )
            .await
            .unwrap();
    assert_eq!((prompt, completion), (stored.get(0), stored.get(1)));
}

async fn a_cancel_settles_before_the_final_event(data_api: bool) {
    let f = fleet(data_api, &[("OFFLINE_CHUNK_DELAY_MS", "100")]).await;
    let http = testkit::http_client();
    let (_, key, head, rest) = one_running(&f, &http).await;
    let id = id_of(&head);
    let resp = http
        .post(format!("{}/stream/{id}/cancel", f.base(1)))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let events = rest.finish().await;
    assert_eq!(
        events.last().unwrap().data["code"],
        "cancelled",
        "{events:?}"
    );
    let (by, _, completion) = f.reservation(&id).await;
    assert_eq!(by.as_deref(), Some("turn"));
    assert!(completion.unwrap() > 0);
}

async fn a_provider_failing_mid_answer_settles_before_the_final_event(data_api: bool) {
    let mut parts = answer(&["some ", "words ", "then "], Duration::from_millis(50));
    parts.truncate(4);
    parts.push(Part::Cut);
    let fake = FakeOpenAi::start(vec![Reply::Stream(parts)]).await;
    let base_url = fake.base_url();
    let f = fleet(
        data_api,
        &[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", &base_url),
            ("LLM_MAX_RETRIES", "0"),
        ],
    )
    .await;
    let http = testkit::http_client();
    let (_, key) = f
        .key(KeyLimits {
            budget_usd: Some(5.0),
            ..KeyLimits::default()
        })
        .await;
    let resp = post(&http, &f.base(0), &key, json!({"prompt": "cut me off"})).await;
    let events = sse::read(resp, None).await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["status"], "partial");
    let (by, prompt, completion) = f.reservation(&id_of(&events)).await;
    assert_eq!(by.as_deref(), Some("turn"));
    // No usage came: the prompt's bound and the text's characters.
    let text = sse::text(&events);
    assert!(!text.is_empty());
    assert_eq!(completion, Some(text.chars().count() as i64));
    assert!(prompt.unwrap() >= "cut me off".len() as i64);
    // The cap the reservation assumed went to the provider.
    let sent = fake.requests();
    assert_eq!(sent[0]["max_tokens"], 16_384, "{}", sent[0]);
}

async fn sigterm_settles_the_turns_it_stops(data_api: bool) {
    let mut f = fleet(
        data_api,
        &[
            ("OFFLINE_CHUNK_DELAY_MS", "100"),
            ("SHUTDOWN_GRACE_MS", "100"),
        ],
    )
    .await;
    let http = testkit::http_client();
    let (key_id, _, head, rest) = one_running(&f, &http).await;
    let reader = tokio::spawn(rest.finish());
    f.servers[0].0.stop();
    let events = reader.await.unwrap();
    assert_eq!(
        events.last().unwrap().data["code"],
        "shutdown",
        "{events:?}"
    );
    let (by, _, completion) = f.reservation(&id_of(&head)).await;
    assert_eq!(by.as_deref(), Some("turn"));
    assert!(completion.unwrap() > 0);
    let running = f
        .number(
            "SELECT count(*)::float8 FROM reservations WHERE key_id = $1 AND settled_at IS NULL",
            key_id,
        )
        .await;
    assert_eq!(running, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sees_insufficient_quota_for_a_spent_budget() {
    let f = fleet(false, &[("OFFLINE_CHUNK_DELAY_MS", "1")]).await;
    // A budget below one request's worst case (0.10 USD): spent before the first.
    let (_, budget) = f
        .key(KeyLimits {
            budget_usd: Some(0.05),
            period: Period::Total,
            ..KeyLimits::default()
        })
        .await;
    let (_, rpm) = f
        .key(KeyLimits {
            rpm: Some(1),
            ..KeyLimits::default()
        })
        .await;
    let python = testkit::process::workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run `make test`: it installs the OpenAI SDK into .venv"
    );
    let out = std::process::Command::new(python)
        .arg(testkit::process::workspace_root().join("functions/local/tests/sdk/spend_sdk.py"))
        .args([f.base(0), budget, rpm])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    // Not retried: at once.
    assert!(lines[0]["seconds"].as_f64().unwrap() < 5.0, "{stdout}");
    // Only the rpm key's one admitted request was stored.
    assert_eq!(f.db.count().await, 1);
}
