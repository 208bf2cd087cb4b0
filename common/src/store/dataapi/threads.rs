//! Threads over the Data API: the chain a new turn continues (one call), the list of threads,
//! one thread with its turns, and deleting one.

use async_trait::async_trait;
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{Record, long_at, string_at, timestamp_at, uuid_at};
use super::params::{Args, long, named, text, timestamp, utc_param, utc_text, uuid};
use super::read::columns;
use crate::domain::{Conversation, Thread};
use crate::error::StoreError;
use crate::store::sql::{self, walk_chain};
use crate::store::{ChainTurn, ConversationChain, Listed, PageQuery, ThreadStore};

/// The thread columns as text and numbers, from `threads t`.
fn thread_columns() -> String {
    format!(
        "t.id::text AS id, t.title, t.turns, {} AS created_at, {} AS updated_at",
        utc_text("t.created_at"),
        utc_text("t.updated_at")
    )
}

const THREAD_NAMES: [&str; 5] = ["id", "title", "turns", "created_at", "updated_at"];

fn decode_thread(r: &Record<'_>) -> Result<Thread, StoreError> {
    Ok(Thread {
        id: uuid_at(r, "id")?,
        title: string_at(r, "title")?,
        turns: i32::try_from(long_at(r, "turns")?)
            .map_err(|_| StoreError::Decode { column: "turns" })?,
        created_at: timestamp_at(r, "created_at")?,
        updated_at: timestamp_at(r, "updated_at")?,
    })
}

#[async_trait]
impl ConversationChain for DataApiStore {
    async fn chain(
        &self,
        owner: &str,
        id: Uuid,
        budget: i64,
    ) -> Result<Option<Vec<ChainTurn>>, StoreError> {
        // The thread's turns up to this one, a page at a time, walked in memory (as the pool
        // does); each page is read within the Data API's response limit.
        let sql = named(&sql::chain_page(&super::read::chain_columns()));
        walk_chain(id, budget, |after| {
            let sql = &sql;
            async move {
                let args = Args::default()
                    .uuid(id)
                    .text(owner)
                    .opt_timestamp(after.map(|a| a.created_at))
                    .opt_uuid(after.map(|a| a.id))
                    .long(sql::CHAIN_PAGE);
                let (turns, _) = self
                    .read(sql, args.0, sql::CHAIN_PAGE, usize::MAX, &[], |_| Ok(()))
                    .await?;
                Ok(turns.into_iter().map(|(c, ())| c).collect())
            }
        })
        .await
    }
}

#[async_trait]
impl ThreadStore for DataApiStore {
    async fn threads(&self, owner: &str, page: &PageQuery) -> Result<Listed<Thread>, StoreError> {
        let probe = page.limit + 1;
        let mut params = vec![text("owner", owner), long("limit", probe)];
        let keyset = match &page.after {
            None => String::new(),
            Some(cursor) => {
                params.push(timestamp("after_ts", cursor.created_at));
                params.push(uuid("after_id", cursor.id));
                format!(
                    "AND (t.updated_at, t.id) < ({}, CAST(:after_id AS uuid))",
                    utc_param("after_ts")
                )
            }
        };
        let sql = format!(
            "SELECT {} FROM threads t WHERE t.owner = CAST(:owner AS text) {keyset} \
             ORDER BY t.updated_at DESC, t.id DESC LIMIT CAST(:limit AS int8)",
            thread_columns()
        );
        let out = self.exec(&sql, params, None).await?;
        Listed::from_probe(out.records.unwrap_or_default(), page.limit, |fields| {
            decode_thread(&Record::new(fields, &THREAD_NAMES))
        })
    }

    async fn thread(
        &self,
        owner: &str,
        id: Uuid,
        page: &PageQuery,
    ) -> Result<Option<(Thread, Listed<Conversation>)>, StoreError> {
        let sql = format!(
            "SELECT {} FROM threads t WHERE t.id = CAST(:id AS uuid) AND t.owner = CAST(:owner AS text)",
            thread_columns()
        );
        let out = self
            .exec(&sql, vec![uuid("id", id), text("owner", owner)], None)
            .await?;
        let Some(fields) = out.records().first() else {
            return Ok(None);
        };
        let thread = decode_thread(&Record::new(fields, &THREAD_NAMES))?;
        let probe = page.limit + 1;
        let args = Args::default()
            .uuid(id)
            .text(owner)
            .opt_timestamp(page.after.map(|a| a.created_at))
            .opt_uuid(page.after.map(|a| a.id))
            .long(probe);
        let sql = named(&sql::thread_turns(&columns()));
        let keep = usize::try_from(page.limit).unwrap_or(0);
        let (turns, read) = self
            .read(&sql, args.0, probe, keep, &[], |_| Ok(()))
            .await?;
        Ok(Some((
            thread,
            Listed {
                items: turns.into_iter().map(|(c, ())| c).collect(),
                more: read > keep,
            },
        )))
    }

    async fn delete_thread(&self, owner: &str, id: Uuid) -> Result<bool, StoreError> {
        let args = Args::default().uuid(id).text(owner);
        let out = self.exec(&named(sql::DELETE_THREAD), args.0, None).await?;
        Ok(out
            .records()
            .first()
            .and_then(|r| r.first())
            .is_some_and(|f| matches!(f, aws_sdk_rdsdata::types::Field::BooleanValue(true))))
    }
}
