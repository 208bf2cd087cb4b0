//! The OpenAI-compatible API side by side with the upstream called directly, `/stream` and a
//! bare proxy (the floor of forwarding on this machine): time to first content and CPU time per
//! stream, at one and 20 streams, against an upstream that answers at once and one whose first
//! token takes [`MODEL_FIRST_TOKEN`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::fake_openai::FakeOpenAi;

use crate::stats::{ms, percentile, table};
use crate::stream_bench::{
    MODEL_FIRST_TOKEN, SLOW_START, Sample, WORDS, chat, chat_with_tools, direct_with,
    direct_with_tools, service_with,
};

/// The floor any proxy pays: a server on the service's HTTP stack that sends each request on
/// to the upstream with an HTTP client set up as the provider's and streams the answer back,
/// and does nothing else (no parsing, no guardrails, no record). Returns its chat URL.
pub async fn bare_proxy(upstream: String) -> anyhow::Result<String> {
    use axum::response::IntoResponse;
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?;
    let forward = move |body: bytes::Bytes| {
        let (http, url) = (http.clone(), format!("{upstream}/chat/completions"));
        async move {
            let sent = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(resp) => (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(resp.bytes_stream()),
                )
                    .into_response(),
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/chat/completions", axum::routing::post(forward));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/chat/completions", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });
    Ok(url)
}

/// The CPU time this process's threads (bench client, local upstream and service alike) have
/// used so far: the sum of their run times in `/proc/self/task/*/schedstat` (nanoseconds).
pub(crate) fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// One path's time to first content (p50, p99) and the process's CPU time per whole stream.
#[derive(Clone, Copy)]
struct PathFigures {
    p50: Duration,
    p99: Duration,
    cpu: Duration,
}

/// One way to a stream: starts one, resolving to what it measured.
type Path = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Sample>> + Send>>,
>;

/// The figures of each of `paths`, measured interleaved: round after round, each path in turn
/// runs `concurrency` streams, so that whatever else the machine does (the database's own
/// work, the scheduler) falls on every path alike; `rounds` rounds.
async fn interleaved(
    paths: &[Path],
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<Vec<PathFigures>> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    let mut cpu = vec![Duration::ZERO; paths.len()];
    for _ in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let before = cpu_time();
            let tasks: Vec<_> = (0..concurrency).map(|_| tokio::spawn(path())).collect();
            for t in tasks {
                samples[i].push(t.await??.ttfb);
            }
            cpu[i] += cpu_time().saturating_sub(before);
        }
    }
    let n = u32::try_from(concurrency * rounds)?;
    Ok(samples
        .into_iter()
        .zip(cpu)
        .map(|(mut t, cpu)| PathFigures {
            p50: percentile(&mut t, 50.0),
            p99: percentile(&mut t, 99.0),
            cpu: cpu / n,
        })
        .collect())
}

/// Time to first content, one upstream, side by side: the upstream directly, `/stream`,
/// `/v1/chat/completions`, the bare proxy, `/v1/chat/completions` with three tools offered and
/// the upstream directly with the same tools, at `concurrency` streams of `prompt`, in that
/// order (measured interleaved, 400 streams each).
async fn side_by_side(
    http: &reqwest::Client,
    fake: &Arc<FakeOpenAi>,
    urls: &Urls,
    concurrency: usize,
    prompt: &'static str,
) -> anyhow::Result<[PathFigures; 6]> {
    let body = json!({ "prompt": prompt }).to_string();
    let (h, f) = (http.clone(), fake.clone());
    let direct: Path = Box::new(move || {
        let (h, f) = (h.clone(), f.clone());
        Box::pin(async move { direct_with(&h, &f, prompt).await })
    });
    let (h, u) = (http.clone(), urls.stream.clone());
    let stream: Path = Box::new(move || {
        let (h, u, b) = (h.clone(), u.clone(), body.clone());
        Box::pin(async move { service_with(&h, &u, b).await })
    });
    let chat_path = |url: &String| -> Path {
        let (h, u) = (http.clone(), url.clone());
        Box::new(move || {
            let (h, u) = (h.clone(), u.clone());
            Box::pin(async move { chat(&h, &u, prompt).await })
        })
    };
    let (h, u) = (http.clone(), urls.chat.clone());
    let tools: Path = Box::new(move || {
        let (h, u) = (h.clone(), u.clone());
        Box::pin(async move { chat_with_tools(&h, &u, prompt).await })
    });
    let (h, f) = (http.clone(), fake.clone());
    let direct_tools: Path = Box::new(move || {
        let (h, f) = (h.clone(), f.clone());
        Box::pin(async move { direct_with_tools(&h, &f, prompt).await })
    });
    let paths = [
        direct,
        stream,
        chat_path(&urls.chat),
        chat_path(&urls.proxy),
        tools,
        direct_tools,
    ];
    let f = interleaved(&paths, concurrency, 400 / concurrency).await?;
    Ok([f[0], f[1], f[2], f[3], f[4], f[5]])
}

/// Where the side-by-side comparison sends its requests.
pub struct Urls {
    pub stream: String,
    pub chat: String,
    pub proxy: String,
}

/// `/v1/chat/completions` beside the upstream directly and a bare proxy.
pub struct ChatOverheads {
    /// What it adds to the time to first content at one stream (p50, p99).
    pub added: (Duration, Duration),
    /// Its p50 over the direct p50 at 20 streams, the upstream answering at once.
    pub ratio_20: f64,
    /// The bare proxy's p50 over the direct p50 at 20 streams, the upstream answering at once:
    /// what forwarding alone costs on this machine.
    pub proxy_ratio_20: f64,
    /// Its ratio when the upstream's first token takes [`MODEL_FIRST_TOKEN`].
    pub ratio_20_model: f64,
    /// The CPU time per stream `/stream`, `/v1/chat/completions` and the bare proxy add to the
    /// direct path at 20 streams, the upstream answering at once. (One stream at a time, idle
    /// worker threads waking for every chunk cost more than the work: the table shows it.)
    pub cpu_added: (Duration, Duration, Duration),
    /// What `/v1/chat/completions` adds with three tools offered (over the upstream called
    /// directly with the same tools) over what it adds without, at 20 streams, the upstream
    /// answering at once: time to first content p50, and CPU time per stream.
    pub tools_ratio_20: (f64, f64),
    /// `/v1/chat/completions` p50 over `/stream` p50 at 20 streams, the upstream answering at
    /// once.
    pub chat_over_stream_20: f64,
}

/// The upstream directly, `/stream`, `/v1/chat/completions` and the bare proxy side by side
/// (prints the time and CPU tables).
pub async fn compare(
    http: &reqwest::Client,
    fake: &Arc<FakeOpenAi>,
    urls: &Urls,
) -> anyhow::Result<ChatOverheads> {
    let mut side = Vec::new();
    let mut chat_added = (Duration::ZERO, Duration::ZERO);
    let (mut chat_ratio_20, mut chat_ratio_20_model, mut proxy_ratio_20) = (0.0, 0.0, 0.0);
    let mut cpu = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut tools_ratio_20, mut chat_over_stream_20) = ((0.0, 0.0), 0.0);
    let mut cpu_rows = Vec::new();
    let model_ms = MODEL_FIRST_TOKEN.as_millis();
    for (concurrency, prompt) in [(1usize, "hi"), (20, "hi"), (20, SLOW_START)] {
        let [d, s, c, p, t, dt] = side_by_side(http, fake, urls, concurrency, prompt).await?;
        let over = |x: Duration| x.as_secs_f64() / d.p50.as_secs_f64().max(1e-9);
        let (ratio, proxy_ratio) = (over(c.p50), over(p.p50));
        let cpu_added = |x: PathFigures| x.cpu.saturating_sub(d.cpu);
        match (concurrency, prompt) {
            (1, _) => chat_added = (c.p50.saturating_sub(d.p50), c.p99.saturating_sub(d.p99)),
            (_, SLOW_START) => chat_ratio_20_model = ratio,
            _ => {
                (chat_ratio_20, proxy_ratio_20) = (ratio, proxy_ratio);
                cpu = (cpu_added(s), cpu_added(c), cpu_added(p));
                let per = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
                // What the service adds with tools (over the upstream called directly with the
                // same tools) beside what it adds without.
                tools_ratio_20 = (
                    per(t.p50.saturating_sub(dt.p50), c.p50.saturating_sub(d.p50)),
                    per(t.cpu.saturating_sub(dt.cpu), cpu_added(c)),
                );
                chat_over_stream_20 = per(c.p50, s.p50);
            }
        }
        side.push(vec![
            concurrency.to_string(),
            if prompt == SLOW_START {
                format!("after {model_ms} ms")
            } else {
                "at once".into()
            },
            ms(d.p50),
            ms(s.p50),
            ms(c.p50),
            ms(c.p50.saturating_sub(d.p50)),
            format!("{ratio:.2}"),
            ms(p.p50),
            format!("{proxy_ratio:.2}"),
            ms(dt.p50),
            ms(t.p50),
            ms(d.p99),
            ms(s.p99),
            ms(c.p99),
            ms(p.p99),
            ms(t.p99),
        ]);
        cpu_rows.push(vec![
            concurrency.to_string(),
            if prompt == SLOW_START {
                format!("after {model_ms} ms")
            } else {
                "at once".into()
            },
            ms(d.cpu),
            ms(s.cpu),
            ms(c.cpu),
            ms(p.cpu),
            ms(dt.cpu),
            ms(t.cpu),
            ms(cpu_added(s)),
            ms(cpu_added(c)),
            ms(cpu_added(p)),
            ms(t.cpu.saturating_sub(dt.cpu)),
        ]);
    }
    println!(
        "\nthe upstream directly, /stream, /v1/chat/completions and a bare proxy (forwards the request, streams the \
         answer back, nothing else) side by side (time to first content, milliseconds):\n"
    );
    table(
        &[
            "streams",
            "upstream's first token",
            "direct p50",
            "/stream p50",
            "/v1 p50",
            "/v1 added p50",
            "/v1 ÷ direct p50",
            "bare proxy p50",
            "bare proxy ÷ direct p50",
            "direct + tools p50",
            "/v1 + tools p50",
            "direct p99",
            "/stream p99",
            "/v1 p99",
            "bare proxy p99",
            "/v1 + tools p99",
        ],
        &side,
    );
    println!(
        "\nCPU time per whole stream of {WORDS} chunks, this process (bench client, local upstream and, \
         but for direct, the service; PostgreSQL's own not counted), and what each path adds to direct \
         (milliseconds):\n"
    );
    table(
        &[
            "streams",
            "upstream's first token",
            "direct",
            "/stream",
            "/v1",
            "bare proxy",
            "direct + tools",
            "/v1 + tools",
            "/stream added",
            "/v1 added",
            "bare proxy added",
            "/v1 + tools added (over direct + tools)",
        ],
        &cpu_rows,
    );
    Ok(ChatOverheads {
        added: chat_added,
        ratio_20: chat_ratio_20,
        proxy_ratio_20,
        ratio_20_model: chat_ratio_20_model,
        cpu_added: cpu,
        tools_ratio_20,
        chat_over_stream_20,
    })
}
