#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `POST /stream` and `/v1/chat/completions` with `LLM_PROVIDER=bedrock`, over real HTTP against
//! a real PostgreSQL; the provider is a local ConverseStream endpoint that checks SigV4 and
//! answers in AWS's event-stream framing, including Bedrock's failures.

mod support;

use std::time::Duration;

use common::Status;
use serde_json::{Value, json};
use support::Harness;
use testkit::fake_bedrock::{Event, FakeBedrock, MODEL_ID, Reply, answer};
use testkit::sse::{self, Received};

async fn with_bedrock(fake: &FakeBedrock, extra: &[(&str, &str)]) -> Harness {
    let env = fake.env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra);
    support::serve(&pairs).await
}

fn last(events: &[Received]) -> &Value {
    &events.last().unwrap().data
}

#[tokio::test]
async fn an_answer_streams_from_bedrock_with_its_usage_and_stop_reason_and_is_saved() {
    let gap = Duration::from_millis(60);
    let fake = FakeBedrock::start(vec![Reply::Stream(answer(&["Hel", "lo ", "world"], gap))]).await;
    let h = with_bedrock(&fake, &[]).await;
    let events = h
        .stream(
            json!({"prompt": "Say hello", "system": "Be brief.", "max_tokens": 64,
                       "temperature": 0.25}),
        )
        .await;
    assert_eq!(
        sse::names(&events),
        ["start", "delta", "delta", "delta", "done"]
    );
    let deltas: Vec<&Received> = events.iter().filter(|e| e.name == "delta").collect();
    assert!(
        deltas[2].at - deltas[0].at >= gap,
        "the deltas arrived together: the event stream was buffered"
    );
    let done = last(&events);
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(
        done["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14})
    );
    assert_eq!(done["saved"], true);

    // Exactly what Bedrock received: the model in the path, then messages, system and the
    // inference config, in Converse's shape.
    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].model_id, MODEL_ID);
    assert_eq!(
        sent[0].body,
        json!({
            "messages": [{"role": "user", "content": [{"text": "Say hello"}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.25}
        })
    );
    assert!(fake.refused().is_empty(), "{:?}", fake.refused());

    let row = h.finished(&events).await;
    assert_eq!(row.status, Status::Complete);
    assert_eq!(row.response, "Hello world");
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("bedrock", MODEL_ID)
    );
    assert_eq!(row.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens, row.total_tokens),
        (Some(11), Some(3), Some(14))
    );
}

#[tokio::test]
async fn a_continued_thread_reaches_bedrock_as_alternating_turns_under_its_system_blocks() {
    let fake = FakeBedrock::start(vec![
        Reply::Stream(answer(&["Paris."], Duration::ZERO)),
        Reply::Stream(answer(&["About 2 million."], Duration::ZERO)),
    ])
    .await;
    let h = with_bedrock(&fake, &[]).await;
    let first = h
        .stream(json!({"prompt": "Capital of France?", "system": "Answer in one line."}))
        .await;
    let first_id = first[0].data["id"].as_str().unwrap().to_owned();
    h.finished(&first).await;
    let second = h
        .stream(json!({"prompt": "Its population?", "previous_id": first_id}))
        .await;
    assert_eq!(last(&second)["saved"], true);
    assert_eq!(
        fake.requests()[1].body,
        json!({
            "messages": [
                {"role": "user", "content": [{"text": "Capital of France?"}]},
                {"role": "assistant", "content": [{"text": "Paris."}]},
                {"role": "user", "content": [{"text": "Its population?"}]}
            ],
            "system": [{"text": "Answer in one line."}]
        })
    );
    let row = h.finished(&second).await;
    assert_eq!(row.previous_id.map(|p| p.to_string()), Some(first_id));
}

#[tokio::test]
async fn stop_reasons_become_the_finish_reasons_clients_know() {
    for (raw, ours) in [
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("stop_sequence", "stop"),
    ] {
        let fake = FakeBedrock::start(vec![Reply::Stream(vec![
            Event::Start,
            Event::Text("cut short".into()),
            Event::Stop(raw),
            Event::Usage {
                input: 3,
                output: 2,
            },
        ])])
        .await;
        let h = with_bedrock(&fake, &[]).await;
        let events = h.stream(json!({"prompt": "go"})).await;
        assert_eq!(last(&events)["finish_reason"], ours, "{raw}");
        assert_eq!(
            h.finished(&events).await.finish_reason.as_deref(),
            Some(ours)
        );
    }
}

#[tokio::test]
async fn throttling_before_the_stream_or_as_its_first_event_is_retried() {
    let fake = FakeBedrock::start(vec![
        Reply::Error {
            status: 429,
            kind: "ThrottlingException",
        },
        Reply::Stream(vec![Event::Exception("throttlingException")]),
        Reply::Stream(answer(&["made it"], Duration::ZERO)),
    ])
    .await;
    let h = with_bedrock(&fake, &[]).await;
    let events = h.stream(json!({"prompt": "busy?"})).await;
    assert_eq!(last(&events)["saved"], true);
    assert_eq!(sse::text(&events), "made it");
    assert_eq!(fake.requests().len(), 3);
    assert_eq!(h.finished(&events).await.status, Status::Complete);
}

#[tokio::test]
async fn throttling_that_lasts_is_provider_rate_limited_after_the_retries() {
    let fake = FakeBedrock::start(vec![Reply::Error {
        status: 429,
        kind: "ThrottlingException",
    }])
    .await;
    let h = with_bedrock(&fake, &[("LLM_MAX_RETRIES", "1")]).await;
    let events = h.stream(json!({"prompt": "busy?"})).await;
    assert_eq!(events.last().unwrap().name, "error");
    assert_eq!(last(&events)["code"], "provider_rate_limited");
    assert_eq!(fake.requests().len(), 2, "one try and one retry");
    let row = h.finished(&events).await;
    assert_eq!(
        (row.status, row.error.as_deref()),
        (Status::Failed, Some("provider_rate_limited"))
    );
}

#[tokio::test]
async fn validation_and_access_errors_keep_their_kind_without_a_retry() {
    for (status, kind, code) in [
        (400, "ValidationException", "provider_bad_request"),
        (403, "AccessDeniedException", "provider_auth"),
        (404, "ResourceNotFoundException", "provider_model_not_found"),
    ] {
        let fake = FakeBedrock::start(vec![Reply::Error { status, kind }]).await;
        let h = with_bedrock(&fake, &[]).await;
        let events = h.stream(json!({"prompt": "no"})).await;
        assert_eq!(last(&events)["code"], code, "{kind}");
        assert_eq!(fake.requests().len(), 1, "{kind} must not be retried");
        assert_eq!(h.finished(&events).await.status, Status::Failed);
    }
}

#[tokio::test]
async fn failures_inside_the_stream_keep_the_text_that_came() {
    let cases = [
        (
            Event::Exception("modelStreamErrorException"),
            "provider_error",
        ),
        (
            Event::Exception("internalServerException"),
            "provider_error",
        ),
        (
            Event::Exception("serviceUnavailableException"),
            "provider_error",
        ),
        (
            Event::Exception("throttlingException"),
            "provider_rate_limited",
        ),
        (Event::Cut, "provider_disconnected"),
        (Event::Sleep(Duration::from_secs(5)), "provider_timeout"),
    ];
    for (failure, code) in cases {
        let what = format!("{failure:?}");
        let fake = FakeBedrock::start(vec![Reply::Stream(vec![
            Event::Start,
            Event::Text("half ".into()),
            Event::Text("an answer".into()),
            failure,
            Event::Text(" never sent".into()),
        ])])
        .await;
        let h = with_bedrock(&fake, &[("LLM_IDLE_TIMEOUT_MS", "400")]).await;
        let events = h.stream(json!({"prompt": "go on"})).await;
        assert_eq!(events.last().unwrap().name, "error", "{what}: {events:?}");
        assert_eq!(last(&events)["code"], code, "{what}");
        assert_eq!(sse::text(&events), "half an answer", "{what}");
        let row = h.finished(&events).await;
        assert_eq!(
            (row.status, row.error.as_deref(), row.response.as_str()),
            (Status::Partial, Some(code), "half an answer"),
            "{what}"
        );
        assert_eq!(fake.requests().len(), 1, "{what}: text had come, no retry");
    }
}

#[tokio::test]
async fn a_request_signed_with_other_credentials_is_refused_and_not_retried() {
    let fake = FakeBedrock::start(vec![Reply::Stream(answer(&["never"], Duration::ZERO))]).await;
    let h = with_bedrock(&fake, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]).await;
    let events = h.stream(json!({"prompt": "who am I?"})).await;
    assert_eq!(last(&events)["code"], "provider_error");
    let refused = fake.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("signature mismatch"), "{refused:?}");
}

#[tokio::test]
async fn the_openai_api_answers_from_bedrock_with_bedrocks_usage_and_finish_reason() {
    let fake = FakeBedrock::start(vec![Reply::Stream(vec![
        Event::Start,
        Event::Text("Bon".into()),
        Event::Text("jour".into()),
        Event::Stop("max_tokens"),
        Event::Usage {
            input: 7,
            output: 2,
        },
    ])])
    .await;
    let h = with_bedrock(&fake, &[]).await;
    let resp = h
        .http
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(&json!({"model": MODEL_ID, "max_tokens": 2, "messages": [
            {"role": "developer", "content": "French only."},
            {"role": "user", "content": "Greet me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
    );
    assert_eq!(
        fake.requests()[0].body,
        json!({
            "messages": [{"role": "user", "content": [{"text": "Greet me"}]}],
            "system": [{"text": "French only."}],
            "inferenceConfig": {"maxTokens": 2}
        })
    );
}

/// A parameter Converse cannot honour is refused with a 400 naming it, before Bedrock is
/// called; the token cap, as `max_completion_tokens`, becomes `maxTokens`.
#[tokio::test]
async fn bedrock_refuses_by_name_what_converse_cannot_honour() {
    let fake = FakeBedrock::start(vec![Reply::Stream(answer(&["ok"], Duration::ZERO))]).await;
    let h = with_bedrock(&fake, &[]).await;
    for (field, value) in [
        ("seed", json!(7)),
        ("frequency_penalty", json!(0.5)),
        ("logit_bias", json!({"50256": -100})),
        ("reasoning_effort", json!("low")),
        ("user", json!("u-1")),
    ] {
        let mut body = json!({"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}]});
        body[field] = value;
        let resp = h
            .http
            .post(format!("http://{}/v1/chat/completions", h.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{field}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], field, "{err}");
        assert_eq!(err["error"]["code"], "unsupported_parameter", "{err}");
    }
    assert!(fake.requests().is_empty());
    let resp = h
        .http
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(&json!({"model": MODEL_ID, "max_completion_tokens": 3,
            "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.requests()[0].body["inferenceConfig"]["maxTokens"], 3);
}

/// A tool call's first fragment and its arguments, as `/v1` streams them.
fn streamed_calls(body: &str) -> Vec<(Value, String)> {
    let mut calls: Vec<(Value, String)> = Vec::new();
    for line in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(chunk) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = usize::try_from(call["index"].as_u64().unwrap()).unwrap();
            if call.get("id").is_some() {
                assert_eq!(i, calls.len(), "calls are numbered in order");
                calls.push((call.clone(), String::new()));
            }
            calls[i].1 += call["function"]["arguments"].as_str().unwrap_or_default();
        }
    }
    calls
}

/// Tools reach Converse as `toolConfig`; its `toolUse` blocks stream back as OpenAI's tool call
/// chunks (and whole without streaming), `tool_use` as `tool_calls`; the assistant's calls and
/// the tool results go back as `toolUse` and `toolResult` blocks.
#[tokio::test]
async fn tools_round_trip_through_converse() {
    let calls = vec![
        Event::Start,
        Event::Text("Checking.".into()),
        Event::BlockStop,
        Event::ToolStart {
            index: 1,
            id: "tooluse_a",
            name: "get_weather",
        },
        Event::ToolInput {
            index: 1,
            input: "{\"city\":",
        },
        Event::ToolInput {
            index: 1,
            input: "\"Oslo\"}",
        },
        Event::ToolStart {
            index: 2,
            id: "tooluse_b",
            name: "get_weather",
        },
        Event::ToolInput {
            index: 2,
            input: "{\"city\":\"Rome\"}",
        },
        Event::Stop("tool_use"),
        Event::Usage {
            input: 30,
            output: 12,
        },
    ];
    let fake = FakeBedrock::start(vec![
        Reply::Stream(calls.clone()),
        Reply::Stream(calls),
        Reply::Stream(answer(&["Sunny ", "in Oslo."], Duration::ZERO)),
    ])
    .await;
    let h = with_bedrock(&fake, &[]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let ask = json!([{"role": "user", "content": "Weather in Oslo and Rome?"}]);
    let post = |body: Value| {
        h.http
            .post(format!("http://{}/v1/chat/completions", h.addr))
            .json(&body)
            .send()
    };

    let resp = post(json!({"model": MODEL_ID, "messages": ask, "tools": tools,
        "tool_choice": "required", "stream": true}))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let streamed = streamed_calls(&body);
    assert_eq!(streamed.len(), 2, "{body}");
    assert_eq!(streamed[0].0["id"], "tooluse_a");
    assert_eq!(streamed[0].0["function"]["name"], "get_weather");
    assert_eq!(streamed[0].1, "{\"city\":\"Oslo\"}");
    assert_eq!(streamed[1].1, "{\"city\":\"Rome\"}");
    assert!(body.contains("\"finish_reason\":\"tool_calls\""), "{body}");
    let sent = &fake.requests()[0].body;
    assert_eq!(
        sent["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "get_weather",
                   "description": "The weather of a city",
                   "inputSchema": {"json": {"type": "object",
                       "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}],
               "toolChoice": {"any": {}}})
    );

    let resp = post(json!({"model": MODEL_ID, "messages": ask, "tools": tools}))
        .await
        .unwrap();
    let done: Value = resp.json().await.unwrap();
    let message = &done["choices"][0]["message"];
    assert_eq!(message["content"], "Checking.");
    assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
    let plain: Vec<(&Value, &Value, &Value)> = message["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                &c["id"],
                &c["function"]["name"],
                &c["function"]["arguments"],
            )
        })
        .collect();
    let from_stream: Vec<(&Value, &Value, String)> = streamed
        .iter()
        .map(|(first, args)| (&first["id"], &first["function"]["name"], args.clone()))
        .collect();
    assert_eq!(plain.len(), from_stream.len());
    for (p, s) in plain.iter().zip(&from_stream) {
        assert_eq!((p.0, p.1, p.2.as_str().unwrap()), (s.0, s.1, s.2.as_str()));
    }
    let id = uuid::Uuid::parse_str(done["id"].as_str().unwrap().trim_start_matches("chatcmpl-"))
        .unwrap();
    let turn = testkit::finished(h.store.as_ref(), "local", id).await;
    assert_eq!(turn.status, Status::Complete);
    assert_eq!(turn.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        turn.tool_calls.as_ref().unwrap()[1].arguments,
        "{\"city\":\"Rome\"}"
    );

    let mut back = ask.as_array().unwrap().clone();
    back.push(message.clone());
    back.push(json!({"role": "tool", "tool_call_id": "tooluse_a", "content": "sunny"}));
    back.push(json!({"role": "tool", "tool_call_id": "tooluse_b", "content": "rain"}));
    let resp = post(json!({"model": MODEL_ID, "messages": back, "tools": tools}))
        .await
        .unwrap();
    let done: Value = resp.json().await.unwrap();
    assert_eq!(done["choices"][0]["message"]["content"], "Sunny in Oslo.");
    let sent = &fake.requests()[2].body["messages"];
    assert_eq!(
        sent[1],
        json!({"role": "assistant", "content": [
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather",
                         "input": {"city": "Oslo"}}},
            {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather",
                         "input": {"city": "Rome"}}}]})
    );
    assert_eq!(
        sent[2],
        json!({"role": "user", "content": [
            {"toolResult": {"toolUseId": "tooluse_a", "content": [{"text": "sunny"}]}},
            {"toolResult": {"toolUseId": "tooluse_b", "content": [{"text": "rain"}]}}]})
    );
}

/// `json_schema` is served by a forced tool whose input schema is the schema: its input is the
/// answer's content. A `data:` image becomes an image block; a URL is refused by name (the
/// service never fetches URLs).
#[tokio::test]
async fn json_schema_and_images_on_converse() {
    let fake = FakeBedrock::start(vec![Reply::Stream(vec![
        Event::Start,
        Event::ToolStart {
            index: 0,
            id: "tooluse_x",
            name: "Event",
        },
        Event::ToolInput {
            index: 0,
            input: "{\"name\":\"Launch\",",
        },
        Event::ToolInput {
            index: 0,
            input: "\"day\":\"Friday\"}",
        },
        Event::Stop("tool_use"),
        Event::Usage {
            input: 20,
            output: 9,
        },
    ])])
    .await;
    let h = with_bedrock(&fake, &[]).await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"},
        "day": {"type": "string"}}, "required": ["name", "day"]});
    let png = "iVBORw0KGgo=";
    let resp = h
        .http
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(&json!({"model": MODEL_ID,
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "Event", "schema": schema, "strict": true}},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What event is on this poster?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let done: Value = resp.json().await.unwrap();
    assert_eq!(
        done["choices"][0]["message"]["content"],
        "{\"name\":\"Launch\",\"day\":\"Friday\"}"
    );
    assert_eq!(done["choices"][0]["finish_reason"], "stop");
    assert!(done["choices"][0]["message"].get("tool_calls").is_none());
    let sent = &fake.requests()[0].body;
    assert_eq!(
        sent["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "Event", "inputSchema": {"json": schema}}}],
               "toolChoice": {"tool": {"name": "Event"}}})
    );
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": png}}})
    );

    let resp = h
        .http
        .post(format!("http://{}/v1/chat/completions", h.addr))
        .json(
            &json!({"model": MODEL_ID, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/poster.png"}}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "messages[0].content[0].image_url");
    assert_eq!(err["error"]["code"], "unsupported_parameter");
    assert_eq!(
        fake.requests().len(),
        1,
        "a refused request never reaches Bedrock"
    );
}
