//! The PostgreSQL store backend on a deadpool-postgres pool.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use super::sql::{COLUMNS, FINISH_ON_CONFLICT, PHRASE_WINDOW_ROWS, search_sql, search_window_sql};
use super::{
    ApiKeys, ConversationCreate, ConversationFinish, ConversationGet, ConversationList,
    ConversationSearch, HealthCheck, PageQuery, SearchHit, SearchQuery,
};
use crate::domain::{Conversation, Status, now_micros};
use crate::error::StoreError;

/// Conversations in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    stale_after: Duration,
    search_sql: String,
    search_window_sql: String,
}

impl PgStore {
    /// `stale_after`: how long a `streaming` row may go without an update before it reads as
    /// interrupted (the longest a stream may run, plus a margin).
    pub fn new(pool: Pool, stale_after: Duration) -> Self {
        Self {
            pool,
            stale_after,
            search_sql: search_sql("english"),
            search_window_sql: search_window_sql("english"),
        }
    }

    /// Uses `config` (a PostgreSQL text search configuration) to parse search queries; it must
    /// be the one the search column was built with (`db::migrate` sees to that).
    /// `config` must be a plain name (`[a-z0-9_]`), as `Settings` guarantees.
    pub fn with_search_config(mut self, config: &str) -> Self {
        debug_assert!(
            config
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        self.search_sql = search_sql(config);
        self.search_window_sql = search_window_sql(config);
        self
    }

    /// The store the functions use: a lazy pool from `DATABASE_URL`; rows left `streaming` past
    /// the total generation timeout (plus a minute) read as interrupted.
    pub fn from_settings(
        settings: &crate::Settings,
    ) -> Result<Self, crate::settings::SettingsError> {
        let pool = crate::db::pool(&settings.db)?;
        Ok(Self::new(pool, super::stale_after(settings))
            .with_search_config(&settings.db.search_config))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::Pool)
    }

    fn decode(&self, row: &Row) -> Result<Conversation, StoreError> {
        let status: String = row.try_get("status").map_err(StoreError::Query)?;
        let c = Conversation {
            id: row.try_get("id").map_err(StoreError::Query)?,
            owner: row.try_get("owner").map_err(StoreError::Query)?,
            prompt: row.try_get("prompt").map_err(StoreError::Query)?,
            response: row.try_get("response").map_err(StoreError::Query)?,
            status: Status::parse(&status).ok_or(StoreError::Decode { column: "status" })?,
            error: row.try_get("error").map_err(StoreError::Query)?,
            provider: row.try_get("provider").map_err(StoreError::Query)?,
            model: row.try_get("model").map_err(StoreError::Query)?,
            prompt_tokens: row.try_get("prompt_tokens").map_err(StoreError::Query)?,
            completion_tokens: row
                .try_get("completion_tokens")
                .map_err(StoreError::Query)?,
            total_tokens: row.try_get("total_tokens").map_err(StoreError::Query)?,
            flags: serde_json::from_value(
                row.try_get::<_, serde_json::Value>("flags")
                    .map_err(StoreError::Query)?,
            )
            .map_err(|_| StoreError::Decode { column: "flags" })?,
            ttfb_ms: row.try_get("ttfb_ms").map_err(StoreError::Query)?,
            duration_ms: row.try_get("duration_ms").map_err(StoreError::Query)?,
            created_at: row.try_get("created_at").map_err(StoreError::Query)?,
            updated_at: row.try_get("updated_at").map_err(StoreError::Query)?,
        };
        Ok(c.settle(self.stale_after, now_micros()))
    }
}

#[async_trait]
impl ConversationCreate for PgStore {
    async fn create(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO conversations (id, prompt, response, status, provider, model, \
                 created_at, updated_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .await
            .map_err(StoreError::Query)?;
        client
            .execute(
                &stmt,
                &[
                    &c.id,
                    &c.prompt,
                    &c.response,
                    &c.status.as_str(),
                    &c.provider,
                    &c.model,
                    &c.created_at,
                    &c.updated_at,
                    &c.owner,
                ],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(())
    }
}

#[async_trait]
impl ConversationFinish for PgStore {
    async fn checkpoint(&self, id: Uuid, response: &str) -> Result<(), StoreError> {
        let response = &*crate::domain::storable(response);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE conversations SET response = $2, updated_at = now() \
                 WHERE id = $1 AND status = 'streaming'",
            )
            .await
            .map_err(StoreError::Query)?;
        client
            .execute(&stmt, &[&id, &response])
            .await
            .map_err(StoreError::Query)?;
        Ok(())
    }

    async fn finish(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "INSERT INTO conversations (id, prompt, response, status, error, provider, model, \
                 prompt_tokens, completion_tokens, total_tokens, ttfb_ms, duration_ms, \
                 created_at, updated_at, owner, flags) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 {}",
                FINISH_ON_CONFLICT
            ))
            .await
            .map_err(StoreError::Query)?;
        client
            .execute(
                &stmt,
                &[
                    &c.id,
                    &c.prompt,
                    &c.response,
                    &c.status.as_str(),
                    &c.error,
                    &c.provider,
                    &c.model,
                    &c.prompt_tokens,
                    &c.completion_tokens,
                    &c.total_tokens,
                    &c.ttfb_ms,
                    &c.duration_ms,
                    &c.created_at,
                    &c.updated_at,
                    &c.owner,
                    &serde_json::to_value(&c.flags).unwrap_or_default(),
                ],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(())
    }
}

#[async_trait]
impl ConversationGet for PgStore {
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM conversations WHERE id = $1 AND owner = $2"
            ))
            .await
            .map_err(StoreError::Query)?;
        let row = client
            .query_opt(&stmt, &[&id, &owner])
            .await
            .map_err(StoreError::Query)?;
        row.map(|r| self.decode(&r)).transpose()
    }
}

#[async_trait]
impl ConversationList for PgStore {
    async fn list(&self, owner: &str, page: &PageQuery) -> Result<Vec<Conversation>, StoreError> {
        let client = self.client().await?;
        let rows = match &page.after {
            None => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM conversations WHERE owner = $3 \
                         ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
                    ))
                    .await
                    .map_err(StoreError::Query)?;
                client
                    .query(&stmt, &[&page.limit, &page.offset, &owner])
                    .await
            }
            Some(cursor) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM conversations \
                         WHERE owner = $5 AND (created_at, id) < ($1, $2) \
                         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
                    ))
                    .await
                    .map_err(StoreError::Query)?;
                client
                    .query(
                        &stmt,
                        &[
                            &cursor.created_at,
                            &cursor.id,
                            &page.limit,
                            &page.offset,
                            &owner,
                        ],
                    )
                    .await
            }
        }
        .map_err(StoreError::Query)?;
        rows.iter().map(|r| self.decode(r)).collect()
    }
}

#[async_trait]
impl ConversationSearch for PgStore {
    async fn search(&self, owner: &str, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let client = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &query.text,
            &query.from,
            &query.to,
            &query.candidates,
            &query.limit,
            &query.offset,
            &owner,
        ];
        if query.text.contains('"') {
            let stmt = client
                .prepare_cached(&self.search_window_sql)
                .await
                .map_err(StoreError::Query)?;
            let mut windowed = params.to_vec();
            windowed.push(&PHRASE_WINDOW_ROWS);
            let rows = client
                .query(&stmt, &windowed)
                .await
                .map_err(StoreError::Query)?;
            let found: Option<i64> = rows.first().map(|r| r.get("found"));
            if found == Some(query.candidates) {
                return rows.iter().map(|r| self.decode_hit(r)).collect();
            }
        }
        let stmt = client
            .prepare_cached(&self.search_sql)
            .await
            .map_err(StoreError::Query)?;
        let rows = client
            .query(&stmt, &params)
            .await
            .map_err(StoreError::Query)?;
        rows.iter().map(|r| self.decode_hit(r)).collect()
    }
}

impl PgStore {
    fn decode_hit(&self, r: &Row) -> Result<SearchHit, StoreError> {
        Ok(SearchHit {
            conversation: self.decode(r)?,
            rank: r.try_get("rank").map_err(StoreError::Query)?,
            snippet: r.try_get("snippet").map_err(StoreError::Query)?,
        })
    }
}

#[async_trait]
impl ApiKeys for PgStore {
    async fn owner_of(&self, digest: &[u8]) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT owner FROM api_keys WHERE digest = $1 AND revoked_at IS NULL")
            .await
            .map_err(StoreError::Query)?;
        let row = client
            .query_opt(&stmt, &[&digest])
            .await
            .map_err(StoreError::Query)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn add_key(
        &self,
        id: Uuid,
        owner: &str,
        name: &str,
        digest: &[u8],
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, owner, name, digest) VALUES ($1, $2, $3, $4)",
                &[&id, &owner, &name, &digest],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(())
    }

    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(n == 1)
    }
}

#[async_trait]
impl super::Migrate for PgStore {
    async fn migrate(&self, search_config: &str) -> Result<usize, StoreError> {
        crate::db::migrate(&self.pool, search_config).await
    }
}

#[async_trait]
impl HealthCheck for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(StoreError::Query)?;
        Ok(())
    }
}
