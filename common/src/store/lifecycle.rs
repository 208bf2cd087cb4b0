//! The data's lifecycle: retention (purging whole threads older than a cutoff, and the turn
//! log's leftovers) and erasing an owner, in bounded batches through migration V14's functions,
//! one implementation for both backends; and the loops that run them to the end.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::keys::{TextRow, TextRows};
use crate::error::StoreError;

/// Turns removed per statement: each batch is one short transaction.
pub const BATCH_TURNS: i64 = 1000;

/// One batch of removals.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Removes (or with `dry`, counts) whole threads of `owner` (everyone's: `None`) whose latest
    /// turn started before `before` (`None`: any), at most `max` turns: `(threads, turns)`. A
    /// dry run counts every such thread at once.
    async fn purge_batch(
        &self,
        before: Option<OffsetDateTime>,
        owner: Option<&str>,
        max: i64,
        dry: bool,
    ) -> Result<(i64, i64), StoreError>;

    /// Drops the turn log of at most `max` turns that have ended, or that were abandoned (started
    /// more than `stale_s` seconds ago, still `streaming`), folding an abandoned turn's log into
    /// its row first; returns how many turns' logs went.
    async fn purge_turn_logs(&self, stale_s: i64, max: i64) -> Result<i64, StoreError>;

    /// After `owner`'s threads are purged: removes up to `max` turns of it still left
    /// (`More(n)`), else its keys, usage rows and reservations, and records the erasure (the
    /// owner's hash and the counts given).
    async fn erase_rest(
        &self,
        owner: &str,
        max: i64,
        threads: i64,
        turns: i64,
    ) -> Result<EraseStep, StoreError>;
}

fn number(row: Option<&TextRow>, i: usize, column: &'static str) -> Result<i64, StoreError> {
    row.and_then(|r| r.get(i))
        .and_then(|c| c.as_deref())
        .and_then(|s| s.parse().ok())
        .ok_or(StoreError::Decode { column })
}

#[async_trait]
impl<T: TextRows> Lifecycle for T {
    async fn purge_batch(
        &self,
        before: Option<OffsetDateTime>,
        owner: Option<&str>,
        max: i64,
        dry: bool,
    ) -> Result<(i64, i64), StoreError> {
        let before = match before {
            Some(t) => t
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|_| StoreError::Decode { column: "before" })?,
            None => "infinity".to_owned(),
        };
        let rows = self
            .text_rows(
                "SELECT threads_removed::text, turns_removed::text FROM purge_batch(\
                 $1::text::timestamptz, $2::text, $3::text::int4, $4::text::boolean)",
                &[
                    Some(before),
                    owner.map(str::to_owned),
                    Some(max.to_string()),
                    Some(dry.to_string()),
                ],
            )
            .await?;
        Ok((
            number(rows.first(), 0, "threads_removed")?,
            number(rows.first(), 1, "turns_removed")?,
        ))
    }

    async fn purge_turn_logs(&self, stale_s: i64, max: i64) -> Result<i64, StoreError> {
        let rows = self
            .text_rows(
                "SELECT purge_turn_logs($1::text::int8, $2::text::int4)::text",
                &[Some(stale_s.to_string()), Some(max.to_string())],
            )
            .await?;
        number(rows.first(), 0, "purge_turn_logs")
    }

    async fn erase_rest(
        &self,
        owner: &str,
        max: i64,
        threads: i64,
        turns: i64,
    ) -> Result<EraseStep, StoreError> {
        let rows = self
            .text_rows(
                "SELECT erase_owner($1::text, $2::text::int4, $3::text::int8, $4::text::int8)",
                &[
                    Some(owner.to_owned()),
                    Some(max.to_string()),
                    Some(threads.to_string()),
                    Some(turns.to_string()),
                ],
            )
            .await?;
        let outcome = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .unwrap_or_default();
        let words: Vec<&str> = outcome.split(' ').collect();
        let n = |i: usize| words.get(i).and_then(|w| w.parse::<i64>().ok());
        match (words.first(), n(1), n(2)) {
            (Some(&"more"), Some(turns), None) => Ok(EraseStep::More(turns)),
            (Some(&"done"), Some(keys), Some(usage_rows)) => {
                Ok(EraseStep::Done { keys, usage_rows })
            }
            _ => Err(StoreError::Decode {
                column: "erase_owner",
            }),
        }
    }
}

/// One step of finishing an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseStep {
    /// This many turns left outside any thread were removed; there may be more.
    More(i64),
    /// The owner's keys and usage rows are gone; the erasure is recorded.
    Done { keys: i64, usage_rows: i64 },
}

/// What a purge removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub threads: i64,
    pub turns: i64,
    /// Turns whose leftover log pieces were dropped (none in a dry run).
    pub turn_logs: i64,
    /// Statements run to remove threads and turns.
    pub batches: i64,
}

/// Purges every whole thread whose latest turn started before `before`, batch by batch, then
/// the turn log's leftovers (`stale`: longer than any turn may run). With `dry`, only counts.
pub async fn purge(
    store: &dyn Lifecycle,
    before: OffsetDateTime,
    stale: std::time::Duration,
    dry: bool,
) -> Result<Purged, StoreError> {
    let mut done = Purged::default();
    if dry {
        let (threads, turns) = store
            .purge_batch(Some(before), None, BATCH_TURNS, true)
            .await?;
        return Ok(Purged {
            threads,
            turns,
            ..done
        });
    }
    loop {
        let (threads, turns) = store
            .purge_batch(Some(before), None, BATCH_TURNS, false)
            .await?;
        done.batches += 1;
        done.threads += threads;
        done.turns += turns;
        if threads == 0 && turns == 0 {
            break;
        }
    }
    let stale_s = i64::try_from(stale.as_secs()).unwrap_or(i64::MAX);
    loop {
        let n = store.purge_turn_logs(stale_s, BATCH_TURNS).await?;
        done.turn_logs += n;
        if n < BATCH_TURNS {
            break;
        }
    }
    Ok(done)
}

/// What erasing an owner removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    pub threads: i64,
    pub turns: i64,
    pub keys: i64,
    pub usage_rows: i64,
}

/// Removes every thread, turn (and its log), key (with its counters and reservations) and usage
/// row of `owner`, in batches, and records the erasure by the owner's hash.
pub async fn erase(store: &dyn Lifecycle, owner: &str) -> Result<Erased, StoreError> {
    let mut done = Erased::default();
    loop {
        let (threads, turns) = store
            .purge_batch(None, Some(owner), BATCH_TURNS, false)
            .await?;
        done.threads += threads;
        done.turns += turns;
        if threads == 0 && turns == 0 {
            break;
        }
    }
    loop {
        match store
            .erase_rest(owner, BATCH_TURNS, done.threads, done.turns)
            .await?
        {
            EraseStep::More(turns) => done.turns += turns,
            EraseStep::Done { keys, usage_rows } => {
                return Ok(Erased {
                    keys,
                    usage_rows,
                    ..done
                });
            }
        }
    }
}

/// Purges what is older than `days` days (or, dry, counts it), with the settings' bound on how
/// long a turn may run: what `local purge`, the local server's daily run and the scheduled
/// invocation in AWS all do.
pub async fn purge_older_than(
    store: &dyn Lifecycle,
    settings: &crate::Settings,
    days: u32,
    dry: bool,
) -> Result<Purged, StoreError> {
    let before = OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
    let done = purge(store, before, super::stale_after(settings), dry).await?;
    if !dry {
        tracing::info!(
            days,
            threads = done.threads,
            turns = done.turns,
            turn_logs = done.turn_logs,
            batches = done.batches,
            "purge done"
        );
    }
    Ok(done)
}
