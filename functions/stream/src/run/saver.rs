//! Writing the record: the row at the start and checkpoints beside the provider call (the
//! database never delays a chunk), and the final record with retries, or the log when every try
//! fails.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use common::Conversation;
use common::error::error_chain;
use common::guard::Redactor;
use tokio::sync::watch;
use tokio::time::sleep_until;

use crate::StreamStore;

/// Writes the row at the start, then the text so far at most once per `interval` while it
/// changes. Ends when the text channel closes.
pub(super) async fn saver(
    store: Arc<dyn StreamStore>,
    mut conversation: Conversation,
    mut text: watch::Receiver<String>,
    interval: Duration,
    redactor: Option<Arc<Redactor>>,
) {
    let clean = |s: &str| match &redactor {
        Some(r) => r.redact(s).0,
        None => s.to_owned(),
    };
    conversation.prompt = clean(&conversation.prompt);
    if let Err(e) = store.create(&conversation).await {
        tracing::warn!(id = %conversation.id, error = %error_chain(&e),
            "could not write the conversation's first row; the end will be retried");
        return;
    }
    let mut last = tokio::time::Instant::now();
    loop {
        if text.changed().await.is_err() {
            return;
        }
        let due = sleep_until(last + interval);
        tokio::pin!(due);
        loop {
            tokio::select! {
                () = &mut due => break,
                changed = text.changed() => if changed.is_err() { return },
            }
        }
        let snapshot = clean(&text.borrow_and_update());
        if let Err(e) = store.checkpoint(conversation.id, &snapshot).await {
            tracing::warn!(id = %conversation.id, error = %error_chain(&e), "checkpoint failed");
        }
        last = tokio::time::Instant::now();
    }
}

/// Writes the final record, retrying with backoff. When every try fails, the whole record goes
/// to the log as one `unsaved_record` line that `local replay` puts back into the table.
pub(super) async fn save(store: &dyn StreamStore, conversation: &Conversation) -> bool {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(4)
        .with_jitter();
    let result = (|| store.finish(conversation))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|e, delay| {
            tracing::warn!(id = %conversation.id, error = %error_chain(e), ?delay,
                "saving the conversation failed; retrying");
        })
        .await;
    match result {
        Ok(()) => true,
        Err(e) => {
            let record = serde_json::to_string(conversation).unwrap_or_default();
            tracing::error!(
                event = "unsaved_record",
                id = %conversation.id,
                error = %error_chain(&e),
                record = %record,
                "conversation could not be saved; replay this line with `make replay`"
            );
            false
        }
    }
}
