#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Routing and failover (`LLM_CONFIG`) over real HTTP against a real PostgreSQL, with several
//! local upstreams speaking OpenAI's wire format (one refusing connections, one failing with
//! 500, one with 429, one silent, one cutting its stream, one healthy) and the local
//! ConverseStream endpoint: fallback before the first text, continuation after it, no fallback
//! on a 400, cooldown, a route with no healthy target, and every attempt stored.

mod support;

use std::time::Duration;

use common::{Conversation, Status};
use serde_json::{Value, json};
use support::Harness;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer};
use testkit::sse::Received;

async fn with_config(config: &str, extra: &[(&str, &str)]) -> Harness {
    let mut pairs = vec![("LLM_CONFIG", config)];
    pairs.extend_from_slice(extra);
    support::serve(&pairs).await
}

fn text(events: &[Received]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

/// An address nothing listens on.
async fn refusing() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

fn provider(name: &str, url: &str) -> String {
    format!(
        "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{url}\"\n\
         first_token_timeout_ms = 400\nidle_timeout_ms = 400\n"
    )
}

fn codes(c: &Conversation) -> Vec<(String, Option<String>, Option<u16>)> {
    c.attempts
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.provider.clone(), a.error_code.clone(), a.status))
        .collect()
}

#[tokio::test]
async fn each_kind_of_failure_before_the_first_text_falls_back_to_the_next_target() {
    let err500 = FakeOpenAi::start(vec![Reply::Status {
        status: 500,
        retry_after: None,
    }])
    .await;
    let err429 = FakeOpenAi::start(vec![Reply::Status {
        status: 429,
        retry_after: Some(1),
    }])
    .await;
    let mut slow = vec![Part::Sleep(Duration::from_secs(3))];
    slow.extend(answer(&["late"], Duration::ZERO));
    let silent = FakeOpenAi::start(vec![Reply::Stream(slow)]).await;
    let healthy = FakeOpenAi::start(vec![Reply::Stream(answer(
        &["Hello ", "from ", "backup."],
        Duration::ZERO,
    ))])
    .await;
    let config = format!(
        "default_model = \"chat\"\n{}{}{}{}{}\n[models.chat]\nroute = [\
         {{provider = \"down\", model = \"m1\"}}, {{provider = \"broken\", model = \"m2\"}}, \
         {{provider = \"limited\", model = \"m3\"}}, {{provider = \"silent\", model = \"m4\"}}, \
         {{provider = \"healthy\", model = \"m5\"}}]\n",
        provider("down", &refusing().await),
        provider("broken", &err500.base_url()),
        provider("limited", &err429.base_url()),
        provider("silent", &silent.base_url()),
        provider("healthy", &healthy.base_url()),
    );
    let h = with_config(&config, &[]).await;
    let events = h.stream(json!({"prompt": "hi"})).await;
    assert_eq!(text(&events), "Hello from backup.");
    assert_eq!(events.last().unwrap().name, "done", "{events:?}");
    let turn = h.finished(&events).await;
    assert_eq!(turn.status, Status::Complete);
    assert_eq!(
        (turn.provider.as_str(), turn.model.as_str()),
        ("healthy", "m5")
    );
    assert_eq!(
        codes(&turn),
        [
            ("down".into(), Some("provider_unreachable".into()), None),
            ("broken".into(), Some("provider_error".into()), Some(500)),
            (
                "limited".into(),
                Some("provider_rate_limited".into()),
                Some(429)
            ),
            ("silent".into(), Some("provider_timeout".into()), None),
            ("healthy".into(), None, None),
        ]
    );
    assert_eq!(turn.attempts.as_ref().unwrap()[4].chars, 18);
    // A failing target is not retried in a route of several: the next one is the retry.
    assert_eq!(err500.requests().len(), 1);
    assert_eq!(err429.requests().len(), 1);
    // Each target is called with its own model.
    assert_eq!(healthy.requests()[0]["model"], "m5");
    // The route's name is the model clients use: another is refused, as OpenAI does.
    let resp = h
        .http
        .post(format!("http://{}/stream", h.addr))
        .json(&json!({"prompt": "hi", "model": "gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let models: Value = h
        .http
        .get(format!("http://{}/v1/models", h.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "chat");
}

#[tokio::test]
async fn a_400_is_not_tried_elsewhere_and_a_route_with_no_healthy_target_fails_cleanly() {
    let bad = FakeOpenAi::start(vec![Reply::Refuse {
        status: 400,
        retry_after: None,
        error: json!({"message": "bad request", "type": "invalid_request_error",
                      "param": null, "code": "context_length_exceeded"}),
    }])
    .await;
    let broken = FakeOpenAi::start(vec![Reply::Status {
        status: 503,
        retry_after: None,
    }])
    .await;
    let healthy = FakeOpenAi::start(vec![Reply::Stream(answer(&["ok"], Duration::ZERO))]).await;
    let config = format!(
        "{}{}{}\n[models.strict]\nroute = [{{provider = \"bad\", model = \"m\"}}, \
         {{provider = \"healthy\", model = \"m\"}}]\n\
         [models.doomed]\nroute = [{{provider = \"broken\", model = \"a\"}}, \
         {{provider = \"broken\", model = \"b\"}}]\n",
        provider("bad", &bad.base_url()),
        provider("broken", &broken.base_url()),
        provider("healthy", &healthy.base_url()),
    );
    let h = with_config(&config, &[]).await;
    let events = h.stream(json!({"prompt": "hi", "model": "strict"})).await;
    let turn = h.finished(&events).await;
    assert_eq!(
        (turn.status, turn.error.as_deref()),
        (Status::Failed, Some("provider_bad_request"))
    );
    assert_eq!(healthy.requests().len(), 0, "a 400 was tried elsewhere");
    assert_eq!(codes(&turn).len(), 1);

    let events = h.stream(json!({"prompt": "hi", "model": "doomed"})).await;
    assert_eq!(events.last().unwrap().name, "error");
    let turn = h.finished(&events).await;
    assert_eq!(turn.status, Status::Failed);
    assert_eq!(
        codes(&turn),
        [
            (
                "broken".into(),
                Some("provider_unavailable".into()),
                Some(503)
            ),
            (
                "broken".into(),
                Some("provider_unavailable".into()),
                Some(503)
            ),
        ]
    );
    assert_eq!(turn.model, "b");
}

#[tokio::test]
async fn a_target_failing_mid_answer_is_continued_by_the_next() {
    let mut cut = answer(&["The first half, "], Duration::ZERO);
    cut.truncate(2); // the role chunk and the first text, then the connection goes
    cut.push(Part::Sleep(Duration::from_millis(50)));
    cut.push(Part::Cut);
    let cutter = FakeOpenAi::start(vec![Reply::Stream(cut)]).await;
    let healthy = FakeOpenAi::start(vec![Reply::Stream(answer(
        &["and the second."],
        Duration::ZERO,
    ))])
    .await;
    let route =
        "route = [{provider = \"cutter\", model = \"a\"}, {provider = \"healthy\", model = \"b\"}]";
    let config = format!(
        "{}{}\n[models.onward]\n{route}\ncontinue_on_failure = true\n[models.plain]\n{route}\n",
        provider("cutter", &cutter.base_url()),
        provider("healthy", &healthy.base_url()),
    );
    let h = with_config(&config, &[]).await;
    let events = h
        .stream(json!({"prompt": "tell me", "model": "onward"}))
        .await;
    assert_eq!(text(&events), "The first half, and the second.");
    let turn = h.finished(&events).await;
    assert_eq!(turn.status, Status::Complete);
    assert_eq!(turn.response, "The first half, and the second.");
    assert_eq!(turn.provider, "healthy");
    let attempts = turn.attempts.unwrap();
    assert_eq!(
        (attempts[0].error_code.as_deref(), attempts[0].chars),
        (Some("provider_disconnected"), 16)
    );
    assert_eq!(
        (attempts[1].error_code.as_deref(), attempts[1].chars),
        (None, 15)
    );
    // The next target received the text so far as the last assistant message.
    let sent = &healthy.requests()[0]["messages"];
    assert_eq!(
        sent.as_array().unwrap().last().unwrap(),
        &json!({"role": "assistant", "content": "The first half, "})
    );

    // Without the flag a mid-answer failure ends the turn partial, as without routing.
    let events = h
        .stream(json!({"prompt": "tell me", "model": "plain"}))
        .await;
    let turn = h.finished(&events).await;
    assert_eq!(
        (turn.status, turn.error.as_deref()),
        (Status::Partial, Some("provider_disconnected"))
    );
    assert_eq!(healthy.requests().len(), 1);
}

#[tokio::test]
async fn a_target_that_keeps_failing_cools_down() {
    let broken = FakeOpenAi::start(vec![Reply::Status {
        status: 500,
        retry_after: None,
    }])
    .await;
    let healthy = FakeOpenAi::start(vec![Reply::Stream(answer(&["ok"], Duration::ZERO))]).await;
    let config = format!(
        "{}cooldown_failures = 2\ncooldown_ms = 60000\n{}\n[models.chat]\nroute = [\
         {{provider = \"broken\", model = \"a\"}}, {{provider = \"healthy\", model = \"b\"}}]\n",
        provider("broken", &broken.base_url()),
        provider("healthy", &healthy.base_url()),
    );
    let h = with_config(&config, &[]).await;
    for _ in 0..5 {
        let events = h.stream(json!({"prompt": "hi"})).await;
        assert_eq!(text(&events), "ok");
    }
    assert_eq!(
        broken.requests().len(),
        2,
        "a cooling target was still called"
    );
    assert_eq!(healthy.requests().len(), 5);
}

#[tokio::test]
async fn a_mixed_route_falls_back_from_openai_to_bedrock() {
    use testkit::fake_bedrock::{FakeBedrock, MODEL_ID, Reply as BedrockReply};
    let broken = FakeOpenAi::start(vec![Reply::Status {
        status: 502,
        retry_after: None,
    }])
    .await;
    let bedrock = FakeBedrock::start(vec![BedrockReply::Stream(testkit::fake_bedrock::answer(
        &["From ", "Bedrock."],
        Duration::ZERO,
    ))])
    .await;
    let env = bedrock.env();
    let endpoint = &env
        .iter()
        .find(|(k, _)| *k == "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        .unwrap()
        .1;
    let config = format!(
        "{}[providers.aws]\nkind = \"bedrock\"\nendpoint_url = \"{endpoint}\"\n\n\
         [models.chat]\nroute = [{{provider = \"broken\", model = \"gpt\"}}, \
         {{provider = \"aws\", model = \"{MODEL_ID}\"}}]\n",
        provider("broken", &broken.base_url()),
    );
    let aws: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") && *k != "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let h = with_config(&config, &aws).await;
    let events = h.stream(json!({"prompt": "hi"})).await;
    assert_eq!(text(&events), "From Bedrock.");
    let turn = h.finished(&events).await;
    assert_eq!(
        (turn.provider.as_str(), turn.model.as_str()),
        ("aws", MODEL_ID)
    );
    assert_eq!(bedrock.requests()[0].model_id, MODEL_ID);
    assert_eq!(codes(&turn)[0].2, Some(502));
}

#[tokio::test]
async fn a_target_past_its_total_timeout_is_continued_by_the_next() {
    let slow = FakeOpenAi::start(vec![Reply::Stream(answer(
        &["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h "],
        Duration::from_millis(100),
    ))])
    .await;
    let healthy = FakeOpenAi::start(vec![Reply::Stream(answer(&["rest."], Duration::ZERO))]).await;
    let config = format!(
        "{}total_timeout_ms = 250\n{}\n[models.chat]\nroute = [\
         {{provider = \"slow\", model = \"a\"}}, {{provider = \"healthy\", model = \"b\"}}]\n\
         continue_on_failure = true\n",
        provider("slow", &slow.base_url()),
        provider("healthy", &healthy.base_url()),
    );
    let h = with_config(&config, &[]).await;
    let events = h.stream(json!({"prompt": "hi"})).await;
    let turn = h.finished(&events).await;
    assert_eq!(turn.status, Status::Complete, "{events:?}");
    assert!(
        turn.response.starts_with("a ")
            && turn.response.ends_with("rest.")
            && !turn.response.contains("h "),
        "{}",
        turn.response
    );
    let attempts = turn.attempts.unwrap();
    assert_eq!(attempts[0].error_code.as_deref(), Some("provider_timeout"));
    assert!(attempts[0].chars >= 2, "{attempts:?}");
}
