//! `local`: the whole service as one HTTP server, and the operator commands.
//!
//! - `local` or `local serve`: migrate, then serve every route on `PORT` (default 3000);
//! - `local migrate`: apply pending migrations and exit;
//! - `local replay [FILE]`: put `unsaved_record` log lines (from FILE or stdin) into the table;
//! - `local key create OWNER [NAME]`: make an API key for OWNER and print it (once);
//! - `local key revoke ID`: revoke a key;
//! - `local openapi`: print the OpenAPI document.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context;
use common::store::Backend;
use common::{Conversation, Settings};

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

async fn run() -> anyhow::Result<()> {
    common::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("openapi") {
        // Needs no settings: the document comes from the code alone.
        print!("{}", local::openapi::document());
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let store = common::store::from_settings(&settings)?;
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(&settings, store).await,
        Some("migrate") => {
            let n = store.migrate(&settings.db.search_config).await?;
            println!("migrations applied: {n}");
            Ok(())
        }
        Some("replay") => {
            store.migrate(&settings.db.search_config).await?;
            replay(store.as_ref(), args.get(1)).await
        }
        Some("key") => {
            store.migrate(&settings.db.search_config).await?;
            key(store.as_ref(), &args[1..]).await
        }
        Some(other) => {
            anyhow::bail!(
                "unknown command {other:?}; expected serve, migrate, replay, key or openapi"
            )
        }
    }
}

async fn serve(settings: &Settings, store: Arc<dyn Backend>) -> anyhow::Result<()> {
    let applied = store
        .migrate(&settings.db.search_config)
        .await
        .context("applying migrations (is PostgreSQL reachable at DATABASE_URL?)")?;
    let app = local::app(settings, store)?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().context("PORT must be a port number")?,
        Err(_) => 3000,
    };
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    if settings.auth.mode == common::auth::AuthMode::Off {
        tracing::warn!("AUTH=off: every request is served without a key, as owner `local`");
    }
    tracing::info!(%addr, migrations_applied = applied, provider = ?settings.provider.kind,
        "serving: try curl -N -X POST localhost:{port}/stream -d '{{\"prompt\":\"hi\"}}'");
    axum::serve(common::http::nodelay(listener), app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// `key create OWNER [NAME]` and `key revoke ID`.
async fn key(store: &dyn Backend, args: &[String]) -> anyhow::Result<()> {
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("create"), Some(owner)) => {
            let name = args.get(2).map_or("default", String::as_str);
            let key = common::auth::new_key().map_err(|_| anyhow::anyhow!("no randomness"))?;
            let id = uuid::Uuid::now_v7();
            store
                .add_key(id, owner, name, &common::auth::digest(&key))
                .await?;
            println!("id:    {id}\nowner: {owner}\nname:  {name}\nkey:   {key}");
            eprintln!("The key is shown once; only its SHA-256 digest is stored.");
            Ok(())
        }
        (Some("revoke"), Some(id)) => {
            let id = uuid::Uuid::parse_str(id).context("the key id is a UUID")?;
            if store.revoke_key(id).await? {
                println!("revoked {id}");
                Ok(())
            } else {
                anyhow::bail!("no active key with id {id}")
            }
        }
        _ => anyhow::bail!("usage: local key create OWNER [NAME] | local key revoke ID"),
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
