//! Search at scale: a million conversations loaded with COPY, a fixed query set timed through
//! the service (HTTP, in-process server) and as raw SQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::SinkExt;
use time::OffsetDateTime;

use crate::stats::{ms, percentile, table};

const DB: &str = "llm_stream_bench";
const ITERATIONS: usize = 100;
/// Unmeasured runs first: connections open and statements are prepared.
const WARMUP: usize = 5;

/// The query set: (label, query).
const QUERIES: &[(&str, &str)] = &[
    ("rare term", "quokka"),
    ("common term (25% of rows)", "database"),
    ("two terms", "database latency"),
    ("phrase", "\"connection pool\""),
    ("negation", "database -postgres"),
];

/// A deterministic xorshift generator: the same data every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 10_000 < percent * 100
    }
}

const TOPICS: &[&str] = &[
    "rust",
    "python",
    "kubernetes",
    "lambda",
    "streaming",
    "cache",
    "index",
    "query",
    "server",
    "client",
    "memory",
    "thread",
    "async",
    "token",
    "model",
    "prompt",
    "search",
    "vector",
    "network",
    "storage",
    "backup",
    "security",
    "latency",
    "throughput",
    "schema",
    "migration",
    "deploy",
    "container",
    "function",
    "request",
    "response",
    "error",
    "timeout",
    "retry",
    "recipe",
    "travel",
    "garden",
    "music",
    "history",
    "physics",
    "budget",
    "invoice",
    "poem",
    "story",
    "weather",
    "football",
    "chess",
    "painting",
    "coffee",
    "bread",
    "mountain",
    "river",
];
const FILLER: &[&str] = &[
    "how", "do", "i", "make", "the", "a", "with", "for", "when", "why", "can", "you", "explain",
    "better", "faster", "simple", "example", "please", "help", "write", "good", "best", "way",
    "use", "my", "our", "this", "that", "into", "from", "about", "without", "should", "would",
];

fn sentence(rng: &mut Rng, words: usize, out: &mut String) {
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        if rng.chance(35) {
            out.push_str(TOPICS[rng.below(TOPICS.len())]);
        } else {
            out.push_str(FILLER[rng.below(FILLER.len())]);
        }
    }
}

/// Turns per thread in the bench data: a million turns make 100,000 threads.
pub const TURNS_PER_THREAD: usize = 10;

/// Where the row being written stands in its thread: the thread's first turn and the turn
/// before it.
#[derive(Default)]
struct Place {
    thread: uuid::Uuid,
    previous: Option<uuid::Uuid>,
}

/// One conversation as a COPY text line: turn `i % TURNS_PER_THREAD` of its thread.
fn row(
    rng: &mut Rng,
    i: usize,
    n: usize,
    base: OffsetDateTime,
    place: &mut Place,
    line: &mut String,
) {
    line.clear();
    let created = base + Duration::from_secs_f64(i as f64 * 365.0 * 86_400.0 / n as f64);
    let id = uuid::Uuid::now_v7();
    if i.is_multiple_of(TURNS_PER_THREAD) {
        *place = Place {
            thread: id,
            previous: None,
        };
    }
    let thread = place.thread;
    let previous = place
        .previous
        .map_or_else(|| "\\N".to_owned(), |p| p.to_string());
    place.previous = Some(id);
    let mut prompt = String::new();
    let words = 8 + rng.below(10);
    sentence(rng, words, &mut prompt);
    let mut response = String::new();
    let words = 40 + rng.below(60);
    sentence(rng, words, &mut response);
    if rng.chance(25) {
        response.push_str(" the database handles it");
        if rng.chance(30) {
            response.push_str(" with postgres");
        }
    }
    if rng.chance(3) {
        response.push_str(" use a connection pool");
    }
    if i % 10_000 == 7 {
        prompt.push_str(" quokka");
    }
    let ts = created
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    line.push_str(&format!(
        "{id}\t{prompt}\t{response}\tcomplete\toffline\tbench\t{ts}\t{ts}\t{thread}\t{previous}\n"
    ));
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// The service's settings for a bench database at `url`: no auth, statements cut at
/// `statement_timeout_ms`.
pub fn bench_settings(url: &str, statement_timeout_ms: &str) -> anyhow::Result<common::Settings> {
    Ok(common::Settings::from_source(
        &[
            ("DATABASE_URL", url),
            ("DB_STATEMENT_TIMEOUT_MS", statement_timeout_ms),
            ("AUTH", "off"),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>(),
    )?)
}

/// `url` with its database name replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base
        .rfind('/')
        .filter(|i| *i > base.find("://").map_or(0, |s| s + 2))
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn load(url: &str, rows: usize) -> anyhow::Result<()> {
    let client = connect(url).await?;
    let have: i64 = client
        .query_one("SELECT count(*) FROM conversations", &[])
        .await?
        .get(0);
    let threads: i64 = client
        .query_one("SELECT count(*) FROM threads", &[])
        .await?
        .get(0);
    if have == rows as i64 && threads == rows.div_ceil(TURNS_PER_THREAD) as i64 {
        eprintln!("bench: {rows} rows already loaded");
        return build_indexes(&client).await;
    }
    eprintln!("bench: loading {rows} conversations with COPY...");
    let started = Instant::now();
    client
        .batch_execute(
            "TRUNCATE conversations, threads, turn_chunks; \
             DROP INDEX IF EXISTS conversations_search_idx; \
             DROP INDEX IF EXISTS conversations_created_at_id_idx; \
             SET session_replication_role = replica",
        )
        .await?;
    // Triggers are off for the load (session_replication_role): the threads are built after
    // it in one statement instead of one upsert per row.
    let sink = client
        .copy_in(
            "COPY conversations (id, prompt, response, status, provider, model, created_at, \
             updated_at, thread_id, previous_id) FROM STDIN",
        )
        .await?;
    futures_util::pin_mut!(sink);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = OffsetDateTime::now_utc() - Duration::from_secs(86_400 * 365);
    let mut buf = String::with_capacity(1 << 20);
    let mut line = String::new();
    let mut place = Place::default();
    for i in 0..rows {
        row(&mut rng, i, rows, base, &mut place, &mut line);
        buf.push_str(&line);
        if buf.len() > (1 << 20) {
            sink.send(Bytes::from(std::mem::take(&mut buf))).await?;
        }
    }
    sink.send(Bytes::from(buf)).await?;
    sink.as_mut().finish().await?;
    client
        .batch_execute(
            "SET session_replication_role = DEFAULT; \
             INSERT INTO threads (id, owner, title, turns, created_at, updated_at) \
             SELECT c.thread_id, min(c.owner), left(min(c.prompt) FILTER (WHERE c.id = c.thread_id), 80), \
                    count(*), min(c.created_at), max(c.created_at) \
             FROM conversations c GROUP BY c.thread_id",
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE threads").await?;
    eprintln!(
        "bench: copied in {:.0?}; building indexes...",
        started.elapsed()
    );
    build_indexes(&client).await?;
    eprintln!("bench: loaded in {:.0?}", started.elapsed());
    Ok(())
}

/// The bench database with `rows` conversations (loaded once, kept): its URL and settings.
pub async fn bench_db(rows: usize) -> anyhow::Result<(String, common::Settings)> {
    let admin = testkit::admin_url();
    let admin_client = connect(&admin).await?;
    let exists = admin_client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DB])
        .await?
        .is_some();
    if !exists {
        admin_client
            .batch_execute(&format!("CREATE DATABASE {DB}"))
            .await?;
    }
    let url = with_db(&admin, DB);
    let settings = bench_settings(&url, "30000")?;
    let store = common::store::PgStore::from_settings(&settings)?;
    common::db::migrate(store.pool(), "english").await?;
    load(&url, rows).await?;
    Ok((url, settings))
}

/// `(label, p50, p99)` of each query through the service.
pub type Timings = Vec<(String, Duration, Duration)>;

pub async fn run(rows: usize) -> anyhow::Result<Timings> {
    let (url, settings) = bench_db(rows).await?;
    let store = Arc::new(common::store::PgStore::from_settings(&settings)?);

    let app = search::router(
        store.clone(),
        settings.db.search_candidates,
        store.clone(),
        common::auth::Auth::off(store.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { common::http::serve(listener, app).await });
    let http = reqwest::Client::new();
    let raw = connect(&url).await?;

    let mut out = Vec::new();
    let mut timings = Vec::new();
    for (label, q) in QUERIES {
        let mut svc = Vec::with_capacity(ITERATIONS);
        let mut sql = Vec::with_capacity(ITERATIONS);
        let mut hits = 0;
        let url = format!("http://{addr}/search?query={}", encode(q));
        let query = common::store::SearchQuery {
            text: (*q).to_owned(),
            from: None,
            to: None,
            limit: 21,
            offset: 0,
            candidates: settings.db.search_candidates,
        };
        for _ in 0..WARMUP {
            http.get(&url).send().await?.bytes().await?;
            common::store::ConversationSearch::search(store.as_ref(), "local", &query).await?;
        }
        for _ in 0..ITERATIONS {
            let t = Instant::now();
            let body: serde_json::Value = http.get(&url).send().await?.json().await?;
            svc.push(t.elapsed());
            hits = body["items"].as_array().map_or(0, Vec::len);
            let t = Instant::now();
            common::store::ConversationSearch::search(store.as_ref(), "local", &query).await?;
            sql.push(t.elapsed());
        }
        let matches: i64 = raw
            .query_one(
                "SELECT count(*) FROM conversations WHERE search @@ websearch_to_tsquery('english', $1)",
                &[q],
            )
            .await?
            .get(0);
        let (p50, p99) = (percentile(&mut svc, 50.0), percentile(&mut svc, 99.0));
        timings.push((format!("`/search` {label}: `{q}`"), p50, p99));
        out.push(vec![
            (*label).to_owned(),
            format!("`{q}`"),
            matches.to_string(),
            hits.to_string(),
            ms(percentile(&mut svc, 50.0)),
            ms(percentile(&mut svc, 99.0)),
            ms(percentile(&mut sql, 50.0)),
            ms(percentile(&mut sql, 99.0)),
        ]);
    }
    println!(
        "\nsearch at {rows} conversations, {ITERATIONS} runs per query (milliseconds; service = \
         HTTP GET /search, store = the same SQL called directly):\n"
    );
    table(
        &[
            "query",
            "text",
            "matches",
            "page",
            "service p50",
            "service p99",
            "store p50",
            "store p99",
        ],
        &out,
    );
    Ok(timings)
}

/// The indexes the migrations make (dropped for the load), then fresh statistics.
async fn build_indexes(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "SET maintenance_work_mem = '1GB'; \
             CREATE INDEX IF NOT EXISTS conversations_created_at_id_idx \
               ON conversations (created_at DESC, id DESC)",
        )
        .await?;
    client
        .batch_execute(common::store::SEARCH_INDEX_DDL)
        .await?;
    client.batch_execute("VACUUM ANALYZE conversations").await?;
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
