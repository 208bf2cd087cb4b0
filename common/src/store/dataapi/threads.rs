//! Threads over the Data API: the chain a new turn continues (one call), the list of threads,
//! one thread with its turns, and deleting one.

use async_trait::async_trait;
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{Record, long_at, opt_string_at, string_at, timestamp_at, uuid_at};
use super::params::{long, text, timestamp, utc_param, utc_text, uuid};
use super::read::columns;
use crate::domain::{Conversation, Status, Thread, now_micros};
use crate::error::StoreError;
use crate::store::sql::RESPONSE;
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
        // The walk as the pool's (`sql::chain`), with named, typed parameters and text results.
        let sql = format!(
            "WITH RECURSIVE chain AS ( \
                SELECT c.id, c.previous_id, c.thread_id, c.prompt, {RESPONSE} AS response, \
                       c.status, c.system, c.created_at, \
                       char_length(c.prompt) + char_length({RESPONSE}) AS total, 1 AS depth \
                FROM conversations c \
                WHERE c.id = CAST(:id AS uuid) AND c.owner = CAST(:owner AS text) \
              UNION ALL \
                SELECT c.id, c.previous_id, c.thread_id, c.prompt, {RESPONSE}, c.status, \
                       c.system, c.created_at, \
                       chain.total + char_length(c.prompt) + char_length({RESPONSE}), \
                       chain.depth + 1 \
                FROM chain JOIN conversations c \
                  ON c.id = chain.previous_id AND c.owner = CAST(:owner AS text) \
                WHERE chain.total <= CAST(:budget AS int8)) \
             SELECT id::text, thread_id::text, prompt, response, status, system, {} \
             FROM chain ORDER BY depth",
            utc_text("created_at")
        );
        let params = vec![uuid("id", id), text("owner", owner), long("budget", budget)];
        let out = self.exec(&sql, params, None).await?;
        let names = [
            "id",
            "thread_id",
            "prompt",
            "response",
            "status",
            "system",
            "created_at",
        ];
        let records = out.records();
        if records.is_empty() {
            return Ok(None);
        }
        let now = now_micros();
        records
            .iter()
            .map(|fields| {
                let r = Record::new(fields, &names);
                let mut status = Status::parse(&string_at(&r, "status")?)
                    .ok_or(StoreError::Decode { column: "status" })?;
                if status == Status::Streaming
                    && now - timestamp_at(&r, "created_at")? > self.stale_after
                {
                    status = Status::Partial;
                }
                Ok(ChainTurn {
                    id: uuid_at(&r, "id")?,
                    thread_id: uuid_at(&r, "thread_id")?,
                    prompt: string_at(&r, "prompt")?,
                    response: string_at(&r, "response")?,
                    status,
                    system: opt_string_at(&r, "system")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
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
    ) -> Result<Option<(Thread, Vec<Conversation>)>, StoreError> {
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
        // The turn count sizes the first read's share of the response budget.
        let rows = i64::from(thread.turns.max(1));
        let sql = format!(
            "SELECT {} FROM conversations c \
             WHERE c.thread_id = CAST(:id AS uuid) AND c.owner = CAST(:owner AS text) \
             ORDER BY c.created_at, c.id",
            columns()
        );
        let params = vec![uuid("id", id), text("owner", owner)];
        let (turns, _) = self
            .read(&sql, params, rows, usize::MAX, &[], |_| Ok(()))
            .await?;
        Ok(Some((thread, turns.into_iter().map(|(c, ())| c).collect())))
    }

    async fn delete_thread(&self, owner: &str, id: Uuid) -> Result<bool, StoreError> {
        let sql = "WITH gone AS ( \
                DELETE FROM threads WHERE id = CAST(:id AS uuid) AND owner = CAST(:owner AS text) \
                RETURNING id), \
            tomb AS (INSERT INTO deleted_threads (id) SELECT id FROM gone \
                ON CONFLICT (id) DO NOTHING), \
            turns AS (DELETE FROM conversations \
                WHERE thread_id IN (SELECT id FROM gone) AND owner = CAST(:owner AS text)), \
            old AS (DELETE FROM deleted_threads WHERE deleted_at < now() - interval '1 day') \
            SELECT id::text FROM gone";
        let out = self
            .exec(sql, vec![uuid("id", id), text("owner", owner)], None)
            .await?;
        Ok(!out.records().is_empty())
    }
}
