//! The conversation capabilities over the Data API: create, checkpoint and finish (the pool's
//! statements, with named parameters), get, list and search.

use async_trait::async_trait;
use aws_sdk_rdsdata::types::Field;
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{Record, long_at, string_at};
use super::params::{Args, long, named, text, timestamp, utc_param, uuid};
use super::read::{columns, field};
use crate::domain::Conversation;
use crate::error::StoreError;
use crate::store::sql::{self, PHRASE_WINDOW_ROWS, search_template};
use crate::store::{
    Checkpointed, ConversationCreate, ConversationExport, ConversationFinish, ConversationGet,
    ConversationList, ConversationSearch, ExportQuery, Listed, PageQuery, SearchHit, SearchQuery,
};

/// The search SQL (shared with the pool) with named, typed parameters and the columns the Data
/// API reader takes; over the phrase window when `window`.
pub(super) fn data_api_search(config: &str, window: bool) -> String {
    named(&search_template(config, window)).replace("{columns}", &columns())
}

/// The parameters of [`sql::CREATE`].
fn start_args(c: &Conversation) -> Args {
    Args::default()
        .uuid(c.id)
        .text(&c.prompt)
        .text(&c.provider)
        .text(&c.model)
        .timestamp(c.created_at)
        .text(&c.owner)
        .uuid(c.thread_id)
        .opt_uuid(c.previous_id)
        .opt_text(c.system.as_deref())
        .opt_json(c.messages.as_ref())
        .opt_int(c.context_turns)
}

#[async_trait]
impl ConversationCreate for DataApiStore {
    async fn create(&self, c: &Conversation) -> Result<(), StoreError> {
        let args = start_args(&c.storable());
        self.exec(&named(sql::CREATE), args.0, None).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationFinish for DataApiStore {
    async fn checkpoint(
        &self,
        start: Option<&Conversation>,
        id: Uuid,
        piece: Option<(i64, &str)>,
    ) -> Result<Checkpointed, StoreError> {
        let mut args = match start {
            Some(c) => start_args(&c.storable()),
            None => Args::default().uuid(id),
        };
        if let Some((at, piece)) = piece {
            args = args.long(at).text(&crate::domain::storable(piece));
        }
        let sql = named(&sql::checkpoint(start.is_some(), piece.is_some()));
        let out = self.exec(&sql, args.0, None).await?;
        Ok(Checkpointed {
            cancel_requested: out
                .records()
                .first()
                .and_then(|r| r.first())
                .is_some_and(|f| matches!(f, Field::BooleanValue(true))),
            found: !out.records().is_empty(),
        })
    }

    async fn finish(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let [tool_calls, tools, attempts] = c.json_columns();
        let args = Args::default()
            .uuid(c.id)
            .text(&c.prompt)
            .text(&c.response)
            .text(c.status.as_str())
            .opt_text(c.error.as_deref())
            .text(&c.provider)
            .text(&c.model)
            .opt_int(c.prompt_tokens)
            .opt_int(c.completion_tokens)
            .opt_int(c.total_tokens)
            .opt_int(c.ttfb_ms)
            .opt_int(c.duration_ms)
            .timestamp(c.created_at)
            .timestamp(c.updated_at)
            .text(&c.owner)
            .json(&serde_json::to_value(&c.flags).unwrap_or_default())
            .opt_text(c.finish_reason.as_deref())
            .uuid(c.thread_id)
            .opt_uuid(c.previous_id)
            .opt_text(c.system.as_deref())
            .opt_json(c.messages.as_ref())
            .opt_int(c.context_turns)
            .opt_json(tool_calls.as_ref())
            .opt_json(tools.as_ref())
            .opt_json(c.prompt_parts.as_ref())
            .opt_json(attempts.as_ref())
            .opt_double(c.cost_usd)
            .opt_uuid(c.key_id);
        self.exec(&named(sql::FINISH), args.0, None).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationGet for DataApiStore {
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "SELECT {} FROM conversations c WHERE c.id = CAST(:id AS uuid) AND c.owner = :owner",
            columns()
        );
        let params = vec![uuid("id", id), text("owner", owner)];
        let (rows, _) = self.read(&sql, params, 1, 1, &[], |_| Ok(())).await?;
        Ok(rows.into_iter().next().map(|(c, ())| c))
    }
}

#[async_trait]
impl ConversationList for DataApiStore {
    async fn list(
        &self,
        owner: &str,
        page: &PageQuery,
    ) -> Result<Listed<Conversation>, StoreError> {
        let probe = page.limit + 1;
        let mut params = vec![
            text("owner", owner),
            long("limit", probe),
            long("offset", page.offset),
        ];
        let keyset = match &page.after {
            None => String::new(),
            Some(cursor) => {
                params.push(timestamp("after_ts", cursor.created_at));
                params.push(uuid("after_id", cursor.id));
                format!(
                    "AND (c.created_at, c.id) < ({}, CAST(:after_id AS uuid))",
                    utc_param("after_ts")
                )
            }
        };
        let sql = format!(
            "SELECT {} FROM conversations c WHERE c.owner = :owner {keyset} \
             ORDER BY c.created_at DESC, c.id DESC LIMIT CAST(:limit AS int8) \
             OFFSET CAST(:offset AS int8)",
            columns()
        );
        let keep = usize::try_from(page.limit).unwrap_or(0);
        let (rows, total) = self
            .read(&sql, params, probe, keep, &[], |_| Ok(()))
            .await?;
        Ok(Listed {
            items: rows.into_iter().map(|(c, ())| c).collect(),
            more: total > keep,
        })
    }
}

#[async_trait]
impl ConversationExport for DataApiStore {
    async fn export_page(
        &self,
        owner: &str,
        query: &ExportQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        let mut params = vec![text("owner", owner), long("limit", query.limit)];
        let mut bounds = String::new();
        if let Some(from) = query.from {
            params.push(timestamp("from_ts", from));
            bounds.push_str(&format!(" AND c.created_at >= {}", utc_param("from_ts")));
        }
        if let Some(to) = query.to {
            params.push(timestamp("to_ts", to));
            bounds.push_str(&format!(" AND c.created_at < {}", utc_param("to_ts")));
        }
        if let Some(after) = query.after {
            params.push(timestamp("after_ts", after.created_at));
            params.push(uuid("after_id", after.id));
            bounds.push_str(&format!(
                " AND (c.created_at, c.id) > ({}, CAST(:after_id AS uuid))",
                utc_param("after_ts")
            ));
        }
        let sql = format!(
            "SELECT {} FROM conversations c WHERE c.owner = :owner{bounds} \
             ORDER BY c.created_at, c.id LIMIT CAST(:limit AS int8)",
            columns()
        );
        let keep = usize::try_from(query.limit).unwrap_or(0);
        let (rows, _) = self
            .read(&sql, params, query.limit, keep, &[], |_| Ok(()))
            .await?;
        Ok(rows.into_iter().map(|(c, ())| c).collect())
    }
}

#[async_trait]
impl ConversationSearch for DataApiStore {
    async fn search(
        &self,
        owner: &str,
        query: &SearchQuery,
    ) -> Result<Listed<SearchHit>, StoreError> {
        let probe = query.limit + 1;
        let params = Args::default()
            .text(&query.text)
            .opt_timestamp(query.from)
            .opt_timestamp(query.to)
            .long(query.candidates)
            .long(probe)
            .long(query.offset)
            .text(owner);
        let keep = usize::try_from(query.limit).unwrap_or(0);
        if query.text.contains('"') {
            let windowed = params.clone().long(PHRASE_WINDOW_ROWS);
            let records = self
                .first_call(&self.search_window_sql, windowed.0, probe)
                .await?;
            let found = match records.first() {
                Some(r) => Some(long_at(&Record::new(r, &search_names()), "found")?),
                None => None,
            };
            // The window's answer is kept when it holds every candidate; only then is its long
            // text completed.
            if found == Some(query.candidates) {
                return self.hits(&records, keep).await;
            }
        }
        let records = self.first_call(&self.search_sql, params.0, probe).await?;
        self.hits(&records, keep).await
    }
}

/// The columns the search selects after the conversation's.
const EXTRA: &[&str] = &["rank", "snippet", "found"];

/// Every column name of a search record.
fn search_names() -> Vec<&'static str> {
    let mut names = super::read::column_names();
    names.extend_from_slice(EXTRA);
    names
}

impl DataApiStore {
    /// The page of hits of a search's first call (text complete), and whether more follow.
    async fn hits(
        &self,
        records: &[Vec<Field>],
        keep: usize,
    ) -> Result<Listed<SearchHit>, StoreError> {
        let rows = self
            .conversations(records, keep, EXTRA, |r: &Record<'_>| {
                let rank = match field(r, "rank")? {
                    Field::DoubleValue(v) => *v as f32,
                    _ => return Err(StoreError::Decode { column: "rank" }),
                };
                Ok((rank, string_at(r, "snippet")?))
            })
            .await?;
        Ok(Listed {
            items: rows
                .into_iter()
                .map(|(conversation, (rank, snippet))| SearchHit {
                    conversation,
                    rank,
                    snippet,
                })
                .collect(),
            more: records.len() > keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_sql_has_only_named_parameters() {
        for window in [false, true] {
            let sql = data_api_search("english", window);
            assert!(!sql.contains('$'), "{sql}");
            assert!(sql.contains("CAST(:p7 AS text)"), "{sql}");
            assert!(sql.contains("AS response_chars"), "{sql}");
        }
    }
}
