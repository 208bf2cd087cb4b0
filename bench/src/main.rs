//! `bench search` and `bench stream`: measurements printed as tables (never timed assertions).
//!
//! - `bench search [ROWS]`: loads ROWS (default 1,000,000) realistic conversations with COPY
//!   into the database `llm_stream_bench` (kept between runs), then times a fixed query set
//!   through the service and as raw SQL, each query many times.
//! - `bench stream`: time to first byte and per-chunk delay through the service vs calling the
//!   same local provider server directly, at 1 and 50 concurrent streams.
//! - `bench load SERVER_BIN [SECONDS]`: 200 concurrent streams plus history and search traffic
//!   against the local server process for SECONDS (default 60); fails on any error or lost row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod load;
mod search_bench;
mod stats;
mod stream_bench;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("search") => {
            let rows = args
                .get(1)
                .map(|r| r.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            search_bench::run(rows).await
        }
        Some("stream") => stream_bench::run().await,
        Some("load") => {
            let server = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("usage: bench load SERVER_BIN [SECONDS]"))?;
            let seconds = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
            load::run(server, seconds).await
        }
        _ => anyhow::bail!(
            "usage: bench search [ROWS] | bench stream | bench load SERVER_BIN [SECONDS]"
        ),
    }
}
