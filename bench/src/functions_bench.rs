//! The function binaries as Lambda starts them: each is run against a local Lambda Runtime API
//! (no events), and timed from process start to its first poll for an event (its cold start on
//! this machine: settings, logging, the lazy store and the provider set up; no database or
//! network call); then its resident memory while it waits, and its size on disk. The stream
//! function is also started with `LLM_PROVIDER=bedrock` (its Bedrock client built), and, when
//! `make bench` built it, as `stream-without-bedrock` (the same code without the Bedrock SDK):
//! what that dependency costs, measured in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::runtime_api::RuntimeApi;

use crate::stats::{ms, percentile, table};

/// The Lambda functions, one binary each.
pub const FUNCTIONS: &[&str] = &["history", "get", "search", "stream", "migrate"];
/// The stream function built without the Bedrock SDK (`--no-default-features`), the baseline.
pub const STREAM_BASELINE: &str = "stream-without-bedrock";
const RUNS: usize = 20;

/// One function's numbers, with the pool (`DATABASE_URL`) and with the Data API
/// (`DB_CLUSTER_ARN`; the deployed default).
pub struct FunctionNumbers {
    pub name: &'static str,
    pub size_bytes: u64,
    pub pool: Start,
    pub data_api: Start,
    /// The stream function with `LLM_PROVIDER=bedrock` (Data API mode).
    pub bedrock: Option<Start>,
}

/// Cold start percentiles and the median idle memory of one configuration.
pub struct Start {
    pub p50: Duration,
    pub p99: Duration,
    pub idle_rss_kib: u64,
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The database settings of the two configurations (nothing connects during a start).
fn database_env(data_api: bool) -> Vec<(String, String)> {
    let pairs: Vec<(&str, String)> = if data_api {
        vec![
            (
                "DB_CLUSTER_ARN",
                "arn:aws:rds:us-east-1:000000000000:cluster:bench".into(),
            ),
            (
                "DB_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench".into(),
            ),
            ("AWS_ACCESS_KEY_ID", "AKIDBENCH".into()),
            ("AWS_SECRET_ACCESS_KEY", "bench".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    } else {
        vec![("DATABASE_URL", testkit::admin_url())]
    };
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// What `LLM_PROVIDER=bedrock` adds (with the Data API's credentials and region).
fn bedrock_env() -> Vec<(String, String)> {
    let mut env = database_env(true);
    env.push(("LLM_PROVIDER".into(), "bedrock".into()));
    env.push(("BEDROCK_MODEL_ID".into(), "amazon.nova-lite-v1:0".into()));
    env
}

async fn one_start(
    bin: &Path,
    name: &str,
    env: &[(String, String)],
) -> anyhow::Result<(Duration, u64)> {
    let runtime = RuntimeApi::start(Vec::new()).await;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().cloned())
        .env("AUTH", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in runtime.env(name) {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let until = started + Duration::from_secs(10);
    let polled = loop {
        if let Some(t) = runtime.first_poll() {
            break t;
        }
        if Instant::now() > until {
            let _ = child.kill();
            anyhow::bail!("{name} did not poll the Runtime API within 10 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    // Idle: initialised and waiting for an event.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss = rss_kib(child.id()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    Ok((polled.saturating_duration_since(started), rss))
}

async fn starts(bin: &Path, name: &str, env: &[(String, String)]) -> anyhow::Result<Start> {
    // One unmeasured start: the binary is in the page cache, as on a warm Lambda host.
    one_start(bin, name, env).await?;
    let mut times = Vec::with_capacity(RUNS);
    let mut rss = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (t, r) = one_start(bin, name, env).await?;
        times.push(t);
        rss.push(r);
    }
    rss.sort_unstable();
    Ok(Start {
        p50: percentile(&mut times, 50.0),
        p99: percentile(&mut times, 99.0),
        idle_rss_kib: rss[rss.len() / 2],
    })
}

/// Measures every function binary in `bin_dir` (release builds), and the stream function's
/// baseline when it was built.
pub async fn run(bin_dir: &Path) -> anyhow::Result<Vec<FunctionNumbers>> {
    let mut out = Vec::new();
    let baseline = bin_dir
        .join(STREAM_BASELINE)
        .exists()
        .then_some(STREAM_BASELINE);
    for name in FUNCTIONS.iter().copied().chain(baseline) {
        let bin = bin_dir.join(name);
        let size_bytes = std::fs::metadata(&bin)
            .map_err(|e| anyhow::anyhow!("{}: {e} (build with --release)", bin.display()))?
            .len();
        // The Runtime API serves the function by its deployed name.
        let function = if name == STREAM_BASELINE {
            "stream"
        } else {
            name
        };
        out.push(FunctionNumbers {
            name,
            size_bytes,
            pool: starts(&bin, function, &database_env(false)).await?,
            data_api: starts(&bin, function, &database_env(true)).await?,
            bedrock: match name {
                "stream" => Some(starts(&bin, function, &bedrock_env()).await?),
                _ => None,
            },
        });
    }
    println!(
        "\nfunction binaries: process start to first Runtime API poll ({RUNS} starts each), \
         resident memory while waiting for an event, size on disk:\n"
    );
    table(
        &[
            "function",
            "configuration",
            "cold start p50 ms",
            "cold start p99 ms",
            "idle RSS MiB",
            "size MiB",
        ],
        &out.iter()
            .flat_map(|f| {
                [
                    Some(("pool", &f.pool)),
                    Some(("Data API", &f.data_api)),
                    f.bedrock
                        .as_ref()
                        .map(|b| ("Data API + LLM_PROVIDER=bedrock", b)),
                ]
                .into_iter()
                .flatten()
                .map(|(mode, s)| {
                    vec![
                        f.name.to_owned(),
                        mode.to_owned(),
                        ms(s.p50),
                        ms(s.p99),
                        mib(s.idle_rss_kib * 1024),
                        mib(f.size_bytes),
                    ]
                })
            })
            .collect::<Vec<_>>(),
    );
    Ok(out)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}
