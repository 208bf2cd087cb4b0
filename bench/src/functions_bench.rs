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
const RUNS: usize = 40;

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

/// Starts of `bins` (path, function name) under `env`, [`RUNS`] each, taken in turns (the
/// order alternating from round to round) so that a machine that gets busier or quieter during
/// the run weighs on every binary alike.
async fn starts(bins: &[(&Path, &str)], env: &[(String, String)]) -> anyhow::Result<Vec<Start>> {
    // One unmeasured start each: the binary is in the page cache, as on a warm Lambda host.
    for (bin, name) in bins {
        one_start(bin, name, env).await?;
    }
    let mut times = vec![Vec::with_capacity(RUNS); bins.len()];
    let mut rss = vec![Vec::with_capacity(RUNS); bins.len()];
    for round in 0..RUNS {
        for k in 0..bins.len() {
            let i = if round % 2 == 0 {
                k
            } else {
                bins.len() - 1 - k
            };
            let (bin, name) = bins[i];
            let (t, r) = one_start(bin, name, env).await?;
            times[i].push(t);
            rss[i].push(r);
        }
    }
    Ok(times
        .into_iter()
        .zip(rss)
        .map(|(mut t, mut r)| {
            r.sort_unstable();
            Start {
                p50: percentile(&mut t, 50.0),
                p99: percentile(&mut t, 99.0),
                idle_rss_kib: r[r.len() / 2],
            }
        })
        .collect())
}

fn size(bin: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(bin)
        .map_err(|e| anyhow::anyhow!("{}: {e} (build with --release)", bin.display()))?
        .len())
}

/// Measures every function binary in `bin_dir` (release builds), and the stream function's
/// baseline when it was built.
pub async fn run(bin_dir: &Path) -> anyhow::Result<Vec<FunctionNumbers>> {
    let mut out = Vec::new();
    for name in FUNCTIONS.iter().copied().filter(|n| *n != "stream") {
        let bin = bin_dir.join(name);
        let one = [(bin.as_path(), name)];
        out.push(FunctionNumbers {
            name,
            size_bytes: size(&bin)?,
            pool: starts(&one, &database_env(false)).await?.remove(0),
            data_api: starts(&one, &database_env(true)).await?.remove(0),
            bedrock: None,
        });
    }
    // The stream function, and its build without the Bedrock SDK when there is one, in turns.
    let stream = bin_dir.join("stream");
    let baseline = bin_dir.join(STREAM_BASELINE);
    let mut bins = vec![(stream.as_path(), "stream")];
    if baseline.exists() {
        // The Runtime API serves it by the deployed function's name.
        bins.push((baseline.as_path(), "stream"));
    }
    let mut pool = starts(&bins, &database_env(false)).await?.into_iter();
    let mut data_api = starts(&bins, &database_env(true)).await?.into_iter();
    let mut bedrock = starts(&bins[..1], &bedrock_env()).await?.into_iter();
    for (i, (bin, _)) in bins.iter().enumerate() {
        out.push(FunctionNumbers {
            name: if i == 0 { "stream" } else { STREAM_BASELINE },
            size_bytes: size(bin)?,
            pool: pool
                .next()
                .ok_or_else(|| anyhow::anyhow!("no pool starts"))?,
            data_api: data_api
                .next()
                .ok_or_else(|| anyhow::anyhow!("no Data API starts"))?,
            bedrock: bedrock.next(),
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
