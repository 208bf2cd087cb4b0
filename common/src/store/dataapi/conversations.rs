//! The conversation capabilities over the Data API: create, checkpoint, finish, get, list and
//! search.

use async_trait::async_trait;
use aws_sdk_rdsdata::types::Field;
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{field, long_at, string_at};
use super::params::{
    json, long, opt_int, opt_text, opt_timestamp, text, timestamp, utc_param, uuid,
};
use super::text::columns;
use crate::domain::Conversation;
use crate::error::StoreError;
use crate::store::sql::{FINISH_ON_CONFLICT, PHRASE_WINDOW_ROWS, SEARCH_COLUMNS};
use crate::store::{
    ConversationCreate, ConversationFinish, ConversationGet, ConversationList, ConversationSearch,
    PageQuery, SearchHit, SearchQuery,
};

/// The pool's search SQL with named, explicitly typed parameters and text-typed columns.
pub(super) fn data_api_search(sql: &str) -> String {
    let names = [
        "CAST(:q AS text)".to_owned(),
        utc_param("from_ts"),
        utc_param("to_ts"),
        "CAST(:candidates AS int8)".to_owned(),
        "CAST(:limit AS int8)".to_owned(),
        "CAST(:offset AS int8)".to_owned(),
        "CAST(:owner AS text)".to_owned(),
        "CAST(:window AS int8)".to_owned(),
    ];
    let mut out = String::with_capacity(sql.len() + 512);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            match digits.parse::<usize>().ok().and_then(|n| names.get(n - 1)) {
                Some(name) => out.push_str(name),
                None => {
                    out.push('$');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out.replace(SEARCH_COLUMNS, &columns("c."))
}

#[async_trait]
impl ConversationCreate for DataApiStore {
    async fn create(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let sql = format!(
            "INSERT INTO conversations (id, prompt, response, status, provider, model, \
             created_at, updated_at, owner) VALUES (CAST(:id AS uuid), :prompt, :response, \
             :status, :provider, :model, {}, {}, :owner) ON CONFLICT (id) DO NOTHING",
            utc_param("created_at"),
            utc_param("updated_at"),
        );
        let params = vec![
            uuid("id", c.id),
            text("prompt", &c.prompt),
            text("response", &c.response),
            text("status", c.status.as_str()),
            text("provider", &c.provider),
            text("model", &c.model),
            timestamp("created_at", c.created_at),
            timestamp("updated_at", c.updated_at),
            text("owner", &c.owner),
        ];
        self.exec(&sql, params, None).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationFinish for DataApiStore {
    async fn checkpoint(&self, id: Uuid, response: &str) -> Result<(), StoreError> {
        let response = &*crate::domain::storable(response);
        self.exec(
            "UPDATE conversations SET response = :response, updated_at = now() \
             WHERE id = CAST(:id AS uuid) AND status = 'streaming'",
            vec![uuid("id", id), text("response", response)],
            None,
        )
        .await?;
        Ok(())
    }

    async fn finish(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let sql = format!(
            "INSERT INTO conversations (id, prompt, response, status, error, provider, model, \
             prompt_tokens, completion_tokens, total_tokens, ttfb_ms, duration_ms, created_at, \
             updated_at, owner, flags) VALUES (CAST(:id AS uuid), :prompt, :response, :status, \
             CAST(:error AS text), :provider, :model, CAST(:prompt_tokens AS int4), \
             CAST(:completion_tokens AS int4), CAST(:total_tokens AS int4), \
             CAST(:ttfb_ms AS int4), CAST(:duration_ms AS int4), {}, {}, :owner, \
             CAST(:flags AS jsonb)) {}",
            utc_param("created_at"),
            utc_param("updated_at"),
            FINISH_ON_CONFLICT,
        );
        let params = vec![
            uuid("id", c.id),
            text("prompt", &c.prompt),
            text("response", &c.response),
            text("status", c.status.as_str()),
            opt_text("error", c.error.as_deref()),
            text("provider", &c.provider),
            text("model", &c.model),
            opt_int("prompt_tokens", c.prompt_tokens),
            opt_int("completion_tokens", c.completion_tokens),
            opt_int("total_tokens", c.total_tokens),
            opt_int("ttfb_ms", c.ttfb_ms),
            opt_int("duration_ms", c.duration_ms),
            timestamp("created_at", c.created_at),
            timestamp("updated_at", c.updated_at),
            text("owner", &c.owner),
            json("flags", &serde_json::to_value(&c.flags).unwrap_or_default()),
        ];
        self.exec(&sql, params, None).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationGet for DataApiStore {
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "SELECT {} FROM conversations WHERE id = CAST(:id AS uuid) AND owner = :owner",
            columns("")
        );
        let records = self
            .records(&sql, vec![uuid("id", id), text("owner", owner)], 1)
            .await?;
        let rows = self.conversations(records, |_| Ok(())).await?;
        Ok(rows.into_iter().next().map(|(c, _)| c))
    }
}

#[async_trait]
impl ConversationList for DataApiStore {
    async fn list(&self, owner: &str, page: &PageQuery) -> Result<Vec<Conversation>, StoreError> {
        let mut params = vec![
            text("owner", owner),
            long("limit", page.limit),
            long("offset", page.offset),
        ];
        let keyset = match &page.after {
            None => String::new(),
            Some(cursor) => {
                params.push(timestamp("after_ts", cursor.created_at));
                params.push(uuid("after_id", cursor.id));
                format!(
                    "AND (created_at, id) < ({}, CAST(:after_id AS uuid))",
                    utc_param("after_ts")
                )
            }
        };
        let sql = format!(
            "SELECT {} FROM conversations WHERE owner = :owner {keyset} \
             ORDER BY created_at DESC, id DESC LIMIT CAST(:limit AS int8) \
             OFFSET CAST(:offset AS int8)",
            columns("")
        );
        let records = self.records(&sql, params, page.limit).await?;
        let rows = self.conversations(records, |_| Ok(())).await?;
        Ok(rows.into_iter().map(|(c, _)| c).collect())
    }
}

#[async_trait]
impl ConversationSearch for DataApiStore {
    async fn search(&self, owner: &str, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let params = vec![
            text("q", &query.text),
            opt_timestamp("from_ts", query.from),
            opt_timestamp("to_ts", query.to),
            long("candidates", query.candidates),
            long("limit", query.limit),
            long("offset", query.offset),
            text("owner", owner),
        ];
        if query.text.contains('"') {
            let mut windowed = params.clone();
            windowed.push(long("window", PHRASE_WINDOW_ROWS));
            let records = self
                .records(&self.search_window_sql, windowed, query.limit)
                .await?;
            let found = records
                .first()
                .map(|r| long_at(r, 20, "found"))
                .transpose()?;
            // Long text is completed only for the answer that is kept.
            if found == Some(query.candidates) {
                return self.hits(records).await;
            }
        }
        let records = self.records(&self.search_sql, params, query.limit).await?;
        self.hits(records).await
    }
}

impl DataApiStore {
    /// Search records as hits: the conversation, then its rank and snippet.
    async fn hits(&self, records: Vec<Vec<Field>>) -> Result<Vec<SearchHit>, StoreError> {
        let rows = self
            .conversations(records, |r| {
                let rank = match field(r, 18, "rank")? {
                    Field::DoubleValue(v) => *v as f32,
                    _ => return Err(StoreError::Decode { column: "rank" }),
                };
                Ok((rank, string_at(r, 19, "snippet")?))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(conversation, (rank, snippet))| SearchHit {
                conversation,
                rank,
                snippet,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_sql_has_only_named_parameters() {
        for sql in [
            data_api_search(&crate::store::search_sql("english")),
            data_api_search(&crate::store::search_window_sql("simple")),
        ] {
            assert!(!sql.contains('$'), "{sql}");
            assert!(sql.contains("CAST(:owner AS text)"), "{sql}");
            assert!(sql.contains("char_length(c.response)"), "{sql}");
        }
    }
}
