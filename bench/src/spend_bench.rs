//! Spend control: what a key with limits (every limit set, none reached) adds to `/stream`
//! beside a key without, at 1 and 20 streams, measured interleaved on one server with keys
//! required; and the reservation statement alone on the pool (p50, p99).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::spend::{KeyLimits, Period, Reservation};
use common::store::Spend;
use testkit::fake_openai::FakeOpenAi;

use crate::runtimes::cpu_time_of;
use crate::stats::{ms, percentile, table};
use crate::stream_bench::{Sample, measure};

/// What the spend benchmark reports.
pub struct SpendOverheads {
    /// At 1 and 20 streams: TTFB p50 added by a limited key over a plain one, and CPU per
    /// stream added.
    pub added: Vec<(usize, Duration, Duration)>,
    /// The reservation statement at 1 and 20 at a time: (concurrency, p50, p99).
    pub reserve: Vec<(usize, Duration, Duration)>,
}

async fn keyed(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http
        .post(url)
        .bearer_auth(key)
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, "event: delta").await
}

/// `n` streams, `concurrency` at a time, with `key`: their TTFBs and the CPU time they took.
async fn batch(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let before = cpu_time_of(None);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (h, u, k) = (http.clone(), url.to_owned(), key.to_owned());
            tokio::spawn(async move { keyed(&h, &u, &k).await })
        })
        .collect();
    let mut ttfb = Vec::new();
    for t in tasks {
        ttfb.push(t.await??.ttfb);
    }
    Ok((ttfb, cpu_time_of(None).saturating_sub(before)))
}

/// [`run`] on an upstream of its own (`bench spend`, `make bench-spend`).
pub async fn standalone() -> anyhow::Result<SpendOverheads> {
    run(&crate::stream_bench::instant_upstream().await).await
}

pub async fn run(fake: &Arc<FakeOpenAi>) -> anyhow::Result<SpendOverheads> {
    let db = testkit::TestDb::new().await;
    let base = fake.base_url();
    let (root, store) = crate::stream_bench::serve_stream(
        &db,
        &base,
        &[
            ("LLM_MODEL", "m"),
            ("LLM_PRICES", r#"{"m": {"input": 0.15, "output": 0.6}}"#),
            ("AUTH", "required"),
        ],
    )
    .await?;
    let url = format!("{root}/stream");
    let http = reqwest::Client::new();

    // Every limit set, none within reach: each path of the statement runs, nothing is refused.
    let limits = KeyLimits {
        rpm: Some(1_000_000),
        tpm: Some(1_000_000_000_000),
        concurrency: Some(1_000),
        budget_usd: Some(1_000_000.0),
        budget_tokens: Some(1_000_000_000_000),
        period: Period::Month,
    };
    let plain = db.key("bench", "plain").await;
    let (_, limited) = db.limited_key("bench", "limited", &limits).await;
    for _ in 0..20 {
        batch(&http, &url, &plain, 1).await?;
        batch(&http, &url, &limited, 1).await?;
    }

    let mut rows = Vec::new();
    let mut added = Vec::new();
    for (concurrency, total) in [(1usize, 200usize), (20, 400)] {
        let (mut pt, mut lt) = (Vec::new(), Vec::new());
        let (mut pc, mut lc) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..total / concurrency {
            let (t, c) = batch(&http, &url, &plain, concurrency).await?;
            pt.extend(t);
            pc += c;
            let (t, c) = batch(&http, &url, &limited, concurrency).await?;
            lt.extend(t);
            lc += c;
        }
        let n = u32::try_from(total).unwrap_or(u32::MAX);
        let (pc, lc) = (pc / n, lc / n);
        let (p50, l50) = (percentile(&mut pt, 50.0), percentile(&mut lt, 50.0));
        let (p99, l99) = (percentile(&mut pt, 99.0), percentile(&mut lt, 99.0));
        added.push((concurrency, l50.saturating_sub(p50), lc.saturating_sub(pc)));
        rows.push(vec![
            concurrency.to_string(),
            ms(p50),
            ms(l50),
            ms(l50.saturating_sub(p50)),
            ms(p99),
            ms(l99),
            ms(pc),
            ms(lc),
            ms(lc.saturating_sub(pc)),
        ]);
    }
    println!(
        "\nspend control: /stream with a key with limits (all set, none reached) vs a key without, \
         interleaved, keys required on both (milliseconds):\n"
    );
    table(
        &[
            "streams",
            "TTFB plain key p50",
            "TTFB limited key p50",
            "added p50",
            "TTFB plain key p99",
            "TTFB limited key p99",
            "CPU/stream plain",
            "CPU/stream limited",
            "CPU added",
        ],
        &rows,
    );

    // The statement alone, settled after each (as a turn's end does), on a key of its own.
    let (key_id, _) = db.limited_key("bench", "statement", &limits).await;
    let mut reserve = Vec::new();
    let mut rrows = Vec::new();
    for (concurrency, total) in [(1usize, 500usize), (20, 500)] {
        let mut times = Vec::new();
        for _ in 0..total / concurrency {
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let r = Reservation {
                            key_id,
                            turn_id: uuid::Uuid::now_v7(),
                            owner: "bench".into(),
                            model: "m".into(),
                            prompt_tokens: 40,
                            output_tokens: 4096,
                            input_price: Some(0.15),
                            output_price: Some(0.6),
                            stale: Duration::from_secs(10),
                            lease: Duration::from_secs(600),
                        };
                        let started = Instant::now();
                        let refused = store.reserve(&r).await?;
                        let took = started.elapsed();
                        anyhow::ensure!(refused.is_none(), "refused: {refused:?}");
                        store.settle(r.turn_id, "m", 9, 20, 0.0000135).await?;
                        anyhow::Ok(took)
                    })
                })
                .collect();
            for t in tasks {
                times.push(t.await??);
            }
        }
        let (p50, p99) = (percentile(&mut times, 50.0), percentile(&mut times, 99.0));
        reserve.push((concurrency, p50, p99));
        rrows.push(vec![concurrency.to_string(), ms(p50), ms(p99)]);
    }
    println!(
        "\nthe reservation statement (llm_reserve) on the pool, one key, each settled after \
         (milliseconds; {} reservations of the key in the sliding minute by the end):\n",
        1000
    );
    table(&["at a time", "p50", "p99"], &rrows);
    Ok(SpendOverheads { added, reserve })
}
