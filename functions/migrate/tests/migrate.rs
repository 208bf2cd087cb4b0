#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The migrate function as Lambda runs it: the binary polls a local Runtime API, and each
//! invocation applies what is pending through the Data API (on an empty database: everything;
//! the second time: nothing).

use std::process::Command;
use std::time::Duration;

use testkit::TestDb;
use testkit::data_api::DataApi;
use testkit::process::Proc;
use testkit::runtime_api::{Outcome, RuntimeApi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invocation_applies_what_is_pending() {
    let db = TestDb::blank().await;
    let api = DataApi::start(&testkit::admin_url()).await;
    let mut runtime = RuntimeApi::start(vec!["{}".into(), "{}".into()]).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_migrate"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("AWS_ENDPOINT_URL");
    for (k, v) in db.data_api_env(&api.endpoint, &[]) {
        cmd.env(k, v);
    }
    for (k, v) in runtime.env("migrate") {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(cmd, "migrate");

    let mut answers = Vec::new();
    for _ in 0..2 {
        let outcome = tokio::time::timeout(Duration::from_secs(30), runtime.outcome())
            .await
            .unwrap_or_else(|_| panic!("no answer; output: {}", proc.output()))
            .unwrap();
        match outcome {
            Outcome::Response { body, .. } => {
                answers.push(serde_json::from_slice::<serde_json::Value>(&body).unwrap())
            }
            other => panic!("{other:?}; output: {}", proc.output()),
        }
    }
    let applied = answers[0]["applied"].as_u64().unwrap();
    assert_eq!(applied as usize, testkit::migration_files(), "{answers:?}");
    assert_eq!(answers[1]["applied"], 0, "{answers:?}");
    assert_eq!(db.count().await, 0); // the table exists, empty
}
