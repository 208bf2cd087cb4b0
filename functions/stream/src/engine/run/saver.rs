//! Writing the record: the row at the start and the log at each checkpoint, beside the provider
//! call (the database never delays a chunk), and the final record with retries within a bounded
//! budget, or the log line when every try fails.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use common::Conversation;
use common::error::error_chain;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::StreamStore;
use crate::engine::turn::{Halt, LiveTurn};

/// How long the turn's first row may wait for the first text (see [`saver`]).
const FIRST_ROW_WAIT: Duration = Duration::from_millis(100);

/// Writes the turn's row as soon as its first text is on its way to the client (or the turn has
/// ended, or after [`FIRST_ROW_WAIT`]): the insert stays off the path to the first token, which
/// it would otherwise share the machine with. Then every `interval` the stored text since the
/// last checkpoint (or, with nothing new, only looks for a cancel request). A checkpoint writes
/// the row too for as long as it may be missing, so the row exists as soon as the database
/// answers. A cancel request found in the database halts the turn. Ends when `done` turns true.
pub(super) async fn saver(
    store: Arc<dyn StreamStore>,
    start: Conversation,
    turn: Arc<LiveTurn>,
    interval: Duration,
    mut done: watch::Receiver<bool>,
) {
    let first_text = tokio::select! {
        () = turn.first_append() => true,
        _ = done.wait_for(|d| *d) => false,
        () = tokio::time::sleep(FIRST_ROW_WAIT) => false,
    };
    if first_text {
        // The reader that was waiting for it goes first.
        tokio::task::yield_now().await;
    }
    // Every database call here gives way as soon as the turn has ended: its final save writes
    // everything a checkpoint would, and must not wait behind one (a slow database, shutdown).
    let created = tokio::select! {
        created = store.create(&start) => created,
        _ = done.wait_for(|d| *d) => return,
    };
    let mut row_written = match created {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(id = %start.id, error = %error_chain(&e),
                "could not write the turn's first row; the next checkpoint writes it");
            false
        }
    };
    let mut written = 0usize;
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = done.wait_for(|d| *d) => return,
        }
        next = Instant::now() + interval;
        let (piece, total) = turn.stored_since(written);
        let at = i64::try_from(written).unwrap_or(i64::MAX);
        let checkpoint = store.checkpoint(
            (!row_written).then_some(&start),
            start.id,
            (!piece.is_empty()).then_some((at, piece.as_str())),
        );
        let row_was_written = row_written;
        let checkpointed = tokio::select! {
            checkpointed = checkpoint => checkpointed,
            _ = done.wait_for(|d| *d) => return,
        };
        match checkpointed {
            Ok(seen) => {
                row_written = true;
                written = total;
                if seen.cancel_requested {
                    tracing::info!(id = %start.id, "cancel requested; stopping the generation");
                    turn.halt(Halt::Cancel);
                } else if row_was_written && !seen.found {
                    tracing::info!(id = %start.id, "the turn's thread was deleted; stopping");
                    turn.halt(Halt::ThreadDeleted);
                }
            }
            Err(e) => {
                tracing::warn!(id = %start.id, error = %error_chain(&e), "checkpoint failed");
            }
        }
    }
}

/// Writes the final record, retrying with backoff until `save_by`, or until the shutdown's
/// deadline when the process is stopping (`shutdown`: it must not exit mid-retry). When every
/// try fails, the whole record goes to the log as one `unsaved_record` line that `local replay`
/// puts back into the table.
pub(super) async fn save(
    store: &dyn StreamStore,
    conversation: &Conversation,
    save_by: Instant,
    mut shutdown: watch::Receiver<Option<Instant>>,
) -> bool {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(usize::MAX)
        .with_jitter();
    let attempts = (|| store.finish(conversation))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|e, delay| {
            tracing::warn!(id = %conversation.id, error = %error_chain(e), ?delay,
                "saving the conversation failed; retrying");
        });
    let out_of_time = async {
        loop {
            let by = shutdown
                .borrow_and_update()
                .map_or(save_by, |s| s.min(save_by));
            tokio::select! {
                () = tokio::time::sleep_until(by) => return,
                changed = shutdown.changed() => if changed.is_err() {
                    tokio::time::sleep_until(save_by).await;
                    return;
                },
            }
        }
    };
    let result = tokio::select! {
        result = attempts => result.map_err(|e| error_chain(&e)),
        () = out_of_time => Err(
            "the save budget (DB_SAVE_BUDGET_MS) or the shutdown's ran out".to_owned()),
    };
    match result {
        Ok(()) => true,
        Err(error) => {
            let record = serde_json::to_string(conversation).unwrap_or_default();
            tracing::error!(
                event = "unsaved_record",
                id = %conversation.id,
                error = %error,
                record = %record,
                "conversation could not be saved; replay this line with `make replay`"
            );
            false
        }
    }
}
