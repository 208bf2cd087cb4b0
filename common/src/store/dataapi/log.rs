//! Re-attaching and cancelling over the Data API: a turn with its stored text from a position,
//! and a cancel request the generating process reads at its next checkpoint.

use async_trait::async_trait;
use aws_sdk_rdsdata::types::Field;
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{Record, long_at, string_at};
use super::params::{Args, long, named, text, uuid};
use super::read::columns_with;
use crate::domain::Status;
use crate::error::StoreError;
use crate::store::sql::{self, text_from, text_total};
use crate::store::{CancelOutcome, ConversationLog, LogRead};

#[async_trait]
impl ConversationLog for DataApiStore {
    async fn read_log(
        &self,
        owner: &str,
        id: Uuid,
        from: i64,
        max_chars: i64,
    ) -> Result<Option<LogRead>, StoreError> {
        let sql = format!(
            "SELECT {}, {} AS rest, {} AS total FROM conversations c \
             WHERE c.id = CAST(:id AS uuid) AND c.owner = CAST(:owner AS text)",
            columns_with("''::text"),
            text_from("CAST(:from_pos AS int8)", "CAST(:max_chars AS int4)"),
            text_total(),
        );
        let params = vec![
            uuid("id", id),
            text("owner", owner),
            long("from_pos", from),
            long("max_chars", max_chars),
        ];
        let (rows, _) = self
            .read(&sql, params, 1, 1, &["rest", "total"], |r: &Record<'_>| {
                let rest = if r.is_null("rest")? {
                    String::new()
                } else {
                    string_at(r, "rest")?
                };
                Ok((rest, long_at(r, "total")?))
            })
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|(turn, (text, total))| LogRead { turn, text, total }))
    }

    async fn request_cancel(&self, owner: &str, id: Uuid) -> Result<CancelOutcome, StoreError> {
        let args = Args::default()
            .uuid(id)
            .text(owner)
            .double(self.stale_after.as_secs_f64())
            .double(self.heartbeat_stale.as_secs_f64());
        let out = self.exec(&named(sql::REQUEST_CANCEL), args.0, None).await?;
        let Some(fields) = out.records().first() else {
            return Ok(CancelOutcome::NotFound);
        };
        let r = Record::new(fields, &["status", "asked"]);
        if matches!(r.field("asked")?, Field::BooleanValue(true)) {
            return Ok(CancelOutcome::Requested);
        }
        let status = Status::parse(&string_at(&r, "status")?)
            .ok_or(StoreError::Decode { column: "status" })?;
        Ok(CancelOutcome::Finished(if status == Status::Streaming {
            Status::Partial
        } else {
            status
        }))
    }
}
