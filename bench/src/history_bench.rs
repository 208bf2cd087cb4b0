//! History at scale, through the service (HTTP, in-process server with every route): the first
//! page, the last page (page 50,000 at a million rows) by `offset` and by `cursor`, and one
//! conversation by id; the threads (100,000 of 10 turns): the first page, a deep page by cursor,
//! one thread with its turns.

use std::time::{Duration, Instant};

use common::store::Cursor;

use crate::stats::{ms, percentile, table};

const LIMIT: i64 = 20;
const RUNS: usize = 100;
/// The deep offset page reads every row before it: fewer runs.
const DEEP_OFFSET_RUNS: usize = 20;

/// `(label, p50, p99)` of each request kind.
pub type Timings = Vec<(String, Duration, Duration)>;

/// p50 and p99 of `runs` GETs, taking `urls` in turn (after three unmeasured ones); each must
/// answer 200.
pub async fn time(
    http: &reqwest::Client,
    urls: &[String],
    runs: usize,
) -> anyhow::Result<(Duration, Duration)> {
    for u in urls.iter().cycle().take(3) {
        http.get(u).send().await?.bytes().await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let url = &urls[i % urls.len()];
        let t = Instant::now();
        let resp = http.get(url).send().await?;
        anyhow::ensure!(resp.status() == 200, "{url}: {}", resp.status());
        resp.bytes().await?;
        samples.push(t.elapsed());
    }
    Ok((
        percentile(&mut samples, 50.0),
        percentile(&mut samples, 99.0),
    ))
}

pub async fn run(rows: usize) -> anyhow::Result<Timings> {
    let (url, settings) = crate::search_bench::bench_db(rows).await?;
    let store = common::store::from_settings(&settings)?;
    let app = local::app(&settings, store)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });
    let http = reqwest::Client::new();
    let raw = crate::search_bench::connect(&url).await?;

    let last_page = (rows as i64 / LIMIT).max(1);
    let deep_offset = (last_page - 1) * LIMIT;
    // The keyset position just before the last page: what `next_cursor` of page 49,999 holds.
    let before = raw
        .query_one(
            "SELECT created_at, id FROM conversations WHERE owner = 'local' \
             ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
            &[&(deep_offset - 1)],
        )
        .await?;
    let cursor = Cursor {
        created_at: before.get(0),
        id: before.get(1),
    }
    .encode();
    let ids: Vec<uuid::Uuid> = raw
        .query(
            "SELECT id FROM conversations TABLESAMPLE SYSTEM (1) LIMIT $1",
            &[&(RUNS as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut out = Vec::new();
    let (p50, p99) = time(&http, &[format!("{base}/history?limit={LIMIT}")], RUNS).await?;
    out.push(("`/history` first page".to_owned(), p50, p99));
    let (p50, p99) = time(
        &http,
        &[format!("{base}/history?limit={LIMIT}&offset={deep_offset}")],
        DEEP_OFFSET_RUNS,
    )
    .await?;
    out.push((format!("`/history` page {last_page} by offset"), p50, p99));
    let (p50, p99) = time(
        &http,
        &[format!("{base}/history?limit={LIMIT}&cursor={cursor}")],
        RUNS,
    )
    .await?;
    out.push((format!("`/history` page {last_page} by cursor"), p50, p99));
    let urls: Vec<String> = ids
        .iter()
        .map(|id| format!("{base}/history/{id}"))
        .collect();
    let (p50, p99) = time(&http, &urls, RUNS).await?;
    out.push(("`/history/{id}`, one conversation".to_owned(), p50, p99));

    // Threads: the first page, and the page after 90% of them by cursor.
    let threads: i64 = raw
        .query_one("SELECT count(*) FROM threads", &[])
        .await?
        .get(0);
    let deep = raw
        .query_one(
            "SELECT updated_at, id FROM threads WHERE owner = 'local' \
             ORDER BY updated_at DESC, id DESC OFFSET $1 LIMIT 1",
            &[&(threads * 9 / 10)],
        )
        .await?;
    let cursor = Cursor {
        created_at: deep.get(0),
        id: deep.get(1),
    }
    .encode();
    let (p50, p99) = time(&http, &[format!("{base}/threads?limit={LIMIT}")], RUNS).await?;
    out.push((
        format!("`/threads` first page ({threads} threads)"),
        p50,
        p99,
    ));
    let (p50, p99) = time(
        &http,
        &[format!("{base}/threads?limit={LIMIT}&cursor={cursor}")],
        RUNS,
    )
    .await?;
    out.push((
        format!(
            "`/threads` deep page by cursor (after {} threads)",
            threads * 9 / 10
        ),
        p50,
        p99,
    ));
    let thread_ids: Vec<uuid::Uuid> = raw
        .query(
            "SELECT id FROM threads TABLESAMPLE SYSTEM (1) LIMIT $1",
            &[&(RUNS as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let urls: Vec<String> = thread_ids
        .iter()
        .map(|id| format!("{base}/threads/{id}"))
        .collect();
    let (p50, p99) = time(&http, &urls, RUNS).await?;
    out.push(("`/threads/{id}`, a thread of 10 turns".to_owned(), p50, p99));

    println!(
        "\nhistory at {rows} conversations, {LIMIT} per page, through the service (milliseconds):\n"
    );
    table(
        &["request", "p50", "p99"],
        &out.iter()
            .map(|(l, a, b)| vec![l.clone(), ms(*a), ms(*b)])
            .collect::<Vec<_>>(),
    );
    Ok(out)
}
