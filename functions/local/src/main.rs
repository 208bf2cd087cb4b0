//! `local`: the whole service as one HTTP server, and the operator commands.
//!
//! - `local` or `local serve`: migrate, then serve every route on `HOST:PORT` (default
//!   127.0.0.1:3000) until SIGTERM or Ctrl-C, which drain the running answers;
//! - `local migrate`: apply pending migrations and exit;
//! - `local replay [FILE]`: put `unsaved_record` log lines (from FILE or stdin) into the table;
//! - `local key create OWNER [NAME] [LIMITS]`: make an API key for OWNER and print it (once);
//! - `local key limits ID (LIMITS | --clear)`: set or remove a key's limits;
//! - `local key list`: every key (id, owner, name, created, revoked, limits, spent this
//!   period), never the key itself;
//! - `local key revoke ID`: revoke a key;
//! - `local purge [--older-than DAYS] [--dry-run]`: remove threads older than the retention;
//! - `local export OWNER`: OWNER's turns as JSON Lines on stdout;
//! - `local owner erase OWNER`: remove everything of OWNER;
//! - `local openapi`: print the OpenAPI document;
//! - `local help`: this list.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context;
use common::store::Backend;
use common::{Conversation, Settings};

mod keys;
mod lifecycle;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with the whole cause chain, no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: local [COMMAND]

  serve                    migrate, then serve every route on HOST:PORT (default 127.0.0.1:3000)
  migrate                  apply pending migrations and exit
  replay [FILE]            put `unsaved_record` log lines (FILE or stdin) back into the table
  key create OWNER [NAME] [LIMITS]
                           make an API key for OWNER; it is printed once
  key limits ID (LIMITS | --clear)
                           set (or remove) a key's limits
  key list                 list the keys, their limits and spend (never the keys themselves)
  key revoke ID            revoke a key
  LIMITS: --rpm N --tpm N --concurrency N --budget-usd X --budget-tokens N
          --period day|month|total
  purge [--older-than DAYS] [--dry-run]
                           remove whole threads whose latest turn is older than DAYS days
                           (default RETENTION_DAYS), in batches; print what went
  export OWNER             OWNER's turns as JSON Lines on stdout, oldest first
  owner erase OWNER        remove every turn, thread, key and usage row of OWNER
  openapi                  print the OpenAPI document
  help                     this text

Settings come from the environment: DATABASE_URL (or DB_CLUSTER_ARN and DB_SECRET_ARN),
PORT, HOST, AUTH, LLM_PROVIDER, ... (README, Settings).
";

async fn run() -> anyhow::Result<()> {
    common::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Neither needs settings.
    match args.first().map(String::as_str) {
        Some("openapi") => {
            print!("{}", local::openapi::document());
            return Ok(());
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            return Ok(());
        }
        None | Some("serve" | "migrate" | "replay" | "key" | "purge" | "export" | "owner") => {}
        Some(other) => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
    }
    let settings = Settings::load().await?;
    let store = common::store::from_settings(&settings)?;
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(&settings, store).await,
        Some("migrate") => {
            let n = store.migrate(&settings.db.search_config).await?;
            println!("migrations applied: {n}");
            let logins =
                common::secrets::ensure_logins(&common::settings::ProcessEnv, store.as_ref())
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
            if logins > 0 {
                println!("logins ready: {logins}");
            }
            Ok(())
        }
        Some("replay") => {
            store.migrate(&settings.db.search_config).await?;
            replay(store.as_ref(), args.get(1)).await
        }
        Some("key") => {
            store.migrate(&settings.db.search_config).await?;
            keys::key(store.as_ref(), &args[1..]).await
        }
        Some("purge") => {
            store.migrate(&settings.db.search_config).await?;
            lifecycle::purge(store.as_ref(), &settings, &args[1..]).await
        }
        Some("export") => {
            store.migrate(&settings.db.search_config).await?;
            lifecycle::export(store.as_ref(), &args[1..]).await
        }
        Some("owner") => {
            store.migrate(&settings.db.search_config).await?;
            lifecycle::owner(store.as_ref(), &args[1..]).await
        }
        Some(other) => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

async fn serve(settings: &Settings, store: Arc<dyn Backend>) -> anyhow::Result<()> {
    let applied = store
        .migrate(&settings.db.search_config)
        .await
        .context("applying migrations (is PostgreSQL reachable at DATABASE_URL?)")?;
    if let Some(days) = settings.db.retention_days {
        tokio::spawn(purge_daily(settings.clone(), store.clone(), days));
    }
    let app = local::App::new(settings, store)?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().context("PORT must be a port number")?,
        Err(_) => 3000,
    };
    let host: std::net::IpAddr = match std::env::var("HOST") {
        Ok(h) if !h.trim().is_empty() => h
            .trim()
            .parse()
            .context("HOST must be an IP address such as 127.0.0.1 or 0.0.0.0")?,
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let addr = std::net::SocketAddr::new(host, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    common::announce(settings);
    let hint = match settings.auth.mode {
        common::auth::AuthMode::Off => format!(
            "serving: try curl -N -X POST http://localhost:{port}/stream -d '{{\"prompt\":\"hi\"}}'"
        ),
        common::auth::AuthMode::Required => format!(
            "serving with AUTH=required: make a key with `make key OWNER=me`, then try curl -N \
             -X POST http://localhost:{port}/stream -H 'Authorization: Bearer lsk_...' \
             -d '{{\"prompt\":\"hi\"}}'"
        ),
    };
    tracing::info!(%addr, migrations_applied = applied, provider = ?settings.provider.kind,
        auth = ?settings.auth.mode, "{hint}");

    // On SIGTERM or Ctrl-C: stop accepting connections, let running answers finish within
    // SHUTDOWN_GRACE_MS, save what still runs (error `shutdown`), exit 0.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stopped = stop_rx.clone();
    let server = tokio::spawn(
        common::http::serve(listener, app.router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    let signal = shutdown_signal().await;
    tracing::info!(
        signal,
        running = app.stream.turns.count(),
        "shutting down: no new connections"
    );
    let _ = stop_tx.send(true);
    let stopped = app.stream.drain().await;
    // The answers are saved; their connections end with them. Connections still open (a client
    // that stopped reading) are not waited for long.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), server).await;
    tracing::info!(stopped, "shut down");
    drop(stop_rx);
    Ok(())
}

/// `RETENTION_DAYS` on the local server: a purge at start and then once a day, as the schedule
/// does in AWS.
async fn purge_daily(settings: Settings, store: Arc<dyn Backend>, days: u32) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
    loop {
        every.tick().await;
        // It logs what it removed.
        if let Err(e) =
            common::store::lifecycle::purge_older_than(store.as_ref(), &settings, days, false).await
        {
            tracing::warn!(error = %common::error::error_chain(&e),
                "purge failed; it runs again in a day");
        }
    }
}

/// Waits for SIGTERM (what container runtimes, systemd and ECS send) or Ctrl-C; names it.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Reads log lines; each `unsaved_record` line's record is written with the same idempotent
/// finish the stream uses, so replaying a file twice is harmless.
async fn replay(store: &dyn Backend, file: Option<&String>) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = match file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {path}"))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let (mut replayed, mut skipped) = (0usize, 0usize);
    for line in reader.lines() {
        let line = line?;
        let Some(record) = unsaved_record(&line) else {
            continue;
        };
        match record {
            Ok(c) => {
                store
                    .finish(&c)
                    .await
                    .with_context(|| format!("saving {}", c.id))?;
                replayed += 1;
            }
            Err(e) => {
                eprintln!("skipping an unreadable record: {e}");
                skipped += 1;
            }
        }
    }
    println!("replayed: {replayed}, unreadable: {skipped}");
    Ok(())
}

/// The conversation in an `unsaved_record` log line (which may carry a prefix, as CloudWatch
/// exports do); `None` for other lines.
fn unsaved_record(line: &str) -> Option<Result<Conversation, serde_json::Error>> {
    let start = line.find('{')?;
    let value: serde_json::Value = serde_json::from_str(&line[start..]).ok()?;
    if value.get("event").and_then(|v| v.as_str()) != Some("unsaved_record") {
        return None;
    }
    let record = value.get("record")?.as_str()?;
    Some(serde_json::from_str(record))
}
