//! The PostgreSQL store backend on a deadpool-postgres pool.
//!
//! Every call is bounded on the client side by `DB_STATEMENT_TIMEOUT_MS` plus a margin, getting
//! a connection included: a database that stops answering without closing the connection (a
//! failover, a dead network path) cannot hang a request. A connection whose call ran out of time
//! is discarded, and so is every idle one (they lead to the same silent server); the pool opens
//! new ones when the database answers again.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use tokio::time::{Instant, timeout_at};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::sql::{self, PHRASE_WINDOW_ROWS, search_sql, search_window_sql};
use super::{
    CancelOutcome, ChainTurn, Checkpointed, ConversationChain, ConversationCreate,
    ConversationExport, ConversationFinish, ConversationGet, ConversationList, ConversationLog,
    ConversationSearch, ExportQuery, HealthCheck, Listed, LogRead, PageQuery, SearchHit,
    SearchQuery, ThreadStore,
};
use crate::domain::{Conversation, Status, Thread, now_micros};
use crate::error::StoreError;

/// Conversations in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    stale_after: Duration,
    heartbeat_stale: Duration,
    call_timeout: Duration,
    search_sql: String,
    search_window_sql: String,
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

impl PgStore {
    /// `stale_after`: how long after its start a `streaming` row reads as interrupted (the
    /// longest a stream may run, plus a margin).
    pub fn new(pool: Pool, stale_after: Duration) -> Self {
        Self {
            pool,
            stale_after,
            heartbeat_stale: super::HEARTBEAT_STALE_DEFAULT,
            call_timeout: Duration::from_secs(5) + crate::settings::CALL_MARGIN,
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

    /// A `streaming` turn not heard from for this long reads as interrupted.
    pub fn with_heartbeat_stale(mut self, quiet: Duration) -> Self {
        self.heartbeat_stale = quiet;
        self
    }

    /// Bounds every call (connection included) by `timeout`.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The store the functions use: a lazy pool from `DATABASE_URL`, calls bounded by
    /// `DB_STATEMENT_TIMEOUT_MS` plus a margin, rows left `streaming` past the longest a stream
    /// may run reading as interrupted.
    pub fn from_settings(
        settings: &crate::Settings,
    ) -> Result<Self, crate::settings::SettingsError> {
        let pool = super::db::pool(&settings.db)?;
        Ok(Self::new(pool, super::stale_after(settings))
            .with_search_config(&settings.db.search_config)
            .with_call_timeout(settings.db.call_timeout())
            .with_heartbeat_stale(super::heartbeat_stale(settings)))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `sql` with `params` on a pooled connection within the call timeout, returning the
    /// rows. A call that runs out of time discards its connection and the idle ones.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let deadline = Instant::now() + self.call_timeout;
        let client = match timeout_at(deadline, self.pool.get()).await {
            Ok(client) => client.map_err(StoreError::Pool)?,
            Err(_) => return Err(self.timed_out(None)),
        };
        let result = timeout_at(deadline, async {
            let stmt = client.prepare_cached(sql).await?;
            client.query(&stmt, params).await
        })
        .await;
        match result {
            Ok(rows) => rows.map_err(StoreError::Query),
            Err(_) => Err(self.timed_out(Some(client))),
        }
    }

    /// Forgets `client` (its connection is closed, not returned to the pool) and every idle
    /// connection: they lead to a server that stopped answering.
    fn timed_out(&self, client: Option<Object>) -> StoreError {
        if let Some(client) = client {
            drop(Object::take(client));
        }
        drop(self.pool.retain(|_, _| false));
        StoreError::Timeout(self.call_timeout)
    }

    fn decode(&self, row: &Row) -> Result<Conversation, StoreError> {
        let q = |e| StoreError::Query(e);
        let status: String = row.try_get("status").map_err(q)?;
        let c = Conversation {
            id: row.try_get("id").map_err(q)?,
            owner: row.try_get("owner").map_err(q)?,
            prompt: row.try_get("prompt").map_err(q)?,
            response: row.try_get("response").map_err(q)?,
            status: Status::parse(&status).ok_or(StoreError::Decode { column: "status" })?,
            error: row.try_get("error").map_err(q)?,
            provider: row.try_get("provider").map_err(q)?,
            model: row.try_get("model").map_err(q)?,
            prompt_tokens: row.try_get("prompt_tokens").map_err(q)?,
            completion_tokens: row.try_get("completion_tokens").map_err(q)?,
            total_tokens: row.try_get("total_tokens").map_err(q)?,
            flags: serde_json::from_value(row.try_get::<_, serde_json::Value>("flags").map_err(q)?)
                .map_err(|_| StoreError::Decode { column: "flags" })?,
            ttfb_ms: row.try_get("ttfb_ms").map_err(q)?,
            duration_ms: row.try_get("duration_ms").map_err(q)?,
            finish_reason: row.try_get("finish_reason").map_err(q)?,
            thread_id: row.try_get("thread_id").map_err(q)?,
            previous_id: row.try_get("previous_id").map_err(q)?,
            system: row.try_get("system").map_err(q)?,
            messages: row.try_get("messages").map_err(q)?,
            context_turns: row.try_get("context_turns").map_err(q)?,
            tool_calls: json_column(row, "tool_calls")?,
            tools: json_column(row, "tools")?,
            prompt_parts: row.try_get("prompt_parts").map_err(q)?,
            attempts: json_column(row, "attempts")?,
            cost_usd: row.try_get("cost_usd").map_err(q)?,
            key_id: row.try_get("key_id").map_err(q)?,
            created_at: row.try_get("created_at").map_err(q)?,
            updated_at: row.try_get("updated_at").map_err(q)?,
            truncated: false,
            heartbeat_at: row.try_get("heartbeat_at").map_err(q)?,
        };
        Ok(c.settle(self.stale_after, self.heartbeat_stale, now_micros()))
    }

    fn decode_hit(&self, r: &Row) -> Result<SearchHit, StoreError> {
        Ok(SearchHit {
            conversation: self.decode(r)?,
            rank: r.try_get("rank").map_err(StoreError::Query)?,
            snippet: r.try_get("snippet").map_err(StoreError::Query)?,
        })
    }
}

/// A nullable jsonb column, decoded.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    let value: Option<serde_json::Value> = row.try_get(column).map_err(StoreError::Query)?;
    value
        .map(serde_json::from_value)
        .transpose()
        .map_err(|_| StoreError::Decode { column })
}

/// The parameters of [`sql::create`]: a turn's row as its stream starts.
fn start_params(c: &Conversation) -> Params<'_> {
    vec![
        &c.id,
        &c.prompt,
        &c.provider,
        &c.model,
        &c.created_at,
        &c.owner,
        &c.thread_id,
        &c.previous_id,
        &c.system,
        &c.messages,
        &c.context_turns,
    ]
}

#[async_trait]
impl ConversationCreate for PgStore {
    async fn create(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        self.query(sql::CREATE, &start_params(c)).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationFinish for PgStore {
    async fn checkpoint(
        &self,
        start: Option<&Conversation>,
        id: Uuid,
        piece: Option<(i64, &str)>,
    ) -> Result<Checkpointed, StoreError> {
        let start = start.map(Conversation::storable);
        let piece = piece.map(|(at, text)| (at, crate::domain::storable(text).into_owned()));
        let (sql, params): (String, Params<'_>) = match (&start, &piece) {
            (Some(c), Some((at, text))) => {
                let mut p = start_params(c);
                p.extend([at as &(dyn ToSql + Sync), text]);
                (sql::checkpoint(true, true), p)
            }
            (Some(c), None) => (sql::checkpoint(true, false), start_params(c)),
            (None, Some((at, text))) => (sql::checkpoint(false, true), vec![&id, at, text]),
            (None, None) => (sql::checkpoint(false, false), vec![&id]),
        };
        let rows = self.query(&sql, &params).await?;
        Ok(Checkpointed {
            cancel_requested: rows.first().is_some_and(|r| r.get::<_, bool>(0)),
            found: !rows.is_empty(),
        })
    }

    async fn finish(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let flags = serde_json::to_value(&c.flags).unwrap_or_default();
        let status = c.status.as_str();
        let [tool_calls, tools, attempts] = c.json_columns();
        let params: Params<'_> = vec![
            &c.id,
            &c.prompt,
            &c.response,
            &status,
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
            &flags,
            &c.finish_reason,
            &c.thread_id,
            &c.previous_id,
            &c.system,
            &c.messages,
            &c.context_turns,
            &tool_calls,
            &tools,
            &c.prompt_parts,
            &attempts,
            &c.cost_usd,
            &c.key_id,
        ];
        self.query(sql::FINISH, &params).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationGet for PgStore {
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "SELECT {} FROM conversations c WHERE c.id = $1 AND c.owner = $2",
            sql::columns()
        );
        let rows = self.query(&sql, &[&id, &owner]).await?;
        rows.first().map(|r| self.decode(r)).transpose()
    }
}

#[async_trait]
impl ConversationExport for PgStore {
    async fn export_page(
        &self,
        owner: &str,
        query: &ExportQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        // Each bound that is absent folds away when the statement is planned (custom plans).
        let sql = format!(
            "SELECT {} FROM conversations c WHERE c.owner = $1 \
             AND ($2::timestamptz IS NULL OR c.created_at >= $2) \
             AND ($3::timestamptz IS NULL OR c.created_at < $3) \
             AND ($4::timestamptz IS NULL OR (c.created_at, c.id) > ($4, $5)) \
             ORDER BY c.created_at, c.id LIMIT $6",
            sql::columns()
        );
        let (after_at, after_id) = (query.after.map(|a| a.created_at), query.after.map(|a| a.id));
        let params: Params<'_> = vec![
            &owner,
            &query.from,
            &query.to,
            &after_at,
            &after_id,
            &query.limit,
        ];
        let rows = self.query(&sql, &params).await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }
}

#[async_trait]
impl ConversationList for PgStore {
    async fn list(
        &self,
        owner: &str,
        page: &PageQuery,
    ) -> Result<Listed<Conversation>, StoreError> {
        let probe = page.limit + 1;
        let rows = match &page.after {
            None => {
                let sql = format!(
                    "SELECT {} FROM conversations c WHERE c.owner = $3 \
                     ORDER BY c.created_at DESC, c.id DESC LIMIT $1 OFFSET $2",
                    sql::columns()
                );
                self.query(&sql, &[&probe, &page.offset, &owner]).await?
            }
            Some(cursor) => {
                let sql = format!(
                    "SELECT {} FROM conversations c \
                     WHERE c.owner = $5 AND (c.created_at, c.id) < ($1, $2) \
                     ORDER BY c.created_at DESC, c.id DESC LIMIT $3 OFFSET $4",
                    sql::columns()
                );
                let params: Params<'_> =
                    vec![&cursor.created_at, &cursor.id, &probe, &page.offset, &owner];
                self.query(&sql, &params).await?
            }
        };
        Listed::from_probe(rows, page.limit, |r| self.decode(r))
    }
}

#[async_trait]
impl ConversationSearch for PgStore {
    async fn search(
        &self,
        owner: &str,
        query: &SearchQuery,
    ) -> Result<Listed<SearchHit>, StoreError> {
        let probe = query.limit + 1;
        let params: Params<'_> = vec![
            &query.text,
            &query.from,
            &query.to,
            &query.candidates,
            &probe,
            &query.offset,
            &owner,
        ];
        if query.text.contains('"') {
            let mut windowed = params.clone();
            windowed.push(&PHRASE_WINDOW_ROWS);
            let rows = self.query(&self.search_window_sql, &windowed).await?;
            let found: Option<i64> = rows.first().map(|r| r.get("found"));
            if found == Some(query.candidates) {
                return Listed::from_probe(rows, query.limit, |r| self.decode_hit(r));
            }
        }
        let rows = self.query(&self.search_sql, &params).await?;
        Listed::from_probe(rows, query.limit, |r| self.decode_hit(r))
    }
}

#[async_trait]
impl ConversationChain for PgStore {
    async fn chain(
        &self,
        owner: &str,
        id: Uuid,
        budget: i64,
    ) -> Result<Option<Vec<ChainTurn>>, StoreError> {
        let sql = sql::chain_page(&sql::chain_columns());
        sql::walk_chain(id, budget, |after| {
            let sql = &sql;
            async move {
                let (at, after_id) = (after.map(|a| a.created_at), after.map(|a| a.id));
                let rows = self
                    .query(sql, &[&id, &owner, &at, &after_id, &sql::CHAIN_PAGE])
                    .await?;
                rows.iter().map(|r| self.decode(r)).collect()
            }
        })
        .await
    }
}

#[async_trait]
impl ConversationLog for PgStore {
    async fn read_log(
        &self,
        owner: &str,
        id: Uuid,
        from: i64,
        max_chars: i64,
    ) -> Result<Option<LogRead>, StoreError> {
        let sql = format!(
            "SELECT {}, {} AS rest, {} AS total FROM conversations c \
             WHERE c.id = $1 AND c.owner = $2",
            sql::columns_with("''::text"),
            sql::text_from("$3::int8", "$4::int4"),
            sql::text_total(),
        );
        let max = i32::try_from(max_chars).unwrap_or(i32::MAX);
        let rows = self.query(&sql, &[&id, &owner, &from, &max]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(LogRead {
            turn: self.decode(row)?,
            text: row
                .try_get::<_, Option<String>>("rest")
                .map_err(StoreError::Query)?
                .unwrap_or_default(),
            total: i64::from(row.try_get::<_, i32>("total").map_err(StoreError::Query)?),
        }))
    }

    async fn request_cancel(&self, owner: &str, id: Uuid) -> Result<CancelOutcome, StoreError> {
        let stale = self.stale_after.as_secs_f64();
        let quiet = self.heartbeat_stale.as_secs_f64();
        let rows = self
            .query(sql::REQUEST_CANCEL, &[&id, &owner, &stale, &quiet])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(CancelOutcome::NotFound);
        };
        if row.try_get::<_, bool>(1).map_err(StoreError::Query)? {
            return Ok(CancelOutcome::Requested);
        }
        let status: String = row.try_get(0).map_err(StoreError::Query)?;
        let status = Status::parse(&status).ok_or(StoreError::Decode { column: "status" })?;
        // A row still `streaming` that the update passed over was abandoned by its writer.
        Ok(CancelOutcome::Finished(if status == Status::Streaming {
            Status::Partial
        } else {
            status
        }))
    }
}

fn decode_thread(r: &Row) -> Result<Thread, StoreError> {
    let q = |e| StoreError::Query(e);
    Ok(Thread {
        id: r.try_get("id").map_err(q)?,
        title: r.try_get("title").map_err(q)?,
        turns: r.try_get("turns").map_err(q)?,
        created_at: r.try_get("created_at").map_err(q)?,
        updated_at: r.try_get("updated_at").map_err(q)?,
    })
}

#[async_trait]
impl ThreadStore for PgStore {
    async fn threads(&self, owner: &str, page: &PageQuery) -> Result<Listed<Thread>, StoreError> {
        let probe = page.limit + 1;
        let cols = sql::THREAD_COLUMNS;
        let rows = match &page.after {
            None => {
                let sql = format!(
                    "SELECT {cols} FROM threads t WHERE t.owner = $1 \
                     ORDER BY t.updated_at DESC, t.id DESC LIMIT $2"
                );
                self.query(&sql, &[&owner, &probe]).await?
            }
            Some(cursor) => {
                let sql = format!(
                    "SELECT {cols} FROM threads t \
                     WHERE t.owner = $1 AND (t.updated_at, t.id) < ($3, $4) \
                     ORDER BY t.updated_at DESC, t.id DESC LIMIT $2"
                );
                let params: Params<'_> = vec![&owner, &probe, &cursor.created_at, &cursor.id];
                self.query(&sql, &params).await?
            }
        };
        Listed::from_probe(rows, page.limit, decode_thread)
    }

    async fn thread(
        &self,
        owner: &str,
        id: Uuid,
        page: &PageQuery,
    ) -> Result<Option<(Thread, Listed<Conversation>)>, StoreError> {
        let sql = format!(
            "SELECT {} FROM threads t WHERE t.id = $1 AND t.owner = $2",
            sql::THREAD_COLUMNS
        );
        let Some(thread) = self
            .query(&sql, &[&id, &owner])
            .await?
            .first()
            .map(decode_thread)
        else {
            return Ok(None);
        };
        let (at, after_id) = (page.after.map(|a| a.created_at), page.after.map(|a| a.id));
        let probe = page.limit + 1;
        let rows = self
            .query(
                &sql::thread_turns(&sql::columns()),
                &[&id, &owner, &at, &after_id, &probe],
            )
            .await?;
        let turns = Listed::from_probe(rows, page.limit, |r| self.decode(r))?;
        Ok(Some((thread?, turns)))
    }

    async fn delete_thread(&self, owner: &str, id: Uuid) -> Result<bool, StoreError> {
        let rows = self.query(sql::DELETE_THREAD, &[&id, &owner]).await?;
        Ok(rows
            .first()
            .is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false)))
    }
}

#[async_trait]
impl super::keys::TextRows for PgStore {
    async fn text_rows(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<super::keys::TextRow>, StoreError> {
        let params: Params<'_> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.query(sql, &params).await?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Option<String>>(i).map_err(StoreError::Query))
                    .collect()
            })
            .collect()
    }
}

#[async_trait]
impl super::Migrate for PgStore {
    async fn migrate(&self, search_config: &str) -> Result<usize, StoreError> {
        super::db::migrate(&self.pool, search_config).await
    }

    async fn ensure_login(
        &self,
        name: &str,
        password: &str,
        groups: &str,
    ) -> Result<(), StoreError> {
        self.query(sql::ENSURE_LOGIN, &[&name, &password, &groups])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await?;
        Ok(())
    }
}
