//! The Responses API beside Chat Completions: time to the first `response.output_text.delta`
//! and CPU per stream, against the time to the first content chunk of `/v1/chat/completions`,
//! on one server and one upstream, interleaved batch by batch, at 1 and 20 streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::fake_openai::FakeOpenAi;

use crate::runtimes::cpu_time_of;
use crate::stats::{ms, percentile, table};
use crate::stream_bench::{Sample, measure};

/// At 1 and 20 streams: (streams, chat p50, responses p50, chat CPU, responses CPU).
pub type ResponsesFigures = Vec<(usize, Duration, Duration, Duration, Duration)>;

async fn one(http: &reqwest::Client, url: &str, responses: bool) -> anyhow::Result<Sample> {
    let (body, marker) = if responses {
        (
            json!({"model": "m", "stream": true, "input": "hi"}),
            "\"delta\":\"w",
        )
    } else {
        (
            json!({"model": "m", "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
            "\"content\":\"w",
        )
    };
    let started = Instant::now();
    let resp = http.post(url).json(&body).send().await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, marker).await
}

async fn batch(
    http: &reqwest::Client,
    url: &str,
    responses: bool,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let before = cpu_time_of(None);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (h, u) = (http.clone(), url.to_owned());
            tokio::spawn(async move { one(&h, &u, responses).await })
        })
        .collect();
    let mut ttfb = Vec::new();
    for t in tasks {
        ttfb.push(t.await??.ttfb);
    }
    Ok((ttfb, cpu_time_of(None).saturating_sub(before)))
}

/// Runs on `fake`, the stream benchmark's upstream.
pub async fn run(fake: &Arc<FakeOpenAi>) -> anyhow::Result<ResponsesFigures> {
    let db = testkit::TestDb::new().await;
    let base = fake.base_url();
    let (root, _store) = crate::stream_bench::serve_stream(&db, &base, &[]).await?;
    let (chat, responses) = (
        format!("{root}/v1/chat/completions"),
        format!("{root}/v1/responses"),
    );
    let http = reqwest::Client::new();
    for _ in 0..20 {
        batch(&http, &chat, false, 1).await?;
        batch(&http, &responses, true, 1).await?;
    }
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for (concurrency, total) in [(1usize, 200usize), (20, 400)] {
        let (mut ct, mut rt) = (Vec::new(), Vec::new());
        let (mut cc, mut rc) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..total / concurrency {
            let (t, c) = batch(&http, &chat, false, concurrency).await?;
            ct.extend(t);
            cc += c;
            let (t, c) = batch(&http, &responses, true, concurrency).await?;
            rt.extend(t);
            rc += c;
        }
        let n = u32::try_from(total).unwrap_or(u32::MAX);
        let (cc, rc) = (cc / n, rc / n);
        let (c50, r50) = (percentile(&mut ct, 50.0), percentile(&mut rt, 50.0));
        let (c99, r99) = (percentile(&mut ct, 99.0), percentile(&mut rt, 99.0));
        out.push((concurrency, c50, r50, cc, rc));
        rows.push(vec![
            concurrency.to_string(),
            ms(c50),
            ms(r50),
            ms(c99),
            ms(r99),
            ms(cc),
            ms(rc),
        ]);
    }
    println!(
        "\nthe Responses API beside Chat Completions, streamed, one upstream answering at once \
         (time to the first text, and CPU per stream of this process, milliseconds):\n"
    );
    table(
        &[
            "streams",
            "/v1/chat/completions p50",
            "/v1/responses p50",
            "/v1/chat/completions p99",
            "/v1/responses p99",
            "CPU/stream chat",
            "CPU/stream responses",
        ],
        &rows,
    );
    Ok(out)
}

/// [`run`] on an upstream of its own (`bench responses`).
pub async fn standalone() -> anyhow::Result<ResponsesFigures> {
    run(&crate::stream_bench::instant_upstream().await).await
}
