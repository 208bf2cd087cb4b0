//! Re-attaching, measured:
//!
//! - the time from a chunk leaving the provider (a local OpenAI-compatible server stamping each
//!   chunk with the time it sends it) to a reader that re-attached, in the process generating
//!   the turn (it follows the live log) and in another one (it polls the database log), at the
//!   default `CHECKPOINT_INTERVAL_MS` and `RESUME_POLL_MS` and at shorter ones;
//! - the bytes PostgreSQL writes (WAL) per checkpoint of a 200,000-character answer: the turn
//!   log's append against the rewrite of the whole answer the service did before the log.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use serde_json::json;
use testkit::fake_openai::{FakeOpenAi, Part, Reply};

use crate::stats::{ms, percentile, table};

/// Chunks per answer, the gap between them, answers per measurement.
const CHUNKS: usize = 60;
const GAP: Duration = Duration::from_millis(25);
const STREAMS: usize = 5;

/// The report lines: (measure, result).
pub async fn run() -> anyhow::Result<Vec<(String, String)>> {
    let mut lines = Vec::new();
    for (checkpoint, poll) in [("2000", "250"), ("200", "50")] {
        let (same, other) = latency(checkpoint, poll).await?;
        lines.push((
            format!(
                "chunk from the provider to a re-attached reader, same process · another \
                 process (CHECKPOINT_INTERVAL_MS={checkpoint}, RESUME_POLL_MS={poll})"
            ),
            format!("{same} · {other}"),
        ));
    }
    lines.extend(checkpoint_bytes().await?);
    println!("\n## Re-attaching\n");
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|(a, b)| vec![a.clone(), b.clone()])
        .collect();
    table(&["measure", "result"], &rows);
    Ok(lines)
}

/// One service instance (its own live turns) on `settings`' database, listening; its base URL.
async fn instance(settings: &common::Settings) -> anyhow::Result<String> {
    let store = Arc::new(common::store::PgStore::from_settings(settings)?);
    let state = stream::StreamState::from_settings(settings, store.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let app = stream::router(
        state,
        store.clone(),
        store.clone(),
        common::auth::Auth::off(store),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });
    Ok(base)
}

/// The delay of every stamped chunk a reader of `resp` receives.
async fn delays(resp: reqwest::Response) -> anyhow::Result<Vec<Duration>> {
    anyhow::ensure!(resp.status() == 200, "re-attaching: {}", resp.status());
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
        while let Some(at) = buf.find('@') {
            let rest = &buf[at + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if digits.len() == rest.len() {
                break; // the stamp is not complete yet
            }
            let sent = Duration::from_micros(digits.parse()?);
            out.push(now.saturating_sub(sent));
            buf.drain(..at + 1 + digits.len());
        }
    }
    Ok(out)
}

/// p50 and p99 of chunk delays to a reader re-attached in the same process and in another one.
async fn latency(checkpoint: &str, poll: &str) -> anyhow::Result<(String, String)> {
    let parts: Vec<Part> = (0..CHUNKS)
        .flat_map(|i| [Part::Sleep(GAP), Part::Stamped(format!("c{i}"))])
        .chain([Part::Data("[DONE]".into())])
        .collect();
    let fake = FakeOpenAi::start(vec![Reply::Stream(parts)]).await;
    let db = testkit::TestDb::new().await;
    let base_url = fake.base_url();
    let settings = db.settings_with(&[
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("CHECKPOINT_INTERVAL_MS", checkpoint),
        ("RESUME_POLL_MS", poll),
        ("METRICS", "off"),
    ]);
    let (a, b) = (instance(&settings).await?, instance(&settings).await?);
    let http = reqwest::Client::new();
    let mut same = Vec::new();
    let mut other = Vec::new();
    for _ in 0..STREAMS {
        let asked = http
            .post(format!("{a}/stream"))
            .json(&json!({"prompt": "stamp it"}))
            .send()
            .await?;
        let id = asked.headers()["x-conversation-id"].to_str()?.to_owned();
        let asking = tokio::spawn(asked.bytes());
        // Both readers at once, each reading from its first byte on (the other process may
        // first wait for the turn's row).
        let reader = |base: String| {
            let get = http.get(format!("{base}/stream/{id}"));
            async move { delays(get.send().await?).await }
        };
        let (here, there) = tokio::join!(reader(a.clone()), reader(b.clone()));
        let (here, there) = (here?, there?);
        anyhow::ensure!(
            here.len() == CHUNKS && there.len() == CHUNKS,
            "a re-attached reader missed chunks: {} and {} of {CHUNKS}",
            here.len(),
            there.len()
        );
        same.extend(here);
        other.extend(there);
        asking.await??;
    }
    let p = |v: &mut Vec<Duration>| {
        format!(
            "p50 {} ms / p99 {} ms",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0))
        )
    };
    Ok((p(&mut same), p(&mut other)))
}

/// WAL bytes per checkpoint of a 200,000-character answer arriving 400 characters per
/// checkpoint: appending to the turn log (now) against rewriting the whole answer so far (the
/// service before the log).
async fn checkpoint_bytes() -> anyhow::Result<Vec<(String, String)>> {
    use common::store::{ConversationCreate, ConversationFinish};
    const ANSWER: usize = 200_000;
    const PIECE: usize = 400;
    let db = testkit::TestDb::new().await;
    let store = db.store();
    let client = db.client().await;
    let text: String = testkit::fake_openai::prose(ANSWER, ANSWER, 3).concat();
    let lsn = || async {
        let v: i64 = client
            .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[])
            .await?
            .get(0);
        Ok::<_, anyhow::Error>(v)
    };
    let pieces: Vec<String> = text
        .as_bytes()
        .chunks(PIECE)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();

    // Now: each checkpoint appends its piece to the log.
    let now = common::Conversation::start("local", "p".into(), "offline", "m");
    store.create(&now).await?;
    let started = Instant::now();
    let before = lsn().await?;
    let mut at = 0i64;
    for piece in &pieces {
        store.checkpoint(None, now.id, Some((at, piece))).await?;
        at += piece.chars().count() as i64;
    }
    let log = lsn().await? - before;
    let log_took = started.elapsed();

    // Before: each checkpoint rewrote the row's whole answer so far (and its search vector).
    let then = common::Conversation::start("local", "p".into(), "offline", "m");
    store.create(&then).await?;
    let started = Instant::now();
    let before = lsn().await?;
    let mut so_far = String::new();
    for piece in &pieces {
        so_far.push_str(piece);
        client
            .execute(
                "UPDATE conversations SET response = $2, updated_at = now() \
                 WHERE id = $1 AND status = 'streaming'",
                &[&then.id, &so_far],
            )
            .await?;
    }
    let rewrite = lsn().await? - before;
    let rewrite_took = started.elapsed();
    let n = pieces.len() as i64;
    Ok(vec![(
        format!(
            "bytes PostgreSQL writes (WAL) per checkpoint, a {ANSWER}-character answer in {n} \
             checkpoints of {PIECE}: the turn log · the whole-answer rewrite before it (time for \
             all checkpoints)"
        ),
        format!(
            "{} · {} bytes ({} ms · {} ms)",
            log / n,
            rewrite / n,
            ms(log_took),
            ms(rewrite_took)
        ),
    )])
}
