//! Stream overhead: time to first byte and per-chunk delay through the service vs calling the
//! same local OpenAI-compatible provider server directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer};

use crate::stats::{ms, percentile, table};

const WORDS: usize = 20;
const GAP: Duration = Duration::from_millis(5);
/// The side-by-side comparison is run twice at 20 streams: against an upstream that answers at
/// once (the strictest case: everything measured is proxy work) and one whose first token takes
/// this long, as a fast model server's does (hosted models take 100s of milliseconds).
const MODEL_FIRST_TOKEN: Duration = Duration::from_millis(20);
/// The prompt the local upstream answers after [`MODEL_FIRST_TOKEN`].
const SLOW_START: &str = "slow start";

/// What one stream measured: time to the first text, and the gaps between text chunks.
struct Sample {
    ttfb: Duration,
    gaps: Vec<Duration>,
}

/// Reads a response body, noting when each chunk holding `marker` arrives.
async fn measure(
    resp: reqwest::Response,
    started: Instant,
    marker: &str,
) -> anyhow::Result<Sample> {
    let mut body = resp.bytes_stream();
    let mut arrivals = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let text = String::from_utf8_lossy(&chunk);
        for _ in 0..text.matches(marker).count() {
            arrivals.push(started.elapsed());
        }
    }
    anyhow::ensure!(!arrivals.is_empty(), "no text arrived");
    let gaps = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    Ok(Sample {
        ttfb: arrivals[0],
        gaps,
    })
}

async fn direct(http: &reqwest::Client, fake: &FakeOpenAi) -> anyhow::Result<Sample> {
    direct_with(http, fake, "hi").await
}

async fn direct_with(
    http: &reqwest::Client,
    fake: &FakeOpenAi,
    prompt: &str,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": prompt}]}),
        )
        .send()
        .await?;
    measure(resp, started, "\"content\":\"w").await
}

async fn service(http: &reqwest::Client, url: &str) -> anyhow::Result<Sample> {
    service_with(http, url, r#"{"prompt":"hi"}"#.to_owned()).await
}

async fn service_with(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http.post(url).body(body).send().await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, "event: delta").await
}

async fn chat(http: &reqwest::Client, url: &str, prompt: &str) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http
        .post(url)
        .json(&json!({"model": "m", "stream": true,
                      "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, "\"content\":\"w").await
}

/// The floor any proxy pays: a server on the service's HTTP stack that sends each request on
/// to the upstream with an HTTP client set up as the provider's and streams the answer back,
/// and does nothing else (no parsing, no guardrails, no record). Returns its chat URL.
async fn bare_proxy(upstream: String) -> anyhow::Result<String> {
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
fn cpu_time() -> Duration {
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

/// [`round`], with the figures of [`PathFigures`].
async fn measured<F, Fut>(concurrency: usize, total: usize, f: F) -> anyhow::Result<PathFigures>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Sample>> + Send + 'static,
{
    let before = cpu_time();
    let samples = round(concurrency, total, f).await?;
    let cpu = cpu_time().saturating_sub(before) / u32::try_from(total)?;
    let mut t: Vec<Duration> = samples.iter().map(|x| x.ttfb).collect();
    Ok(PathFigures {
        p50: percentile(&mut t, 50.0),
        p99: percentile(&mut t, 99.0),
        cpu,
    })
}

/// Time to first content, one upstream, side by side: the upstream directly, `/stream`,
/// `/v1/chat/completions` and the bare proxy, at `concurrency` streams of `prompt`, in that
/// order.
async fn side_by_side(
    http: &reqwest::Client,
    fake: &Arc<FakeOpenAi>,
    urls: &Urls,
    concurrency: usize,
    prompt: &'static str,
) -> anyhow::Result<[PathFigures; 4]> {
    let total = 200;
    let (h, f) = (http.clone(), fake.clone());
    let d = measured(concurrency, total, move || {
        let (h, f) = (h.clone(), f.clone());
        async move { direct_with(&h, &f, prompt).await }
    })
    .await?;
    let (h, u) = (http.clone(), urls.stream.clone());
    let body = json!({ "prompt": prompt }).to_string();
    let s = measured(concurrency, total, move || {
        let (h, u, b) = (h.clone(), u.clone(), body.clone());
        async move { service_with(&h, &u, b).await }
    })
    .await?;
    let mut chats = Vec::new();
    for url in [&urls.chat, &urls.proxy] {
        let (h, u) = (http.clone(), url.clone());
        chats.push(
            measured(concurrency, total, move || {
                let (h, u) = (h.clone(), u.clone());
                async move { chat(&h, &u, prompt).await }
            })
            .await?,
        );
    }
    Ok([d, s, chats[0], chats[1]])
}

/// Where the side-by-side comparison sends its requests.
struct Urls {
    stream: String,
    chat: String,
    proxy: String,
}

/// Turns in the thread the continuation benchmark continues.
const THREAD_TURNS: usize = 50;

/// A thread of [`THREAD_TURNS`] complete turns (each prompt 200 and answer 800 characters);
/// returns its last turn's id.
async fn thread(store: &common::store::PgStore) -> anyhow::Result<uuid::Uuid> {
    use common::store::ConversationFinish;
    let mut previous: Option<common::Conversation> = None;
    for i in 0..THREAD_TURNS {
        let mut c = common::Conversation::start("local", format!("{i:>200}"), "openai", "m");
        c.response = format!("{i:>800}");
        c.status = common::Status::Complete;
        if let Some(p) = &previous {
            c.thread_id = p.thread_id;
            c.previous_id = Some(p.id);
        } else {
            c.system = Some("Answer briefly.".into());
        }
        store.finish(&c).await?;
        previous = Some(c);
    }
    Ok(previous.map(|c| c.id).unwrap_or_default())
}

/// Time to first byte of a first turn and of a turn continuing a 50-turn thread (branches off
/// its last turn, so the chain stays 50 long), one stream at a time: `(first p50, continued
/// p50, first p99, continued p99)`.
async fn continued(
    http: &reqwest::Client,
    url: &str,
    store: &common::store::PgStore,
) -> anyhow::Result<(Duration, Duration, Duration, Duration)> {
    let last = thread(store).await?;
    let body = serde_json::json!({"prompt": "and then?", "previous_id": last}).to_string();
    for _ in 0..10 {
        service_with(http, url, body.clone()).await?;
    }
    let mut first = Vec::new();
    let mut cont = Vec::new();
    for _ in 0..200 {
        first.push(service(http, url).await?.ttfb);
        cont.push(service_with(http, url, body.clone()).await?.ttfb);
    }
    Ok((
        percentile(&mut first, 50.0),
        percentile(&mut cont, 50.0),
        percentile(&mut first, 99.0),
        percentile(&mut cont, 99.0),
    ))
}

async fn round<F, Fut>(concurrency: usize, total: usize, f: F) -> anyhow::Result<Vec<Sample>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Sample>> + Send + 'static,
{
    let mut out = Vec::with_capacity(total);
    for _ in 0..total / concurrency {
        let tasks: Vec<_> = (0..concurrency).map(|_| tokio::spawn(f())).collect();
        for t in tasks {
            out.push(t.await??);
        }
    }
    Ok(out)
}

/// What the stream benchmark reports: the time to first byte the service adds at one stream
/// (p50, p99), and what continuing a 50-turn thread adds over a first turn (p50, p99).
pub struct Overheads {
    pub added: (Duration, Duration),
    pub thread_added: (Duration, Duration),
    /// What `/v1/chat/completions` adds to the time to first content at one stream (p50, p99),
    /// and its p50 over the direct p50 at 20 streams.
    pub chat_added: (Duration, Duration),
    pub chat_ratio_20: f64,
    /// The bare proxy's p50 over the direct p50 at 20 streams, the upstream answering at once:
    /// what forwarding alone costs on this machine.
    pub proxy_ratio_20: f64,
    /// The same ratio when the upstream's first token takes [`MODEL_FIRST_TOKEN`].
    pub chat_ratio_20_model: f64,
    /// The CPU time per stream `/stream`, `/v1/chat/completions` and the bare proxy add to the
    /// direct path at 20 streams, the upstream answering at once. (One stream at a time, idle
    /// worker threads waking for every chunk cost more than the work: the table shows it.)
    pub cpu_added: (Duration, Duration, Duration),
}

pub async fn run() -> anyhow::Result<Overheads> {
    let words: Vec<String> = (0..WORDS).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let instant = answer(&refs, GAP);
    let mut model_like = vec![Part::Sleep(MODEL_FIRST_TOKEN)];
    model_like.extend(instant.iter().cloned());
    let fake = Arc::new(
        FakeOpenAi::by_prompt(move |prompt, _| match prompt {
            SLOW_START => Reply::Stream(model_like.clone()),
            _ => Reply::Stream(instant.clone()),
        })
        .await,
    );

    let db = testkit::TestDb::new().await;
    let base = fake.base_url();
    let settings = db.settings_with(&[
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("DB_POOL_SIZE", "16"),
    ]);
    let store = Arc::new(common::store::PgStore::from_settings(&settings)?);
    let state = stream::StreamState::from_settings(&settings, store.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let app = stream::router(state, store.clone(), common::auth::Auth::off(store.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/stream", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });
    let http = reqwest::Client::new();

    // Warm up connections and caches.
    for _ in 0..20 {
        direct(&http, &fake).await?;
        service(&http, &url).await?;
    }
    let mut rows = Vec::new();
    let mut added = (Duration::ZERO, Duration::ZERO);
    for (concurrency, total) in [(1usize, 200usize), (50, 500)] {
        let (h, f) = (http.clone(), fake.clone());
        let mut d = round(concurrency, total, move || {
            let (h, f) = (h.clone(), f.clone());
            async move { direct(&h, &f).await }
        })
        .await?;
        let (h, u) = (http.clone(), url.clone());
        let mut s = round(concurrency, total, move || {
            let (h, u) = (h.clone(), u.clone());
            async move { service(&h, &u).await }
        })
        .await?;
        let mut dt: Vec<Duration> = d.iter().map(|x| x.ttfb).collect();
        let mut st: Vec<Duration> = s.iter().map(|x| x.ttfb).collect();
        let mut dg: Vec<Duration> = d.iter_mut().flat_map(|x| x.gaps.drain(..)).collect();
        let mut sg: Vec<Duration> = s.iter_mut().flat_map(|x| x.gaps.drain(..)).collect();
        let (d50, s50) = (percentile(&mut dt, 50.0), percentile(&mut st, 50.0));
        let (d99, s99) = (percentile(&mut dt, 99.0), percentile(&mut st, 99.0));
        if concurrency == 1 {
            added = (s50.saturating_sub(d50), s99.saturating_sub(d99));
        }
        rows.push(vec![
            concurrency.to_string(),
            ms(d50),
            ms(s50),
            ms(s50.saturating_sub(d50)),
            ms(d99),
            ms(s99),
            ms(s99.saturating_sub(d99)),
            ms(percentile(&mut dg, 50.0)),
            ms(percentile(&mut sg, 50.0)),
            ms(percentile(&mut dg, 99.0)),
            ms(percentile(&mut sg, 99.0)),
        ]);
    }
    println!(
        "\nstream overhead: provider = local OpenAI-compatible server, {WORDS} chunks {} ms apart (milliseconds):\n",
        GAP.as_millis()
    );
    table(
        &[
            "streams",
            "TTFB direct p50",
            "TTFB service p50",
            "added p50",
            "TTFB direct p99",
            "TTFB service p99",
            "added p99",
            "chunk gap direct p50",
            "chunk gap service p50",
            "chunk gap direct p99",
            "chunk gap service p99",
        ],
        &rows,
    );
    let urls = Urls {
        stream: url.clone(),
        chat: url.replace("/stream", "/v1/chat/completions"),
        proxy: bare_proxy(base.clone()).await?,
    };
    for _ in 0..20 {
        chat(&http, &urls.chat, "hi").await?;
        chat(&http, &urls.proxy, "hi").await?;
    }
    let mut side = Vec::new();
    let mut chat_added = (Duration::ZERO, Duration::ZERO);
    let (mut chat_ratio_20, mut chat_ratio_20_model, mut proxy_ratio_20) = (0.0, 0.0, 0.0);
    let mut cpu = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut cpu_rows = Vec::new();
    let model_ms = MODEL_FIRST_TOKEN.as_millis();
    for (concurrency, prompt) in [(1usize, "hi"), (20, "hi"), (20, SLOW_START)] {
        let [d, s, c, p] = side_by_side(&http, &fake, &urls, concurrency, prompt).await?;
        let over = |x: Duration| x.as_secs_f64() / d.p50.as_secs_f64().max(1e-9);
        let (ratio, proxy_ratio) = (over(c.p50), over(p.p50));
        let cpu_added = |x: PathFigures| x.cpu.saturating_sub(d.cpu);
        match (concurrency, prompt) {
            (1, _) => chat_added = (c.p50.saturating_sub(d.p50), c.p99.saturating_sub(d.p99)),
            (_, SLOW_START) => chat_ratio_20_model = ratio,
            _ => {
                (chat_ratio_20, proxy_ratio_20) = (ratio, proxy_ratio);
                cpu = (cpu_added(s), cpu_added(c), cpu_added(p));
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
            ms(d.p99),
            ms(s.p99),
            ms(c.p99),
            ms(p.p99),
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
            ms(cpu_added(s)),
            ms(cpu_added(c)),
            ms(cpu_added(p)),
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
            "direct p99",
            "/stream p99",
            "/v1 p99",
            "bare proxy p99",
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
            "/stream added",
            "/v1 added",
            "bare proxy added",
        ],
        &cpu_rows,
    );
    let (f50, c50, f99, c99) = continued(&http, &url, &store).await?;
    println!(
        "\ncontinuing a thread of {THREAD_TURNS} turns vs a first turn, one stream at a time (milliseconds):\n"
    );
    table(
        &[
            "TTFB first turn p50",
            "TTFB continued p50",
            "added p50",
            "TTFB first turn p99",
            "TTFB continued p99",
            "added p99",
        ],
        &[vec![
            ms(f50),
            ms(c50),
            ms(c50.saturating_sub(f50)),
            ms(f99),
            ms(c99),
            ms(c99.saturating_sub(f99)),
        ]],
    );
    Ok(Overheads {
        added,
        thread_added: (c50.saturating_sub(f50), c99.saturating_sub(f99)),
        chat_added,
        chat_ratio_20,
        proxy_ratio_20,
        chat_ratio_20_model,
        cpu_added: cpu,
    })
}
