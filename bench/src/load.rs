//! `bench load`: the local server as a process under 200 concurrent streams plus history and
//! search traffic, for a bounded time on loopback; prints errors, rows saved vs streams
//! started, latencies and the server's peak memory. Exits non-zero on any error or lost row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::stats::{ms, percentile, table};

const STREAMS: usize = 200;
const READERS: usize = 8;

#[derive(Default)]
struct Tally {
    started: AtomicUsize,
    completed: AtomicUsize,
    errors: AtomicUsize,
    stream_ms: Mutex<Vec<Duration>>,
    ttfb_ms: Mutex<Vec<Duration>>,
    history_ms: Mutex<Vec<Duration>>,
    search_ms: Mutex<Vec<Duration>>,
}

async fn one_stream(http: &reqwest::Client, base: &str, i: usize, t: &Tally) {
    let started = Instant::now();
    let resp = http
        .post(format!("{base}/stream"))
        .body(format!(r#"{{"prompt":"load test prompt number {i}"}}"#))
        .send()
        .await;
    let Ok(resp) = resp.inspect_err(|_| {
        t.errors.fetch_add(1, Ordering::SeqCst);
    }) else {
        return;
    };
    if resp.status() != 200 {
        t.errors.fetch_add(1, Ordering::SeqCst);
        return;
    }
    t.started.fetch_add(1, Ordering::SeqCst);
    let mut body = resp.bytes_stream();
    let mut all = String::new();
    let mut ttfb = None;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            t.errors.fetch_add(1, Ordering::SeqCst);
            return;
        };
        all.push_str(&String::from_utf8_lossy(&chunk));
        if ttfb.is_none() && all.contains("event: delta") {
            ttfb = Some(started.elapsed());
        }
    }
    if all.contains("event: done") && all.contains("\"saved\":true") {
        t.completed.fetch_add(1, Ordering::SeqCst);
        t.stream_ms.lock().await.push(started.elapsed());
        if let Some(d) = ttfb {
            t.ttfb_ms.lock().await.push(d);
        }
    } else {
        t.errors.fetch_add(1, Ordering::SeqCst);
    }
}

async fn one_read(http: &reqwest::Client, url: &str, t: &Tally, into: &Mutex<Vec<Duration>>) {
    let started = Instant::now();
    let ok = match http.get(url).send().await {
        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
        Err(_) => false,
    };
    if ok {
        into.lock().await.push(started.elapsed());
    } else {
        t.errors.fetch_add(1, Ordering::SeqCst);
    }
}

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(server_bin: &str, seconds: u64) -> anyhow::Result<()> {
    let db = testkit::TestDb::new().await;
    let port = testkit::process::free_port();
    let mut cmd = std::process::Command::new(server_bin);
    cmd.arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("PORT", port.to_string())
        .env("AUTH", "off")
        .env("DB_POOL_SIZE", "16")
        .env("RUST_LOG", "warn");
    let mut server = testkit::process::Proc::spawn(cmd, "load-server");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    testkit::process::wait_ok(
        &http,
        &format!("{base}/health"),
        Duration::from_secs(30),
        || server.output(),
    )
    .await;
    let pid = server.pid();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..STREAMS {
        let (http, base, t, stop) = (http.clone(), base.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                one_stream(&http, &base, i, &t).await;
                i += STREAMS;
            }
        }));
    }
    for w in 0..READERS {
        let (http, base, t, stop) = (http.clone(), base.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if w % 2 == 0 {
                    one_read(
                        &http,
                        &format!("{base}/history?limit=20"),
                        &t,
                        &t.history_ms,
                    )
                    .await;
                } else {
                    one_read(
                        &http,
                        &format!("{base}/search?query=load%20prompt"),
                        &t,
                        &t.search_ms,
                    )
                    .await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await?;
    }
    let peak = peak_rss_kb(pid);
    let rows: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM conversations WHERE status = 'complete'",
            &[],
        )
        .await?
        .get(0);
    server.stop();

    let started = tally.started.load(Ordering::SeqCst);
    let errors = tally.errors.load(Ordering::SeqCst);
    let mut sm = tally.stream_ms.lock().await.clone();
    let mut tt = tally.ttfb_ms.lock().await.clone();
    let mut hm = tally.history_ms.lock().await.clone();
    let mut qm = tally.search_ms.lock().await.clone();
    println!(
        "\nload: {STREAMS} concurrent streams (offline provider) + {READERS} history/search readers, {seconds} s, loopback\n"
    );
    table(
        &["measure", "value"],
        &[
            vec!["streams started".into(), started.to_string()],
            vec![
                "streams completed and saved".into(),
                tally.completed.load(Ordering::SeqCst).to_string(),
            ],
            vec!["rows saved (complete)".into(), rows.to_string()],
            vec!["errors".into(), errors.to_string()],
            vec![
                "stream duration p50 / p99 ms".into(),
                format!(
                    "{} / {}",
                    ms(percentile(&mut sm, 50.0)),
                    ms(percentile(&mut sm, 99.0))
                ),
            ],
            vec![
                "time to first delta p50 / p99 ms".into(),
                format!(
                    "{} / {}",
                    ms(percentile(&mut tt, 50.0)),
                    ms(percentile(&mut tt, 99.0))
                ),
            ],
            vec![
                format!("GET /history ({} requests) p50 / p99 ms", hm.len()),
                format!(
                    "{} / {}",
                    ms(percentile(&mut hm, 50.0)),
                    ms(percentile(&mut hm, 99.0))
                ),
            ],
            vec![
                format!("GET /search ({} requests) p50 / p99 ms", qm.len()),
                format!(
                    "{} / {}",
                    ms(percentile(&mut qm, 50.0)),
                    ms(percentile(&mut qm, 99.0))
                ),
            ],
            vec![
                "server peak memory (VmHWM)".into(),
                peak.map_or("unknown".into(), |kb| {
                    format!("{:.1} MiB", kb as f64 / 1024.0)
                }),
            ],
        ],
    );
    anyhow::ensure!(errors == 0, "{errors} errors");
    anyhow::ensure!(
        rows as usize == started,
        "{started} streams started but {rows} rows saved"
    );
    Ok(())
}
