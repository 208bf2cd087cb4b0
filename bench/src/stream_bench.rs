//! Stream overhead: time to first byte and per-chunk delay through the service vs calling the
//! same local OpenAI-compatible provider server directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use testkit::fake_openai::{FakeOpenAi, Part, Reply, answer};

use crate::side_by_side;
use crate::stats::{ms, percentile, table};

pub(crate) const WORDS: usize = 20;
const GAP: Duration = Duration::from_millis(5);
/// The side-by-side comparison is run twice at 20 streams: against an upstream that answers at
/// once (the strictest case: everything measured is proxy work) and one whose first token takes
/// this long, as a fast model server's does (hosted models take 100s of milliseconds).
pub(crate) const MODEL_FIRST_TOKEN: Duration = Duration::from_millis(20);
/// The prompt the local upstream answers after [`MODEL_FIRST_TOKEN`].
pub(crate) const SLOW_START: &str = "slow start";

/// The prompt the local upstream answers with its [`WORDS`] chunks at once, without gaps.
pub(crate) const NO_GAPS: &str = "no gaps";

/// What one stream measured: time to the first text, and the gaps between text chunks.
pub(crate) struct Sample {
    pub(crate) ttfb: Duration,
    gaps: Vec<Duration>,
}

/// Reads a response body, noting when each chunk holding `marker` arrives.
pub(crate) async fn measure(
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

pub(crate) async fn direct_with(
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

pub(crate) async fn service_with(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http.post(url).body(body).send().await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, "event: delta").await
}

pub(crate) async fn chat(
    http: &reqwest::Client,
    url: &str,
    prompt: &str,
) -> anyhow::Result<Sample> {
    chat_body(
        http,
        url,
        json!({"model": "m", "stream": true,
               "messages": [{"role": "user", "content": prompt}]}),
    )
    .await
}

/// Three function tools, as an agent offers them (the upstream answers with text).
pub(crate) fn tools() -> serde_json::Value {
    let tool = |name: &str| {
        json!({"type": "function", "function": {"name": name,
            "description": "Looks something up for the user",
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string", "description": "What to look up"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
                "required": ["query"]}}})
    };
    json!([
        tool("search_docs"),
        tool("get_weather"),
        tool("lookup_order")
    ])
}

async fn chat_body(
    http: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http.post(url).json(&body).send().await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, "\"content\":\"w").await
}

/// A streamed Chat Completions body for `prompt`, with the tools of [`tools`] or without, as
/// the bytes sent: made once and sent many times, so that the bench client's own work per
/// request stays small beside what it measures.
pub(crate) fn chat_request(prompt: &str, with_tools: bool) -> bytes::Bytes {
    let mut body = json!({"model": "m", "stream": true,
                          "messages": [{"role": "user", "content": prompt}]});
    if with_tools {
        body["tools"] = tools();
        body["tool_choice"] = json!("auto");
    }
    bytes::Bytes::from(body.to_string())
}

/// Sends a body made by [`chat_request`] to `url`.
pub(crate) async fn chat_bytes(
    http: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "{}", resp.status());
    measure(resp, started, "\"content\":\"w").await
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

pub(crate) async fn round<F, Fut>(
    concurrency: usize,
    total: usize,
    f: F,
) -> anyhow::Result<Vec<Sample>>
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
/// (p50, p99), what continuing a 50-turn thread adds over a first turn (p50, p99), and the
/// OpenAI-compatible API's figures.
pub struct Overheads {
    pub added: (Duration, Duration),
    pub thread_added: (Duration, Duration),
    pub chat: crate::side_by_side::ChatOverheads,
    pub tools_ab: crate::tools_ab::ToolsAb,
    pub routing: crate::routing_bench::RoutingOverheads,
    pub spend: crate::spend_bench::SpendOverheads,
    /// `/v1/responses` beside `/v1/chat/completions`.
    pub responses: crate::responses_bench::ResponsesFigures,
}

/// A local upstream answering every request at once with [`WORDS`] chunks [`GAP`] apart.
pub(crate) async fn instant_upstream() -> Arc<FakeOpenAi> {
    let words: Vec<String> = (0..WORDS).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    Arc::new(FakeOpenAi::start(vec![Reply::Stream(answer(&refs, GAP))]).await)
}

/// The stream function's routes on `db` over the OpenAI-compatible upstream at `base`, with
/// `extra` settings (`AUTH` off unless they set it), served on loopback: its root URL and store.
pub(crate) async fn serve_stream(
    db: &testkit::TestDb,
    base: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<(String, Arc<common::store::PgStore>)> {
    start_service(stream_settings(db, base, extra), extra).await
}

/// [`serve_stream`] on a runtime of its own ([`crate::runtimes::SERVICE`]), its pool's and its
/// provider's connections too, so that the CPU time of its threads is told apart.
async fn serve_stream_own(
    db: &testkit::TestDb,
    base: &str,
) -> anyhow::Result<(String, Arc<common::store::PgStore>)> {
    let settings = stream_settings(db, base, &[]);
    crate::runtimes::service_runtime()
        .spawn(async move { start_service(settings, &[]).await })
        .await?
}

fn stream_settings(
    db: &testkit::TestDb,
    base: &str,
    extra: &[(&str, &str)],
) -> common::settings::Settings {
    let mut env = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", base),
        ("DB_POOL_SIZE", "16"),
    ];
    env.extend_from_slice(extra);
    db.settings_with(&env)
}

async fn start_service(
    settings: common::settings::Settings,
    extra: &[(&str, &str)],
) -> anyhow::Result<(String, Arc<common::store::PgStore>)> {
    let store = Arc::new(common::store::PgStore::from_settings(&settings)?);
    let state = stream::StreamState::from_settings(&settings, store.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let auth = if extra.iter().any(|(k, _)| *k == "AUTH") {
        common::auth::Auth::from_settings(&settings.auth, store.clone())
    } else {
        common::auth::Auth::off(store.clone())
    };
    let app = stream::router(state, store.clone(), store.clone(), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let root = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });
    Ok((root, store))
}

pub async fn run() -> anyhow::Result<Overheads> {
    let words: Vec<String> = (0..WORDS).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let instant = answer(&refs, GAP);
    let mut model_like = vec![Part::Sleep(MODEL_FIRST_TOKEN)];
    model_like.extend(instant.iter().cloned());
    let no_gaps = answer(&refs, Duration::ZERO);
    let fake = Arc::new(
        FakeOpenAi::by_prompt(move |prompt, _| match prompt {
            SLOW_START => Reply::Stream(model_like.clone()),
            NO_GAPS => Reply::Stream(no_gaps.clone()),
            _ => Reply::Stream(instant.clone()),
        })
        .await,
    );

    // The upstream reads of each request only its prompt, as the bench client sends bodies
    // made once: the machine's cores go to the service under test.
    fake.without_journal();
    let db = testkit::TestDb::new().await;
    let base = fake.base_url();
    let (root, store) = serve_stream(&db, &base, &[]).await?;
    let url = format!("{root}/stream");
    let http = reqwest::Client::new();

    // Warm up connections and caches.
    for _ in 0..20 {
        direct(&http, &fake).await?;
        service(&http, &url).await?;
    }
    let added = stream_overhead(&http, &fake, &url).await?;
    let urls = side_by_side::Urls {
        direct: format!("{base}/chat/completions"),
        stream: url.clone(),
        chat: url.replace("/stream", "/v1/chat/completions"),
        proxy: side_by_side::bare_proxy(base.clone()).await?,
        chat_own: format!(
            "{}/v1/chat/completions",
            serve_stream_own(&db, &base).await?.0
        ),
    };
    for _ in 0..20 {
        chat(&http, &urls.chat, "hi").await?;
        chat(&http, &urls.proxy, "hi").await?;
        chat(&http, &urls.chat_own, "hi").await?;
    }
    let chat = side_by_side::compare(&http, &urls).await?;
    let tools_ab = crate::tools_ab::run(&http, &urls.direct, &urls.chat).await?;
    let thread_added = thread_overhead(&http, &url, &store).await?;
    let routing = crate::routing_bench::run(&http, &fake, &url).await?;
    let spend = crate::spend_bench::run(&fake).await?;
    let responses = crate::responses_bench::run(&fake).await?;
    Ok(Overheads {
        added,
        thread_added,
        chat,
        tools_ab,
        routing,
        spend,
        responses,
    })
}

/// `/stream` against the upstream directly at 1 and 50 streams (prints the table): the time to
/// first byte the service adds at one stream (p50, p99).
async fn stream_overhead(
    http: &reqwest::Client,
    fake: &Arc<FakeOpenAi>,
    url: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let mut rows = Vec::new();
    let mut added = (Duration::ZERO, Duration::ZERO);
    for (concurrency, total) in [(1usize, 200usize), (50, 500)] {
        let (h, f) = (http.clone(), fake.clone());
        let mut d = round(concurrency, total, move || {
            let (h, f) = (h.clone(), f.clone());
            async move { direct(&h, &f).await }
        })
        .await?;
        let (h, u) = (http.clone(), url.to_owned());
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
    Ok(added)
}

/// What continuing a 50-turn thread adds over a first turn (p50, p99; prints the table).
async fn thread_overhead(
    http: &reqwest::Client,
    url: &str,
    store: &common::store::PgStore,
) -> anyhow::Result<(Duration, Duration)> {
    let (f50, c50, f99, c99) = continued(http, url, store).await?;
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
    Ok((c50.saturating_sub(f50), c99.saturating_sub(f99)))
}
