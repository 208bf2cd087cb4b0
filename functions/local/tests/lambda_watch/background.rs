//! Background responses on the Lambda path: the stream function invokes itself.

use serde_json::Value;
use testkit::TestDb;
use testkit::process::free_port;
use testkit::sse;

use crate::harness::{get_json, ready, tail, watch_on};

/// A background response on the Lambda path: the create call's invocation ends with its
/// answer, and the stream function invokes itself (an `Event` invocation, signed, through the
/// emulator's Invoke API) to generate the turn in another invocation, which any later call
/// follows. The emulator runs up to two instances of the function, as Lambda would.
#[tokio::test]
async fn a_background_response_completes_in_another_invocation_after_its_create_call_returned() {
    let db = TestDb::new().await;
    let port = free_port();
    let env = format!(
        "DATABASE_URL={},AUTH=off,OFFLINE_CHUNK_DELAY_MS=100,AWS_REGION=us-east-1,\
         AWS_ACCESS_KEY_ID=AKIDEXAMPLE,AWS_SECRET_ACCESS_KEY=secret,AWS_SESSION_TOKEN=token,\
         AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:{port}",
        db.url
    );
    let (proc, root, _) = watch_on(port, &env, &["--concurrency", "2"]);
    let base = format!("{root}/stream");
    let http = ready(&proc, &root, "stream").await;

    let resp = http
        .post(format!("{base}/v1/responses"))
        .body(r#"{"model":"m","background":true,"input":"answer in the background"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /v1/responses: {e}\n{}", tail(&proc.output())));
    assert_eq!(resp.status(), 200, "{}", tail(&proc.output()));
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["background"], true, "{created}");
    assert!(
        ["queued", "in_progress"].contains(&created["status"].as_str().unwrap()),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    // The create call has returned; the answer (its chunks 100 ms apart) is still being made.
    let now = get_json(&http, &format!("{base}/v1/responses/{id}")).await;
    assert_eq!(
        now["status"],
        "in_progress",
        "{now}\n{}",
        tail(&proc.output())
    );

    // Its events from another invocation, replayed from the turn log and followed live.
    let events = http
        .get(format!(
            "{base}/v1/responses/{id}?stream=true&starting_after=0"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let events = sse::read(events, None).await;
    let last = events.last().unwrap();
    assert_eq!(
        last.name,
        "response.completed",
        "{events:?}\n{}",
        tail(&proc.output())
    );
    let text: String = events
        .iter()
        .filter(|e| e.name == "response.output_text.delta")
        .filter_map(|e| e.data["delta"].as_str())
        .collect();
    assert!(!text.is_empty());

    let done = get_json(&http, &format!("{base}/v1/responses/{id}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"][0]["content"][0]["text"], text.as_str());
    let output = proc.output();
    assert!(
        output.contains("running a background response"),
        "no invocation ran it:\n{}",
        tail(&output)
    );
    // The record is the turn's, and the queued run was taken (once).
    let turn = uuid::Uuid::try_parse(id.trim_start_matches("resp_")).unwrap();
    let saved = db
        .client()
        .await
        .query_one(
            "SELECT status, response, (SELECT count(*) FROM background_runs) \
             FROM conversations WHERE id = $1::text::uuid",
            &[&turn.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(saved.get::<_, String>(0), "complete");
    assert_eq!(saved.get::<_, String>(1), text);
    assert_eq!(saved.get::<_, i64>(2), 0);
}
