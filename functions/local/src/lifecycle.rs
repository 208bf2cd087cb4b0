//! `local purge`, `local export OWNER` and `local owner erase OWNER`: retention, an owner's data
//! out and an owner's data gone, for operators.

use std::io::Write;

use anyhow::{Context, bail};
use common::Settings;
use common::store::lifecycle::{erase, purge_older_than};
use common::store::{Backend, Cursor, ExportQuery};

const PURGE_USAGE: &str = "usage: local purge [--older-than DAYS] [--dry-run]
  removes whole threads whose latest turn is older than DAYS days (default RETENTION_DAYS)";

/// `purge [--older-than DAYS] [--dry-run]`.
pub async fn purge(
    store: &dyn Backend,
    settings: &Settings,
    args: &[String],
) -> anyhow::Result<()> {
    let (mut days, mut dry) = (settings.db.retention_days, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dry-run" => dry = true,
            "--older-than" => {
                let raw = args.next().context(PURGE_USAGE)?;
                days = Some(
                    raw.trim()
                        .parse()
                        .ok()
                        .filter(|d| *d >= 1)
                        .with_context(|| {
                            format!(
                                "--older-than takes a whole number of days, at least 1, not {raw:?}"
                            )
                        })?,
                );
            }
            other => bail!("unknown argument {other:?}\n{PURGE_USAGE}"),
        }
    }
    let Some(days) = days else {
        bail!("nothing to purge by: pass --older-than DAYS or set RETENTION_DAYS\n{PURGE_USAGE}");
    };
    let done = purge_older_than(store, settings, days, dry).await?;
    if dry {
        println!(
            "would purge {} threads ({} turns) whose latest turn is older than {days} days; \
             nothing was changed",
            done.threads, done.turns
        );
    } else {
        println!(
            "purged {} threads ({} turns) whose latest turn was older than {days} days, in {} \
             batches; turn logs dropped: {}",
            done.threads, done.turns, done.batches, done.turn_logs
        );
    }
    Ok(())
}

/// `export OWNER`: every turn of OWNER as JSON Lines on stdout, oldest first.
pub async fn export(store: &dyn Backend, args: &[String]) -> anyhow::Result<()> {
    let [owner] = args else {
        bail!("usage: local export OWNER > turns.jsonl");
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut query = ExportQuery {
        limit: 200,
        ..ExportQuery::default()
    };
    let mut turns = 0u64;
    loop {
        let page = store.export_page(owner, &query).await?;
        for c in &page {
            serde_json::to_writer(&mut out, c)?;
            out.write_all(b"\n")?;
        }
        turns += page.len() as u64;
        match page.last() {
            Some(last) if page.len() as i64 >= query.limit => {
                query.after = Some(Cursor::after(last))
            }
            _ => break,
        }
    }
    out.flush()?;
    eprintln!("exported {turns} turns of {owner:?}");
    Ok(())
}

/// `owner erase OWNER`.
pub async fn owner(store: &dyn Backend, args: &[String]) -> anyhow::Result<()> {
    let ["erase", owner] = args.iter().map(String::as_str).collect::<Vec<_>>()[..] else {
        bail!("usage: local owner erase OWNER");
    };
    if owner.trim().is_empty() {
        bail!("usage: local owner erase OWNER (an owner's name, not blank)");
    }
    let done = erase(store, owner).await?;
    println!(
        "erased {owner:?}: {} threads, {} turns, {} keys, {} usage rows",
        done.threads, done.turns, done.keys, done.usage_rows
    );
    Ok(())
}
