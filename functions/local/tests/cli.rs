#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The operator commands as a newcomer meets them: help without any setting, keys that must
//! have an owner and can be listed, and a server with `AUTH=required` that says how to call it.

use std::process::Command;

use testkit::TestDb;

fn local(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_local"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DB_CLUSTER_ARN")
        .env("LOG_FORMAT", "pretty");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_needs_no_settings() {
    for flag in ["help", "--help", "-h"] {
        let (ok, out, err) = local(&[flag], &[]);
        assert!(ok, "{flag}: {err}");
        for command in [
            "serve",
            "migrate",
            "replay",
            "key create",
            "key list",
            "key revoke",
        ] {
            assert!(
                out.contains(command),
                "{flag} does not mention {command}: {out}"
            );
        }
    }
    let (ok, _, err) = local(&["frobnicate"], &[]);
    assert!(!ok);
    assert!(err.contains("usage"), "{err}");
}

/// The value of the line of `out` that starts with `label` (what `key create` prints).
fn printed(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} line in {out}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn keys_need_an_owner_and_can_be_listed_without_showing_them() {
    let db = TestDb::new().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    for blank in [
        vec!["key", "create"],
        vec!["key", "create", ""],
        vec!["key", "create", "  "],
    ] {
        let (ok, out, err) = local(&blank, &env);
        assert!(!ok, "{blank:?} made a key: {out}");
        assert!(err.contains("owner"), "{err}");
    }
    let (ok, out, err) = local(&["key", "create", "alice", "laptop"], &env);
    assert!(ok, "{err}");
    let (key, id) = (printed(&out, "key:"), printed(&out, "id:"));
    let (ok, listed, err) = local(&["key", "list"], &env);
    assert!(ok, "{err}");
    assert!(listed.contains(&id) && listed.contains("alice") && listed.contains("laptop"));
    assert!(!listed.contains(&key), "the list shows the key itself");
    let (ok, _, err) = local(&["key", "revoke", &id], &env);
    assert!(ok, "{err}");
    let (_, listed, _) = local(&["key", "list"], &env);
    let line = listed.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        !line.trim_end().ends_with('-'),
        "not shown as revoked: {line}"
    );
}

#[tokio::test]
async fn keys_take_limits_and_unknown_flags_are_errors() {
    let db = TestDb::new().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    for bad in [
        vec!["key", "create", "alice", "--rmp", "5"],
        vec!["key", "create", "alice", "laptop", "extra"],
        vec!["key", "create", "alice", "--rpm", "0"],
        vec!["key", "create", "alice", "--period", "day"],
        vec!["key", "create", "alice", "--budget-usd", "lots"],
    ] {
        let (ok, out, err) = local(&bad, &env);
        assert!(!ok, "{bad:?} made a key: {out}");
        assert!(
            err.contains("usage") || err.contains("--"),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(db.count_keys().await, 0);
    let (ok, out, err) = local(
        &[
            "key",
            "create",
            "alice",
            "app",
            "--rpm",
            "5",
            "--budget-usd=2.5",
            "--period",
            "day",
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("--rpm 5 --budget-usd 2.5 --period day"),
        "{out}"
    );
    let id = printed(&out, "id:");
    let (ok, _, err) = local(&["key", "limits", &id, "--concurrency", "2"], &env);
    assert!(ok, "{err}");
    let (_, listed, _) = local(&["key", "list"], &env);
    let line = listed.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        line.contains("--concurrency 2") && !line.contains("--rpm"),
        "{line}"
    );
    assert!(line.contains("0.000000 USD, 0 tokens, 0 running"), "{line}");
    let (ok, _, err) = local(&["key", "limits", &id, "--clear"], &env);
    assert!(ok, "{err}");
    let (_, listed, _) = local(&["key", "list"], &env);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.contains(" none ")),
        "{listed}"
    );
    let (ok, _, err) = local(&["key", "limits", &id], &env);
    assert!(!ok && err.contains("--clear"), "{err}");
}

#[tokio::test]
async fn with_auth_required_the_server_says_how_to_call_it() {
    let db = TestDb::new().await;
    let (mut proc, base) = testkit::process::serve(
        env!("CARGO_BIN_EXE_local"),
        "local-auth-hint",
        &[("DATABASE_URL", db.url.as_str()), ("AUTH", "required")],
    )
    .await;
    let resp = testkit::http_client()
        .get(format!("{base}/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Authorization: Bearer") && message.contains("make key"),
        "{message}"
    );
    proc.stop();
    let output = proc.output();
    let serving = output
        .lines()
        .find(|l| l.contains("serving"))
        .expect("the serving line");
    assert!(serving.contains("Authorization: Bearer"), "{serving}");
    assert!(serving.contains("make key"), "{serving}");
}

/// `make lambda-watch` listens on the loopback interface unless `HOST` says otherwise, as the
/// local server does (cargo lambda's own default is every interface).
#[test]
fn lambda_watch_listens_on_loopback_unless_asked() {
    let root = testkit::process::workspace_root();
    let dry = |host: Option<&str>| {
        let mut cmd = Command::new("make");
        cmd.current_dir(&root).args(["-n", "lambda-watch"]);
        match host {
            Some(h) => cmd.env("HOST", h),
            None => cmd.env_remove("HOST"),
        };
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let line = |out: &str| {
        out.lines()
            .find(|l| l.contains("cargo lambda watch"))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    // `make -n` prints the recipe; the shell expands the default when it runs.
    let default = line(&dry(None));
    assert!(default.contains(r#"-A "${HOST:-127.0.0.1}""#), "{default}");
    let expanded = std::process::Command::new("bash")
        .args(["-c", r#"unset HOST; echo "${HOST:-127.0.0.1}""#])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&expanded.stdout).trim(),
        "127.0.0.1"
    );
}

/// The settings that hold secrets come from Secrets Manager at start when their `*_SECRET_ARN`
/// is set (the deployment holds ARNs, never the values): the server reaches its database with
/// the URL a secret holds, and takes the static key another holds; a secret that cannot be read
/// stops the process at start, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_named_by_arn_are_read_at_start() {
    let db = TestDb::new().await;
    let url_arn = "arn:aws:secretsmanager:eu-west-1:000000000000:secret:db-url";
    let token_arn = "arn:aws:secretsmanager:eu-west-1:000000000000:secret:token";
    let secrets = testkit::fake_secrets::FakeSecrets::start(&[
        (url_arn, &db.url),
        (token_arn, "s3cret-token-of-length"),
    ])
    .await;
    let env = [
        ("DATABASE_URL_SECRET_ARN", url_arn),
        ("AUTH_TOKEN_SECRET_ARN", token_arn),
        ("AUTH", "required"),
        (
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            secrets.endpoint.as_str(),
        ),
        ("AWS_ACCESS_KEY_ID", "AKIDLOCAL"),
        ("AWS_SECRET_ACCESS_KEY", "local-secret"),
    ];
    let (_proc, base) =
        testkit::process::serve(env!("CARGO_BIN_EXE_local"), "local-secrets", &env).await;
    let http = testkit::http_client();
    let with = http
        .get(format!("{base}/history"))
        .bearer_auth("s3cret-token-of-length")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let without = http.get(format!("{base}/history")).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let mut reads = secrets.reads();
    reads.sort();
    assert_eq!(reads, [url_arn, token_arn]);

    let missing = "arn:aws:secretsmanager:eu-west-1:000000000000:secret:gone";
    let (ok, _, err) = local(
        &["migrate"],
        &[
            ("DATABASE_URL_SECRET_ARN", missing),
            (
                "AWS_ENDPOINT_URL_SECRETS_MANAGER",
                secrets.endpoint.as_str(),
            ),
            ("AWS_ACCESS_KEY_ID", "AKIDLOCAL"),
            ("AWS_SECRET_ACCESS_KEY", "local-secret"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("DATABASE_URL_SECRET_ARN"), "{err}");
}
