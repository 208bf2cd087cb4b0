//! The function binaries as Lambda starts them: each is run against a local Lambda Runtime API
//! (no events), and timed from process start to its first poll for an event (its cold start on
//! this machine: settings, logging, the lazy store and the provider set up; no database or
//! network call); then its resident memory while it waits, and its size on disk.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::runtime_api::RuntimeApi;

use crate::stats::{ms, percentile, table};

/// The Lambda functions, one binary each.
pub const FUNCTIONS: &[&str] = &["history", "get", "search", "stream", "migrate"];
const RUNS: usize = 20;

/// One function's numbers.
pub struct FunctionNumbers {
    pub name: &'static str,
    pub size_bytes: u64,
    pub cold_p50: Duration,
    pub cold_p99: Duration,
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

async fn one_start(bin: &Path, name: &str, database_url: &str) -> anyhow::Result<(Duration, u64)> {
    let runtime = RuntimeApi::start(Vec::new()).await;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("DATABASE_URL", database_url)
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

/// Measures every function binary in `bin_dir` (release builds).
pub async fn run(bin_dir: &Path) -> anyhow::Result<Vec<FunctionNumbers>> {
    let database_url = testkit::admin_url();
    let mut out = Vec::new();
    for name in FUNCTIONS {
        let bin = bin_dir.join(name);
        let size_bytes = std::fs::metadata(&bin)
            .map_err(|e| anyhow::anyhow!("{}: {e} (build with --release)", bin.display()))?
            .len();
        // One unmeasured start: the binary is in the page cache, as on a warm Lambda host.
        one_start(&bin, name, &database_url).await?;
        let mut starts = Vec::with_capacity(RUNS);
        let mut rss = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let (t, r) = one_start(&bin, name, &database_url).await?;
            starts.push(t);
            rss.push(r);
        }
        rss.sort_unstable();
        out.push(FunctionNumbers {
            name,
            size_bytes,
            cold_p50: percentile(&mut starts, 50.0),
            cold_p99: percentile(&mut starts, 99.0),
            idle_rss_kib: rss[rss.len() / 2],
        });
    }
    println!(
        "\nfunction binaries: process start to first Runtime API poll ({RUNS} starts each), \
         resident memory while waiting for an event, size on disk:\n"
    );
    table(
        &[
            "function",
            "cold start p50 ms",
            "cold start p99 ms",
            "idle RSS MiB",
            "size MiB",
        ],
        &out.iter()
            .map(|f| {
                vec![
                    f.name.to_owned(),
                    ms(f.cold_p50),
                    ms(f.cold_p99),
                    mib(f.idle_rss_kib * 1024),
                    mib(f.size_bytes),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(out)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}
