#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAPI document against the server process, by schemathesis (PyPI, installed into the
//! project's `.venv` by `make test`): it generates requests from `openapi.json` (valid ones and
//! ones that break it) and checks every answer: no server error, documented statuses, content
//! types, headers and bodies, each SSE event against its schema, valid requests accepted and
//! invalid ones refused, authentication enforced. A fixed seed: the same cases on every run.

use std::process::Command;

use testkit::TestDb;
use testkit::process::{serve, workspace_root};

/// Reads whose `cursor` is an opaque token: any string is one by its schema, but only a
/// `next_cursor` the service gave is accepted (anything else is a 422), so the check that valid
/// requests are accepted cannot hold for them; every other check runs on them too.
const CURSOR_READS: &str = "^/(history|threads|search|threads/[{]id[}])$";

fn schemathesis(
    base: &str,
    key: &str,
    paths: &[(&str, &str)],
    exclude_checks: &[&str],
    config: &str,
) -> String {
    let exe = workspace_root().join(".venv/bin/schemathesis");
    assert!(
        exe.exists(),
        "{} not found: run `make test` (infra/tools.sh installs it into .venv)",
        exe.display()
    );
    let dir = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    // Read from the working directory.
    std::fs::write(dir.join("schemathesis.toml"), config).unwrap();
    let mut cmd = Command::new(exe);
    cmd.current_dir(&dir)
        .arg("run")
        .arg(workspace_root().join("openapi.json"))
        .args(["--url", base, "--checks", "all", "--seed", "20261126"])
        .args(["--max-examples", "25", "--workers", "2", "--no-color"])
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(paths.iter().flat_map(|(flag, regex)| [*flag, *regex]));
    for check in exclude_checks {
        cmd.args(["--exclude-checks", check]);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_the_answers_the_document_promises() {
    let db = TestDb::new().await;
    let key = db.key("fuzzer", "schemathesis").await;
    let (server, base) = serve(
        env!("CARGO_BIN_EXE_local"),
        "local-schemathesis",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "required"),
            ("OFFLINE_CHUNK_DELAY_MS", "0"),
        ],
    )
    .await;
    // A finished turn, for the operations on one turn or thread: generated ids find nothing.
    let turn = reqwest::Client::new()
        .post(format!("{base}/stream"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"prompt": "a turn to read, resume, cancel and delete"}))
        .send()
        .await
        .unwrap();
    let id = turn.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(turn.text().await.unwrap().contains("event: done"));
    let existing = format!(
        "[parameters]\n\"path.id\" = \"{id}\"\n\"path.model\" = \"offline-echo\"\n\
         \"path.file\" = \"app.js\"\n"
    );
    let base = base.clone();
    let runs = tokio::task::spawn_blocking(move || {
        let others = schemathesis(
            &base,
            &key,
            &[("--exclude-path-regex", CURSOR_READS)],
            &[],
            "",
        );
        let one = schemathesis(
            &base,
            &key,
            &[
                ("--include-path-regex", "[{]"),
                ("--exclude-path-regex", CURSOR_READS),
            ],
            &[],
            &existing,
        );
        // Last: it may delete the turn's thread.
        let reads = schemathesis(
            &base,
            &key,
            &[("--include-path-regex", CURSOR_READS)],
            &["positive_data_acceptance"],
            &existing,
        );
        (others, reads, one)
    })
    .await;
    let (others, reads, one) = match runs {
        Ok(r) => r,
        Err(e) => panic!("{e}\nserver:\n{}", server.output()),
    };
    // Each run reached the operations it was meant to.
    assert!(!others.contains(" 0 selected"), "{others}");
    assert!(reads.contains("5 selected"), "{reads}");
    assert!(!one.contains(" 0 selected"), "{one}");
}
