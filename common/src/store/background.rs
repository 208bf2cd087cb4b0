//! Background runs (migration V17): what a Lambda invocation leaves for the one it starts to
//! generate a background response. One implementation for both backends.

use async_trait::async_trait;
use uuid::Uuid;

use super::keys::TextRows;
use crate::error::StoreError;

/// A queued run, as taken.
#[derive(Debug, Clone, PartialEq)]
pub struct TakenRun {
    /// What the generation needs, as queued.
    pub job: serde_json::Value,
    /// How long it waited, in seconds.
    pub waited_secs: f64,
}

/// Queuing a turn's generation for another invocation, and taking it there.
#[async_trait]
pub trait BackgroundRuns: Send + Sync {
    /// Leaves `job` for turn `id` (whose row exists) under `token_sha256` (hex).
    async fn queue_run(
        &self,
        id: Uuid,
        token_sha256: &str,
        job: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Takes (and removes) turn `id`'s run when `token_sha256` is its token's: `None` when
    /// there is none (taken already, never queued, its turn deleted, or another token).
    async fn take_run(&self, id: Uuid, token_sha256: &str) -> Result<Option<TakenRun>, StoreError>;
}

const QUEUE: &str = "INSERT INTO background_runs (turn_id, token_sha256, job) \
    VALUES ($1::text::uuid, $2::text, $3::text::jsonb)";

const TAKE: &str = "DELETE FROM background_runs \
    WHERE turn_id = $1::text::uuid AND token_sha256 = $2::text \
    RETURNING job::text, extract(epoch FROM now() - created_at)::float8::text";

#[async_trait]
impl<T: TextRows> BackgroundRuns for T {
    async fn queue_run(
        &self,
        id: Uuid,
        token_sha256: &str,
        job: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.text_rows(
            QUEUE,
            &[
                Some(id.to_string()),
                Some(token_sha256.to_owned()),
                Some(job.to_string()),
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_run(&self, id: Uuid, token_sha256: &str) -> Result<Option<TakenRun>, StoreError> {
        let rows = self
            .text_rows(TAKE, &[Some(id.to_string()), Some(token_sha256.to_owned())])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let job = serde_json::from_str(&column(0)).map_err(|_| StoreError::Decode {
            column: "background_runs.job",
        })?;
        Ok(Some(TakenRun {
            job,
            waited_secs: column(1).parse().unwrap_or(0.0),
        }))
    }
}
