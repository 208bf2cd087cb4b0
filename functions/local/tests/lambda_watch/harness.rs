//! Running the function binaries under `cargo lambda watch` (the Lambda runtime API emulator)
//! and calling them through their function URLs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::TestDb;
use testkit::process::{Proc, free_port, wait_ok, workspace_root};

pub fn cargo_lambda() -> PathBuf {
    let path = std::env::var("CARGO_LAMBDA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".venv/bin/cargo-lambda"));
    assert!(
        path.exists(),
        "cargo-lambda not found at {}: run `make test` (it installs it into .venv)",
        path.display()
    );
    path
}

/// A client that gives up on a request after a minute, so a dead function fails the test
/// instead of hanging it.
pub fn client() -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The last lines of a long output.
pub fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits until `function` answers its health check through its function URL under `base` (its
/// first call may build it: up to four minutes); the client to call it with.
pub async fn ready(proc: &Proc, base: &str, function: &str) -> reqwest::Client {
    let http = client();
    wait_ok(
        &http,
        &format!("{base}/{function}/health"),
        Duration::from_secs(240),
        || proc.output(),
    )
    .await;
    http
}

pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// `cargo lambda watch` on a free port with the functions pointed at `db`.
pub async fn watch(db: &TestDb, extra_env: &str) -> (Proc, String) {
    let (proc, base, _) = watch_env(&format!("DATABASE_URL={},AUTH=off{extra_env}", db.url));
    (proc, base)
}

/// `cargo lambda watch` on a free port with the functions' environment `env` (`K=V,K=V`): the
/// process, the function URLs' base and the emulator's root (where the Invoke API answers).
pub fn watch_env(env: &str) -> (Proc, String, String) {
    watch_on(free_port(), env, &[])
}

/// `cargo lambda watch` on `port` with the functions' environment `env` and more flags.
pub fn watch_on(port: u16, env: &str, flags: &[&str]) -> (Proc, String, String) {
    let mut cmd = Command::new(cargo_lambda());
    cmd.current_dir(workspace_root())
        .args([
            "lambda",
            "watch",
            "--ignore-changes",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .arg("--env-var")
        .arg(env)
        .args(flags);
    let proc = Proc::spawn(cmd, "cargo-lambda-watch");
    let root = format!("http://127.0.0.1:{port}");
    (proc, format!("{root}/lambda-url"), root)
}
