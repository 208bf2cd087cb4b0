//! The benchmarks: measurements printed as tables (never timed assertions).
//!
//! - `bench all BIN_DIR`: everything below, then one report table (`make bench`).
//! - `bench functions BIN_DIR`: each Lambda function binary (release build in BIN_DIR) started
//!   against a local Runtime API: process start to first poll, idle memory, size.
//! - `bench search [ROWS]`: loads ROWS (default 1,000,000) realistic conversations with COPY
//!   into the database `llm_stream_bench` (kept between runs), then times a fixed query set
//!   through the service and as raw SQL, each query many times.
//! - `bench history [ROWS]`: first page, last page by offset and by cursor, one by id, on the
//!   same database.
//! - `bench scale [ROWS]`: the reads at ROWS turns (default 1,000,000) shaped like real chat,
//!   beside the same reads at 1,000,000 (`make bench-scale ROWS=10000000`; not in `bench all`).
//! - `bench stream`: time to first byte and per-chunk delay through the service vs calling the
//!   same local provider server directly, at 1 and 50 concurrent streams.
//! - `bench resume`: the time from a chunk leaving the provider to a re-attached reader (same
//!   process, another one), and the bytes written per checkpoint (the log vs a rewrite).
//! - `bench faults BIN_DIR`: the local server's memory with stalled clients, and how long a
//!   read takes to answer 503 once the database goes silent.
//! - `bench load SERVER_BIN [SECONDS]`: 200 concurrent streams plus history and search traffic
//!   against the local server process for SECONDS (default 60); fails on any error or lost row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults_bench;
mod functions_bench;
mod history_bench;
mod load;
mod responses_bench;
mod resume_bench;
mod routing_bench;
mod runtimes;
mod scale_bench;
mod search_bench;
mod side_by_side;
mod spend_bench;
mod stats;
mod stream_bench;
mod tools_ab;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use stats::{ms, table};

const ROWS: usize = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows = |i: usize| -> anyhow::Result<usize> {
        Ok(args.get(i).map(|r| r.parse()).transpose()?.unwrap_or(ROWS))
    };
    let bin_dir = || -> anyhow::Result<PathBuf> {
        args.get(1)
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("usage: bench all|functions BIN_DIR"))
    };
    match args.first().map(String::as_str) {
        Some("all") => all(&bin_dir()?).await,
        Some("functions") => functions_bench::run(&bin_dir()?).await.map(drop),
        Some("search") => search_bench::run(rows(1)?).await.map(drop),
        Some("history") => history_bench::run(rows(1)?).await.map(drop),
        Some("scale") => scale_bench::run(rows(1)?).await,
        Some("stream") => stream_bench::run().await.map(drop),
        Some("spend") => spend_bench::standalone().await.map(drop),
        Some("responses") => responses_bench::standalone().await.map(drop),
        Some("faults") => faults_bench::run(&bin_dir()?).await.map(drop),
        Some("resume") => resume_bench::run().await.map(drop),
        Some("load") => {
            let server = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("usage: bench load SERVER_BIN [SECONDS]"))?;
            let seconds = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
            load::run(server, seconds).await
        }
        _ => anyhow::bail!(
            "usage: bench all BIN_DIR | functions BIN_DIR | search [ROWS] | history [ROWS] | scale [ROWS] | \
             stream | spend | responses | resume | faults BIN_DIR | load SERVER_BIN [SECONDS]"
        ),
    }
}

/// Every benchmark, then the one report table.
async fn all(bin_dir: &std::path::Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let functions = functions_bench::run(bin_dir).await?;
    let overheads = stream_bench::run().await?;
    let (added50, added99) = overheads.added;
    let history = history_bench::run(ROWS).await?;
    let search = search_bench::run(ROWS).await?;
    let faults = faults_bench::run(bin_dir).await?;
    let resume = resume_bench::run().await?;

    let p = |a: Duration, b: Duration| format!("p50 {} ms · p99 {} ms", ms(a), ms(b));
    let mut lines: Vec<Vec<String>> = Vec::new();
    for f in &functions {
        for (mode, start) in [("Data API", &f.data_api), ("pool", &f.pool)] {
            lines.push(vec![
                format!(
                    "`{}` ({mode}): cold start (process start → first Runtime API poll)",
                    f.name
                ),
                p(start.p50, start.p99),
            ]);
        }
        lines.push(vec![
            format!("`{}`: idle memory (Data API · pool) · binary size", f.name),
            format!(
                "{} · {} MiB RSS · {} MiB",
                functions_bench::mib(f.data_api.idle_rss_kib * 1024),
                functions_bench::mib(f.pool.idle_rss_kib * 1024),
                functions_bench::mib(f.size_bytes)
            ),
        ]);
    }
    let stream = functions.iter().find(|f| f.name == "stream");
    let baseline = functions
        .iter()
        .find(|f| f.name == functions_bench::STREAM_BASELINE);
    if let (Some(with), Some(without)) = (stream, baseline) {
        lines.push(vec![
            "`stream` with the Bedrock SDK vs built without it (same run): size · cold start \
             p50 (Data API) · cold start p50 with `LLM_PROVIDER=bedrock`"
                .into(),
            format!(
                "{} vs {} MiB · {} vs {} ms · {} ms",
                functions_bench::mib(with.size_bytes),
                functions_bench::mib(without.size_bytes),
                ms(with.data_api.p50),
                ms(without.data_api.p50),
                with.bedrock.as_ref().map_or("-".into(), |b| ms(b.p50)),
            ),
        ]);
    }
    lines.push(vec![
        "`/stream`: time to first byte added by the service (1 stream; service minus the \
         provider called directly, at each percentile)"
            .into(),
        p(added50, added99),
    ]);
    lines.push(vec![
        "`/stream`: time to first byte added by continuing a thread of 50 turns over a first \
         turn (1 stream)"
            .into(),
        p(overheads.thread_added.0, overheads.thread_added.1),
    ]);
    lines.push(vec![
        "`/v1/chat/completions`: time to first content added over the upstream directly (1 \
         stream) · its p50 over the direct p50 at 20 streams, the upstream answering at once \
         (in brackets: a bare proxy's, the floor of forwarding on this machine) · the same with \
         the upstream's first token after 20 ms"
            .into(),
        format!(
            "{} · {:.2}× ({:.2}×) · {:.2}×",
            p(overheads.chat.added.0, overheads.chat.added.1),
            overheads.chat.ratio_20,
            overheads.chat.proxy_ratio_20,
            overheads.chat.ratio_20_model
        ),
    ]);
    let (stream_cpu, chat_cpu, proxy_cpu) = overheads.chat.cpu_added;
    lines.push(vec![
        "CPU time per stream added to the direct path (20 chunks, 20 streams at a time; this \
         process only, PostgreSQL's not counted): `/stream` · `/v1/chat/completions` · a bare \
         proxy"
            .into(),
        format!(
            "{} · {} · {} ms",
            ms(stream_cpu),
            ms(chat_cpu),
            ms(proxy_cpu)
        ),
    ]);
    let (tools_time, tools_cpu) = overheads.chat.tools_ratio_20;
    lines.push(vec![
        "`/v1/chat/completions`, three tools offered over none (1.00×: the same; the goal is \
         within 5%): what it adds to the time to first content p50 at 20 streams, the upstream \
         answering at once (over the upstream called with the same body; in brackets the bare \
         proxy's, what the larger body costs any hop) · the CPU time per stream of the service's \
         own threads at 20 streams · at 1 · `/v1` p50 over `/stream` p50 at 20 streams (the goal: \
         at most 1.00×)"
            .into(),
        format!(
            "{tools_time:.2}× ({:.2}×) · {tools_cpu:.3}× · {:.3}× · {:.2}×",
            overheads.chat.proxy_tools_ratio_20,
            overheads.chat.tools_cpu_ratio_1,
            overheads.chat.chat_over_stream_20
        ),
    ]);
    let ab = &overheads.tools_ab;
    lines.push(vec![
        "`/v1/chat/completions`, three tools offered over none, in an A/B (each batch after the \
         upstream called directly with the same body; a body padded to the same size without \
         tools as the control): the time to first content p50 (in brackets what the service adds \
         to it) at one stream · at 20 · the padded body's at one · at 20 (the goal: tools within \
         5%)"
        .into(),
        format!(
            "{:.3}× ({:.2}×) · {:.3}× ({:.2}×) · {:.3}× ({:.2}×) · {:.3}× ({:.2}×)",
            ab.one.tools_p50,
            ab.one.tools_added,
            ab.twenty.tools_p50,
            ab.twenty.tools_added,
            ab.one.padded_p50,
            ab.one.padded_added,
            ab.twenty.padded_p50,
            ab.twenty.padded_added
        ),
    ]);
    lines.push(vec![
        "Routing (`LLM_CONFIG`), `/stream` time to first byte p50, one stream: a route of one \
         target over the single provider (the goal: nothing measurable) · a route whose first \
         target refuses connections over a healthy route"
            .into(),
        format!(
            "{} · {} ms",
            ms(overheads.routing.one_target_added),
            ms(overheads.routing.down_first_added)
        ),
    ]);
    let pair = |(n, a, b): (usize, Duration, Duration)| format!("{n}: {} vs {} ms", ms(a), ms(b));
    lines.push(vec![
        "`/v1/responses` beside `/v1/chat/completions`, streamed, one upstream answering at \
         once: time to the first text p50 · CPU time per stream, at 1 stream and at 20"
            .into(),
        overheads
            .responses
            .iter()
            .map(|&(n, c, r, cc, rc)| format!("{} · {}", pair((n, r, c)), pair((n, rc, cc))))
            .collect::<Vec<_>>()
            .join(" — "),
    ]);
    lines.push(vec![
        "Spend control, `/stream` with a key with every limit set (none reached) over a key \
         without, keys required on both, interleaved: time to first byte p50 added · CPU time \
         per stream added, at 1 stream and at 20"
            .into(),
        overheads
            .spend
            .added
            .iter()
            .map(|(n, t, c)| format!("{n}: {} ms · {} ms", ms(*t), ms(*c)))
            .collect::<Vec<_>>()
            .join(" — "),
    ]);
    lines.push(vec![
        "Spend control: the reservation statement (`llm_reserve`, pool), one at a time and 20 \
         at a time on one key (the goal: p99 ≤ 1 ms)"
            .into(),
        overheads
            .spend
            .reserve
            .iter()
            .map(|(n, a, b)| format!("{n}: {}", p(*a, *b)))
            .collect::<Vec<_>>()
            .join(" — "),
    ]);
    for (label, a, b) in history.iter().chain(search.iter()) {
        lines.push(vec![
            format!("{label} ({} rows)", thousands(ROWS)),
            p(*a, *b),
        ]);
    }
    for (label, value) in faults.into_iter().chain(resume) {
        lines.push(vec![label, value]);
    }
    println!("\n## Benchmark report\n\n{}\n", machine());
    table(&["measure", "result"], &lines);
    println!("\n(all benchmarks ran in {:.0?})", started.elapsed());
    Ok(())
}

/// `1000000` as `1,000,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Date and machine, for the report's heading.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let date = time::OffsetDateTime::now_utc().date();
    format!(
        "{date}, {cpu}, {cores} cores, {mem_gib:.0} GiB, {} (x86_64 release builds, PostgreSQL on \
         the same machine)",
        read("/proc/sys/kernel/osrelease").trim()
    )
}
