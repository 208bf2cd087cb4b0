//! What faults cost, measured on the local server as a release process:
//!
//! - memory with streams whose clients stall (read 2 KB, then never again, a small receive
//!   buffer), against the same server idle and the same streams read normally;
//! - how long a read takes to answer 503 once the database goes silent (a proxy that stops
//!   forwarding without closing), against the same read with the database answering.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::TestDb;
use testkit::fake_openai::{FakeOpenAi, Reply, answer, prose};
use testkit::process::serve;
use testkit::proxy::{PgProxy, host_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::{ms, percentile, table};

/// Concurrent streams in the memory measurement, and the size of each answer.
const STREAMS: usize = 10;
const ANSWER_BYTES: usize = 4_000_000;
/// Reads timed against a silent database, and its statement timeout.
const READS: usize = 10;
const STATEMENT_TIMEOUT_MS: &str = "1000";

/// The report lines: (measure, result).
pub async fn run(bin_dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let local = bin_dir.join("local");
    let mut lines = stalled_memory(&local).await?;
    lines.extend(silent_reads(&local).await?);
    println!("\n## Faults\n");
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|(a, b)| vec![a.clone(), b.clone()])
        .collect();
    table(&["measure", "result"], &rows);
    Ok(lines)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Opens a stream whose client reads 2 KB, then stops reading (without closing).
async fn stalled(base: &str, prompt: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut conn = socket
        .connect(base.trim_start_matches("http://").parse()?)
        .await?;
    let body = json!({ "prompt": prompt }).to_string();
    let request = format!(
        "POST /stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut first = vec![0u8; 2048];
    conn.read_exact(&mut first).await?;
    Ok(conn)
}

/// Idle RSS and peak RSS (KiB) of a fresh server through [`STREAMS`] concurrent answers whose
/// clients read them (`stall` false) or stall.
async fn peak(local: &Path, stall: bool) -> anyhow::Result<(u64, u64)> {
    let chunks = prose(ANSWER_BYTES, 2000, 11);
    let words: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let fake = FakeOpenAi::start(vec![Reply::Stream(answer(&words, Duration::ZERO))]).await;
    let db = TestDb::new().await;
    let base_url = fake.base_url();
    let max_chars = (ANSWER_BYTES * 2).to_string();
    let (proc, base) = serve(
        local.to_str().unwrap_or_default(),
        "bench-memory",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("AUTH", "off"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", base_url.as_str()),
            ("GUARDRAIL_MAX_RESPONSE_CHARS", max_chars.as_str()),
            ("METRICS", "off"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let pid = proc.pid();
    let idle = rss_kib(pid, "VmRSS:");
    let mut conns = Vec::new();
    let mut readers = Vec::new();
    let http = reqwest::Client::new();
    for i in 0..STREAMS {
        if stall {
            conns.push(stalled(&base, &format!("stalled {i}")).await?);
        } else {
            let (http, url) = (http.clone(), format!("{base}/stream"));
            readers.push(tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .json(&json!({ "prompt": format!("read {i}") }))
                    .send()
                    .await?;
                resp.bytes().await.map(|b| b.len())
            }));
        }
    }
    for r in readers {
        r.await??;
    }
    let until = Instant::now() + Duration::from_secs(120);
    while db.count_where("status = 'complete'").await < STREAMS as i64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let saved = db.count_where("status = 'complete'").await;
    anyhow::ensure!(
        saved == STREAMS as i64,
        "{saved} answers saved, not {STREAMS}"
    );
    let peak = rss_kib(pid, "VmHWM:");
    drop(conns);
    Ok((idle, peak))
}

async fn stalled_memory(local: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let (idle, read_peak) = peak(local, false).await?;
    let (stalled_idle, stalled_peak) = peak(local, true).await?;
    let per = |peak: u64, idle: u64| mib(peak.saturating_sub(idle) / STREAMS as u64);
    Ok(vec![(
        format!(
            "server memory with {STREAMS} concurrent {} MB answers, clients reading · clients \
             stalled (dropped past 1 MiB of lag; every answer saved): peak RSS over idle, per \
             stream (MiB)",
            ANSWER_BYTES / 1_000_000
        ),
        format!(
            "{} · {} (idle {} MiB)",
            per(read_peak, idle),
            per(stalled_peak, stalled_idle),
            mib(idle)
        ),
    )])
}

async fn silent_reads(local: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let db = TestDb::new().await;
    testkit::seed(&db, 50, 1).await;
    let proxy = PgProxy::start(host_port(&db.url)).await;
    let url = proxy.url_for(&db.url);
    let (_proc, base) = serve(
        local.to_str().unwrap_or_default(),
        "bench-silent",
        &[
            ("DATABASE_URL", url.as_str()),
            ("AUTH", "off"),
            ("DB_STATEMENT_TIMEOUT_MS", STATEMENT_TIMEOUT_MS),
            ("DB_CONNECT_TIMEOUT_MS", "1000"),
            ("METRICS", "off"),
            ("RUST_LOG", "error"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let time = |expect: u16| {
        let (http, url) = (http.clone(), format!("{base}/history?limit=20"));
        async move {
            let started = Instant::now();
            let resp = http.get(url).send().await?;
            let took = started.elapsed();
            anyhow::ensure!(
                resp.status() == expect,
                "{} instead of {expect}",
                resp.status()
            );
            Ok::<_, anyhow::Error>(took)
        }
    };
    let mut up = Vec::new();
    for _ in 0..READS {
        up.push(time(200).await?);
    }
    proxy.silence().await;
    let mut silent = Vec::new();
    for _ in 0..READS {
        silent.push(time(503).await?);
    }
    let p = |v: &mut Vec<Duration>| {
        format!(
            "p50 {} ms · p99 {} ms",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0))
        )
    };
    Ok(vec![
        (
            "`GET /history`, database answering (baseline)".into(),
            p(&mut up),
        ),
        (
            format!(
                "`GET /history` → 503, database silent (DB_STATEMENT_TIMEOUT_MS={STATEMENT_TIMEOUT_MS})"
            ),
            p(&mut silent),
        ),
    ])
}
