//! Long text within the Data API's 1 MiB response limit: text columns are read as a prefix
//! sized to the page, with their full length, and what a prefix missed is read in further
//! bounded calls.

use aws_sdk_rdsdata::types::{Field, SqlParameter};
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{decode, long_at, string_at};
use super::params::{long, utc_text, uuid};
use crate::domain::{Conversation, now_micros};
use crate::error::StoreError;

/// How many characters of text one call returns at most (all rows and columns together).
/// At most 6 bytes each once JSON-escaped: 720 KB, under the 1 MiB response limit.
pub const TEXT_BUDGET_CHARS: i64 = 120_000;

/// The conversation columns, with explicit text forms; `q` qualifies them (`"c."` or `""`).
/// Positions: 0 id .. 15 updated_at, 16 and 17 the full lengths of prompt and response.
pub(super) fn columns(q: &str) -> String {
    format!(
        "{q}id::text, {q}owner, substr({q}prompt, 1, CAST(:text_chars AS int4)), \
         substr({q}response, 1, CAST(:text_chars AS int4)), {q}status, {q}error, {q}provider, \
         {q}model, {q}prompt_tokens, {q}completion_tokens, {q}total_tokens, {q}flags::text, \
         {q}ttfb_ms, {q}duration_ms, {ca}, {ua}, char_length({q}prompt), \
         char_length({q}response)",
        ca = utc_text(&format!("{q}created_at")),
        ua = utc_text(&format!("{q}updated_at")),
    )
}

impl DataApiStore {
    /// text column as a prefix sized to the page.
    pub(super) async fn records(
        &self,
        sql: &str,
        mut params: Vec<SqlParameter>,
        rows_at_most: i64,
    ) -> Result<Vec<Vec<Field>>, StoreError> {
        params.push(long("text_chars", text_chars(rows_at_most)));
        Ok(self
            .exec(sql, params, None)
            .await?
            .records
            .unwrap_or_default())
    }

    /// The conversation of each record, its long text completed, with `extra(record)`.
    pub(super) async fn conversations<T>(
        &self,
        records: Vec<Vec<Field>>,
        extra: impl Fn(&[Field]) -> Result<T, StoreError> + Send + Sync,
    ) -> Result<Vec<(Conversation, T)>, StoreError>
    where
        T: Send,
    {
        let mut result = Vec::with_capacity(records.len());
        for record in records {
            let mut c = decode(&record)?;
            let prompt_len = long_at(&record, 16, "prompt")?;
            let response_len = long_at(&record, 17, "response")?;
            let more = extra(&record)?;
            drop(record);
            self.complete(c.id, "prompt", &mut c.prompt, prompt_len)
                .await?;
            self.complete(c.id, "response", &mut c.response, response_len)
                .await?;
            result.push((c.settle(self.stale_after, now_micros()), more));
        }
        Ok(result)
    }

    /// Appends to `text` what its prefix missed, `TEXT_BUDGET_CHARS` per call.
    async fn complete(
        &self,
        id: Uuid,
        column: &'static str,
        text: &mut String,
        full_len: i64,
    ) -> Result<(), StoreError> {
        let mut have = text.chars().count() as i64;
        while have < full_len {
            let sql = format!(
                "SELECT substr({column}, CAST(:from AS int4), CAST(:n AS int4)) \
                 FROM conversations WHERE id = CAST(:id AS uuid)"
            );
            let out = self
                .exec(
                    &sql,
                    vec![
                        long("from", have + 1),
                        long("n", TEXT_BUDGET_CHARS),
                        uuid("id", id),
                    ],
                    None,
                )
                .await?;
            let Some(record) = out.records().first() else {
                // The row went away between the calls: keep what was read.
                return Ok(());
            };
            let piece = string_at(record, 0, column)?;
            if piece.is_empty() {
                return Ok(());
            }
            have += piece.chars().count() as i64;
            text.push_str(&piece);
        }
        Ok(())
    }
}

/// How many characters of each text column a query returning up to `rows` rows reads at first.
fn text_chars(rows: i64) -> i64 {
    (TEXT_BUDGET_CHARS / (2 * rows.max(1))).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_budget_splits_over_rows() {
        assert_eq!(text_chars(1), 60_000);
        assert_eq!(text_chars(100), 600);
    }
}
