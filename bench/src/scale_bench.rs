//! `make bench-scale ROWS=N`: the reads at N turns (default 1,000,000) beside the same reads at
//! 1,000,000 in the same run. The turns are shaped like real chat: threads of 1 to 199 turns
//! (100 on average), prompts of 50 to 500 characters and answers of 200 to 4,000, words drawn
//! from a Zipf vocabulary of 500,000 (so common, middling and rare terms all exist), a year of
//! activity, one owner (the worst case for an owner's reads). Each size is loaded once into its
//! own database (`llm_stream_scale_N`, kept between runs) by two parallel COPY streams with the
//! triggers off and the indexes built afterwards, as the migrations define them. Reads go
//! through the service (HTTP, in-process server with every route), 100 runs each after a warm
//! up; a continuation's chain load calls the store as the stream does. Then: the load rate,
//! bytes per turn (table with its TOAST, and indexes), and EXPLAIN ANALYZE of the slowest read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use common::store::Cursor;
use futures_util::SinkExt;
use time::OffsetDateTime;

use crate::history_bench::time;
use crate::search_bench::{bench_settings, connect, with_db};
use crate::stats::{ms, percentile, table};

const RUNS: usize = 100;
const WARMUP: usize = 5;
const VOCABULARY: usize = 500_000;
/// Zipf's exponent: the k-th word is used in proportion to 1/k^S.
const ZIPF_S: f64 = 1.0;
/// Bumped when the generated data changes: a database loaded by another version is reloaded.
const DATA_VERSION: i32 = 5;
/// The page `/history` is read at by cursor (page 50,000 of 20 at 1M turns).
const DEEP_PAGE: i64 = 50_000;
const LIMIT: i64 = 20;

/// A deterministic xorshift generator: the same data every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The vocabulary (pseudo-words, none an English stop word) and its Zipf cumulative weights.
struct Words {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "te", "su", "no", "pe", "vi", "da", "zo", "ri", "ga", "fu", "be", "ny",
    "ko", "la", "me", "tu", "po", "si", "de", "ru", "va", "xo", "wi", "ha", "jo", "qu",
];

/// The vocabulary's most frequent words, as in English: the function words the text search
/// configuration drops (so the search column holds what a real answer's would).
const FUNCTION_WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "i", "his", "they", "be", "at", "have", "this", "from", "or", "had", "by",
    "but", "what", "some", "we", "can", "were", "all", "there", "when", "your", "which", "their",
    "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "so",
    "these", "her", "would", "him", "into", "has", "more", "two", "my", "than", "been", "who",
    "its", "now", "did", "down", "only", "other", "any", "very", "after", "most", "also", "our",
    "over", "such", "where", "through", "just", "those", "should", "because", "while", "same",
    "both", "few", "own", "again", "before", "between", "under", "off", "no", "not", "nor", "too",
    "here", "why", "once", "further", "during", "against", "until",
];

impl Words {
    fn new() -> Self {
        let n = SYLLABLES.len();
        let words = (0..VOCABULARY)
            .map(|i| match FUNCTION_WORDS.get(i) {
                Some(w) => (*w).to_owned(),
                // The index in base 30, one syllable a digit: every word distinct, and the more
                // frequent the shorter (as in a language: 4 letters up to rank 900, 6 up to
                // 27,000, then 8).
                None => {
                    let syllables = match i {
                        ..900 => 2,
                        900..27_000 => 3,
                        _ => 4,
                    };
                    (0..syllables)
                        .map(|k: u32| SYLLABLES[(i / n.pow(k)) % n])
                        .collect()
                }
            })
            .collect();
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY)
            .map(|k| {
                total += 1.0 / (k as f64).powf(ZIPF_S);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn pick(&self, rng: &mut Rng) -> &str {
        let x = rng.unit() * self.cumulative[VOCABULARY - 1];
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.words[i.min(VOCABULARY - 1)]
    }

    /// Words until `chars` characters.
    fn text(&self, rng: &mut Rng, chars: usize, out: &mut String) {
        out.clear();
        while out.len() < chars {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(self.pick(rng));
        }
    }
}

/// The COPY lines of turns `[from, to)` of `rows`: threads never straddle a part (each part
/// starts a thread at its first turn).
fn generate(
    words: &Words,
    seed: u64,
    from: usize,
    to: usize,
    rows: usize,
    mut send: impl FnMut(String) -> bool,
) {
    let mut rng = Rng(seed);
    let base = OffsetDateTime::now_utc() - Duration::from_secs(86_400 * 365);
    let (mut prompt, mut response) = (String::new(), String::new());
    let mut buf = String::with_capacity(1 << 21);
    let mut left_in_thread = 0usize;
    let (mut thread, mut previous) = (uuid::Uuid::nil(), None::<uuid::Uuid>);
    for i in from..to {
        let created = base + Duration::from_secs_f64(i as f64 * 365.0 * 86_400.0 / rows as f64);
        let id = uuid::Uuid::now_v7();
        if left_in_thread == 0 {
            left_in_thread = rng.between(1, 199);
            thread = id;
            previous = None;
        }
        left_in_thread -= 1;
        let chars = rng.between(50, 500);
        words.text(&mut rng, chars, &mut prompt);
        let chars = rng.between(200, 4000);
        words.text(&mut rng, chars, &mut response);
        let ts = created
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let prev = previous.map_or_else(|| "\\N".to_owned(), |p| p.to_string());
        let (p, c) = (prompt.len() / 4, response.len() / 4);
        buf.push_str(&format!(
            "{id}\tlocal\t{prompt}\t{response}\tcomplete\toffline\tscale\t{p}\t{c}\t{}\t{ts}\t{ts}\t{thread}\t{prev}\n",
            p + c
        ));
        previous = Some(id);
        if buf.len() > (1 << 21) && !send(std::mem::take(&mut buf)) {
            return;
        }
    }
    send(buf);
}

/// The first turn of a part of `parts`: where the generator starts a thread.
fn part_start(rows: usize, parts: usize, k: usize) -> usize {
    rows * k / parts
}

async fn copy_part(url: String, rows: usize, parts: usize, k: usize) -> anyhow::Result<()> {
    let client = connect(&url).await?;
    client
        .batch_execute("SET session_replication_role = replica")
        .await?;
    let sink = client
        .copy_in(
            "COPY conversations (id, owner, prompt, response, status, provider, model, \
             prompt_tokens, completion_tokens, total_tokens, created_at, updated_at, thread_id, \
             previous_id) FROM STDIN",
        )
        .await?;
    futures_util::pin_mut!(sink);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    let (from, to) = (part_start(rows, parts, k), part_start(rows, parts, k + 1));
    let producer = std::thread::spawn(move || {
        let words = Words::new();
        generate(
            &words,
            0x9e37_79b9_7f4a_7c15 ^ k as u64,
            from,
            to,
            rows,
            |b| tx.blocking_send(b).is_ok(),
        );
    });
    while let Some(chunk) = rx.recv().await {
        sink.send(Bytes::from(chunk)).await?;
    }
    sink.as_mut().finish().await?;
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))?;
    Ok(())
}

/// The database for `rows` turns, loaded (once): its URL, settings and the load rate of the
/// load that made it (turns/s; `None` when it was already there).
async fn database(rows: usize) -> anyhow::Result<(String, common::Settings, Option<f64>)> {
    let name = format!("llm_stream_scale_{rows}");
    let admin = testkit::admin_url();
    let url = with_db(&admin, &name);
    let settings = bench_settings(&url, "60000")?;
    let migrate = || async {
        let store = common::store::PgStore::from_settings(&settings)?;
        common::db::migrate(store.pool(), "english").await?;
        anyhow::Ok(())
    };
    // Loaded by a finished load of this data version, or made again from nothing (a load that
    // stopped half way leaves its indexes dropped).
    let loaded = match connect(&url).await {
        Ok(client) => client
            .query_opt("SELECT rows, version FROM bench_scale", &[])
            .await
            .ok()
            .flatten()
            .is_some_and(|r| {
                r.get::<_, i64>(0) == rows as i64 && r.get::<_, i32>(1) == DATA_VERSION
            }),
        Err(_) => false,
    };
    if loaded {
        migrate().await?;
        eprintln!("bench-scale: {rows} turns already loaded in {name}");
        return Ok((url, settings, None));
    }
    let admin_client = connect(&admin).await?;
    // One statement each: neither runs in the transaction a multi-statement query is.
    admin_client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin_client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    migrate().await?;
    let client = connect(&url).await?;
    client
        .batch_execute("CREATE TABLE bench_scale (rows bigint, version int)")
        .await?;
    eprintln!("bench-scale: loading {rows} turns into {name} (two COPY streams)...");
    let started = Instant::now();
    // The secondary indexes are dropped for the load and made again after it, as the
    // migrations defined them.
    let indexes: Vec<(String, String)> = client
        .query(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'conversations' \
             AND indexname <> 'conversations_pkey'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &indexes {
        client.batch_execute(&format!("DROP INDEX {name}")).await?;
    }
    let parts = 2;
    let mut tasks = Vec::new();
    for k in 0..parts {
        tasks.push(tokio::spawn(copy_part(url.clone(), rows, parts, k)));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "bench-scale: copied in {:.0?}; threads, usage and indexes...",
        started.elapsed()
    );
    // What the triggers would have made, in one statement each.
    client
        .batch_execute(
            "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2; \
             INSERT INTO threads (id, owner, title, turns, created_at, updated_at) \
             SELECT c.thread_id, min(c.owner), \
                    left(min(c.prompt) FILTER (WHERE c.id = c.thread_id), 80), \
                    count(*), min(c.created_at), max(c.created_at) \
             FROM conversations c GROUP BY c.thread_id; \
             INSERT INTO usage_daily (owner, day, model, key_id, requests, prompt_tokens, \
                    completion_tokens, cost_usd) \
             SELECT owner, (created_at AT TIME ZONE 'UTC')::date, model, NULL, count(*), \
                    sum(prompt_tokens), sum(completion_tokens), 0 \
             FROM conversations GROUP BY 1, 2, 3",
        )
        .await?;
    for (name, definition) in &indexes {
        let step = Instant::now();
        client.batch_execute(definition).await?;
        eprintln!("bench-scale: {name} in {:.0?}", step.elapsed());
    }
    // One statement each: VACUUM cannot run in the transaction a multi-statement query is.
    for table in ["conversations", "threads", "usage_daily"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }
    client
        .execute(
            "INSERT INTO bench_scale (rows, version) VALUES ($1, $2)",
            &[&(rows as i64), &DATA_VERSION],
        )
        .await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("bench-scale: loaded in {secs:.0} s");
    Ok((url, settings, Some(rows as f64 / secs)))
}

/// One size's figures.
struct Size {
    rows: usize,
    /// `(label, p50, p99, the statement for EXPLAIN)`.
    reads: Vec<(String, Duration, Duration, String)>,
    load_rate: Option<f64>,
    table_bytes: f64,
    index_bytes: f64,
    terms: Vec<(String, String, i64)>,
    url: String,
}

/// The terms searched: the vocabulary's words nearest 30%, 1% and 0.01% of turns (by the
/// Zipf weights), with how many turns hold each.
async fn terms(raw: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, String, i64)>> {
    let words = Words::new();
    let mut out = Vec::new();
    for (label, share) in [("common", 0.30), ("middling", 0.01), ("rare", 0.0001)] {
        // The expected share of turns holding word k: 1 - (1 - p_k)^(words per turn, ~400).
        let total = words.cumulative[VOCABULARY - 1];
        // Searchable words only: past the function words.
        let k = (FUNCTION_WORDS.len() + 1..=VOCABULARY)
            .min_by(|a, b| {
                let f = |k: usize| {
                    let p = 1.0 / (k as f64).powf(ZIPF_S) / total;
                    (1.0 - (1.0 - p).powf(400.0) - share).abs()
                };
                f(*a).total_cmp(&f(*b))
            })
            .unwrap_or(1);
        let word = words.words[k - 1].clone();
        let matches: i64 = raw
            .query_one(
                "SELECT count(*) FROM conversations WHERE search @@ websearch_to_tsquery('english', $1)",
                &[&word],
            )
            .await?
            .get(0);
        out.push((label.to_owned(), word, matches));
    }
    Ok(out)
}

async fn measure(rows: usize) -> anyhow::Result<Size> {
    let (url, settings, load_rate) = database(rows).await?;
    let store = common::store::from_settings(&settings)?;
    let app = local::app(&settings, store.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });
    let http = reqwest::Client::new();
    let raw = connect(&url).await?;
    let cols = "c.*";
    let mut reads = Vec::new();

    let (p50, p99) = time(&http, &[format!("{base}/history?limit={LIMIT}")], RUNS).await?;
    reads.push((
        "`/history` first page".to_owned(),
        p50,
        p99,
        format!(
            "SELECT {cols} FROM conversations c WHERE c.owner = 'local' \
             ORDER BY c.created_at DESC, c.id DESC LIMIT {}",
            LIMIT + 1
        ),
    ));
    let deep = (DEEP_PAGE - 1) * LIMIT;
    let deep = deep.min(rows as i64 - LIMIT - 1);
    let before = raw
        .query_one(
            "SELECT created_at, id FROM conversations WHERE owner = 'local' \
             ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
            &[&deep],
        )
        .await?;
    let (at, id): (OffsetDateTime, uuid::Uuid) = (before.get(0), before.get(1));
    let cursor = Cursor { created_at: at, id }.encode();
    let (p50, p99) = time(
        &http,
        &[format!("{base}/history?limit={LIMIT}&cursor={cursor}")],
        RUNS,
    )
    .await?;
    let at_text = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    reads.push((
        format!("`/history` page {} by cursor", deep / LIMIT + 1),
        p50,
        p99,
        format!(
            "SELECT {cols} FROM conversations c WHERE c.owner = 'local' \
             AND (c.created_at, c.id) < ('{at_text}'::timestamptz, '{id}'::uuid) \
             ORDER BY c.created_at DESC, c.id DESC LIMIT {}",
            LIMIT + 1
        ),
    ));
    let ids: Vec<uuid::Uuid> = raw
        .query(
            "SELECT id FROM conversations TABLESAMPLE SYSTEM (0.1) LIMIT $1",
            &[&(RUNS as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let urls: Vec<String> = ids.iter().map(|i| format!("{base}/history/{i}")).collect();
    let (p50, p99) = time(&http, &urls, RUNS).await?;
    reads.push((
        "`/history/{id}` (get)".to_owned(),
        p50,
        p99,
        format!(
            "SELECT {cols} FROM conversations c WHERE c.id = '{}' AND c.owner = 'local'",
            ids[0]
        ),
    ));
    let (p50, p99) = time(&http, &[format!("{base}/threads?limit={LIMIT}")], RUNS).await?;
    reads.push((
        "`/threads` first page".to_owned(),
        p50,
        p99,
        format!(
            "SELECT * FROM threads t WHERE t.owner = 'local' \
             ORDER BY t.updated_at DESC, t.id DESC LIMIT {}",
            LIMIT + 1
        ),
    ));
    let tens: Vec<uuid::Uuid> = raw
        .query(
            "SELECT id FROM threads WHERE turns = 10 LIMIT $1",
            &[&(RUNS as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(!tens.is_empty(), "no thread of 10 turns");
    let urls: Vec<String> = tens.iter().map(|i| format!("{base}/threads/{i}")).collect();
    let (p50, p99) = time(&http, &urls, RUNS).await?;
    reads.push((
        "`/threads/{id}`, a thread of 10 turns".to_owned(),
        p50,
        p99,
        format!(
            "SELECT {cols} FROM conversations c WHERE c.thread_id = '{}' AND c.owner = 'local' \
             ORDER BY c.created_at, c.id LIMIT {}",
            tens[0],
            LIMIT + 1
        ),
    ));
    let terms = terms(&raw).await?;
    for (label, word, _) in &terms {
        let (p50, p99) = time(&http, &[format!("{base}/search?query={word}")], RUNS).await?;
        let search = common::store::search_sql(&settings.db.search_config);
        reads.push((
            format!("`/search` {label} term"),
            p50,
            p99,
            format!(
                "PREPARE q AS {search}; EXPLAIN (ANALYZE, BUFFERS) EXECUTE q('{word}', NULL, NULL, \
                 {}, 21, 0, 'local'); DEALLOCATE q",
                settings.db.search_candidates
            ),
        ));
    }
    let month_end = OffsetDateTime::now_utc().date();
    let month_start = month_end - time::Duration::days(30);
    let (p50, p99) = time(
        &http,
        &[format!(
            "{base}/usage?group_by=day&from={month_start}&to={month_end}"
        )],
        RUNS,
    )
    .await?;
    reads.push((
        "`/usage` by day over a month".to_owned(),
        p50,
        p99,
        format!(
            "SELECT day, sum(requests) FROM usage_daily WHERE owner = 'local' \
             AND day >= '{month_start}' AND day < '{month_end}' GROUP BY day ORDER BY day"
        ),
    ));
    // A continuation: the chain behind the last turn of a long thread, as the stream loads it.
    let lasts: Vec<uuid::Uuid> = raw
        .query(
            "SELECT (SELECT c.id FROM conversations c WHERE c.thread_id = t.id \
                     ORDER BY c.created_at DESC, c.id DESC LIMIT 1) \
             FROM threads t WHERE t.turns >= 150 LIMIT $1",
            &[&(RUNS as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(!lasts.is_empty(), "no thread of 150 turns");
    let budget = settings.stream.max_context_chars as i64;
    let chain_store: Arc<dyn common::store::Backend> = store;
    for id in lasts.iter().cycle().take(WARMUP) {
        chain_store.chain("local", *id, budget).await?;
    }
    let mut samples = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let t = Instant::now();
        let chain = chain_store
            .chain("local", lasts[i % lasts.len()], budget)
            .await?
            .context("a chain")?;
        samples.push(t.elapsed());
        anyhow::ensure!(!chain.is_empty());
    }
    reads.push((
        format!(
            "a continuation's chain load (last turn of a 150+ turn thread, {budget} characters)"
        ),
        percentile(&mut samples, 50.0),
        percentile(&mut samples, 99.0),
        format!(
            "SELECT {cols} FROM conversations c WHERE c.thread_id = (SELECT thread_id FROM \
             conversations WHERE id = '{0}') ORDER BY c.created_at DESC, c.id DESC LIMIT 64",
            lasts[0]
        ),
    ));

    let sizes = raw
        .query_one(
            "SELECT (pg_table_size('conversations') + pg_table_size('threads'))::float8, \
                    (pg_indexes_size('conversations') + pg_indexes_size('threads'))::float8",
            &[],
        )
        .await?;
    Ok(Size {
        rows,
        reads,
        load_rate,
        table_bytes: sizes.get::<_, f64>(0) / rows as f64,
        index_bytes: sizes.get::<_, f64>(1) / rows as f64,
        terms,
        url,
    })
}

async fn explain(url: &str, statement: &str) -> anyhow::Result<String> {
    let client = connect(url).await?;
    let explained = if statement.starts_with("PREPARE") {
        statement.to_owned()
    } else {
        format!("EXPLAIN (ANALYZE, BUFFERS) {statement}")
    };
    let mut out = String::new();
    for message in client.simple_query(&explained).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = message {
            out.push_str(r.get(0).unwrap_or_default());
            out.push('\n');
        }
    }
    Ok(out)
}

pub async fn run(rows: usize) -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    if rows > 1_000_000 {
        sizes.push(measure(1_000_000).await?);
    }
    sizes.push(measure(rows).await?);
    let big = sizes.last().context("a size")?;
    println!(
        "\nreads at {} turns{} (milliseconds; {RUNS} runs each through the service):\n",
        big.rows,
        if sizes.len() > 1 {
            " beside 1,000,000"
        } else {
            ""
        }
    );
    let mut header = vec!["read".to_owned()];
    for s in &sizes {
        header.push(format!("p50 at {}", s.rows));
        header.push(format!("p99 at {}", s.rows));
    }
    if sizes.len() > 1 {
        header.push("p99 ratio".to_owned());
    }
    let rows_out: Vec<Vec<String>> = (0..big.reads.len())
        .map(|i| {
            let mut r = vec![big.reads[i].0.clone()];
            for s in &sizes {
                r.push(ms(s.reads[i].1));
                r.push(ms(s.reads[i].2));
            }
            if sizes.len() > 1 {
                let ratio = sizes[1].reads[i].2.as_secs_f64() / sizes[0].reads[i].2.as_secs_f64();
                r.push(format!("{ratio:.2}×"));
            }
            r
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header, &rows_out);
    println!();
    let mut facts = Vec::new();
    for s in &sizes {
        let terms = s
            .terms
            .iter()
            .map(|(l, w, n)| format!("{l} `{w}` in {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        facts.push(vec![
            s.rows.to_string(),
            s.load_rate
                .map_or_else(|| "(loaded earlier)".to_owned(), |r| format!("{r:.0}")),
            format!("{:.0}", s.table_bytes),
            format!("{:.0}", s.index_bytes),
            terms,
        ]);
    }
    table(
        &[
            "turns",
            "load (turns/s)",
            "table bytes/turn",
            "index bytes/turn",
            "search terms (turns holding them)",
        ],
        &facts,
    );
    if std::env::var_os("EXPLAIN_ALL").is_some() {
        for r in &big.reads {
            eprintln!("{}:\n{}", r.0, explain(&big.url, &r.3).await?);
        }
    }
    let slowest = big.reads.iter().max_by_key(|r| r.2).context("a read")?;
    println!(
        "\nthe slowest read at {} turns: {} (p99 {} ms):\n",
        big.rows,
        slowest.0,
        ms(slowest.2)
    );
    println!("```\n{}```", explain(&big.url, &slowest.3).await?);
    Ok(())
}
