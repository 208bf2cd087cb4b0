#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The playground page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `infra/tools.sh`) driven by Playwright for Python (in `.venv`), against the server process
//! with the offline provider (and one whose upstream, a local OpenAI-compatible server, answers in
//! markdown and with tool calls). The browser's checks are in `tests/browser/playground.py`; here:
//! the servers, and what the page is served with.

use std::process::Command;

use std::time::Duration;

use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Fragment, Reply, answer, tool_calls};
use testkit::process::{serve, workspace_root};

fn python() -> std::path::PathBuf {
    let path = workspace_root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} not found: run `make test` (infra/tools.sh installs Playwright into .venv)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_chats_stops_reloads_searches_and_uses_a_key_in_a_real_browser() {
    let open_db = TestDb::new().await;
    let settings = [
        ("AUTH", "off"),
        ("OFFLINE_CHUNK_DELAY_MS", "60"),
        ("CHECKPOINT_INTERVAL_MS", "200"),
        ("MAX_PROMPT_CHARS", "1000"),
    ];
    let mut env = vec![("DATABASE_URL", open_db.url.as_str())];
    env.extend(settings);
    let (mut open, base) = serve(env!("CARGO_BIN_EXE_local"), "local-playground", &env).await;

    let keyed_db = TestDb::new().await;
    // A key with a daily budget, on priced answers: the Usage view has spend to draw.
    let (_, key) = keyed_db
        .limited_key(
            "browser",
            "chromium",
            &common::spend::KeyLimits {
                budget_usd: Some(1.0),
                period: common::spend::Period::Day,
                ..Default::default()
            },
        )
        .await;
    let (mut keyed, auth_base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-playground-auth",
        &[
            ("DATABASE_URL", keyed_db.url.as_str()),
            ("AUTH", "required"),
            ("OFFLINE_CHUNK_DELAY_MS", "5"),
            (
                "LLM_PRICES",
                r#"{"offline-echo": {"input": 100, "output": 200}}"#,
            ),
        ],
    )
    .await;

    // A third, whose upstream answers in markdown and with tool calls.
    let fake = FakeOpenAi::by_prompt(|prompt, _| upstream(prompt)).await;
    let md_db = TestDb::new().await;
    let fake_url = fake.base_url();
    let (mut md, md_base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-playground-markdown",
        &[
            ("DATABASE_URL", md_db.url.as_str()),
            ("AUTH", "off"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", fake_url.as_str()),
            ("LLM_MAX_RETRIES", "0"),
        ],
    )
    .await;

    // The page and its files need no key, and come with a policy that keeps them to their origin.
    let http = testkit::http_client();
    for path in [
        "/",
        "/playground/app.js",
        "/playground/markdown.js",
        "/playground/app.css",
    ] {
        let resp = http.get(format!("{auth_base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self';"),
            "{csp}"
        );
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }

    // Screenshots go to PLAYGROUND_SCREENSHOTS (`make screenshots`: docs/img), else a temp dir.
    let shots = std::env::var("PLAYGROUND_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("playground-{}", std::process::id()))
        });
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(workspace_root().join("functions/local/tests/browser/playground.py"))
            .args([&base, &auth_base, &key])
            .arg(&shots)
            .arg(&md_base)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the browser checks failed:\n{}\n{}\nserver:\n{}\nserver with keys:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        open.output(),
        keyed.output()
    );
    // The instructions reached the upstream as the system message.
    let first = &fake.requests()[0];
    assert_eq!(
        first["messages"][0],
        serde_json::json!({"role": "system", "content": "Answer in markdown."})
    );
    open.stop();
    keyed.stop();
    md.stop();
}

/// The third server's upstream: a markdown answer (with markup that must stay text), a short
/// one, and tool calls.
fn upstream(prompt: &str) -> Reply {
    match prompt {
        "show markdown" => Reply::Stream(answer(
            &[
                "# Result\n\nSome **bold** text and `inline` code.\n\n",
                "```python\nprint(\"hi\")\n```\n\n- one\n- two\n\n",
                "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n",
                "<img src=x onerror=\"window.__pwned=3\">",
            ],
            Duration::from_millis(20),
        )),
        "weather in Oslo and Rome" => Reply::Stream(tool_calls(
            &[
                Fragment {
                    index: 0,
                    id: Some("call_oslo"),
                    name: Some("get_weather"),
                    arguments: "{\"city\":\"Oslo\"}",
                },
                Fragment {
                    index: 1,
                    id: Some("call_rome"),
                    name: Some("get_weather"),
                    arguments: "{\"city\":\"Rome\"}",
                },
            ],
            "tool_calls",
        )),
        _ => Reply::Stream(answer(&["Again, ", "briefly."], Duration::from_millis(20))),
    }
}
