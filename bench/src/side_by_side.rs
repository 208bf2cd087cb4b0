//! The OpenAI-compatible API side by side with the upstream called directly, `/stream` and a
//! bare proxy (the floor of forwarding on this machine), each also with three function tools
//! offered: time to first content and CPU time per stream, at one and 20 streams, against an
//! upstream that answers at once and one whose first token takes [`MODEL_FIRST_TOKEN`]. Then
//! the CPU time of the service's own threads per stream, with tools and without, the service
//! on a runtime of its own ([`crate::runtimes`]) as if it were its own process.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::runtimes::{SERVICE, cpu_time_of};
use crate::stats::{ms, over, percentile, table};
use crate::stream_bench::{
    MODEL_FIRST_TOKEN, SLOW_START, Sample, WORDS, chat_bytes, chat_request, round, service_with,
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

/// The ways to a stream compared (the order they run in changes from round to round: [`order`]).
#[derive(Clone, Copy)]
enum Way {
    Direct,
    Stream,
    Chat,
    Proxy,
    ChatTools,
    DirectTools,
    ProxyTools,
}

const WAYS: [Way; 7] = [
    Way::Direct,
    Way::Stream,
    Way::Chat,
    Way::ChatTools,
    Way::DirectTools,
    Way::ProxyTools,
    Way::Proxy,
];

impl Way {
    /// One stream of `prompt` this way.
    async fn stream(
        self,
        http: reqwest::Client,
        urls: Arc<Urls>,
        bodies: Arc<Bodies>,
    ) -> anyhow::Result<Sample> {
        let direct = &urls.direct;
        match self {
            Way::Direct => chat_bytes(&http, direct, bodies.plain.clone()).await,
            Way::Stream => service_with(&http, &urls.stream, bodies.stream.clone()).await,
            Way::Chat => chat_bytes(&http, &urls.chat, bodies.plain.clone()).await,
            Way::Proxy => chat_bytes(&http, &urls.proxy, bodies.plain.clone()).await,
            Way::ChatTools => chat_bytes(&http, &urls.chat, bodies.tools.clone()).await,
            Way::DirectTools => chat_bytes(&http, direct, bodies.tools.clone()).await,
            Way::ProxyTools => chat_bytes(&http, &urls.proxy, bodies.tools.clone()).await,
        }
    }
}

/// The bodies each way sends for one prompt, made once.
struct Bodies {
    plain: bytes::Bytes,
    tools: bytes::Bytes,
    stream: String,
}

impl Bodies {
    fn of(prompt: &str) -> Arc<Self> {
        Arc::new(Self {
            plain: chat_request(prompt, false),
            tools: chat_request(prompt, true),
            stream: json!({ "prompt": prompt }).to_string(),
        })
    }
}

/// One way's time to first content (p50, p99), and the whole process's CPU time per whole
/// stream (bench client, local upstream, and the service or the proxy).
#[derive(Clone, Copy, Default)]
struct Figures {
    p50: Duration,
    p99: Duration,
    cpu: Duration,
}

/// Streams of each way at `concurrency` streams at a time: at 20, more than at one, as a batch
/// of 20 takes little longer than a batch of one.
fn streams_per_way(concurrency: usize) -> usize {
    if concurrency == 1 {
        400
    } else {
        60 * concurrency
    }
}

/// After each batch the service is left this long to finish its work (the row written after a
/// stream's end), so that it counts towards its own batch and does not slow the next.
const SETTLE: Duration = Duration::from_millis(10);

/// The order of the ways in round `round`: with a step of 1 to 6 in turn (7 is prime), each
/// way follows each other way equally often, so that no way gains or pays for what runs
/// before it.
fn order(round: usize) -> impl Iterator<Item = usize> {
    let step = 1 + round % (WAYS.len() - 1);
    (0..WAYS.len()).map(move |k| k * step % WAYS.len())
}

/// The figures of each way, measured interleaved: round after round, each way in turn runs
/// `concurrency` streams of `prompt`, so that whatever else the machine does (the database's
/// own work, the scheduler) falls on every way alike; [`streams_per_way`] streams each. The
/// order changes from round to round ([`order`]) and each batch ends with a [`SETTLE`].
async fn side_by_side(
    http: &reqwest::Client,
    urls: &Urls,
    concurrency: usize,
    prompt: &'static str,
) -> anyhow::Result<[Figures; 7]> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); WAYS.len()];
    let mut cpu = [Duration::ZERO; WAYS.len()];
    let bodies = Bodies::of(prompt);
    let urls = Arc::new(urls.clone());
    let rounds = streams_per_way(concurrency) / concurrency;
    for r in 0..rounds {
        for i in order(r) {
            let before = cpu_time_of(None);
            let batch = round(concurrency, concurrency, || {
                WAYS[i].stream(http.clone(), urls.clone(), bodies.clone())
            })
            .await?;
            samples[i].extend(batch.iter().map(|s| s.ttfb));
            tokio::time::sleep(SETTLE).await;
            cpu[i] += cpu_time_of(None).saturating_sub(before);
        }
    }
    let n = u32::try_from(rounds * concurrency)?;
    let mut figures = [Figures::default(); WAYS.len()];
    for (i, mut t) in samples.into_iter().enumerate() {
        figures[i] = Figures {
            p50: percentile(&mut t, 50.0),
            p99: percentile(&mut t, 99.0),
            cpu: cpu[i] / n,
        };
    }
    Ok(figures)
}

/// The CPU time per stream of the service's own threads, `/v1/chat/completions` plain and with
/// three tools offered, at `concurrency` streams, the upstream answering at once: the service
/// at `url` runs on the runtime [`SERVICE`]. Interleaved as [`side_by_side`]; after each batch
/// the service is left [`SETTLE`] to finish its work (the row written after a stream's end), so
/// that it counts towards its own batch.
async fn service_cpu(
    http: &reqwest::Client,
    url: &str,
    concurrency: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut cpu = [Duration::ZERO; 2];
    let bodies = Bodies::of("hi");
    for _ in 0..400 / concurrency {
        for (i, tools) in [false, true].into_iter().enumerate() {
            let before = cpu_time_of(Some(SERVICE));
            let body = if tools { &bodies.tools } else { &bodies.plain };
            round(concurrency, concurrency, || {
                let (http, url, body) = (http.clone(), url.to_owned(), body.clone());
                async move { chat_bytes(&http, &url, body).await }
            })
            .await?;
            tokio::time::sleep(SETTLE).await;
            cpu[i] += cpu_time_of(Some(SERVICE)).saturating_sub(before);
        }
    }
    let n = u32::try_from(400 / concurrency * concurrency)?;
    Ok((cpu[0] / n, cpu[1] / n))
}

/// Where the side-by-side comparison sends its requests.
#[derive(Clone)]
pub struct Urls {
    /// The upstream's `/chat/completions`.
    pub direct: String,
    pub stream: String,
    pub chat: String,
    pub proxy: String,
    /// `/v1/chat/completions` of a second service, on a runtime of its own ([`SERVICE`]).
    pub chat_own: String,
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
    /// direct path at 20 streams, the upstream answering at once (the whole process's). (One
    /// stream at a time, idle worker threads waking for every chunk cost more than the work:
    /// the table shows it.)
    pub cpu_added: (Duration, Duration, Duration),
    /// `/v1/chat/completions` with three tools offered over without, at 20 streams, the
    /// upstream answering at once: what it adds to the time to first content p50 (over the
    /// upstream called directly with the same body, and without), and the CPU time per stream
    /// of the service's own threads.
    pub tools_ratio_20: (f64, f64),
    /// The same time ratio for the bare proxy: what the larger body costs any hop.
    pub proxy_tools_ratio_20: f64,
    /// The service's own CPU time per stream with tools over without, one stream at a time.
    pub tools_cpu_ratio_1: f64,
    /// `/v1/chat/completions` p50 over `/stream` p50 at 20 streams, the upstream answering at
    /// once.
    pub chat_over_stream_20: f64,
}

/// The upstream directly, `/stream`, `/v1/chat/completions` and the bare proxy side by side,
/// each with and without tools, then the service's own CPU time with and without (prints the
/// tables).
pub async fn compare(http: &reqwest::Client, urls: &Urls) -> anyhow::Result<ChatOverheads> {
    let (mut time_rows, mut cpu_rows, mut tools_rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut result = ChatOverheads {
        added: (Duration::ZERO, Duration::ZERO),
        ratio_20: 0.0,
        proxy_ratio_20: 0.0,
        ratio_20_model: 0.0,
        cpu_added: (Duration::ZERO, Duration::ZERO, Duration::ZERO),
        tools_ratio_20: (0.0, 0.0),
        proxy_tools_ratio_20: 0.0,
        tools_cpu_ratio_1: 0.0,
        chat_over_stream_20: 0.0,
    };
    let added = |x: Duration, base: Duration| x.saturating_sub(base);
    for (concurrency, prompt) in [(1usize, "hi"), (20, "hi"), (20, SLOW_START)] {
        let [d, s, c, t, dt, pt, p] = side_by_side(http, urls, concurrency, prompt).await?;
        let tools_time = over(added(t.p50, dt.p50), added(c.p50, d.p50));
        let proxy_tools_time = over(added(pt.p50, dt.p50), added(p.p50, d.p50));
        match (concurrency, prompt) {
            (1, _) => result.added = (added(c.p50, d.p50), added(c.p99, d.p99)),
            (_, SLOW_START) => result.ratio_20_model = over(c.p50, d.p50),
            _ => {
                result.ratio_20 = over(c.p50, d.p50);
                result.proxy_ratio_20 = over(p.p50, d.p50);
                result.cpu_added = (
                    added(s.cpu, d.cpu),
                    added(c.cpu, d.cpu),
                    added(p.cpu, d.cpu),
                );
                result.tools_ratio_20.0 = tools_time;
                result.proxy_tools_ratio_20 = proxy_tools_time;
                result.chat_over_stream_20 = over(c.p50, s.p50);
            }
        }
        let first_token = if prompt == SLOW_START {
            format!("after {} ms", MODEL_FIRST_TOKEN.as_millis())
        } else {
            "at once".into()
        };
        let row = |cells: Vec<String>| {
            let mut row = vec![concurrency.to_string(), first_token.clone()];
            row.extend(cells);
            row
        };
        time_rows.push(row(vec![
            ms(d.p50),
            ms(s.p50),
            ms(c.p50),
            ms(added(c.p50, d.p50)),
            format!("{:.2}", over(c.p50, d.p50)),
            ms(p.p50),
            format!("{:.2}", over(p.p50, d.p50)),
            ms(d.p99),
            ms(s.p99),
            ms(c.p99),
            ms(p.p99),
        ]));
        cpu_rows.push(row(vec![
            ms(d.cpu),
            ms(s.cpu),
            ms(c.cpu),
            ms(p.cpu),
            ms(added(s.cpu, d.cpu)),
            ms(added(c.cpu, d.cpu)),
            ms(added(p.cpu, d.cpu)),
        ]));
        tools_rows.push(row(vec![
            ms(dt.p50),
            ms(t.p50),
            ms(added(c.p50, d.p50)),
            ms(added(t.p50, dt.p50)),
            format!("{tools_time:.2}"),
            ms(added(p.p50, d.p50)),
            ms(added(pt.p50, dt.p50)),
            format!("{proxy_tools_time:.2}"),
            ms(t.p99),
        ]));
    }
    let mut own_rows = Vec::new();
    for concurrency in [1usize, 20] {
        let (plain, tools) = service_cpu(http, &urls.chat_own, concurrency).await?;
        let ratio = over(tools, plain);
        if concurrency == 1 {
            result.tools_cpu_ratio_1 = ratio;
        } else {
            result.tools_ratio_20.1 = ratio;
        }
        own_rows.push(vec![
            concurrency.to_string(),
            ms(plain),
            ms(tools),
            format!("{ratio:.3}"),
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
        &time_rows,
    );
    println!(
        "\nCPU time per whole stream of {WORDS} chunks, this process (bench client, local upstream and, \
         but for direct, the service or the proxy; PostgreSQL's own not counted), and what each path adds \
         to direct (milliseconds):\n"
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
    println!(
        "\n/v1/chat/completions with three function tools offered beside plain, time to first content \
         (milliseconds; added = over the upstream called directly with the same body; the bare proxy's \
         for what the larger body costs any hop):\n"
    );
    table(
        &[
            "streams",
            "upstream's first token",
            "direct + tools p50",
            "/v1 + tools p50",
            "/v1 added p50",
            "/v1 + tools added p50",
            "ratio",
            "bare proxy added p50",
            "bare proxy + tools added p50",
            "ratio",
            "/v1 + tools p99",
        ],
        &tools_rows,
    );
    println!(
        "\nCPU time per whole stream of the service's own threads (milliseconds; the service on a \
         runtime of its own, as its own process would be; the upstream answering at once; PostgreSQL's \
         own not counted):\n"
    );
    table(&["streams", "/v1", "/v1 + tools", "ratio"], &own_rows);
    Ok(result)
}
