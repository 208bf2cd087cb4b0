#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Lambda path for real: the function binaries run under `cargo lambda watch` (the Lambda
//! runtime API emulator) and are called through their function URLs.

mod background;
mod harness;

use std::time::Duration;

use harness::{client, get_json, ready, tail, watch, watch_env};
use serde_json::Value;
use testkit::sse;
use testkit::{TestDb, seed};

#[tokio::test]
async fn history_and_get_answer_through_their_function_urls() {
    let db = TestDb::new().await;
    let rows = seed(&db, 5, 1).await;
    let (proc, base) = watch(&db, "").await;
    let http = ready(&proc, &base, "history").await;

    // Each function says at start that it serves without keys, and nothing warns about the
    // concurrency `cargo lambda watch` sets.
    let output = proc.output();
    assert!(output.contains("AUTH=off"), "{}", tail(&output));
    assert!(
        !output.contains("AWS_LAMBDA_MAX_CONCURRENCY is set"),
        "{}",
        tail(&output)
    );

    let page = get_json(&http, &format!("{base}/history/history?limit=2")).await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [rows[4].id.to_string(), rows[3].id.to_string()]);
    let cursor = page["next_cursor"].as_str().expect("a next cursor");
    let next = get_json(
        &http,
        &format!("{base}/history/history?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(next["items"][0]["id"], rows[2].id.to_string());

    let resp = http
        .get(format!("{base}/history/history?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    let one = http
        .get(format!("{base}/get/history/{}", rows[0].id))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["prompt"], rows[0].prompt);
    let missing = http
        .get(format!("{base}/get/history/{}", uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(testkit::call::error_code(&body), "not_found");
    let bad = http
        .get(format!("{base}/get/history/not-a-uuid"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn search_answers_through_its_function_url() {
    let db = TestDb::new().await;
    let rows = seed(&db, 3, 1).await;
    let (proc, base) = watch(&db, "").await;
    let http = ready(&proc, &base, "search").await;
    let page = get_json(
        &http,
        &format!("{base}/search/search?query=%22prompt%201%22"),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], rows[1].id.to_string());
    assert!(items[0]["snippet"].as_str().unwrap().contains("<mark>"));
    let blank = http
        .get(format!("{base}/search/search?query="))
        .send()
        .await
        .unwrap();
    assert_eq!(blank.status(), 422);
}

#[tokio::test]
async fn the_stream_function_url_delivers_chunks_one_by_one_and_saves_the_record() {
    let db = TestDb::new().await;
    let (proc, base) = watch(&db, ",OFFLINE_CHUNK_DELAY_MS=150").await;
    let http = ready(&proc, &base, "stream").await;

    let started = std::time::Instant::now();
    let resp = http
        .post(format!("{base}/stream/stream"))
        .body(r#"{"prompt":"stream through lambda"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /stream: {e}\n{}", tail(&proc.output())));
    assert_eq!(resp.status(), 200);
    let events = sse::read(resp, None).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert!(
        names.first() == Some(&"start") && names.last() == Some(&"done"),
        "after {:?}: {names:?}\n{}",
        started.elapsed(),
        tail(&proc.output())
    );
    assert_eq!(events.last().unwrap().data["saved"], true);
    let deltas: Vec<_> = events.iter().filter(|e| e.name == "delta").collect();
    assert!(deltas.len() > 10);
    let spread = deltas.last().unwrap().at - deltas.first().unwrap().at;
    assert!(
        spread >= Duration::from_millis(150) * (deltas.len() as u32 - 1) / 2,
        "deltas arrived together ({spread:?} from first to last): the function URL buffered"
    );
    let distinct_arrivals = deltas
        .windows(2)
        .filter(|w| w[1].at - w[0].at >= Duration::from_millis(75))
        .count();
    assert!(
        distinct_arrivals >= deltas.len() / 2,
        "most chunks did not arrive separately"
    );

    let id = events[0].data["id"].as_str().unwrap();
    let client = db.client().await;
    let saved = client
        .query_one(
            "SELECT status, response FROM conversations WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(saved.get::<_, String>(0), "complete");
    assert_eq!(saved.get::<_, String>(1), sse::text(&events));

    // Re-attaching through the function URL: the rest and the same final event.
    let rest = http
        .get(format!("{base}/stream/stream/{id}?after=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = sse::read(rest, None).await;
    assert_eq!(sse::names(&rest), ["start", "delta", "done"]);
    assert_eq!(
        sse::text(&rest),
        sse::text(&events).chars().skip(5).collect::<String>()
    );

    // The OpenAI-compatible route is the same function behind the same URL, streamed too.
    let resp = http
        .post(format!("{base}/stream/v1/chat/completions"))
        .body(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"via v1"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let turn = resp.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let chunks = sse::read(resp, None).await;
    assert_eq!(chunks.last().unwrap().data, "[DONE]", "{chunks:?}");
    let content: String = chunks
        .iter()
        .filter_map(|c| c.data["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(chunks.len() > 10, "the chunks: {chunks:?}");
    let spread = chunks[chunks.len() - 2].at - chunks[1].at;
    assert!(
        spread >= Duration::from_millis(150) * 4,
        "chunks arrived together: {spread:?}"
    );
    let saved = client
        .query_one(
            "SELECT status, prompt, response FROM conversations WHERE id = $1::text::uuid",
            &[&turn],
        )
        .await
        .unwrap();
    assert_eq!(saved.get::<_, String>(0), "complete");
    assert_eq!(saved.get::<_, String>(1), "via v1");
    assert_eq!(saved.get::<_, String>(2), content);

    // The Responses API through the same URL: typed events as they come, then re-attached
    // after one of them.
    let resp = http
        .post(format!("{base}/stream/v1/responses"))
        .body(r#"{"model":"m","stream":true,"input":"via responses"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse::read(resp, None).await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "response.completed", "{events:?}");
    let deltas: Vec<_> = events
        .iter()
        .filter(|e| e.name == "response.output_text.delta")
        .collect();
    assert!(deltas.len() > 10, "{events:?}");
    let spread = deltas.last().unwrap().at - deltas.first().unwrap().at;
    assert!(
        spread >= Duration::from_millis(150) * 4,
        "response events arrived together: {spread:?}"
    );
    let id = last.data["response"]["id"].as_str().unwrap().to_owned();
    let after = deltas[3].data["sequence_number"].as_u64().unwrap();
    let rest = http
        .get(format!(
            "{base}/stream/v1/responses/{id}?stream=true&starting_after={after}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = sse::read(rest, None).await;
    assert!(
        rest.iter()
            .all(|e| e.data["sequence_number"].as_u64().unwrap() > after)
    );
    assert_eq!(rest.last().unwrap().name, "response.completed");
    let text = |events: &[sse::Received]| -> String {
        events
            .iter()
            .filter_map(|e| e.data["delta"].as_str())
            .collect()
    };
    let whole = last.data["response"]["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text(&events), whole);
    assert_eq!(
        text(&deltas[..4].iter().map(|e| (*e).clone()).collect::<Vec<_>>()) + &text(&rest),
        whole
    );
}

/// Routing on the Lambda path: the stream function, its `LLM_CONFIG` a file (outside the watched
/// tree) whose route's first target refuses connections, answers from the second through its
/// function URL, and keeps both attempts.
#[tokio::test]
async fn the_stream_function_falls_back_along_its_route() {
    use testkit::fake_openai::{FakeOpenAi, Reply, answer};
    let upstream = FakeOpenAi::start(vec![Reply::Stream(answer(
        &["Routed ", "through ", "Lambda."],
        Duration::ZERO,
    ))])
    .await;
    let down = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let config = std::env::temp_dir().join(format!("llm-config-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[providers.primary]\nkind = \"openai\"\nbase_url = \"http://{down}/v1\"\n\
             [providers.backup]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [models.chat]\nroute = [{{provider = \"primary\", model = \"a\"}}, \
             {{provider = \"backup\", model = \"b\"}}]\n",
            upstream.base_url()
        ),
    )
    .unwrap();
    let db = TestDb::new().await;
    let (proc, base) = watch(&db, &format!(",LLM_CONFIG={}", config.display())).await;
    let http = ready(&proc, &base, "stream").await;
    let resp = http
        .post(format!("{base}/stream/stream"))
        .body(r#"{"prompt":"route me"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /stream: {e}\n{}", tail(&proc.output())));
    assert_eq!(resp.status(), 200);
    let events = sse::read(resp, None).await;
    assert_eq!(
        sse::text(&events),
        "Routed through Lambda.",
        "{}",
        tail(&proc.output())
    );
    let id = events[0].data["id"].as_str().unwrap();
    let client = db.client().await;
    let saved = client
        .query_one(
            "SELECT provider, model, attempts::text FROM conversations WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (saved.get::<_, String>(0), saved.get::<_, String>(1)),
        ("backup".to_owned(), "b".to_owned())
    );
    let attempts: Value = serde_json::from_str(&saved.get::<_, String>(2)).unwrap();
    assert_eq!(attempts[0]["error_code"], "provider_unreachable");
    assert_eq!(attempts[1]["provider"], "backup");
    let _ = std::fs::remove_file(config);
}

/// `GET /export` is served by the stream function because its responses stream: 20 MB of
/// turns (more than three times what a buffered function may answer) arrive whole, in order.
#[tokio::test]
async fn a_20_mb_export_streams_through_the_stream_function_url() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO conversations (id, owner, prompt, response, status, provider, model, \
             created_at, updated_at) \
             SELECT gen_random_uuid(), 'local', 'big ' || i, repeat(md5(i::text) || ' ', 3100), \
             'complete', 'offline', 'm', now() - interval '1 hour' + i * interval '1 ms', now() \
             FROM generate_series(1, 200) i",
        )
        .await
        .unwrap();
    let (proc, base) = watch(&db, "").await;
    let http = ready(&proc, &base, "stream").await;
    let resp = http
        .get(format!("{base}/stream/export"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /export: {e}\n{}", tail(&proc.output())));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.bytes().await.unwrap();
    assert!(body.len() > 20_000_000, "{} bytes", body.len());
    let prompts: Vec<String> = std::str::from_utf8(&body)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["prompt"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = (1..=200).map(|i| format!("big {i}")).collect();
    assert_eq!(prompts, expected);
}

/// The daily schedule invokes the migrate function with `{"task": "purge"}`: on the pool and on
/// the Data API, threads older than `RETENTION_DAYS` go and the rest stays.
#[tokio::test]
async fn the_scheduled_purge_runs_through_the_migrate_function_on_both_backends() {
    for data_api in [false, true] {
        let db = TestDb::new().await;
        let rows = seed(&db, 5, 1).await;
        let old: Vec<String> = rows[..3].iter().map(|r| format!("'{}'", r.id)).collect();
        db.client()
            .await
            .batch_execute(&format!(
                "UPDATE conversations SET created_at = created_at - interval '40 days' \
                 WHERE id IN ({}); UPDATE threads t SET updated_at = c.created_at \
                 FROM conversations c WHERE c.id = t.id",
                old.join(",")
            ))
            .await
            .unwrap();
        let api = if data_api {
            Some(testkit::data_api::DataApi::start(&testkit::admin_url()).await)
        } else {
            None
        };
        let env = match &api {
            Some(api) => db
                .data_api_env(&api.endpoint, &[("RETENTION_DAYS", "30")])
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            None => format!("DATABASE_URL={},RETENTION_DAYS=30", db.url),
        };
        let (proc, _, root) = watch_env(&env);
        let http = client();
        let invoke = format!("{root}/2015-03-31/functions/migrate/invocations");
        // The first invocation may build the function.
        let until = std::time::Instant::now() + Duration::from_secs(240);
        let answer: Value = loop {
            match http.post(&invoke).body(r#"{"task":"purge"}"#).send().await {
                Ok(r) if r.status() == 200 => break r.json().await.unwrap(),
                _ if std::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => panic!("invoking migrate: {other:?}\n{}", tail(&proc.output())),
            }
        };
        assert_eq!(answer["retention_days"], 30, "{answer}");
        assert_eq!(answer["purged"]["threads"], 3, "{answer}");
        assert_eq!(answer["purged"]["turns"], 3, "{answer}");
        assert_eq!(db.count().await, 2, "data_api: {data_api}");
        drop(proc);
    }
}
